"""Which tokens drive the sentiment CNN: occlusion on held-out reviews, and its bar-chart picture."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from musicrec import features
from musicrec.plots import figure_html, new_figure


def token_importance(
    model: keras.Model, inputs: dict[str, np.ndarray], vocabularies: dict[str, list[str]], k: int = 15,
    min_count: int = 5,
) -> dict[str, dict[str, list]]:  # fmt: skip
    """The most significant tokens by occlusion, measured on held-out reviews.

    Each token occurrence is replaced by padding in turn; its importance is the drop in the predicted positive
    probability, averaged over a token's occurrences (at least ``min_count``). Positive means the token pushed
    towards a positive review, negative towards a negative one.

    Args:
        model: the sentiment CNN.
        inputs: a sample of transformed eval rows (review and summary ids).
        vocabularies: the review and summary vocabularies by feature name (id i is entry i-1).
        k: tokens listed each way.
        min_count: the fewest occurrences for a token to be listed.
    """
    base = model.predict(inputs, batch_size=4_096, verbose=0).reshape(-1)
    result = {}
    for feature, tokens in vocabularies.items():
        ids = inputs[feature]
        totals = np.zeros(len(tokens) + 2)
        counts = np.zeros(len(tokens) + 2)
        for position in range(ids.shape[1]):
            rows = np.flatnonzero(ids[:, position] != features.PADDING_ID)
            if rows.size == 0:
                continue
            occluded = {name: values[rows].copy() for name, values in inputs.items()}
            occluded[feature][:, position] = features.PADDING_ID
            drop = base[rows] - model.predict(occluded, batch_size=4_096, verbose=0).reshape(-1)
            np.add.at(totals, ids[rows, position], drop)
            np.add.at(counts, ids[rows, position], 1)
        names = ["<pad>", *tokens, "<oov>"]
        mean = np.where(counts >= min_count, totals / np.maximum(counts, 1), 0.0)
        order = np.argsort(-mean, kind="stable")
        result[feature] = {
            "positive": [[names[i], round(float(mean[i]), 4)] for i in order[:k] if mean[i] > 0],
            "negative": [[names[i], round(float(mean[i]), 4)] for i in order[::-1][:k] if mean[i] < 0],
        }
    return result


def token_importance_html(importance: dict[str, dict[str, list]]) -> str:
    """Bar charts of the most significant review and summary tokens (occlusion on eval), as a page."""
    return figure_html(token_importance_figure(importance), "Most significant tokens (occlusion on eval reviews)")


def token_importance_figure(importance: dict[str, dict[str, list]]) -> Any:
    """Bar charts of the most significant review and summary tokens (a matplotlib figure)."""
    figure, axes = new_figure(columns=len(importance), height=6.0)
    for axis, (feature, sides) in zip(np.atleast_1d(axes), importance.items(), strict=True):
        entries = sides["negative"][::-1] + sides["positive"][::-1]
        axis.barh([token for token, _ in entries], [score for _, score in entries],
                  color=["#c0392b" if score < 0 else "#2e86c1" for _, score in entries])  # fmt: skip
        axis.set(title=feature.replace("_", " "), xlabel="drop in P(positive) when the token is removed")
    return figure
