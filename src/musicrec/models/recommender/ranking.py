"""HR@10 / NDCG@10 of the recommender's ranking beside MostPop, item-kNN and EASE^R on the test split.

Fixed by the evaluation protocol (docs/architecture.md): a test item rated at least :data:`RELEVANT_RATING` is
a hit, the cut-off is :data:`TOP_K`, and items the user reviewed in train are never recommended.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import keras
import numpy as np

from musicrec import features, metrics, schema
from musicrec.models.recommender.classic import Catalogue, Scorer, item_knn, pick_ease
from musicrec.models.recommender.history import History
from musicrec.models.recommender.rerank import BLEND_FEATURES, Ranker, blend_grid
from musicrec.models.recommender.retrieval import SCORE_BLOCK, exclude_train_items, top_by_score
from musicrec.settings import RatingSettings

logger = logging.getLogger(__name__)


RELEVANT_RATING = 4
TOP_K = 10


def top_items(scores: np.ndarray, exclude: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest scores, never one of ``exclude`` (ties keep the lower index first)."""
    scores = scores.astype(np.float64)
    scores[exclude] = -np.inf
    return top_by_score(scores[None, :], k)[0][0]


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


def _scores(ranked: np.ndarray, users: np.ndarray, relevant: dict[int, set[int]]) -> dict[str, float]:
    hr, ndcg = metrics.hit_rate_and_ndcg(ranked, [relevant[int(u)] for u in users], TOP_K)
    return {"hr@10": round(hr, 4), "ndcg@10": round(ndcg, 4)}


def hit_rate_and_ndcg(scorer: Scorer, history: History, users: np.ndarray, relevant: dict[int, set[int]],
                      n_known_items: int) -> dict[str, float]:  # fmt: skip
    """HR@10 and NDCG@10 of ranking, for each of ``users``, the catalogue items they did not review in train."""
    if not len(users):
        return {"hr@10": 0.0, "ndcg@10": 0.0}
    chunk = max(1, SCORE_BLOCK // max(n_known_items, 1))  # users scored at once, bounded memory
    ranked = []
    for start in range(0, len(users), chunk):
        block = np.asarray(users[start : start + chunk], np.int64)
        scores = np.array(scorer(block)[:, :n_known_items], np.float32)
        ranked.append(top_by_score(exclude_train_items(history, scores, block), TOP_K)[0])
    return _scores(np.concatenate(ranked), users, relevant)


def evaluate_ranking(
    model: keras.Model, history: History, vectors: tuple[np.ndarray, np.ndarray],
    tables: dict[str, dict[str, np.ndarray]], n_known_users: int, n_known_items: int, settings: RatingSettings,
) -> tuple[dict[str, Any], Ranker]:  # fmt: skip
    """HR@10 and NDCG@10 of the recommender's ranking beside MostPop, item-kNN and EASE^R on the test split.

    Each sampled user (seeded, at most ``settings.ranking_users`` with a relevant test item) gets every catalogue
    item they have not reviewed in train ranked. EASE^R's lambda and the blend weights of the re-ranker
    (:mod:`~musicrec.models.recommender.rerank`) are picked the same way on the eval split, EASE^R first.

    Returns:
        The report's ranking section and the ranker as picked.
    """
    popularity = history.item_count[:n_known_items].astype(np.float64)
    catalogue = Catalogue.of(history, n_known_items)
    gram = catalogue.co_reviews()

    def sample(split: str, seed: int) -> tuple[np.ndarray, dict[int, set[int]]]:
        relevant = relevant_items(tables[split], n_known_users, n_known_items)
        return sampled_users(relevant, settings.ranking_users, seed), relevant

    (eval_users, eval_relevant), (test_users, test_relevant) = sample(schema.EVAL, settings.seed + 1), sample(
        schema.TEST, settings.seed)  # fmt: skip

    def on_test(scorer: Scorer) -> dict[str, float]:
        return hit_rate_and_ndcg(scorer, history, test_users, test_relevant, n_known_items)

    ease_scorer, ease_lambda = pick_ease(
        catalogue, gram, popularity,
        lambda s: hit_rate_and_ndcg(s, history, eval_users, eval_relevant, n_known_items)["ndcg@10"])  # fmt: skip
    ranker = Ranker(history, *vectors, ease_scorer, model, settings.retrieval_candidates)
    if len(eval_users):
        found = ranker.retrieve(eval_users)
        by_blend = {w: _scores(ranker.top(found, TOP_K, w)[0], eval_users, eval_relevant)["ndcg@10"]
                    for w in blend_grid()}  # fmt: skip
        ranker = dataclasses.replace(ranker, weights=max(by_blend, key=lambda w: by_blend[w]))
        logger.info("re-ranking: eval NDCG@10 by blend of %s: %s; chose %s", BLEND_FEATURES, by_blend,
                    ranker.weights)  # fmt: skip
    logger.info("ranking the catalogue for %d test users", len(test_users))
    found = ranker.retrieve(test_users)
    ours = _scores(ranker.top(found, TOP_K)[0], test_users, test_relevant)
    two_tower = _scores(ranker.top(found, TOP_K, (1.0, 0.0, 0.0))[0], test_users, test_relevant)
    baselines = {
        "mostpop": on_test(lambda users: np.tile(popularity, (len(users), 1))),
        "itemknn": on_test(item_knn(catalogue, gram, popularity)),
        "ease": on_test(ease_scorer),
    }
    return {
        "users": int(len(test_users)),
        "test": ours,
        "two_tower": two_tower,
        "baselines": baselines,
        "settings": {
            "candidates": ranker.candidates,
            "blend": dict(zip(BLEND_FEATURES, ranker.weights, strict=True)),
        },  # fmt: skip
        "baseline_settings": {"ease": {"lambda": ease_lambda}, "classic_items": int(len(catalogue.items))},
    }, ranker
