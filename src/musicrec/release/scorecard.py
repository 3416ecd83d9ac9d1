"""The scorecard: every model's test scores beside its baselines, and the metrics a blessing gates on."""

from __future__ import annotations

from typing import Any

from musicrec import schema
from musicrec.reports import AutoencoderReport, RatingReport, Scorecard, SentimentReport

# The metrics a blessing compares with the pushed run: name -> (where in the scorecard, higher is better).
GATED_METRICS: dict[str, tuple[tuple[str, ...], bool]] = {
    "sentiment_auc": (("sentiment", "test", "auc"), True),
    "rating_rmse": (("rating", "test", "rmse"), False),
    "ranking_ndcg@10": (("ranking", "test", "ndcg@10"), True),
}


def scorecard(
    cnn_report: SentimentReport, autoencoder_report: AutoencoderReport, rating_report: RatingReport
) -> Scorecard:
    """Test metrics of each model beside its baselines, in the ``summary.json`` layout."""
    test = schema.TEST
    return {
        "sentiment": {"test": {k: cnn_report[test][k] for k in ("accuracy", "balanced_accuracy", "auc")},
                      "baselines": cnn_report["baselines"][test],
                      "train_text_share": cnn_report["train_text_share"]},
        "autoencoder": {"test": autoencoder_report[test], "baselines": autoencoder_report["baselines"][test]},
        "rating": {"test": rating_report[test], "baselines": rating_report["baselines"][test]},
        "ranking": rating_report["ranking"],
    }  # fmt: skip


def gated_values(card: Scorecard) -> dict[str, float]:
    """The values of :data:`GATED_METRICS` in a scorecard."""
    values = {}
    for name, (path, _) in GATED_METRICS.items():
        node: Any = card
        for key in path:
            node = node[key]
        values[name] = float(node)
    return values


def scorecard_rows(card: Scorecard) -> list[tuple[str, str, dict[str, float]]]:
    """(task, model or baseline, its numeric test metrics), the model first in each task."""
    rows = []
    for task, section in card.items():
        rows.append((task, "model", section["test"]))
        rows += [(task, name, values) for name, values in section["baselines"].items()]
    return [
        (task, name, {k: v for k, v in values.items() if isinstance(v, int | float)})
        for task, name, values in rows
    ]
