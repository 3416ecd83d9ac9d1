"""The project's metric definitions, checked against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from musicrec import metrics


def test_accuracy_and_balanced_accuracy():
    labels = np.array([1, 1, 1, 1, 0])
    assert metrics.accuracy(labels, np.ones(5)) == 0.8
    assert metrics.balanced_accuracy(labels, np.ones(5)) == 0.5  # the majority class learns nothing
    assert metrics.balanced_accuracy(labels, np.array([1, 1, 0, 1, 0])) == pytest.approx((0.75 + 1.0) / 2)


def test_roc_auc_matches_pairwise_definition():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.random(300) + 0.3 * labels, 1)  # rounded: many ties
    pairs = [(p, n) for p in scores[labels == 1] for n in scores[labels == 0]]
    expected = np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs])
    assert metrics.roc_auc(labels, scores) == pytest.approx(expected)
    assert metrics.roc_auc(labels, labels) == 1.0
    assert metrics.roc_auc(np.ones(4), np.arange(4)) == 0.5


def test_roc_curve_ends_and_is_monotone():
    fpr, tpr, _ = metrics.roc_curve(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    assert fpr[-1] == 1.0 and tpr[-1] == 1.0
    assert (np.diff(fpr) >= 0).all() and (np.diff(tpr) >= 0).all()


def test_confusion_matrix():
    assert metrics.confusion_matrix(np.array([0, 0, 1, 1, 1]), np.array([0, 1, 1, 1, 0])) == [[1, 1], [1, 2]]


def test_rmse_and_mae():
    assert metrics.rmse(np.array([1, 2, 3]), np.array([1, 2, 5])) == pytest.approx(np.sqrt(4 / 3))
    assert metrics.mae(np.array([1, 2, 3]), np.array([2, 2, 5])) == pytest.approx(1.0)


def test_hit_rate_and_ndcg():
    ranked = np.array([[5, 3, 9], [1, 2, 4], [7, 8, 6]])
    relevant = [{3}, {9}, {6, 7}]
    hr, ndcg = metrics.hit_rate_and_ndcg(ranked, relevant, k=3)
    assert hr == pytest.approx(2 / 3)
    ideal_two = 1 + 1 / np.log2(3)
    expected = (1 / np.log2(3) + 0 + (1 + 1 / np.log2(4)) / ideal_two) / 3
    assert ndcg == pytest.approx(expected)
