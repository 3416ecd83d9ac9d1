"""Id embeddings for user- and catalogue-sized tables, trained so that a step costs what its batch looks up.

With L2 on the whole table and Adam's dense moments, every step reads and writes every row: at the full
category's 383k users that is most of a step's time (4,350 vs 20,200 rating pairs/s at batch 512, measured
with the tables below). Here the penalty is on the rows a batch looks up and :class:`LazyAdam` updates only
those rows and their moments, as large-scale recommenders do.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf
from keras import layers, regularizers


@keras.saving.register_keras_serializable(package="musicrec")
class LazyAdam(keras.optimizers.Adam):
    """Adam, except that a sparse gradient (an embedding lookup's) updates only the rows it names.

    Dense gradients get Adam's usual step. A row's moments decay only when the row is in a batch, so a rare
    user's row moves as if the steps without it had not happened (Adam's bias correction uses the global step).
    """

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        """One step for ``variable``: sparse for :class:`tf.IndexedSlices`, else Adam's."""
        if not isinstance(gradient, tf.IndexedSlices):
            super().update_step(gradient, variable, learning_rate)
            return
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        alpha = tf.cast(learning_rate, dtype) * tf.sqrt(1 - tf.pow(beta_2, step)) / (1 - tf.pow(beta_1, step))
        # A row looked up twice in a batch has two gradient slices: sum them, as the dense gradient would.
        rows, positions = tf.unique(gradient.indices)
        values = tf.math.unsorted_segment_sum(tf.cast(gradient.values, dtype), positions, tf.shape(rows)[0])
        index = self._get_variable_index(variable)
        momentum, velocity = self._momentums[index], self._velocities[index]
        momentum_rows = beta_1 * tf.gather(momentum.value, rows) + (1 - beta_1) * values
        velocity_rows = beta_2 * tf.gather(velocity.value, rows) + (1 - beta_2) * tf.square(values)
        self.assign(momentum, tf.IndexedSlices(momentum_rows, rows))
        self.assign(velocity, tf.IndexedSlices(velocity_rows, rows))
        update = alpha * momentum_rows / (tf.sqrt(velocity_rows) + self.epsilon)
        self.assign_sub(variable, tf.IndexedSlices(update, rows))


def id_embedding(rows: int, width: int, l2: float, name: str | None = None, initializer: Any = "uniform") -> Any:
    """An embedding of ``rows`` ids whose L2 penalty falls on the rows each batch looks up.

    Args:
        rows: ids in the table.
        width: the vector width.
        l2: the penalty as L2 on the whole table would weigh it. Keras averages a lookup penalty over the
            batch, so ``l2 * rows`` gives the same expected penalty a step, spread by how often an id occurs.
        name: the layer name.
        initializer: the rows' initializer.
    """
    penalty = regularizers.L2(l2 * rows) if l2 else None
    return layers.Embedding(rows, width, embeddings_initializer=initializer, activity_regularizer=penalty,
                            name=name)  # fmt: skip
