"""The recommender's ranking: two-tower retrieval of candidates, then a blend re-ranks them.

For each user the two-tower model retrieves the ``retrieval_candidates`` best catalogue items by dot product
(never one reviewed in train; more when more are asked for). Only those candidates are scored further, by
EASE^R (the classic item-item model) and the DNN's interaction head; each of the three scores is standardized
over the user's candidates and the final score is their weighted sum, the weights picked on the eval split's
NDCG@10 from a grid (weights in steps of :data:`BLEND_STEP` summing to 1). The rating head predicts the rating
of what is recommended. Users without train history get the most popular items.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import keras
import numpy as np

from musicrec.models.recommender.classic import Catalogue, ItemItem
from musicrec.models.recommender.history import History, pair_inputs
from musicrec.models.recommender.network import INTERACTION_OUTPUT, RATING_OUTPUT
from musicrec.models.recommender.retrieval import retrieve, top_by_score

BLEND_FEATURES = ("two_tower", "ease", "interaction")
BLEND_STEP = 0.25
_PAIRS_AT_ONCE = 1 << 18  # candidate pairs through the DNN at once


def blend_grid() -> list[tuple[float, ...]]:
    """Every weighting of :data:`BLEND_FEATURES` in steps of :data:`BLEND_STEP` that sums to 1."""
    steps = round(1 / BLEND_STEP)
    return [tuple(n * BLEND_STEP for n in counts)
            for counts in itertools.product(range(steps + 1), repeat=len(BLEND_FEATURES))
            if sum(counts) == steps]  # fmt: skip


@dataclass(frozen=True)
class Candidates:
    """Each user's retrieved items and their standardized scores, before the blend."""

    items: np.ndarray  # users x candidates
    valid: np.ndarray  # whether a slot holds an item (fewer are left when the user reviewed most of the catalogue)
    personalized: np.ndarray  # per user: has train history (else the candidates are the most popular items)
    retrieval: np.ndarray  # the two-tower score (popularity for users without history)
    standardized: np.ndarray  # users x candidates x BLEND_FEATURES, each z-scored over the user's valid slots
    rating: np.ndarray  # the rating head's prediction


def standardize(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Each row's values minus its mean over ``valid`` slots, over their standard deviation (0 where invalid)."""
    count = np.maximum(valid.sum(axis=1, keepdims=True), 1)
    kept = np.where(valid, values, 0.0)
    mean = kept.sum(axis=1, keepdims=True) / count
    spread = np.sqrt(np.where(valid, (values - mean) ** 2, 0.0).sum(axis=1, keepdims=True) / count)
    return np.where(valid, (kept - mean) / (spread + 1e-6), 0.0).astype(np.float32)


@dataclass(frozen=True)
class Ranker:
    """Everything the ranking reads: train history, tower vectors, EASE^R, the two-head DNN and blend weights."""

    history: History
    user_vectors: np.ndarray
    item_vectors: np.ndarray
    ease: ItemItem
    model: keras.Model
    candidates: int
    weights: tuple[float, ...] = (1.0, 0.0, 0.0)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """What a recommender bundle stores of the ranker (the model and history are stored apart)."""
        return {"user_vectors": self.user_vectors, "item_vectors": self.item_vectors,
                "ease_weights": self.ease.weights, "candidates": np.array(self.candidates),
                "weights": np.array(self.weights)}  # fmt: skip

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], history: History, model: keras.Model) -> Ranker:
        """Read what :meth:`to_arrays` gave, beside the history and model it was trained with."""
        n_known_items = len(arrays["item_vectors"])
        catalogue = Catalogue.of(history, n_known_items)
        popularity = history.item_count[:n_known_items].astype(np.float64)
        ease = ItemItem.of(catalogue, arrays["ease_weights"], popularity)
        return cls(history, arrays["user_vectors"], arrays["item_vectors"], ease, model, int(arrays["candidates"]),
                   tuple(float(w) for w in arrays["weights"]))  # fmt: skip

    @property
    def popularity(self) -> np.ndarray:
        """Train reviews of each catalogue item (what users without history are ranked by)."""
        return self.history.item_count[: len(self.item_vectors)].astype(np.float32)

    def retrieve(self, users: np.ndarray, k: int = 0) -> Candidates:
        """Each user's candidates (at least ``k``), scored by each blend feature and the rating head."""
        users = np.asarray(users, np.int64)
        items, retrieval = retrieve(self.history, self.user_vectors, self.item_vectors, self.popularity, users,
                                    max(self.candidates, k))  # fmt: skip
        valid = np.isfinite(retrieval)
        items = np.where(valid, items, 0)
        pair_users = np.repeat(users, items.shape[1])
        interaction, rating = np.zeros(items.size, np.float32), np.zeros(items.size, np.float32)
        for start in range(0, items.size, _PAIRS_AT_ONCE):
            part = slice(start, start + _PAIRS_AT_ONCE)
            predicted = self.model.predict(pair_inputs(self.history, pair_users[part], items.ravel()[part]),
                                           batch_size=65_536, verbose=0)  # fmt: skip
            interaction[part] = predicted[INTERACTION_OUTPUT].reshape(-1)
            rating[part] = predicted[RATING_OUTPUT].reshape(-1)
        scores = (retrieval, self.ease.score_pairs(users, items), interaction.reshape(items.shape))
        standardized = np.stack([standardize(s, valid) for s in scores], axis=-1)
        personalized = users < len(self.history.user_count) - 1
        return Candidates(items, valid, personalized, np.where(valid, retrieval, -np.inf), standardized,
                          rating.reshape(items.shape))  # fmt: skip

    def top(self, found: Candidates, k: int, weights: tuple[float, ...] | None = None) -> tuple[np.ndarray, ...]:
        """Each user's ``k`` best candidates by the blend: (item indices, -1 where none is left; scores; ratings).

        Users without history keep the popularity order of their candidates.
        """
        blended = found.standardized @ np.asarray(weights or self.weights, np.float32)
        score = np.where(found.personalized[:, None], blended, found.retrieval)
        score = np.where(found.valid, score, -np.inf)
        order, values = top_by_score(score, k)
        items = np.where(np.isfinite(values), np.take_along_axis(found.items, order, axis=1), -1)
        return items, values, np.take_along_axis(found.rating, order, axis=1)
