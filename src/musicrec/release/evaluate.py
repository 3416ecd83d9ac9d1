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

import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from musicrec import metrics, schema
from musicrec.errors import EvaluationError
from musicrec.io.artifacts import publish, staging_directory
from musicrec.models.sentiment import normalizer_skew, score_texts
from musicrec.release.lineage import ArtifactRef, build_chain, record_evaluation
from musicrec.release.model_store import current_push, record_run_evaluation
from musicrec.release.report import report_html
from musicrec.release.scorecard import GATED_METRICS, gated_values, scorecard
from musicrec.release.summary import step_results, step_seconds
from musicrec.reports import Evaluation
from musicrec.settings import BlessingSettings
from musicrec.steps import INGEST, TRAIN_AUTOENCODER, TRAIN_CNN, TRAIN_DNN

logger = logging.getLogger(__name__)


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise EvaluationError(f"cannot read the {what} at {path}: {error}") from None


def serving_check(cnn_model_dir: Path, examples_dir: Path) -> dict[str, Any]:
    """Score the raw test split through the exported sentiment SavedModel, exactly as a client would.

    Returns:
        ``auc``, ``accuracy`` and ``reviews`` of the served model (positive = rating > 3), and
        ``token_id_skew``: the share of test reviews whose token ids differ between the model's own normalizer
        and the Python one that preprocessing used.
    """
    files = sorted((Path(examples_dir) / schema.TEST).glob("*.parquet"))
    if not files:
        raise EvaluationError(f"no test Parquet shards under {examples_dir}")
    table = pq.ParquetDataset(files).read(columns=[schema.REVIEW_TEXT, schema.SUMMARY, schema.RATING])
    reviews, summaries = table[schema.REVIEW_TEXT].to_pylist(), table[schema.SUMMARY].to_pylist()
    labels = (table[schema.RATING].to_numpy() > schema.POSITIVE_RATING_THRESHOLD).astype(int)
    scores = score_texts(cnn_model_dir, reviews, summaries)
    return {"reviews": len(labels), "auc": round(metrics.roc_auc(labels, scores), 4),
            "accuracy": round(metrics.accuracy(labels, (scores >= 0.5).astype(int)), 4),
            "token_id_skew": round(normalizer_skew(cnn_model_dir, reviews, summaries), 5)}  # fmt: skip


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
    if sentiment["train_text_share"] > 0:
        checks = [
            (sentiment["test"]["accuracy"] > sentiment["baselines"]["majority"]["accuracy"],
             f"sentiment test accuracy {sentiment['test']['accuracy']:.4f} vs majority class "
             f"{sentiment['baselines']['majority']['accuracy']:.4f}"),
            (sentiment["test"]["auc"] >= settings.min_sentiment_auc,
             f"sentiment test AUC {sentiment['test']['auc']:.4f} vs minimum {settings.min_sentiment_auc}"),
            (abs(served["auc"] - sentiment["test"]["auc"]) <= settings.serving_tolerance,
             f"served SavedModel AUC on raw test text {served['auc']:.4f} vs measured "
             f"{sentiment['test']['auc']:.4f} (tolerance {settings.serving_tolerance})"),
        ]  # fmt: skip
    else:
        checks = [(True, "no review or summary text in train: sentiment is the train prior, not gated")]
    checks += [
        (rating["test"]["rmse"] < rating["baselines"]["global_mean"]["rmse"],
         f"rating test RMSE {rating['test']['rmse']:.4f} vs global mean "
         f"{rating['baselines']['global_mean']['rmse']:.4f}"),
        (rating["test"]["rmse"] <= settings.max_rating_rmse,
         f"rating test RMSE {rating['test']['rmse']:.4f} vs maximum {settings.max_rating_rmse}"),
    ]  # fmt: skip
    if ranking["users"] > 0:
        checks.append((ranking["test"]["ndcg@10"] >= settings.min_ranking_ndcg,
                       f"ranking test NDCG@10 {ranking['test']['ndcg@10']:.4f} vs minimum "
                       f"{settings.min_ranking_ndcg}"))  # fmt: skip
    else:
        checks.append((True, "no test user has train history and a liked test item: ranking cannot be measured, "
                             "not gated"))  # fmt: skip
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
    run_id: str | None = None,
) -> Evaluation:
    """Score, compare, bless; write the evaluation JSON (with the lineage chain) and the HTML report.

    Args:
        cnn_model_dir: the exported sentiment SavedModel (for the serving check).
        examples_dir: ingest's Parquet examples (raw test text).
        reports: the JSON reports of ``ingest``, ``preprocess``, ``train_cnn``, ``train_autoencoder`` and
            ``train_dnn``.
        projection_path: train_autoencoder's projection picture (HTML), shown again in the report.
        artifacts: every upstream artifact for the lineage chain.
        push_destination: where push publishes; its current run is the regression reference (may be empty).
        evaluation_path: receives the evaluation JSON.
        report_path: receives the HTML report.
        settings: blessing thresholds.
        run_id: the pipeline run's id; with a push destination, the evaluation is also kept there under it
            (``.runs/<run_id>/evaluation.json``), where ``musicrec submit --summary-out`` reads it.

    Raises:
        EvaluationError: a missing or malformed input.
    """
    settings = settings or BlessingSettings()
    started = time.monotonic()
    loaded = {step: _read_json(Path(path), f"{step} report") for step, path in reports.items()}
    try:
        card = scorecard(loaded[TRAIN_CNN.name], loaded[TRAIN_AUTOENCODER.name], loaded[TRAIN_DNN.name])
        results = step_results(loaded)
    except KeyError as error:
        raise EvaluationError(f"a training report lacks {error}: was it written by this version?") from None
    served = serving_check(Path(cnn_model_dir), Path(examples_dir))
    current = current_push(push_destination) if push_destination else None
    blessed, reasons = bless(card, served, current, settings)
    evaluation: Evaluation = {
        "id": uuid.uuid4().hex, "scorecard": card, "serving_check": served, "blessed": blessed, "reasons": reasons,
        "sentiment_test": {k: loaded[TRAIN_CNN.name][schema.TEST][k] for k in ("confusion_matrix", "roc")},
        "gated_metrics": gated_values(card), "compared_with": current and {"version": current["version"],
                                                                           "metrics": current["metrics"]},
        "settings": settings.to_dict(), "results": results, "step_seconds": step_seconds(loaded),
        "lineage": build_chain(artifacts, loaded[INGEST.name]["inputs"]), "seconds": 0.0,
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
    if push_destination and run_id:
        logger.info("evaluate: kept at %s", record_run_evaluation(push_destination, run_id, evaluation))
    logger.info("evaluate: %s", "blessed" if blessed else "NOT blessed")
    for reason in reasons:
        logger.info("  %s", reason)
    return evaluation


def ui_metrics(evaluation: Evaluation) -> dict[str, float]:
    """Every test metric of every model and baseline: ``<task>_<metric>``, ``<task>_<baseline>_<metric>``."""
    values = {}
    for task, section in evaluation["scorecard"].items():
        for name, value in section["test"].items():
            values[f"{task}_{name}"] = value
        for baseline, scores in section["baselines"].items():
            for name, value in scores.items():
                values[f"{task}_{baseline}_{name}"] = value
    return values


def artifact_metadata(evaluation: Evaluation) -> dict[str, dict[str, Any]]:
    """What the Kubeflow UI shows beside the evaluation artifact: the blessing and the gated metrics."""
    return {"evaluation": {"blessed": evaluation["blessed"], "reasons": evaluation["reasons"],
                           **evaluation["gated_metrics"]}}  # fmt: skip
