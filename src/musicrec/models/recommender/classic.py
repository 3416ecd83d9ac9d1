"""Classic recommender baselines fitted on train only, reported beside the DNN: they are the bar it must clear.

* **Biased matrix factorization** (rating): global mean + user bias + item bias + a dot product of user and item
  factors, fitted by Adam on the train ratings with L2 on every factor and bias a rating looks up; the L2 weight
  is picked on the eval split's RMSE.
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
from musicrec.models.training import steps_per_epoch

logger = logging.getLogger(__name__)

CLASSIC_ITEMS = 4_096  # an EASE^R fit inverts a matrix of this side: about 2 s on 2 cores
EASE_LAMBDAS = (20.0, 100.0, 500.0, 2_500.0)
# Biased MF's L2 a review, picked on eval: MovieLens 100k chooses 0.3 and the full generated category 0.03 (eval
# RMSE 1.0175 and 1.0189 at 16 factors). 8 and 32 factors did no better on MovieLens and 0.001 to 0.002 worse or
# 2x slower at full scale. Batches of 4,096 at 1e-2 train 3.3x faster than 1,024 at 5e-3 at full scale for 0.002
# of eval RMSE (benchmarks/mf_choices.py; table in the README).
MF_FACTORS = 16
MF_L2 = (0.03, 0.3)
MF_EPOCHS, MF_PATIENCE, MF_BATCH, MF_LEARNING_RATE = 30, 2, 4_096, 1e-2
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


def _mf_model(n_users: int, n_items: int, factors: int, l2: float, global_mean: float) -> keras.Model:
    """Biased MF as a Keras model: (user, item) -> global mean + biases + factor dot product."""
    user = keras.Input(shape=(), dtype="int64", name="user")
    item = keras.Input(shape=(), dtype="int64", name="item")
    small = keras.initializers.RandomNormal(stddev=0.01)

    def embed(index: keras.KerasTensor, rows: int, width: int, initializer: object) -> keras.KerasTensor:
        # ``l2`` is per review, as in classic MF (the penalty of the rows a rating looks up); id_embedding
        # weighs its penalty by table size, which would make the same value 400x stronger at full scale than
        # on MovieLens 100k.
        return id_embedding(rows, width, l2 / rows, initializer=initializer)(index)

    dot = keras.ops.sum(embed(user, n_users, factors, small) * embed(item, n_items, factors, small), axis=-1)
    biases = embed(user, n_users, 1, "zeros")[..., 0] + embed(item, n_items, 1, "zeros")[..., 0]
    return keras.Model({"user": user, "item": item}, dot + biases + global_mean, name="biased_mf")


def _rating_predictor(model: keras.Model) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """(users, items) -> the MF ``model``'s ratings, clipped to 1..5."""

    def predict(users: np.ndarray, items: np.ndarray) -> np.ndarray:
        out = model.predict({"user": users, "item": items}, batch_size=65_536, verbose=0)
        return np.clip(out, 1, 5).reshape(-1)

    return predict


def biased_mf(
    train: tuple[np.ndarray, np.ndarray, np.ndarray], valid: tuple[np.ndarray, np.ndarray, np.ndarray],
    n_users: int, n_items: int, seed: int, epoch_examples: int = 0, factors: int = MF_FACTORS,
    l2_grid: tuple[float, ...] = MF_L2, batch_size: int = MF_BATCH, learning_rate: float = MF_LEARNING_RATE,
) -> tuple[Callable[[np.ndarray, np.ndarray], np.ndarray], dict[str, float]]:  # fmt: skip
    """Biased MF fitted on ``train`` (users, items, ratings), its L2 a review picked from ``l2_grid`` on ``valid``.

    ``epoch_examples`` bounds an epoch as for the DNN (:func:`~musicrec.models.training.steps_per_epoch`); the
    pick is by ``valid``'s RMSE. Adam at ``learning_rate`` on batches of ``batch_size``.

    Returns:
        A predictor of (users, items) -> ratings clipped to 1..5, and the ``factors`` and chosen ``l2``.
    """
    users, items, ratings = train
    global_mean = float(ratings.mean())
    fitted: dict[float, tuple[float, Callable[[np.ndarray, np.ndarray], np.ndarray]]] = {}
    for l2 in l2_grid:
        keras.utils.set_random_seed(seed)
        model = _mf_model(n_users, n_items, factors, l2, global_mean)
        # Early stopping on the eval RMSE: Keras' eval loss adds the L2 penalty, which falls as the factors shrink.
        model.compile(
            optimizer=LazyAdam(learning_rate),
            loss="mse",
            metrics=[keras.metrics.RootMeanSquaredError(name="rmse")],
        )
        model.fit({"user": users, "item": items}, ratings.astype(np.float32), batch_size=batch_size,
                  epochs=MF_EPOCHS, shuffle=True, verbose=0,
                  steps_per_epoch=steps_per_epoch(len(ratings), batch_size, epoch_examples),
                  validation_data=({"user": valid[0], "item": valid[1]}, valid[2].astype(np.float32)),
                  callbacks=[keras.callbacks.EarlyStopping(monitor="val_rmse", patience=MF_PATIENCE,
                                                           restore_best_weights=True)])  # fmt: skip
        predict = _rating_predictor(model)
        fitted[l2] = (metrics.rmse(valid[2], predict(valid[0], valid[1])), predict)
        logger.info("biased MF, %d factors, L2 %g a review: eval RMSE %.4f", factors, l2, fitted[l2][0])
    chosen = min(fitted, key=lambda l2: fitted[l2][0])
    return fitted[chosen][1], {"factors": factors, "l2": chosen}
