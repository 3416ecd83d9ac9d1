"""Retrieval: a two-tower model whose score is a dot product, and the catalogue's top items by it, in chunks.

Each tower reads its side's id embedding beside that side's train-history features (:func:`user_sides` /
:func:`item_sides`: mean review code, sentiment, damped mean rating, review count; the item's metadata). It is
trained on the train split's reviews of catalogue items with in-batch negatives: a softmax over the batch's
items, each logit corrected by the log of how often its item appears in batches (Yi et al., 2019), so the
scores estimate the full softmax over the catalogue rather than favour rare items.
"""

from __future__ import annotations

import logging
from typing import Any

import keras
import numpy as np
from keras import layers, ops, regularizers

from musicrec.models.recommender.embeddings import LazyAdam, id_embedding
from musicrec.models.recommender.history import History, item_sides, user_sides
from musicrec.models.training import curves, steps_per_epoch
from musicrec.settings import RatingSettings

logger = logging.getLogger(__name__)

SCORE_BLOCK = 1 << 24  # scores held at once when ranking (64 MB of float32)
_MASKED = -1e9


def tower_features(history: History, n_known_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Every user's and every catalogue item's train-history features (what the towers read beside the ids)."""
    n_users = len(history.user_count)
    return (
        user_sides(history, np.arange(n_users), np.zeros(n_users, np.int64))[0],
        item_sides(history, np.arange(n_known_items)),
    )


def _frozen_table(values: np.ndarray, name: str) -> layers.Embedding:
    """A lookup of fixed feature rows by index (not trained)."""
    table = layers.Embedding(len(values), values.shape[1], trainable=False, name=name)
    table.build((None,))
    table.set_weights([values.astype(np.float32)])
    return table


def _tower(side: str, rows: int, side_features: np.ndarray, settings: RatingSettings) -> keras.Model:
    """Index in, ``retrieval_dim`` vector out: id embedding beside the normalized history features, two layers.

    L2 on the kernels and on the id rows a batch looks up, weighted by the table's size (:func:`id_embedding`):
    on MovieLens 100k an unweighted per-batch L2 on the vectors overfit within one epoch (eval NDCG@10 0.106 vs
    0.121 with L2 on the whole table, which the weighting matches in expectation).
    """
    l2 = regularizers.L2(settings.retrieval_l2)
    index = keras.Input(shape=(), dtype="int64", name=f"{side}_index")
    embedded = id_embedding(rows, settings.retrieval_dim, settings.retrieval_l2, f"{side}_id")(index)
    looked_up = _frozen_table(side_features, f"{side}_history")(index)
    normalized = layers.BatchNormalization(name=f"{side}_history_norm")(looked_up)
    hidden = layers.Concatenate(name=f"{side}_inputs")([embedded, normalized])
    hidden = layers.Dense(2 * settings.retrieval_dim, activation="relu", kernel_regularizer=l2,
                          name=f"{side}_dense")(hidden)  # fmt: skip
    out = layers.Dense(settings.retrieval_dim, kernel_regularizer=l2, name=f"{side}_vector")(hidden)
    return keras.Model(index, layers.Add(name=f"{side}_sum")([embedded, out]), name=f"{side}_tower")


class InBatchLogits(layers.Layer):
    """Each user's dot product with every item of the batch, minus the item's log sampling probability.

    Another row of the same item is not a negative: its logit is masked.
    """

    def call(self, users: Any, items: Any, item_index: Any, log_q: Any) -> Any:
        """Batch x batch logits of the batch's user and item vectors."""
        logits = ops.matmul(users, ops.transpose(items)) - log_q[None, :]
        same = ops.equal(item_index[:, None], item_index[None, :])
        diagonal = ops.equal(ops.arange(ops.shape(logits)[0])[:, None], ops.arange(ops.shape(logits)[0])[None, :])
        return ops.where(ops.logical_and(same, ops.logical_not(diagonal)), _MASKED, logits)


def _in_batch_softmax(_: Any, logits: Any) -> Any:
    """Cross-entropy of each row's own item (the diagonal) against the batch's other items."""
    labels = ops.arange(ops.shape(logits)[0])
    return keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)


def fit_two_tower(
    history: History, n_known_items: int, train: tuple[np.ndarray, np.ndarray],
    valid: tuple[np.ndarray, np.ndarray], settings: RatingSettings,
) -> tuple[np.ndarray, np.ndarray, dict[str, list[float]]]:  # fmt: skip
    """Train the towers on (user, item) reviews of ``train`` (early stopping on ``valid``'s in-batch loss).

    Returns:
        Every user's vector (the last row: unseen users), every catalogue item's vector, and the loss curves.
    """
    keras.utils.set_random_seed(settings.seed)
    user_features, item_features = tower_features(history, n_known_items)
    user_tower = _tower("user", len(user_features), user_features, settings)
    item_tower = _tower("item", n_known_items, item_features, settings)
    user = keras.Input(shape=(), dtype="int64", name="user")
    item = keras.Input(shape=(), dtype="int64", name="item")
    log_q = keras.Input(shape=(), name="log_q")
    logits = InBatchLogits(name="logits")(user_tower(user), item_tower(item), item, log_q)
    trainer = keras.Model({"user": user, "item": item, "log_q": log_q}, logits, name="two_tower")
    # The loss Keras reports adds the L2 penalty, which outweighs the softmax (132 against about ln(batch size)
    # at full scale) and falls as the weights shrink: early stopping watches the eval softmax alone.
    softmax = keras.metrics.MeanMetricWrapper(_in_batch_softmax, name="softmax")
    trainer.compile(
        optimizer=LazyAdam(settings.retrieval_learning_rate), loss=_in_batch_softmax, metrics=[softmax]
    )
    # An item's chance to be in a batch is its share of the train reviews.
    counts = np.bincount(train[1], minlength=n_known_items).astype(np.float64)
    log_share = np.log(np.maximum(counts, 1.0) / max(counts.sum(), 1.0)).astype(np.float32)

    def inputs(pairs: tuple[np.ndarray, np.ndarray]) -> dict[str, np.ndarray]:
        keep = pairs[1] < n_known_items
        return {"user": pairs[0][keep], "item": pairs[1][keep], "log_q": log_share[pairs[1][keep]]}

    train_inputs, valid_inputs = inputs(train), inputs(valid)
    fit = trainer.fit(
        train_inputs, np.zeros(len(train_inputs["user"]), np.float32), batch_size=settings.retrieval_batch_size,
        epochs=settings.retrieval_epochs, shuffle=True, verbose=0,
        steps_per_epoch=steps_per_epoch(len(train_inputs["user"]), settings.retrieval_batch_size,
                                        settings.epoch_examples),
        validation_data=(valid_inputs, np.zeros(len(valid_inputs["user"]), np.float32)),
        callbacks=[keras.callbacks.EarlyStopping(monitor="val_softmax", mode="min", patience=settings.patience,
                                                 restore_best_weights=True)],
    )  # fmt: skip
    logger.info("two-tower retrieval: %d epochs, eval in-batch softmax loss %.4f", len(fit.history["loss"]),
                min(fit.history["val_softmax"]))  # fmt: skip
    users = user_tower.predict(np.arange(len(user_features)), batch_size=65_536, verbose=0)
    items = item_tower.predict(np.arange(n_known_items), batch_size=65_536, verbose=0)
    return users.astype(np.float32), items.astype(np.float32), curves(fit)


def top_by_score(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` highest scores, best first (ties: the lower index first), and their column indices.

    Linear in the row length (a partition, not a sort); ties at the cut-off keep the lower indices, as
    ``tf.math.top_k`` does, so the SavedModel and this code pick the same items.
    """
    k = min(k, scores.shape[1])
    if k == 0:
        return np.zeros((len(scores), 0), np.int64), np.zeros((len(scores), 0), scores.dtype)
    kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1 : k]
    rows, columns = np.nonzero(scores >= kth)  # the k best and any ties with the k-th: a few per row
    values = scores[rows, columns]
    order = np.lexsort((columns, -values, rows))
    rows, columns, values = rows[order], columns[order], values[order]
    rank = np.arange(len(rows)) - np.searchsorted(rows, rows)  # position within the row, best first
    keep = rank < k
    return columns[keep].reshape(len(scores), k), values[keep].reshape(len(scores), k)


def exclude_train_items(history: History, scores: np.ndarray, users: np.ndarray) -> np.ndarray:
    """``scores`` (a row of catalogue items per user), each user's train items set to ``-inf`` in place."""
    rows = np.repeat(np.arange(len(users)), np.diff(history.user_items_indptr)[users])
    scores[rows, np.concatenate([history.train_items(int(user)) for user in users])] = -np.inf
    return scores


def retrieve(
    history: History, user_vectors: np.ndarray, item_vectors: np.ndarray, popularity: np.ndarray,
    users: np.ndarray, k: int,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Each user's top ``k`` catalogue items by dot product, never one they reviewed in train, in user chunks.

    Unseen users (the last index) get the most popular items instead. A slot with no item left has score
    ``-inf`` (its index is meaningless). Returns (users x k item indices, their scores).
    """
    n_items = len(item_vectors)
    unseen = len(history.user_count) - 1
    chunk = max(1, SCORE_BLOCK // max(n_items, 1))
    found, scored = [np.zeros((0, min(k, n_items)), np.int64)], [np.zeros((0, min(k, n_items)), np.float32)]
    for start in range(0, len(users), chunk):
        block = np.asarray(users[start : start + chunk], np.int64)
        scores = user_vectors[block] @ item_vectors.T
        scores[block == unseen] = popularity
        items, values = top_by_score(exclude_train_items(history, scores, block), k)
        found.append(items)
        scored.append(values)
    return np.concatenate(found), np.concatenate(scored)
