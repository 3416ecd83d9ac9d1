"""The recommender as served: a self-contained SavedModel signature, and ``musicrec recommend``."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from musicrec import features
from musicrec.errors import UnknownUserError
from musicrec.models import bundles
from musicrec.models.recommender.history import BIAS_INPUT, HISTORY_INPUT, History, item_sides, user_sides
from musicrec.models.recommender.network import INTERACTION_OUTPUT, RATING_OUTPUT
from musicrec.models.recommender.ranking import TOP_K, score_all_items, top_items

SERVING_INPUTS = ("user_id", "item_id")  # the raw reviewerID and asin a client sends


def export_serving_model(
    model: keras.Model, history: History, users: list[str], items: list[str], out_dir: Path
) -> None:
    """Write a SavedModel whose ``serving_default`` takes raw ``user_id`` / ``item_id`` strings.

    It looks the ids up in the train vocabularies (unseen ids get the out-of-vocabulary index), gathers each
    side's train-history features, builds the pair features exactly as :func:`pair_inputs` does outside train,
    and returns both heads: ``rating`` and ``interaction`` (the ranking score). So TF Serving / KServe serve
    the recommender with no Python beside it.
    """
    import tensorflow as tf

    n_users, n_items = len(history.user_count), len(history.item_count)
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

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=name) for name in SERVING_INPUTS])
        def serve(self, user_id: tf.Tensor, item_id: tf.Tensor) -> dict[str, tf.Tensor]:
            user, item = self.user_table.lookup(user_id), self.item_table.lookup(item_id)
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

    server = RecommenderServer()
    tf.saved_model.save(server, str(out_dir), signatures={"serving_default": server.serve.get_concrete_function()})


def recommend(model_dir: str | Path, user_id: str, k: int = TOP_K) -> list[tuple[str, float]]:
    """The top ``k`` (asin, predicted rating) for a train user, over items they have not reviewed.

    Ranked by :func:`ranking_score`, as the report's HR@10 / NDCG@10 are. ``model_dir`` is train_dnn's model
    directory or a pushed ``recommender`` version (push copies it as it is).

    Raises:
        UnknownUserError: the user has no train history (cold start is not served by this model).
        ModelLoadError: ``model_dir`` is not a recommender bundle.
    """
    bundle = bundles.load_recommender(model_dir)
    if user_id not in bundle.users:
        raise UnknownUserError(f"user {user_id} has no train history in {model_dir}")
    user = bundle.users.index(user_id)
    history = History.from_arrays(bundle.history)
    scores, ratings = score_all_items(bundle.model, history, np.array([user]), len(bundle.items))
    top = top_items(scores[0], history.train_items(user), k)
    return [(bundle.items[i], round(float(ratings[0, i]), 3)) for i in top]
