"""Classic recommender baselines fitted on train only, reported beside the DNN: they are the bar it must clear.

* **Biased matrix factorization** (rating): global mean + user bias + item bias + a dot product of user and item
  factors, fitted by Adam on the train ratings with L2 on every factor and bias; the number of factors and the
  L2 weight are picked on the eval split's RMSE.
* **Item-kNN** (ranking): a user's score for an item is the sum of its cosine similarities (over train
  co-reviews) to the items the user reviewed.
* **EASE^R** (ranking; Steck, 2019): the closed-form item-item weights ``B = I - P / diag(P)`` with
  ``P = (X'X + lambda I)^-1``, zero diagonal; lambda is picked on the eval split's NDCG@10.

Item-kNN and EASE^R work on the :data:`CLASSIC_ITEMS` most reviewed train items (EASE^R inverts an items x items
matrix); the rest of the catalogue follows them in MostPop order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np

from musicrec import metrics
from musicrec.models.recommender.embeddings import LazyAdam, id_embedding
from musicrec.models.recommender.history import History
from musicrec.models.training import EarlyStoppingPerOutput, steps_per_epoch

logger = logging.getLogger(__name__)

CLASSIC_ITEMS = 4_096  # an EASE^R fit inverts a matrix of this side: about 2 s on 2 cores
EASE_LAMBDAS = (20.0, 100.0, 500.0, 2_500.0)
MF_FACTORS = (8, 32)
MF_L2 = (1e-5, 1e-4)
MF_EPOCHS, MF_PATIENCE, MF_BATCH, MF_LEARNING_RATE = 30, 2, 1_024, 5e-3
_PAIR_BLOCK = 20_000_000  # co-review pairs counted at once (two int64 arrays of this length)

Scorer = Callable[[np.ndarray], np.ndarray]  # user indices -> scores, one row of every catalogue item per user


@dataclass(frozen=True)
class Catalogue:
    """The items item-kNN and EASE^R score, and each user's train items among them as a sparse 0/1 row (CSR)."""

    items: np.ndarray  # catalogue item indices, most reviewed first
    position: np.ndarray  # per item index: its column among ``items``, or -1
    indptr: np.ndarray
    columns: np.ndarray

    @classmethod
    def of(cls, history: History, n_known_items: int, size: int = CLASSIC_ITEMS) -> Catalogue:
        """The ``size`` most reviewed train items and every user's train reviews among them."""
        popularity = history.item_count[:n_known_items]
        items = np.argsort(-popularity, kind="stable")[: min(size, int((popularity > 0).sum()))]
        position = np.full(len(history.item_count), -1, np.int64)
        position[items] = np.arange(len(items))
        columns = position[history.user_items]
        kept = columns >= 0
        owners = np.repeat(np.arange(len(history.user_items_indptr) - 1), np.diff(history.user_items_indptr))
        # X is 0/1: an item reviewed twice by a user is one entry. (A generated heavy user's 21,533 catalogue
        # reviews of 1,961 items made X'X count 463M pairs for that user alone: 14 GB and 80 s at full scale.)
        cells = np.unique(owners[kept] * len(items) + columns[kept])
        owners, columns = cells // max(len(items), 1), cells % max(len(items), 1)
        indptr = np.concatenate([[0], np.cumsum(np.bincount(owners, minlength=len(history.user_count)))])
        return cls(items, position, indptr, columns)

    def rows(self, users: np.ndarray) -> np.ndarray:
        """Dense 0/1 rows of ``users`` over the catalogue."""
        out = np.zeros((len(users), len(self.items)), np.float32)
        for row, user in enumerate(users):
            out[row, self.columns[self.indptr[user] : self.indptr[user + 1]]] = 1.0
        return out

    def co_reviews(self) -> np.ndarray:
        """``X'X``: how many users reviewed both of two catalogue items (the diagonal: each item's count)."""
        size = len(self.items)
        degree = np.diff(self.indptr)
        gram = np.zeros(size * size, np.float64)
        users = np.flatnonzero(degree)
        start = 0
        while start < len(users):  # blocks of users whose co-review pairs fit in _PAIR_BLOCK
            budget = np.cumsum(degree[users[start:]].astype(np.int64) ** 2)
            stop = start + max(1, int(np.searchsorted(budget, _PAIR_BLOCK, side="right")))
            block = users[start:stop]
            lengths = degree[block]
            entries = np.concatenate([self.columns[self.indptr[u] : self.indptr[u + 1]] for u in block])
            per_entry = np.repeat(lengths, lengths)  # each entry pairs with every entry of its user
            segment_start = np.repeat(np.cumsum(lengths) - lengths, lengths)
            left = np.repeat(entries, per_entry)
            offsets = np.arange(per_entry.sum()) - np.repeat(np.cumsum(per_entry) - per_entry, per_entry)
            right = entries[np.repeat(segment_start, per_entry) + offsets]
            gram += np.bincount(left * size + right, minlength=size * size)
            start = stop
        return gram.reshape(size, size)


@dataclass(frozen=True)
class ItemItem:
    """Scores from item-item ``weights`` over the catalogue; items outside it rank after it, by popularity."""

    catalogue: Catalogue
    weights: np.ndarray  # catalogue x catalogue, float32
    fallback: np.ndarray  # per catalogue item index: the score of an item outside ``catalogue``

    @classmethod
    def of(cls, catalogue: Catalogue, weights: np.ndarray, popularity: np.ndarray) -> ItemItem:
        """Item-item scores with ``popularity`` (per catalogue item) ordering the items outside ``catalogue``."""
        # Below any catalogue score of a user with history: popularity scaled into [-2, -1].
        fallback = (popularity / max(float(popularity.max(initial=0)), 1.0) - 2.0).astype(np.float32)
        return cls(catalogue, weights, fallback)

    def __call__(self, users: np.ndarray) -> np.ndarray:
        """Scores of every catalogue item for each of ``users``."""
        scores = np.tile(self.fallback, (len(users), 1))
        scores[:, self.catalogue.items] = self.catalogue.rows(users) @ self.weights
        return scores

    def score_pairs(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Scores of ``items`` (users x candidates) for each of ``users``, from the weights they touch only.

        A user's score for an item sums the weights from their reviewed catalogue items: a gather of (history x
        candidates) weights per user, where scoring every item would multiply by the whole weight matrix.
        """
        position = self.catalogue.position[items]
        scores = self.fallback[items].astype(np.float32)
        for row, user in enumerate(users):
            reviewed = self.catalogue.columns[self.catalogue.indptr[user] : self.catalogue.indptr[user + 1]]
            inside = position[row] >= 0
            scores[row, inside] = self.weights[np.ix_(reviewed, position[row, inside])].sum(axis=0)
        return scores


def item_knn(catalogue: Catalogue, gram: np.ndarray, popularity: np.ndarray) -> ItemItem:
    """Item-kNN with cosine similarity over co-reviews (no self-similarity)."""
    norms = np.sqrt(np.maximum(np.diag(gram), 1e-12))
    similarity = (gram / norms[:, None] / norms[None, :]).astype(np.float32)
    np.fill_diagonal(similarity, 0.0)
    return ItemItem.of(catalogue, similarity, popularity)


def ease(catalogue: Catalogue, gram: np.ndarray, popularity: np.ndarray, l2: float) -> ItemItem:
    """EASE^R with regularization ``l2`` (lambda)."""
    inverse = np.linalg.inv(gram + l2 * np.eye(len(gram)))
    weights = (-inverse / np.diag(inverse)[None, :]).astype(np.float32)
    np.fill_diagonal(weights, 0.0)
    return ItemItem.of(catalogue, weights, popularity)


def pick_ease(catalogue: Catalogue, gram: np.ndarray, popularity: np.ndarray,
              eval_ndcg: Callable[[Scorer], float]) -> tuple[ItemItem, float]:  # fmt: skip
    """EASE^R with the lambda of :data:`EASE_LAMBDAS` that gives the best eval NDCG@10, and that lambda."""
    tried = {l2: ease(catalogue, gram, popularity, l2) for l2 in EASE_LAMBDAS}
    ndcg = {l2: eval_ndcg(scorer) for l2, scorer in tried.items()}
    best = max(ndcg, key=lambda l2: (ndcg[l2], -l2))
    logger.info("EASE^R eval NDCG@10 by lambda: %s; chose %g", ndcg, best)
    return tried[best], best


def _mf_head(user: keras.KerasTensor, item: keras.KerasTensor, n_users: int, n_items: int, factors: int,
             l2: float, global_mean: float, name: str) -> keras.KerasTensor:  # fmt: skip
    small = keras.initializers.RandomNormal(stddev=0.01)

    def embed(
        index: keras.KerasTensor, rows: int, width: int, initializer: object, part: str
    ) -> keras.KerasTensor:
        return id_embedding(rows, width, l2, f"{name}_{part}", initializer)(index)

    dot = keras.ops.sum(embed(user, n_users, factors, small, "user_factors")
                        * embed(item, n_items, factors, small, "item_factors"), axis=-1)  # fmt: skip
    biases = (
        embed(user, n_users, 1, "zeros", "user_bias")[..., 0]
        + embed(item, n_items, 1, "zeros", "item_bias")[..., 0]
    )
    return dot + biases + global_mean


def _mf_grid_model(
    n_users: int, n_items: int, global_mean: float
) -> tuple[keras.Model, dict[str, dict[str, float]]]:
    """Every biased MF of the grid (``MF_FACTORS`` x ``MF_L2``) as one model, an output each sharing no weight.

    Returns:
        The model and, per output name, its ``factors`` and ``l2``.
    """
    user = keras.Input(shape=(), dtype="int64", name="user")
    item = keras.Input(shape=(), dtype="int64", name="item")
    grid = {f"mf_{factors}_{l2:g}": {"factors": factors, "l2": l2} for factors in MF_FACTORS for l2 in MF_L2}
    outputs = {name: _mf_head(user, item, n_users, n_items, point["factors"], point["l2"], global_mean, name)
               for name, point in grid.items()}  # fmt: skip
    return keras.Model({"user": user, "item": item}, outputs, name="biased_mf_grid"), grid


def biased_mf(
    train: tuple[np.ndarray, np.ndarray, np.ndarray], valid: tuple[np.ndarray, np.ndarray, np.ndarray],
    n_users: int, n_items: int, seed: int, epoch_examples: int = 0,
) -> tuple[Callable[[np.ndarray, np.ndarray], np.ndarray], dict[str, float]]:  # fmt: skip
    """Biased MF fitted on ``train`` (users, items, ratings), factors and L2 picked on ``valid``'s RMSE.

    The grid's models train side by side in one model (one pass over the batches feeds all of them), each with
    its own early stopping. ``epoch_examples`` bounds an epoch as for the DNN
    (:func:`~musicrec.models.training.steps_per_epoch`).

    Returns:
        A predictor of (users, items) -> ratings clipped to 1..5, and the chosen ``factors`` and ``l2``.
    """
    users, items, ratings = train
    keras.utils.set_random_seed(seed)
    model, grid = _mf_grid_model(n_users, n_items, float(ratings.mean()))
    targets = {name: ratings.astype(np.float32) for name in grid}
    model.compile(optimizer=LazyAdam(MF_LEARNING_RATE), loss={name: "mse" for name in grid})
    model.fit({"user": users, "item": items}, targets, batch_size=MF_BATCH, epochs=MF_EPOCHS, shuffle=True,
              verbose=0, steps_per_epoch=steps_per_epoch(len(ratings), MF_BATCH, epoch_examples),
              validation_data=({"user": valid[0], "item": valid[1]}, {name: valid[2].astype(np.float32)
                                                                       for name in grid}),
              callbacks=[EarlyStoppingPerOutput(list(grid), MF_PATIENCE)])  # fmt: skip

    def predict_all(pair_users: np.ndarray, pair_items: np.ndarray) -> dict[str, np.ndarray]:
        out = model.predict({"user": pair_users, "item": pair_items}, batch_size=65_536, verbose=0)
        return {name: np.clip(values, 1, 5).reshape(-1) for name, values in out.items()}

    rmse = {name: metrics.rmse(valid[2], predicted) for name, predicted in predict_all(valid[0], valid[1]).items()}
    for name, point in grid.items():
        logger.info("biased MF, %d factors, L2 %g: eval RMSE %.4f", point["factors"], point["l2"], rmse[name])
    chosen = min(grid, key=lambda name: rmse[name])

    def predict(pair_users: np.ndarray, pair_items: np.ndarray) -> np.ndarray:
        return predict_all(pair_users, pair_items)[chosen]

    return predict, grid[chosen]
