"""Id embeddings: lookups give sparse gradients, and LazyAdam updates only the rows a batch names."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from musicrec.models.recommender.embeddings import LazyAdam, id_embedding


def _sparse_gradient(rows: list[int], values: np.ndarray, table_rows: int) -> tf.IndexedSlices:
    shape = tf.constant([table_rows, 2])
    return tf.IndexedSlices(tf.constant(values, tf.float32), tf.constant(rows, tf.int64), shape)


def _table(seed: int = 0) -> keras.Variable:
    return keras.Variable(np.random.default_rng(seed).normal(size=(5, 2)).astype(np.float32))


def test_the_first_step_equals_adam_and_a_later_step_leaves_rows_outside_the_batch_alone():
    lazy_table, dense_table = _table(), _table()
    lazy, dense = LazyAdam(0.1), keras.optimizers.Adam(0.1)
    # Row 0 twice (its two slices add up, as a dense gradient would), row 2 once.
    first = _sparse_gradient([0, 0, 2], np.array([[1.0, -1.0], [0.5, 0.5], [2.0, 0.0]]), 5)
    lazy.apply_gradients([(first, lazy_table)])
    dense.apply_gradients([(tf.convert_to_tensor(first), dense_table)])
    np.testing.assert_allclose(lazy_table.numpy(), dense_table.numpy(), atol=1e-6)

    before = lazy_table.numpy().copy()
    lazy.apply_gradients([(_sparse_gradient([3], np.array([[1.0, 1.0]]), 5), lazy_table)])
    after = lazy_table.numpy()
    np.testing.assert_array_equal(after[[0, 1, 2, 4]], before[[0, 1, 2, 4]])  # dense Adam's momentum moves 0 and 2
    assert not np.allclose(after[3], before[3])


def test_dense_gradients_get_adams_step():
    lazy_weights, dense_weights = _table(1), _table(1)
    lazy, dense = LazyAdam(0.05), keras.optimizers.Adam(0.05)
    for step in range(3):
        gradient = tf.constant(np.full((5, 2), step + 1.0, np.float32))
        lazy.apply_gradients([(gradient, lazy_weights)])
        dense.apply_gradients([(gradient, dense_weights)])
    np.testing.assert_allclose(lazy_weights.numpy(), dense_weights.numpy(), atol=1e-6)


@pytest.mark.parametrize("l2", [0.0, 1e-3])
def test_a_lookup_with_its_penalty_has_a_sparse_gradient(l2):
    ids = keras.Input(shape=(), dtype="int64")
    model = keras.Model(ids, id_embedding(1_000, 4, l2, "ids")(ids))
    with tf.GradientTape() as tape:
        out = model(tf.constant([3, 7, 3]))
        loss = tf.reduce_sum(out) + sum(model.losses)
    (gradient,) = tape.gradient(loss, model.trainable_variables)
    # A penalty on the whole table would make this dense: every step would then touch all 1,000 rows.
    assert isinstance(gradient, tf.IndexedSlices)
    assert sorted(set(gradient.indices.numpy().tolist())) == [3, 7]
    assert len(model.losses) == (1 if l2 else 0)
