"""What every training step shares: streaming tf.data input, devices and precision, seeds, class weights.

Import this module (or :mod:`keras`) before anything imports ``tensorflow_transform``: that import sets
``TF_USE_LEGACY_KERAS=1``, and ``import keras`` must resolve to Keras 3 first.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from musicrec import features
from musicrec.errors import TrainingError

logger = logging.getLogger(__name__)

SHUFFLE_BUFFER = 50_000  # rows held for shuffling: bounded memory whatever the corpus size
# An epoch shortened by steps_per_epoch() may end where the train arrays do: Keras then says the input "ran out
# of data" and starts the next epoch at their top, reshuffled, which is the intent.
warnings.filterwarnings("ignore", message="Your input ran out of data", category=UserWarning)


def transformed_feature_spec(transform_graph_dir: str | Path) -> dict[str, Any]:
    """The parsing spec of transformed examples, read from the tf.Transform output."""
    import tensorflow_transform as tft

    return tft.TFTransformOutput(str(transform_graph_dir)).transformed_feature_spec()


def vocabulary_size(transform_graph_dir: str | Path, name: str) -> int:
    """Entries in one vocabulary of the transform graph (ids run 1..size; size+1 is out of vocabulary)."""
    import tensorflow_transform as tft

    return tft.TFTransformOutput(str(transform_graph_dir)).vocabulary_size_by_name(name)


def split_files(transformed_dir: str | Path, split: str) -> list[str]:
    """The TFRecord shards of one split; :class:`TrainingError` when there are none."""
    files = sorted(str(p) for p in (Path(transformed_dir) / split).glob("*.tfrecord.gz"))
    if not files:
        raise TrainingError(f"no transformed examples for split {split!r} under {transformed_dir}")
    return files


def make_dataset(
    files: list[str],
    spec: dict[str, Any],
    inputs: tuple[str, ...],
    label: str,
    batch_size: int,
    shuffle_seed: int | None = None,
    trim_padding: bool = False,
    repeat: bool = False,
) -> tf.data.Dataset:
    """Stream ``(inputs dict, label)`` batches from gzipped TFRecords; nothing is loaded whole in memory.

    Args:
        files: TFRecord shards.
        spec: the transformed feature spec.
        inputs: feature names the model reads.
        label: the label feature.
        batch_size: rows a batch.
        shuffle_seed: shuffle (bounded buffer) with this seed; ``None`` keeps file order (evaluation).
        trim_padding: cut each batch's token sequences to its longest one (for models that mask padding, whose
            outputs do not depend on it): short reviews then cost what they hold, not ``max_review_tokens``.
        repeat: start over at the end, reshuffled (for epochs shorter than a pass: :func:`steps_per_epoch`).
    """
    wanted = {name: spec[name] for name in (*inputs, label)}
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP", num_parallel_reads=1)
    if shuffle_seed is not None:
        dataset = dataset.shuffle(SHUFFLE_BUFFER, seed=shuffle_seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    dataset = dataset.batch(batch_size).map(
        lambda records: tf.io.parse_example(records, wanted), num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )  # fmt: skip
    trimmed = [name for name in features.TOKEN_SEQUENCES if name in inputs] if trim_padding else []

    def split_row(row: dict[str, tf.Tensor]) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
        selected = {name: row[name] for name in inputs}
        for name in trimmed:
            lengths = tf.reduce_sum(tf.cast(selected[name] != features.PADDING_ID, tf.int32), axis=1)
            selected[name] = selected[name][:, : tf.maximum(tf.reduce_max(lengths), 1)]
        return selected, row[label]

    # Under several workers each takes its share of every batch (DATA), not whole files (FILE): preprocess writes
    # one or two shards a split, as Beam chooses, often fewer than workers and of unequal sizes. So a step sees
    # the rows it sees on one worker, and Keras gathers predictions back in their order.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.map(split_row).prefetch(tf.data.AUTOTUNE).with_options(options)


def steps_per_epoch(rows: int, batch_size: int, epoch_examples: int) -> int | None:
    """Steps of a training epoch: ``None`` (a whole pass) unless there are more than ``epoch_examples`` ``rows``.

    On a large train split an epoch then ends after about ``epoch_examples`` examples, so evaluation and early
    stopping come as often as on a small one, and the next epoch goes on from there (Keras keeps its place in
    arrays; a stream is repeated). 0 means always a whole pass.
    """
    if not epoch_examples or rows <= epoch_examples:
        return None
    return max(1, epoch_examples // batch_size)


def columns_of(files: list[str], spec: dict[str, Any], *names: str) -> dict[str, np.ndarray]:
    """Every value of some scalar features of a split, in file order, in one read (small: a number a row each)."""
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP").batch(65_536)
    parsed = dataset.map(lambda records: tf.io.parse_example(records, {name: spec[name] for name in names}))
    batches = [{name: batch[name].numpy() for name in names} for batch in parsed] if files else []
    return {name: np.concatenate([b[name] for b in batches]) if batches else np.empty(0) for name in names}


def labels_of(files: list[str], spec: dict[str, Any], label: str) -> np.ndarray:
    """Every value of one label feature of a split, in file order."""
    return columns_of(files, spec, label)[label]


def balanced_class_weights(labels: np.ndarray) -> dict[int, float]:
    """Weights that make both classes count equally in the loss (``n / (2 * n_class)``)."""
    counts = np.bincount(labels.astype(int), minlength=2)
    if (counts == 0).any():
        raise TrainingError(f"the train split has only one sentiment class (counts {counts.tolist()})")
    return {c: float(len(labels) / (2 * counts[c])) for c in (0, 1)}


def cluster_workers() -> int:
    """The training processes ``TF_CONFIG`` names (its ``chief`` and ``worker`` tasks); 1 without it.

    Kubeflow's Training Operator (a ``TFJob``) and most multi-worker launchers describe the cluster this way.
    """
    cluster = json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster", {})
    return max(1, len(cluster.get("chief", [])) + len(cluster.get("worker", [])))


class _MultiWorkerStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """``MultiWorkerMirroredStrategy`` whose ``reduce`` takes what Keras 3's ``fit`` passes it.

    Keras 3 (3.15, keras-team/keras#20585) reduces a whole input batch, a nest, to build the model, and each
    step's scalar logs along axis 0; this strategy's ``reduce`` takes neither. Each leaf is reduced on its
    own here, a scalar across replicas only; the values are what the strategy computes.
    """

    def reduce(self, reduce_op: Any, value: Any, axis: int | None) -> Any:
        """Reduce every leaf of ``value`` across the replicas of all workers (and along ``axis`` unless scalar)."""
        single = super().reduce

        def leaf(v: Any) -> Any:
            local = v.values[0] if isinstance(v, tf.distribute.DistributedValues) else v
            return single(reduce_op, v, None if local.shape.rank == 0 else axis)

        return tf.nest.map_structure(leaf, value)


def distribution_strategy() -> tf.distribute.Strategy:
    """The workers ``TF_CONFIG`` names, else all visible GPUs (mirrored), the one GPU, or the CPU.

    Several workers get ``MultiWorkerMirroredStrategy`` (over each one's GPUs); the caller then calls this before
    any other TensorFlow op, checks its batch (:func:`check_batch_split`) and writes through
    :func:`worker_outputs`. Mixed precision is switched on with a GPU, where float16 matmuls are fast; on the CPU
    it would slow down.
    """
    # First: collective ops must be configured before TensorFlow initializes (listing devices does).
    strategy = _MultiWorkerStrategy() if cluster_workers() > 1 else None
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        keras.mixed_precision.set_global_policy("mixed_float16")
    if strategy is not None:
        return strategy
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    if gpus:
        return tf.distribute.OneDeviceStrategy("/gpu:0")
    return tf.distribute.get_strategy()


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the outputs: the ``chief`` task, else worker 0; the only process of one."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    resolver = strategy.cluster_resolver
    if "chief" in resolver.cluster_spec().jobs:
        return bool(resolver.task_type == "chief")
    return bool(resolver.task_type == "worker" and resolver.task_id == 0)


def check_batch_split(strategy: tf.distribute.Strategy, batch_size: int) -> None:
    """Under several workers, fail unless a batch splits evenly over the replicas.

    Keras reduces the shares of the first batch across workers to build the model, which needs equal shapes.

    Raises:
        TrainingError: several workers and a ``batch_size`` that is not a multiple of the replicas.
    """
    replicas = strategy.num_replicas_in_sync
    if isinstance(strategy, _MultiWorkerStrategy) and batch_size % replicas:
        raise TrainingError(f"the batch size ({batch_size}) must be a multiple of the {replicas} replicas of "
                            "the workers TF_CONFIG names")  # fmt: skip


def on_this_worker(model: keras.Model) -> keras.Model:
    """``model``, or under several workers a copy of it with its weights that needs no other worker to predict.

    Keras would split every batch of a prediction over the workers and gather the shares back, a collective
    step and a retrace each time; predicting a split on each worker alone gives the same numbers, sooner.
    """
    if not isinstance(model.distribute_strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return model
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


@contextlib.contextmanager
def worker_outputs(strategy: tf.distribute.Strategy) -> Iterator[Callable[[str | Path], Path]]:
    """Where this process writes an output path: the path itself on the chief, elsewhere a scratch copy.

    Every worker of a multi-worker run saves, as Keras asks (saving reads variables that may need all workers),
    but only the chief's outputs may appear: the others write under a temporary directory removed on exit. No
    worker leaves before all have written: TensorFlow aborts the collectives of a cluster that lost a member.
    """
    with contextlib.ExitStack() as stack:
        if is_chief(strategy):
            yield Path
        else:
            scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="musicrec-worker-")))
            yield lambda path: scratch / Path(path).resolve().relative_to("/")
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        strategy.reduce("SUM", tf.constant(0.0), axis=None)  # a barrier: every worker takes part


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow, and ask TensorFlow for deterministic kernels."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


class ThroughputLogger(keras.callbacks.Callback):
    """Logs examples/s for each epoch: long training shows progress, and the benchmark reads the rate."""

    def __init__(self, batch_size: int) -> None:
        super().__init__()
        self._batch_size = batch_size
        self._started = 0.0
        self._batches = 0
        self.rates: list[float] = []

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        """Start the clock."""
        self._started, self._batches = time.monotonic(), 0

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        """Count a batch."""
        self._batches += 1

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        """Log the epoch's rate and metrics."""
        seconds = time.monotonic() - self._started
        rate = self._batches * self._batch_size / max(seconds, 1e-9)
        self.rates.append(rate)
        shown = {k: round(float(v), 4) for k, v in (logs or {}).items()}
        logger.info("epoch %d: %.0f examples/s, %.0fs, %s", epoch + 1, rate, seconds, shown)


def curves(history: keras.callbacks.History) -> dict[str, list[float]]:
    """Per-epoch training and validation metrics of a ``fit``, rounded for the JSON report."""
    return {name: [round(float(v), 5) for v in values] for name, values in history.history.items()}


def vocabulary(transform_graph_dir: str | Path, name: str) -> list[str]:
    """One vocabulary of the transform graph as text, most frequent first (token id i is entry i-1)."""
    import tensorflow_transform as tft

    entries = tft.TFTransformOutput(str(transform_graph_dir)).vocabulary_by_name(name)
    return [e.decode("utf-8", "replace") if isinstance(e, bytes) else str(e) for e in entries]
