"""The evaluation as one self-contained HTML page with pictures (the Kubeflow UI renders it)."""

from __future__ import annotations

import html
import re
from typing import Any

import numpy as np

from musicrec import schema
from musicrec.models.token_importance import token_importance_figure
from musicrec.plots import figure_png, image_tag, new_figure
from musicrec.release.scorecard import scorecard_rows
from musicrec.reports import Evaluation, Scorecard
from musicrec.steps import TRAIN_CNN, TRAIN_DNN, TRAINING_STEPS


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


def _comparison_figure(card: Scorecard) -> Any:
    """Each model beside its baselines, one panel per headline metric."""
    panels = [
        ("Sentiment AUC", {"CNN": card["sentiment"]["test"]["auc"],
                           **{k: v["auc"] for k, v in card["sentiment"]["baselines"].items()}}),
        ("Reconstruction MSE", {"autoencoder": card["autoencoder"]["test"]["reconstruction_mse"],
                                "PCA": card["autoencoder"]["baselines"]["pca"]["reconstruction_mse"]}),
        ("Rating RMSE", {"DNN": card["rating"]["test"]["rmse"],
                         **{k: v["rmse"] for k, v in card["rating"]["baselines"].items()}}),
        ("NDCG@10", {"recommender": card["ranking"]["test"]["ndcg@10"],
                     **{k: v["ndcg@10"] for k, v in card["ranking"]["baselines"].items()}}),
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


def _table(card: Scorecard) -> str:
    cells = "".join(
        f"<tr><td>{html.escape(task)}</td><td>{html.escape(name)}</td><td>"
        + ", ".join(f"{k} {v:.4f}" for k, v in values.items())
        + "</td></tr>"
        for task, name, values in scorecard_rows(card)
    )
    return f"<table><tr><th>task</th><th>model / baseline</th><th>test</th></tr>{cells}</table>"


def report_html(evaluation: Evaluation, reports: dict[str, Any], projection_html: str) -> str:
    """The evaluation as one self-contained HTML page (the Kubeflow UI renders it in the run's artifacts)."""
    card = evaluation["scorecard"]
    verdict = "BLESSED: will be pushed" if evaluation["blessed"] else "NOT blessed: will not be pushed"
    reasons = "".join(f"<li>{html.escape(reason)}</li>" for reason in evaluation["reasons"])
    cnn = reports[TRAIN_CNN.name]
    curves = _curves_figure({step.name: reports[step.name] for step in TRAINING_STEPS})
    sections = [
        ("Model vs baselines (test split)", image_tag(figure_png(_comparison_figure(card)), "comparison")),
        ("Training curves", image_tag(figure_png(curves), "curves")),
        ("Sentiment CNN", image_tag(figure_png(_classification_figure(cnn[schema.TEST])), "roc")),
        ("Most significant tokens (occlusion on eval)",
         image_tag(figure_png(token_importance_figure(cnn["token_importance"])), "token importance")),
    ]  # fmt: skip
    projection = re.search(r"<img[^>]*>", projection_html)
    if projection:
        sections.append(("Autoencoder codes, 2-D projection (test, by rating)", projection.group(0)))
    histogram = reports[TRAIN_DNN.name].get("test_error_histogram")
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
        f"AUC {served['auc']:.4f}, accuracy {served['accuracy']:.4f}; its own normalizer gives other token ids "
        f"than preprocessing's for {served['token_id_skew']:.2%} of them.</p>{body}</body></html>\n"
    )
