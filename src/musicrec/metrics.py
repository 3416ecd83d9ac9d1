"""Evaluation metrics in NumPy: the project's own definitions, used by training, evaluation and baselines."""

from __future__ import annotations

import numpy as np


def accuracy(labels: np.ndarray, predicted: np.ndarray) -> float:
    """Share of exact matches between 0/1 ``labels`` and 0/1 ``predicted``."""
    return float(np.mean(np.asarray(labels) == np.asarray(predicted))) if len(labels) else 0.0


def balanced_accuracy(labels: np.ndarray, predicted: np.ndarray) -> float:
    """Mean of the recall of each class present in ``labels`` (0.5 for a constant prediction)."""
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    recalls = [np.mean(predicted[labels == c] == c) for c in np.unique(labels)]
    return float(np.mean(recalls)) if recalls else 0.0


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve by the rank statistic (ties get average ranks); 0.5 if a class is absent."""
    labels, scores = np.asarray(labels).astype(bool), np.asarray(scores, np.float64)
    positives, negatives = labels.sum(), (~labels).sum()
    if positives == 0 or negatives == 0:
        return 0.5
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), np.float64)
    sorted_scores = scores[order]
    # Average ranks over runs of equal scores.
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(scores)]])
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = (start + end + 1) / 2.0
    return float((ranks[labels].sum() - positives * (positives + 1) / 2.0) / (positives * negatives))


def roc_curve(
    labels: np.ndarray, scores: np.ndarray, points: int = 101
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False and true positive rates at ``points`` thresholds spread over the score quantiles."""
    labels, scores = np.asarray(labels).astype(bool), np.asarray(scores, np.float64)
    thresholds = np.unique(np.quantile(scores, np.linspace(0, 1, points)))[::-1]
    positives, negatives = max(labels.sum(), 1), max((~labels).sum(), 1)
    tpr = np.array([(scores[labels] >= t).sum() / positives for t in thresholds])
    fpr = np.array([(scores[~labels] >= t).sum() / negatives for t in thresholds])
    return fpr, tpr, thresholds


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray) -> list[list[int]]:
    """2x2 counts ``[[true negatives, false positives], [false negatives, true positives]]``."""
    labels, predicted = np.asarray(labels).astype(int), np.asarray(predicted).astype(int)
    return [[int(np.sum((labels == a) & (predicted == b))) for b in (0, 1)] for a in (0, 1)]


def rmse(targets: np.ndarray, predictions: np.ndarray) -> float:
    """Root mean squared error."""
    return float(np.sqrt(np.mean((np.asarray(targets, np.float64) - np.asarray(predictions, np.float64)) ** 2)))


def mae(targets: np.ndarray, predictions: np.ndarray) -> float:
    """Mean absolute error."""
    return float(np.mean(np.abs(np.asarray(targets, np.float64) - np.asarray(predictions, np.float64))))


def hit_rate_and_ndcg(ranked: np.ndarray, relevant: list[set[int]], k: int = 10) -> tuple[float, float]:
    """HR@k and NDCG@k of top-k lists (rows of ``ranked``) against each user's relevant items.

    HR@k is the share of users with at least one relevant item in their top k; NDCG@k uses binary gains and
    the ideal ordering of ``min(k, |relevant|)`` hits.
    """
    if not relevant:
        return 0.0, 0.0
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    hits, gains = 0.0, 0.0
    for row, truth in zip(np.asarray(ranked)[:, :k], relevant, strict=True):
        found = np.array([item in truth for item in row], dtype=np.float64)
        hits += float(found.any())
        ideal = discounts[: min(k, len(truth))].sum()
        gains += float((found * discounts[: len(found)]).sum() / ideal) if ideal else 0.0
    return hits / len(relevant), gains / len(relevant)
