"""Shared training helpers: how long an epoch is, and a train stream that starts over."""

from __future__ import annotations

import pytest

from musicrec import features, schema
from musicrec.models.sentiment import TEXT_INPUTS
from musicrec.models.training import (
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
