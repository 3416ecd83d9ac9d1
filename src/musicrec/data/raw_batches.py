"""Raw features for tf.Transform: ingest's Parquet rows as Arrow RecordBatches with normalized text.

Text is normalized by :func:`musicrec.data.text.normalize_columns`: on one machine in a process pool just before
the Beam job (:func:`normalize_shards`), on a distributed runner inside the job (:class:`ToRawBatches`).
Either way the same function turns text into tokens, and :func:`to_raw_record_batch` (serving, through
``transform_rows``) calls it too, so training and serving features cannot drift apart.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from musicrec import features, schema
from musicrec.data.text import normalize_columns
from musicrec.progress import Progress

logger = logging.getLogger(__name__)

RECORD_BATCH_ROWS = 16_384  # measured: larger batches amortize Beam's per-bundle cost on the DirectRunner


def raw_feature_spec() -> dict[str, Any]:
    """The raw feature spec of the transform graph (:mod:`musicrec.features` names the features)."""
    import tensorflow as tf

    spec: dict[str, Any] = {name: tf.io.FixedLenFeature([], tf.string) for name in features.RAW_STRING_FEATURES}
    spec.update({name: tf.io.FixedLenFeature([], tf.int64) for name in features.RAW_INT_FEATURES})
    spec.update({name: tf.io.VarLenFeature(tf.float32) for name in features.RAW_OPTIONAL_FLOAT_FEATURES})
    spec.update({name: tf.io.VarLenFeature(tf.int64) for name in features.RAW_OPTIONAL_INT_FEATURES})
    return spec


def _arrow_value_type(name: str) -> pa.DataType:
    if name in features.RAW_STRING_FEATURES:
        return pa.large_binary()
    if name in features.RAW_OPTIONAL_FLOAT_FEATURES:
        return pa.float32()
    return pa.int64()


RAW_ARROW_SCHEMA = pa.schema(
    [pa.field(name, pa.large_list(_arrow_value_type(name))) for name in features.RAW_FEATURES]
)


def tensor_adapter_config() -> Any:
    """How tf.Transform reads :data:`RAW_ARROW_SCHEMA` record batches as tensors."""
    from tensorflow_transform.tf_metadata import schema_utils
    from tfx_bsl.public import tfxio
    from tfx_bsl.tfxio import tensor_representation_util

    tf_schema = schema_utils.schema_from_feature_spec(raw_feature_spec())
    representations = tensor_representation_util.InferTensorRepresentationsFromSchema(tf_schema)
    return tfxio.TensorAdapterConfig(RAW_ARROW_SCHEMA, representations)


def _as_list_column(values: pa.Array, value_type: pa.DataType) -> pa.LargeListArray:
    """One value a row becomes a one-element list; a null becomes an empty list (a missing feature)."""
    if values.null_count:
        present = pc.is_valid(values).to_numpy(zero_copy_only=False).astype(np.int64)
        offsets = np.concatenate([[0], np.cumsum(present)])
        values = pc.drop_null(values)
    else:
        offsets = np.arange(len(values) + 1, dtype=np.int64)
    return pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), values.cast(value_type))


def _text_columns(table: pa.Table) -> tuple[list[str | None], list[str | None]]:
    return table.column(schema.REVIEW_TEXT).to_pylist(), table.column(schema.SUMMARY).to_pylist()


def _assemble(table: pa.Table, review_tokens: list[str], summary_tokens: list[str]) -> pa.RecordBatch:
    """Ingest rows plus their normalized text -> one record batch in :data:`RAW_ARROW_SCHEMA`."""
    columns = {name: table.column(name).combine_chunks() for name in features.INGEST_COLUMNS_READ}
    columns[features.REVIEW_TOKENS] = pa.array(review_tokens, pa.large_string())
    columns[features.SUMMARY_TOKENS] = pa.array(summary_tokens, pa.large_string())
    return _raw_batch(columns)


def _raw_batch(columns: dict[str, pa.Array]) -> pa.RecordBatch:
    arrays = [_as_list_column(columns[f.name], f.type.value_type) for f in RAW_ARROW_SCHEMA]
    return pa.RecordBatch.from_arrays(arrays, schema=RAW_ARROW_SCHEMA)


def to_raw_record_batch(table: pa.Table) -> pa.RecordBatch:
    """Ingest rows (:data:`features.INGEST_COLUMNS_READ`) -> one record batch of raw transform features.

    The review text and summary are normalized by :func:`musicrec.data.text.normalize_columns`, the function the
    Beam job runs too, so serving features equal training features.
    """
    return _assemble(table, *normalize_columns(_text_columns(table)))


def _slices(table: pa.Table) -> list[pa.Table]:
    return [table.slice(start, RECORD_BATCH_ROWS) for start in range(0, table.num_rows, RECORD_BATCH_ROWS)]


class ToRawBatches(beam.DoFn):
    """Parquet tables -> raw-feature record batches of at most :data:`RECORD_BATCH_ROWS` rows.

    Args:
        split: the split name, for progress lines.
        normalized: the tables already carry the normalized text (:func:`normalize_shards` wrote them);
            otherwise the text is normalized here, inline (distributed runners run a worker per core).
    """

    def __init__(self, split: str, normalized: bool) -> None:
        self._split = split
        self._normalized = normalized
        self._progress: Progress | None = None

    def setup(self) -> None:
        """Start the progress lines."""
        self._progress = Progress(logger, f"{self._split} rows to raw features", interval_seconds=15)

    def process(self, table: pa.Table) -> Iterator[pa.RecordBatch]:
        """Yield the batches of one input table in order."""
        for piece in _slices(table):
            if self._normalized:
                columns = {name: piece.column(name).combine_chunks() for name in features.RAW_FEATURES}
                yield _raw_batch(columns)
            else:
                yield to_raw_record_batch(piece)
            self._progress.advance(piece.num_rows)


def normalize_shards(shards: dict[str, list[Path]], out_dir: Path, processes: int) -> dict[str, list[Path]]:
    """Normalize the text of every ingest shard in a process pool; write Parquet shards ready for the runner.

    On one machine the DirectRunner keeps one core busy; normalizing beforehand on every core, and handing the
    runner files it can read twice (analysis, then transform) instead of a materialized collection, measured
    faster than normalizing inside the job. Output rows are the input rows in order, with the raw text
    columns replaced by :data:`features.REVIEW_TOKENS` and :data:`features.SUMMARY_TOKENS`.
    """
    import pyarrow.parquet as pq

    written: dict[str, list[Path]] = {}
    # spawn: the parent holds TensorFlow threads that must not be forked.
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        for split, files in shards.items():
            progress = Progress(logger, f"{split} rows normalized", interval_seconds=15)
            (out_dir / split).mkdir(parents=True)
            for path in files:
                table = pq.read_table(path, columns=list(features.INGEST_COLUMNS_READ))
                kept = table.drop_columns([schema.REVIEW_TEXT, schema.SUMMARY])
                target = out_dir / split / path.name
                with pq.ParquetWriter(target, _normalized_schema(kept.schema), compression="none") as writer:
                    texts = pool.imap(normalize_columns, [_text_columns(piece) for piece in _slices(table)])
                    for piece, (reviews, summaries) in zip(_slices(kept), texts, strict=True):
                        piece = piece.append_column(features.REVIEW_TOKENS, pa.array(reviews, pa.large_string()))
                        writer.write_table(
                            piece.append_column(features.SUMMARY_TOKENS, pa.array(summaries, pa.large_string()))
                        )
                        progress.advance(piece.num_rows)
                written.setdefault(split, []).append(target)
    return written


def _normalized_schema(kept: pa.Schema) -> pa.Schema:
    return kept.append(pa.field(features.REVIEW_TOKENS, pa.large_string())).append(
        pa.field(features.SUMMARY_TOKENS, pa.large_string())
    )


# --- the transform graph --------------------------------------------------------------------------------
