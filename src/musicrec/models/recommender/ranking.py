"""Ranking the catalogue for a user, and HR@10 / NDCG@10 of the DNN beside MostPop on the test split.

Fixed by the evaluation protocol (docs/architecture.md): a test item rated at least :data:`RELEVANT_RATING` is
a hit, the cut-off is :data:`TOP_K`, and items the user reviewed in train are never recommended.
"""

from __future__ import annotations

import logging
from typing import Any

import keras
import numpy as np

from musicrec import features, metrics
from musicrec.models.recommender.history import (
    BIAS_INPUT,
    HISTORY_INPUT,
    History,
    bias_inputs,
    combine_sides,
    item_sides,
    user_sides,
)
from musicrec.models.recommender.network import INTERACTION_OUTPUT, RATING_OUTPUT
from musicrec.progress import Progress
from musicrec.settings import RatingSettings

logger = logging.getLogger(__name__)


RELEVANT_RATING = 4
TOP_K = 10


def ranking_score(predicted: dict[str, np.ndarray]) -> np.ndarray:
    """What recommendations rank by: the interaction head's probability that the user reviews the item.

    Not the predicted rating: ranking by it surfaces niche items nobody reviews (NDCG@10 of 0 on the sample),
    while 86% of reviews are relevant (rated 4 or 5), so whether a user reviews an item decides the hits.
    """
    return np.asarray(predicted[INTERACTION_OUTPUT], np.float64).reshape(-1)


def all_items_inputs(history: History, users: np.ndarray, n_known_items: int) -> dict[str, np.ndarray]:
    """:func:`pair_inputs` of each user in ``users`` with every train item, user by user (outside train).

    Each half is built once and repeated: a pair's features outside train depend on its user and its item
    alone, so this equals ``pair_inputs`` on the same pairs (tested) at a fraction of its cost.
    """
    users = np.asarray(users, np.int64)
    items = np.arange(n_known_items, dtype=np.int64)
    user_side, taste = user_sides(history, users, np.zeros(len(users), np.int64))
    item_side = item_sides(history, items)
    pair_users, pair_items = np.repeat(users, n_known_items), np.tile(items, len(users))
    return {
        features.USER_INDEX: pair_users, features.ITEM_INDEX: pair_items,
        HISTORY_INPUT: combine_sides(np.repeat(user_side, n_known_items, axis=0),
                                     np.repeat(taste, n_known_items, axis=0), np.tile(item_side, (len(users), 1))),
        BIAS_INPUT: bias_inputs(history, pair_users, pair_items),
    }  # fmt: skip


def score_all_items(
    model: keras.Model, history: History, users: np.ndarray, n_known_items: int
) -> tuple[np.ndarray, np.ndarray]:
    """Ranking scores and predicted ratings of each user in ``users`` for every train item, each (users, items)."""
    predicted = model.predict(all_items_inputs(history, users, n_known_items), batch_size=65_536, verbose=0)
    shape = (len(users), n_known_items)
    return ranking_score(predicted).reshape(shape), predicted[RATING_OUTPUT].reshape(shape)


def top_items(scores: np.ndarray, exclude: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest scores, never one of ``exclude`` (ties keep the lower index first)."""
    scores = scores.astype(np.float64)
    scores[exclude] = -np.inf
    return np.argsort(-scores, kind="stable")[:k]


def evaluate_ranking(
    model: keras.Model, history: History, test: dict[str, np.ndarray], n_known_users: int, n_known_items: int,
    settings: RatingSettings,
) -> dict[str, Any]:  # fmt: skip
    """HR@10 and NDCG@10 of the interaction head beside MostPop on the test split.

    Each sampled user (seeded, at most ``settings.ranking_users`` with a relevant test item) gets every catalogue
    item they have not reviewed in train ranked.
    """
    relevant: dict[int, set[int]] = {}
    liked = (test["rating"] >= RELEVANT_RATING) & (test[features.USER_INDEX] < n_known_users)
    liked &= test[features.ITEM_INDEX] < n_known_items  # only catalogue items can be recommended
    for user, item in zip(test[features.USER_INDEX][liked], test[features.ITEM_INDEX][liked], strict=True):
        relevant.setdefault(int(user), set()).add(int(item))
    users = np.array(sorted(relevant), dtype=np.int64)
    rng = np.random.default_rng(settings.seed)
    if len(users) > settings.ranking_users:
        users = np.sort(rng.choice(users, settings.ranking_users, replace=False))
    popularity = history.item_count[:n_known_items]
    ours, popular = [], []
    chunk = max(1, 524_288 // max(n_known_items, 1))  # pairs scored per model call, bounded memory
    progress = Progress(logger, "test users ranked over the catalogue", total=len(users), interval_seconds=30)
    for start in range(0, len(users), chunk):
        block = users[start : start + chunk]
        block_scores, _ = score_all_items(model, history, block, n_known_items)
        for user, scores in zip(block, block_scores, strict=True):
            seen = history.train_items(int(user))
            ours.append(top_items(scores, seen, TOP_K))
            popular.append(top_items(popularity, seen, TOP_K))
        progress.advance(len(block))
    progress.done()
    truth = [relevant[int(u)] for u in users]
    hr, ndcg = metrics.hit_rate_and_ndcg(np.array(ours), truth, TOP_K) if len(users) else (0.0, 0.0)
    pop_hr, pop_ndcg = metrics.hit_rate_and_ndcg(np.array(popular), truth, TOP_K) if len(users) else (0.0, 0.0)
    return {
        "users": int(len(users)),
        "test": {"hr@10": round(hr, 4), "ndcg@10": round(ndcg, 4)},
        "baselines": {"mostpop": {"hr@10": round(pop_hr, 4), "ndcg@10": round(pop_ndcg, 4)}},
    }
