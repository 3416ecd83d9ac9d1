"""Typed shapes of the JSON reports the steps write and read: the contract between training and release.

Each training step writes a report (``report`` artifact); evaluate reads them into a scorecard and writes the
``evaluation`` artifact, which push and the run summary read. Every report is plain JSON; these TypedDicts
name its keys so a change shows in one place. Splits are keyed ``eval`` and ``test`` (:mod:`musicrec.schema`).
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict

Scores = dict[str, float]  # metric name -> value, e.g. {"rmse": 0.97, "mae": 0.65}


class ModelReport(TypedDict):
    """What every training step reports: its settings, eval and test scores beside baselines, curves, time."""

    settings: dict[str, Any]
    eval: dict[str, Any]
    test: dict[str, Any]
    baselines: dict[str, dict[str, Scores]]  # split -> baseline name -> scores
    history: dict[str, list[float]]  # per-epoch training curves
    seconds: float


class SentimentReport(ModelReport):
    """train_cnn's report; ``eval``/``test`` also hold ``confusion_matrix`` and ``roc``."""

    train_examples_per_second: float
    train_text_share: float  # train reviews with any review or summary token; 0 on rating-only data
    token_importance: dict[str, dict[str, list]]
    class_weight: dict[str, float]
    replicas: int  # replicas in sync: 1 on the CPU or one GPU, the GPUs of all workers under several


class AutoencoderReport(ModelReport):
    """train_autoencoder's report; baselines are ``pca``; errors are over the inputs that vary in train."""

    input_width: int
    varying_inputs: int  # input columns not constant in train
    train_text_share: float
    note: NotRequired[str]  # set when the inputs cannot carry a result (no text, nothing varies)


class RankingReport(TypedDict):
    """HR@10 / NDCG@10 of the recommender beside ``mostpop``, ``itemknn`` and ``ease`` on the test split."""

    users: int
    test: Scores
    two_tower: Scores  # the retrieval stage alone, before re-ranking
    settings: dict[str, Any]  # candidates per user and the blend weights (picked on eval)
    baselines: dict[str, Scores]
    baseline_settings: dict[str, Any]  # EASE^R's lambda (picked on eval), the classic methods' catalogue size


class RatingReport(ModelReport):
    """train_dnn's report; baselines are ``global_mean``, ``bias`` and ``mf`` (biased MF, picked on eval)."""

    baseline_settings: dict[str, Any]
    test_by_user: dict[str, dict[str, float]]
    test_error_histogram: dict[str, Any]
    ranking: RankingReport


class ScorecardSection(TypedDict):
    """One task's test scores beside its baselines' test scores."""

    test: Scores
    baselines: dict[str, Scores]


class SentimentSection(ScorecardSection):
    """The sentiment section, with the share of train reviews that have text (0: not gated)."""

    train_text_share: float


class Scorecard(TypedDict):
    """Every model's test scores beside its baselines (the ``summary.json`` layout)."""

    sentiment: SentimentSection
    autoencoder: ScorecardSection
    rating: ScorecardSection
    ranking: RankingReport


class Evaluation(TypedDict):
    """evaluate's ``evaluation`` artifact: the blessing, the scorecard, the run's results and its lineage."""

    id: str
    blessed: bool
    reasons: list[str]
    scorecard: Scorecard
    serving_check: dict[str, float]
    sentiment_test: dict[str, Any]
    gated_metrics: dict[str, float]
    compared_with: dict[str, Any] | None
    settings: dict[str, Any]
    results: dict[str, Any]  # summary.json sections of every step (musicrec.release.summary)
    step_seconds: dict[str, float]
    lineage: dict[str, Any]
    seconds: float
