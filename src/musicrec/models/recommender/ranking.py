"""Ranking the catalogue for a user, and HR@10 / NDCG@10 of the DNN beside MostPop on the test split.

Fixed by the evaluation protocol (docs/architecture.md): a test item rated at least :data:`RELEVANT_RATING` is
a hit, the cut-off is :data:`TOP_K`, and items the user reviewed in train are never recommended.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from musicrec import features, metrics, schema
from musicrec.models.recommender.classic import Catalogue, Scorer, item_knn, pick_ease
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


def relevant_items(table: dict[str, np.ndarray], n_known_users: int, n_known_items: int) -> dict[int, set[int]]:
    """Each known user's relevant items of a split: catalogue items they rated at least :data:`RELEVANT_RATING`."""
    relevant: dict[int, set[int]] = {}
    liked = (table["rating"] >= RELEVANT_RATING) & (table[features.USER_INDEX] < n_known_users)
    liked &= table[features.ITEM_INDEX] < n_known_items  # only catalogue items can be recommended
    for user, item in zip(table[features.USER_INDEX][liked], table[features.ITEM_INDEX][liked], strict=True):
        relevant.setdefault(int(user), set()).add(int(item))
    return relevant


def sampled_users(relevant: dict[int, set[int]], limit: int, seed: int) -> np.ndarray:
    """At most ``limit`` of the users with relevant items, drawn with ``seed``, in index order."""
    users = np.array(sorted(relevant), dtype=np.int64)
    if len(users) > limit:
        users = np.sort(np.random.default_rng(seed).choice(users, limit, replace=False))
    return users


def hit_rate_and_ndcg(scorer: Scorer, history: History, users: np.ndarray, relevant: dict[int, set[int]],
                      n_known_items: int) -> dict[str, float]:  # fmt: skip
    """HR@10 and NDCG@10 of ranking, for each of ``users``, the catalogue items they did not review in train."""
    if not len(users):
        return {"hr@10": 0.0, "ndcg@10": 0.0}
    chunk = max(1, 524_288 // max(n_known_items, 1))  # users scored at once, bounded memory
    ranked = []
    for start in range(0, len(users), chunk):
        block = users[start : start + chunk]
        for user, scores in zip(block, scorer(block)[:, :n_known_items], strict=True):
            ranked.append(top_items(scores, history.train_items(int(user)), TOP_K))
    hr, ndcg = metrics.hit_rate_and_ndcg(np.array(ranked), [relevant[int(u)] for u in users], TOP_K)
    return {"hr@10": round(hr, 4), "ndcg@10": round(ndcg, 4)}


def evaluate_ranking(
    model: keras.Model, history: History, tables: dict[str, dict[str, np.ndarray]], n_known_users: int,
    n_known_items: int, settings: RatingSettings,
) -> dict[str, Any]:  # fmt: skip
    """HR@10 and NDCG@10 of the interaction head beside MostPop, item-kNN and EASE^R on the test split.

    Each sampled user (seeded, at most ``settings.ranking_users`` with a relevant test item) gets every catalogue
    item they have not reviewed in train ranked. EASE^R's lambda is picked the same way on the eval split.
    """
    popularity = history.item_count[:n_known_items].astype(np.float64)
    catalogue = Catalogue.of(history, n_known_items)
    gram = catalogue.co_reviews()

    def on(split: str, seed: int) -> Callable[[Scorer], dict[str, float]]:
        relevant = relevant_items(tables[split], n_known_users, n_known_items)
        users = sampled_users(relevant, settings.ranking_users, seed)
        return lambda scorer: hit_rate_and_ndcg(scorer, history, users, relevant, n_known_items) | {
            "users": int(len(users))}  # fmt: skip

    on_eval, on_test = on(schema.EVAL, settings.seed + 1), on(schema.TEST, settings.seed)
    ease_scorer, ease_lambda = pick_ease(catalogue, gram, popularity, lambda s: on_eval(s)["ndcg@10"])
    logger.info("ranking the catalogue for up to %d test users", settings.ranking_users)
    ours = on_test(lambda users: score_all_items(model, history, users, n_known_items)[0])
    baselines = {
        "mostpop": on_test(lambda users: np.tile(popularity, (len(users), 1))),
        "itemknn": on_test(item_knn(catalogue, gram, popularity)),
        "ease": on_test(ease_scorer),
    }
    users = ours.pop("users")
    return {
        "users": users,
        "test": ours,
        "baselines": {
            name: {k: v for k, v in result.items() if k != "users"} for name, result in baselines.items()
        },
        "baseline_settings": {"ease": {"lambda": ease_lambda}, "classic_items": int(len(catalogue.items))},
    }
