"""The two-head Keras recommender: a rating head (bias + learned correction) and an interaction head."""

from __future__ import annotations

from typing import Any, NamedTuple

import keras
from keras import layers, regularizers

from musicrec import features
from musicrec.models.recommender.embeddings import id_embedding
from musicrec.models.recommender.history import BIAS_INPUT, HISTORY_INPUT
from musicrec.settings import RatingSettings

RATING_OUTPUT = "rating"
INTERACTION_OUTPUT = "interaction"


class RatingNetworks(NamedTuple):
    """The exported two-head model and the one-head views that train it (they share its layers)."""

    model: keras.Model
    rating: keras.Model
    interaction: keras.Model


def build_rating_model(n_users: int, n_items: int, history_width: int, settings: RatingSettings) -> RatingNetworks:
    """The two-head DNN: id embeddings (and their dot product) beside the history features and bias prediction.

    The rating head adds a learned correction to the bias prediction (starting at zero, so training starts
    from the baseline) and clips to 1..5; the interaction head is a sigmoid. L2 on embeddings and kernels,
    batch normalization and dropout after each dense layer; the heads share no weights.
    """
    l2 = regularizers.L2(settings.l2)
    inputs = {
        features.USER_INDEX: keras.Input(shape=(), dtype="int64", name=features.USER_INDEX),
        features.ITEM_INDEX: keras.Input(shape=(), dtype="int64", name=features.ITEM_INDEX),
        HISTORY_INPUT: keras.Input(shape=(history_width,), name=HISTORY_INPUT),
        BIAS_INPUT: keras.Input(shape=(1,), name=BIAS_INPUT),
    }
    context = layers.Concatenate(name="context")([inputs[HISTORY_INPUT], inputs[BIAS_INPUT]])

    def tower(name: str) -> Any:
        sides = (("user", n_users, features.USER_INDEX), ("item", n_items, features.ITEM_INDEX))
        embed = {
            side: id_embedding(size, settings.id_embedding_dim, settings.l2, f"{name}_{side}")(inputs[index])
            for side, size, index in sides
        }  # fmt: skip
        match = layers.Dot(axes=1, name=f"{name}_match")([embed["user"], embed["item"]])
        normalized = layers.BatchNormalization(name=f"{name}_context_norm")(context)
        hidden = layers.Concatenate(name=f"{name}_features")([embed["user"], embed["item"], match, normalized])
        for i, units in enumerate(settings.hidden_units):
            hidden = layers.Dense(units, activation="relu", kernel_regularizer=l2, name=f"{name}_dense_{i}")(
                hidden
            )
            hidden = layers.BatchNormalization(name=f"{name}_norm_{i}")(hidden)
            hidden = layers.Dropout(settings.dropout, name=f"{name}_dropout_{i}")(hidden)
        return hidden

    correction = layers.Dense(1, kernel_initializer="zeros", name="correction")(tower("rating"))
    raw = layers.Add(name="raw_rating")([inputs[BIAS_INPUT], correction])
    # clip(raw, 1, 5) as layers: shift to 0..4, ReLU capped at 4, shift back.
    unit = layers.ReLU(max_value=4.0, name="clip")(layers.Rescaling(1.0, offset=-1.0, name="shift")(raw))
    rating = layers.Rescaling(1.0, offset=1.0, dtype="float32", name=RATING_OUTPUT)(unit)
    interaction = layers.Dense(1, activation="sigmoid", dtype="float32", name=INTERACTION_OUTPUT)(
        tower(INTERACTION_OUTPUT)
    )
    return RatingNetworks(
        keras.Model(inputs, {RATING_OUTPUT: rating, INTERACTION_OUTPUT: interaction}, name="recommender"),
        keras.Model(inputs, rating, name="rating_head"),
        keras.Model(inputs, interaction, name="interaction_head"),
    )
