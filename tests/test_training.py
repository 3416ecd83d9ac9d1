"""Shared training helpers: how long an epoch is, and a train stream that starts over."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from musicrec import features, schema
from musicrec.models.sentiment import TEXT_INPUTS
from musicrec.models.training import (
    EarlyStoppingPerOutput,
    make_dataset,
    split_files,
    steps_per_epoch,
    transformed_feature_spec,
)


@pytest.mark.parametrize(
    ("rows", "batch", "cap", "steps"),
    [(1_000, 10, 0, None), (1_000, 10, 1_000, None), (1_000, 10, 5_000, None), (1_001, 10, 1_000, 100),
     (1_000_000, 256, 400_000, 1_562), (100, 64, 10, 1)],
)  # fmt: skip
def test_an_epoch_is_a_whole_pass_unless_train_holds_more_than_epoch_examples(rows, batch, cap, steps):
    assert steps_per_epoch(rows, batch, cap) == steps


def test_a_repeated_train_stream_goes_past_one_pass(small_preprocessed):
    spec = transformed_feature_spec(small_preprocessed["graph"])
    files = split_files(small_preprocessed["transformed"], schema.TRAIN)

    def rows(dataset, batches=None):
        return sum(int(labels.shape[0]) for _, labels in (dataset.take(batches) if batches else dataset))

    once = rows(make_dataset(files, spec, TEXT_INPUTS, features.SENTIMENT_LABEL, 64, shuffle_seed=1))
    batches = -(-once // 64) * 2 + 1
    repeated = make_dataset(files, spec, TEXT_INPUTS, features.SENTIMENT_LABEL, 64, shuffle_seed=1, repeat=True)
    assert rows(repeated, batches) == batches * 64 > 2 * once


def test_each_output_keeps_its_own_best_epoch_and_training_stops_when_all_have_stalled():
    user = keras.Input(shape=(1,), name="x")
    outputs = {name: keras.layers.Dense(1, name=f"{name}_dense")(user) for name in ("a", "b")}
    model = keras.Model(user, outputs)
    callback = EarlyStoppingPerOutput(["a", "b"], patience=2)
    callback.set_model(model)
    # a is best at epoch 0, b at epoch 2; each epoch's weights are the epoch's number.
    for epoch, (loss_a, loss_b) in enumerate([(1.0, 3.0), (2.0, 2.0), (3.0, 1.0), (4.0, 1.5), (5.0, 1.6)]):
        for name in ("a", "b"):
            model.get_layer(f"{name}_dense").set_weights([np.full((1, 1), epoch, "f4"), np.zeros(1, "f4")])
        callback.on_epoch_end(epoch, {"val_a_loss": loss_a, "val_b_loss": loss_b})
        assert model.stop_training == (epoch == 4)  # a stalled from epoch 2, b only at epoch 4
    callback.on_train_end()
    assert model.get_layer("a_dense").get_weights()[0][0, 0] == 0
    assert model.get_layer("b_dense").get_weights()[0][0, 0] == 2
