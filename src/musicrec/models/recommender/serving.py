"""The recommender as served: a self-contained SavedModel signature, and ``musicrec recommend``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from musicrec import features
from musicrec.models import bundles
from musicrec.models.recommender.history import BIAS_INPUT, HISTORY_INPUT, item_sides, user_sides
from musicrec.models.recommender.network import INTERACTION_OUTPUT, RATING_OUTPUT
from musicrec.models.recommender.ranking import TOP_K
from musicrec.models.recommender.rerank import Ranker

SERVING_INPUTS = ("user_id", "item_id")  # the raw reviewerID and asin a client sends
RECOMMEND_SIGNATURE = "recommend"  # user_id and k in; item_ids, scores, ratings, count, personalized out


def export_serving_model(ranker: Ranker, users: list[str], items: list[str], out_dir: Path) -> None:
    """Write a SavedModel that serves the recommender with no Python beside it (TF Serving, KServe).

    ``serving_default`` takes raw ``user_id`` / ``item_id`` strings, looks them up in the train vocabularies
    (unseen ids get the out-of-vocabulary index), gathers each side's train-history features, builds the pair
    features exactly as :func:`pair_inputs` does outside train, and returns both heads: ``rating`` and
    ``interaction``. ``recommend`` takes ``user_id`` and ``k`` and ranks as :class:`Ranker` does: the two-tower
    candidates re-ranked by the blend, never an item the user reviewed in train (``count`` says how many are
    real when fewer are left); users without train history get the most popular items, ``personalized`` false.
    """
    import tensorflow as tf

    model, history, ease = ranker.model, ranker.history, ranker.ease

    n_users, n_items = len(history.user_count), len(history.item_count)
    n_known_items = len(items)  # the catalogue: every item but the out-of-vocabulary index
    # Outside train, each half of a pair's features depends on its side alone: precompute both halves.
    code_width = history.user_code_sum.shape[1]
    user_block, user_taste = user_sides(history, np.arange(n_users), np.zeros(n_users, np.int64))
    item_block = item_sides(history, np.arange(n_items))

    class RecommenderServer(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.user_block = tf.Variable(user_block, trainable=False)
            self.item_block = tf.Variable(item_block, trainable=False)
            self.user_taste = tf.Variable(user_taste, trainable=False)
            self.user_bias = tf.Variable(history.user_bias.astype(np.float32), trainable=False)
            self.item_bias = tf.Variable(history.item_bias.astype(np.float32), trainable=False)
            self.global_mean = tf.constant(history.global_mean, tf.float32)
            self.user_table = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(users, tf.range(len(users), dtype=tf.int64)), n_users - 1
            )
            self.item_table = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(items, tf.range(len(items), dtype=tf.int64)), n_items - 1
            )
            self.item_ids = tf.constant(items)
            self.popularity = tf.constant(ranker.popularity)
            self.user_vectors = tf.Variable(ranker.user_vectors, trainable=False)
            self.item_vectors = tf.Variable(ranker.item_vectors, trainable=False)
            self.ease_weights = tf.Variable(ease.weights, trainable=False)
            self.ease_position = tf.constant(ease.catalogue.position, tf.int64)
            self.ease_fallback = tf.constant(ease.fallback)
            self.blend = tf.constant(ranker.weights, tf.float32)
            self.train_items = tf.RaggedTensor.from_row_splits(
                tf.constant(history.user_items, tf.int64), tf.constant(history.user_items_indptr, tf.int64)
            )

        def _predict(self, user: tf.Tensor, item: tf.Tensor) -> dict[str, tf.Tensor]:
            user_side, item_side = tf.gather(self.user_block, user), tf.gather(self.item_block, item)
            user_code, item_code = user_side[:, :code_width], item_side[:, :code_width]
            norms = tf.norm(user_code, axis=1) * tf.norm(item_code, axis=1)
            cosine = tf.reduce_sum(user_code * item_code, axis=1) / tf.maximum(norms, 1e-9)
            taste = tf.gather(self.user_taste, user) * item_code
            pair = tf.concat([user_side, item_side, user_code * item_code, cosine[:, None], taste,
                              tf.reduce_sum(taste, axis=1, keepdims=True)], axis=1)  # fmt: skip
            bias = self.global_mean + tf.gather(self.user_bias, user) + tf.gather(self.item_bias, item)
            predicted = self.model({features.USER_INDEX: user, features.ITEM_INDEX: item, HISTORY_INPUT: pair,
                                    BIAS_INPUT: bias[:, None]}, training=False)  # fmt: skip
            return {name: tf.reshape(tf.cast(predicted[name], tf.float32), [-1])
                    for name in (RATING_OUTPUT, INTERACTION_OUTPUT)}  # fmt: skip

        def serve(self, user_id: tf.Tensor, item_id: tf.Tensor) -> dict[str, tf.Tensor]:
            return self._predict(self.user_table.lookup(user_id), self.item_table.lookup(item_id))

        def _ease(self, seen: tf.RaggedTensor, candidates: tf.Tensor) -> tf.Tensor:
            """EASE^R's scores of ``candidates`` (users x candidates) from each user's reviewed catalogue items."""
            position = tf.gather(self.ease_position, seen.flat_values)
            inside = position >= 0
            rows = tf.scatter_nd(  # 0/1 rows, as in Catalogue: an item reviewed twice is one entry
                tf.stack([tf.boolean_mask(tf.cast(seen.value_rowids(), tf.int64), inside),
                          tf.boolean_mask(position, inside)], axis=1),
                tf.ones([tf.reduce_sum(tf.cast(inside, tf.int32))]),
                tf.stack([seen.nrows(), tf.cast(tf.shape(self.ease_weights)[0], tf.int64)]),
            )  # fmt: skip
            rows = tf.minimum(rows, 1.0)
            columns = tf.gather(self.ease_position, candidates)
            scores = tf.gather(tf.matmul(rows, self.ease_weights), tf.maximum(columns, 0), batch_dims=1)
            return tf.where(columns >= 0, scores, tf.gather(self.ease_fallback, candidates))

        def recommend(self, user_id: tf.Tensor, k: tf.Tensor) -> dict[str, tf.Tensor]:
            user = self.user_table.lookup(user_id)
            batch = tf.shape(user)[0]
            personalized = user < n_users - 1
            # Retrieval: one matrix product; users without train history get the most popular items.
            score = tf.matmul(tf.gather(self.user_vectors, user), self.item_vectors, transpose_b=True)
            score = tf.where(personalized[:, None], score, tf.broadcast_to(self.popularity, tf.shape(score)))
            seen = tf.gather(self.train_items, user)
            excluded = tf.stack([tf.cast(seen.value_rowids(), tf.int64), seen.flat_values], axis=1)
            score = tf.tensor_scatter_nd_update(score, excluded, tf.fill([tf.shape(excluded)[0]], -np.inf))
            retrieved = tf.math.top_k(score, k=tf.minimum(tf.maximum(k, ranker.candidates), n_known_items))
            valid = retrieved.values > -np.inf
            candidates = tf.where(valid, tf.cast(retrieved.indices, tf.int64), 0)
            # Re-ranking the candidates only: the blend of standardized scores (rerank.standardize).
            width = tf.shape(candidates)[1]
            predicted = self._predict(tf.repeat(user, width), tf.reshape(candidates, [-1]))
            rating = tf.reshape(predicted[RATING_OUTPUT], [batch, width])
            mask = tf.cast(valid, tf.float32)
            count = tf.maximum(tf.reduce_sum(mask, axis=1, keepdims=True), 1.0)

            def standardized(values: tf.Tensor) -> tf.Tensor:
                kept = tf.where(valid, values, 0.0)
                mean = tf.reduce_sum(kept, axis=1, keepdims=True) / count
                spread = tf.sqrt(tf.reduce_sum(tf.where(valid, (values - mean) ** 2, 0.0), axis=1, keepdims=True)
                                 / count)  # fmt: skip
                return tf.where(valid, (kept - mean) / (spread + 1e-6), 0.0)

            parts = (retrieved.values, self._ease(seen, candidates),
                     tf.reshape(predicted[INTERACTION_OUTPUT], [batch, width]))  # fmt: skip
            blended = tf.add_n([self.blend[i] * standardized(part) for i, part in enumerate(parts)])
            final = tf.where(valid, tf.where(personalized[:, None], blended, retrieved.values), -np.inf)
            top = tf.math.top_k(final, k=tf.minimum(k, width))
            found = top.values > -np.inf
            chosen = tf.gather(candidates, top.indices, batch_dims=1)
            return {
                "item_ids": tf.where(found, tf.gather(self.item_ids, chosen), ""),
                "scores": top.values,
                "ratings": tf.gather(rating, top.indices, batch_dims=1),
                "count": tf.reduce_sum(tf.cast(found, tf.int32), axis=1),
                "personalized": personalized,
            }

    server = RecommenderServer()
    # Keras's export archive, which TF1-style loaders (TF Serving, `saved_model_cli run`) read too.
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.track(server)
    archive.add_endpoint("serving_default", server.serve,
                         [tf.TensorSpec([None], tf.string, name=name) for name in SERVING_INPUTS])  # fmt: skip
    user_and_k = [tf.TensorSpec([None], tf.string, name="user_id"), tf.TensorSpec([], tf.int32, name="k")]
    archive.add_endpoint(RECOMMEND_SIGNATURE, server.recommend, user_and_k)
    archive.write_out(str(out_dir), verbose=False)


@dataclass(frozen=True)
class Recommendations:
    """A user's top items: (asin, predicted rating) best first, and whether they are personal (not MostPop)."""

    items: list[tuple[str, float]]
    personalized: bool


def recommend(model_dir: str | Path, user_id: str, k: int = TOP_K) -> Recommendations:
    """The top ``k`` items for a user through the SavedModel's ``recommend`` signature, as a client would.

    Known users get the catalogue ranked as the report's HR@10 / NDCG@10 measure it
    (:class:`~musicrec.models.recommender.rerank.Ranker`), users without train history the most popular items;
    nobody gets an item they reviewed in train, so fewer than ``k`` come back when fewer are left. ``model_dir`` is
    train_dnn's model or a pushed ``recommender`` version.

    Raises:
        ModelLoadError: ``model_dir`` holds no recommender SavedModel with a ``recommend`` signature.
    """
    import tensorflow as tf

    (serve,) = bundles.load_signatures(model_dir, RECOMMEND_SIGNATURE)
    out = serve(user_id=tf.constant([user_id]), k=tf.constant(k, tf.int32))
    count = int(out["count"][0])
    items = [item.decode() for item in out["item_ids"][0].numpy()[:count]]
    ratings = out["ratings"][0].numpy()[:count]
    return Recommendations([(item, round(float(r), 3)) for item, r in zip(items, ratings, strict=True)],
                           bool(out["personalized"][0]))  # fmt: skip
