"""evaluate: the test-split scorecard of all three models beside their baselines, and the blessing.

The training steps score the held-out test split with :mod:`musicrec.metrics` as they finish; this step puts
those numbers side by side, checks the exported sentiment SavedModel on *raw* test text (the serving path,
so training/serving skew shows up as a gap), and decides whether the run may be pushed:

* every model beats its trivial baseline (majority class, global mean, MostPop needs no beating to serve);
* the thresholds of :class:`~musicrec.settings.BlessingSettings` hold;
* the serving check agrees with the training step's measurement;
* nothing is worse than the run currently pushed at the destination by more than ``max_regression``.
"""

from __future__ import annotations

import html
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from musicrec import metrics, schema
from musicrec.artifacts import publish, staging_directory
from musicrec.lineage import ArtifactRef, build_chain, record_evaluation
from musicrec.plots import figure_png, image_tag, new_figure
from musicrec.settings import BlessingSettings

logger = logging.getLogger(__name__)

# The metrics a blessing compares with the pushed run: name -> (where in the scorecard, higher is better).
GATED_METRICS: dict[str, tuple[tuple[str, ...], bool]] = {
    "sentiment_auc": (("sentiment", "test", "auc"), True),
    "rating_rmse": (("rating", "test", "rmse"), False),
    "ranking_ndcg@10": (("ranking", "test", "ndcg@10"), True),
}
TRAINING_STEPS = ("train_cnn", "train_autoencoder", "train_dnn")


class EvaluationError(RuntimeError):
    """An input of the evaluate step is missing or malformed; the message is one line."""


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise EvaluationError(f"cannot read the {what} at {path}: {error}") from None


def scorecard(cnn_report: dict, autoencoder_report: dict, rating_report: dict) -> dict[str, Any]:
    """Test metrics of each model beside its baselines, in the ``summary.json`` layout of DESIGN.md."""
    test = schema.TEST
    return {
        "sentiment": {"test": {k: cnn_report[test][k] for k in ("accuracy", "balanced_accuracy", "auc")},
                      "baselines": cnn_report["baselines"][test]},
        "autoencoder": {"test": autoencoder_report[test], "baselines": autoencoder_report["baselines"][test]},
        "rating": {"test": rating_report[test], "baselines": rating_report["baselines"][test]},
        "ranking": rating_report["ranking"],
    }  # fmt: skip


def gated_values(card: dict[str, Any]) -> dict[str, float]:
    """The values of :data:`GATED_METRICS` in a scorecard."""
    values = {}
    for name, (path, _) in GATED_METRICS.items():
        node: Any = card
        for key in path:
            node = node[key]
        values[name] = float(node)
    return values


def serving_check(cnn_model_dir: Path, examples_dir: Path) -> dict[str, Any]:
    """Score the raw test split through the exported sentiment SavedModel, exactly as a client would.

    Returns:
        ``auc``, ``accuracy`` and ``reviews`` of the served model (positive = rating > 3).
    """
    from musicrec.sentiment import score_texts

    files = sorted((Path(examples_dir) / schema.TEST).glob("*.parquet"))
    if not files:
        raise EvaluationError(f"no test Parquet shards under {examples_dir}")
    table = pq.ParquetDataset(files).read(columns=[schema.REVIEW_TEXT, schema.SUMMARY, schema.RATING])
    reviews, summaries = table[schema.REVIEW_TEXT].to_pylist(), table[schema.SUMMARY].to_pylist()
    labels = (table[schema.RATING].to_numpy() > schema.POSITIVE_RATING_THRESHOLD).astype(int)
    scores = score_texts(cnn_model_dir, reviews, summaries)
    return {"reviews": len(labels), "auc": round(metrics.roc_auc(labels, scores), 4),
            "accuracy": round(metrics.accuracy(labels, (scores >= 0.5).astype(int)), 4)}  # fmt: skip


def bless(
    card: dict[str, Any], served: dict[str, Any], current: dict[str, Any] | None, settings: BlessingSettings
) -> tuple[bool, list[str]]:
    """Decide whether a run may be pushed.

    Args:
        card: :func:`scorecard` of the candidate run.
        served: :func:`serving_check` of its sentiment model.
        current: the commit record of the run now pushed at the destination (``None`` if nothing is pushed).
        settings: thresholds and tolerances.

    Returns:
        The decision and one reason per check, each starting with ``pass:`` or ``FAIL:``.
    """
    sentiment, rating, ranking = card["sentiment"], card["rating"], card["ranking"]
    checks = [
        (sentiment["test"]["accuracy"] > sentiment["baselines"]["majority"]["accuracy"],
         f"sentiment test accuracy {sentiment['test']['accuracy']:.4f} vs majority class "
         f"{sentiment['baselines']['majority']['accuracy']:.4f}"),
        (sentiment["test"]["auc"] >= settings.min_sentiment_auc,
         f"sentiment test AUC {sentiment['test']['auc']:.4f} vs minimum {settings.min_sentiment_auc}"),
        (abs(served["auc"] - sentiment["test"]["auc"]) <= settings.serving_tolerance,
         f"served SavedModel AUC on raw test text {served['auc']:.4f} vs measured {sentiment['test']['auc']:.4f} "
         f"(tolerance {settings.serving_tolerance})"),
        (rating["test"]["rmse"] < rating["baselines"]["global_mean"]["rmse"],
         f"rating test RMSE {rating['test']['rmse']:.4f} vs global mean "
         f"{rating['baselines']['global_mean']['rmse']:.4f}"),
        (rating["test"]["rmse"] <= settings.max_rating_rmse,
         f"rating test RMSE {rating['test']['rmse']:.4f} vs maximum {settings.max_rating_rmse}"),
        (ranking["test"]["ndcg@10"] >= settings.min_ranking_ndcg,
         f"ranking test NDCG@10 {ranking['test']['ndcg@10']:.4f} vs minimum {settings.min_ranking_ndcg}"),
    ]  # fmt: skip
    if current is None:
        checks.append((True, "no model pushed at the destination yet: nothing to regress against"))
    else:
        candidate, pushed = gated_values(card), current["metrics"]
        for name, (_, higher_is_better) in GATED_METRICS.items():
            worse_by = (pushed[name] - candidate[name]) if higher_is_better else (candidate[name] - pushed[name])
            checks.append((worse_by <= settings.max_regression,
                           f"{name} {candidate[name]:.4f} vs pushed version {current['version']} "
                           f"{pushed[name]:.4f} "
                           f"(tolerance {settings.max_regression})"))  # fmt: skip
    reasons = [f"{'pass' if ok else 'FAIL'}: {text}" for ok, text in checks]
    return all(ok for ok, _ in checks), reasons


def _curves_figure(reports: dict[str, dict]) -> Any:
    figure, axes = new_figure(columns=len(reports), width=4.6, height=3.6)
    for axis, (title, report) in zip(axes, reports.items(), strict=True):
        for name, values in report["history"].items():
            axis.plot(range(1, len(values) + 1), values, marker="o", label=name)
        axis.set(title=title, xlabel="epoch")
        axis.xaxis.get_major_locator().set_params(integer=True)
        axis.legend(fontsize=7)
    return figure


def _classification_figure(test: dict[str, Any]) -> Any:
    figure, (matrix_axis, roc_axis) = new_figure(columns=2, width=4.6, height=3.8)
    matrix = np.array(test["confusion_matrix"])
    matrix_axis.imshow(matrix, cmap="Blues")
    for (row, column), count in np.ndenumerate(matrix):
        matrix_axis.text(column, row, f"{count:,}", ha="center", va="center",
                         color="white" if count > matrix.max() / 2 else "black")  # fmt: skip
    matrix_axis.set(xticks=[0, 1], yticks=[0, 1], xticklabels=["negative", "positive"],
                    yticklabels=["negative", "positive"], xlabel="predicted", ylabel="true",
                    title="Sentiment confusion matrix (test)")  # fmt: skip
    roc_axis.plot(test["roc"]["fpr"], test["roc"]["tpr"], label=f"CNN (AUC {test['auc']:.3f})")
    roc_axis.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    roc_axis.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (test)")
    roc_axis.legend()
    return figure


def _comparison_figure(card: dict[str, Any]) -> Any:
    """Each model beside its baselines, one panel per headline metric."""
    panels = [
        ("Sentiment AUC", {"CNN": card["sentiment"]["test"]["auc"],
                           **{k: v["auc"] for k, v in card["sentiment"]["baselines"].items()}}),
        ("Reconstruction MSE", {"autoencoder": card["autoencoder"]["test"]["reconstruction_mse"],
                                "PCA": card["autoencoder"]["baselines"]["pca"]["reconstruction_mse"]}),
        ("Rating RMSE", {"DNN": card["rating"]["test"]["rmse"],
                         **{k: v["rmse"] for k, v in card["rating"]["baselines"].items()}}),
        ("NDCG@10", {"DNN": card["ranking"]["test"]["ndcg@10"],
                     "MostPop": card["ranking"]["baselines"]["mostpop"]["ndcg@10"]}),
    ]  # fmt: skip
    figure, axes = new_figure(columns=len(panels), width=3.4, height=3.2)
    for axis, (title, values) in zip(axes, panels, strict=True):
        colours = ["#2e86c1"] + ["#aab7b8"] * (len(values) - 1)
        bars = axis.bar(list(values), list(values.values()), color=colours)
        axis.bar_label(bars, fmt="%.3f", fontsize=8)
        axis.set_title(title)
        axis.tick_params(axis="x", labelrotation=30)
    return figure


def _error_figure(histogram: dict[str, Any]) -> Any:
    figure, axis = new_figure(width=6.0, height=3.6)
    edges = np.array(histogram["edges"])
    centres, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    for offset, (name, counts) in zip((-0.2, 0.2), histogram["counts"].items(), strict=False):
        axis.bar(centres + offset * width, counts, width=width * 0.4, label=name)
    axis.set(xlabel="predicted - true rating (stars)", ylabel="test reviews", title="Rating errors (test)")
    axis.legend()
    return figure


def scorecard_rows(card: dict[str, Any]) -> list[tuple[str, str, dict[str, float]]]:
    """(task, model or baseline, its numeric test metrics), the model first in each task."""
    rows = []
    for task, section in card.items():
        rows.append((task, "model", section["test"]))
        rows += [(task, name, values) for name, values in section["baselines"].items()]
    return [
        (task, name, {k: v for k, v in values.items() if isinstance(v, int | float)})
        for task, name, values in rows
    ]


def _table(card: dict[str, Any]) -> str:
    cells = "".join(
        f"<tr><td>{html.escape(task)}</td><td>{html.escape(name)}</td><td>"
        + ", ".join(f"{k} {v:.4f}" for k, v in values.items())
        + "</td></tr>"
        for task, name, values in scorecard_rows(card)
    )
    return f"<table><tr><th>task</th><th>model / baseline</th><th>test</th></tr>{cells}</table>"


def report_html(evaluation: dict[str, Any], reports: dict[str, dict], projection_html: str) -> str:
    """The evaluation as one self-contained HTML page (the Kubeflow UI renders it in the run's artifacts)."""
    card = evaluation["scorecard"]
    verdict = "BLESSED: will be pushed" if evaluation["blessed"] else "NOT blessed: will not be pushed"
    reasons = "".join(f"<li>{html.escape(reason)}</li>" for reason in evaluation["reasons"])
    sections = [
        ("Model vs baselines (test split)", image_tag(figure_png(_comparison_figure(card)), "comparison")),
        (
            "Training curves",
            image_tag(figure_png(_curves_figure({s: reports[s] for s in TRAINING_STEPS})), "curves"),
        ),
        ("Sentiment CNN", image_tag(figure_png(_classification_figure(reports["train_cnn"][schema.TEST])), "roc")),
    ]
    from musicrec.sentiment import token_importance_figure

    sections.append(("Most significant tokens (occlusion on eval)",
                     image_tag(figure_png(token_importance_figure(reports["train_cnn"]["token_importance"])),
                               "token importance")))  # fmt: skip
    projection = re.search(r"<img[^>]*>", projection_html)
    if projection:
        sections.append(("Autoencoder codes, 2-D projection (test, by rating)", projection.group(0)))
    histogram = reports["train_dnn"].get("test_error_histogram")
    if histogram:
        sections.append(("Rating errors", image_tag(figure_png(_error_figure(histogram)), "rating errors")))
    body = "".join(f"<h2>{html.escape(title)}</h2>{content}" for title, content in sections)
    served = evaluation["serving_check"]
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto} table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left} img{max-width:100%}")  # fmt: skip
    return (
        f"<html><head><meta charset='utf-8'><title>musicrec evaluation</title><style>{style}</style></head><body>"
        f"<h1>musicrec evaluation: {verdict}</h1><ul>{reasons}</ul>{_table(card)}"
        f"<p>Serving check: the exported sentiment SavedModel scored {served['reviews']:,} raw test reviews: "
        f"AUC {served['auc']:.4f}, accuracy {served['accuracy']:.4f}.</p>{body}</body></html>\n"
    )


def evaluate(
    cnn_model_dir: str | Path,
    examples_dir: str | Path,
    reports: dict[str, str | Path],
    projection_path: str | Path,
    artifacts: list[ArtifactRef],
    push_destination: str,
    evaluation_path: str | Path,
    report_path: str | Path,
    settings: BlessingSettings | None = None,
) -> dict[str, Any]:
    """Score, compare, bless; write the evaluation JSON (with the lineage chain) and the HTML report.

    Args:
        cnn_model_dir: the exported sentiment SavedModel (for the serving check).
        examples_dir: ingest's Parquet examples (raw test text).
        reports: the JSON reports of ``ingest``, ``train_cnn``, ``train_autoencoder`` and ``train_dnn``.
        projection_path: train_autoencoder's projection picture (HTML), shown again in the report.
        artifacts: every upstream artifact for the lineage chain.
        push_destination: where push publishes; its current run is the regression reference (may be empty).
        evaluation_path: receives the evaluation JSON.
        report_path: receives the HTML report.
        settings: blessing thresholds.

    Raises:
        EvaluationError: a missing or malformed input.
    """
    from musicrec.push import current_push

    settings = settings or BlessingSettings()
    started = time.monotonic()
    loaded = {step: _read_json(Path(path), f"{step} report") for step, path in reports.items()}
    try:
        card = scorecard(loaded["train_cnn"], loaded["train_autoencoder"], loaded["train_dnn"])
    except KeyError as error:
        raise EvaluationError(f"a training report lacks {error}: was it written by this version?") from None
    served = serving_check(Path(cnn_model_dir), Path(examples_dir))
    current = current_push(push_destination) if push_destination else None
    blessed, reasons = bless(card, served, current, settings)
    evaluation = {
        "scorecard": card, "serving_check": served, "blessed": blessed, "reasons": reasons,
        "sentiment_test": {k: loaded["train_cnn"][schema.TEST][k] for k in ("confusion_matrix", "roc")},
        "gated_metrics": gated_values(card), "compared_with": current and {"version": current["version"],
                                                                           "metrics": current["metrics"]},
        "settings": settings.__dict__,
        "lineage": build_chain(artifacts, loaded["ingest"]["inputs"]),
    }  # fmt: skip
    record_evaluation(evaluation["lineage"], blessed, reasons, evaluation["gated_metrics"])
    evaluation["seconds"] = round(time.monotonic() - started, 3)
    page = report_html(
        evaluation, loaded, Path(projection_path).read_text() if Path(projection_path).exists() else ""
    )
    with staging_directory(Path(evaluation_path)) as staging:
        (staging / "evaluation.json").write_text(json.dumps(evaluation, indent=2) + "\n")
        (staging / "report.html").write_text(page)
        publish(staging / "evaluation.json", Path(evaluation_path))
        publish(staging / "report.html", Path(report_path))
    logger.info("evaluate: %s", "blessed" if blessed else "NOT blessed")
    for reason in reasons:
        logger.info("  %s", reason)
    return evaluation
