"""Preprocess: NLTK text normalization, then tf.Transform analyzers in Apache Beam fit on the train split only.

Text is normalized by :func:`musicrec.text.normalize_columns`: on one machine in a process pool just before
the Beam job (:func:`normalize_shards`), on a distributed runner inside the job (:class:`ToRawBatches`).
Either way the same function turns text into tokens, and :func:`to_raw_record_batch` (serving, through
:func:`transform_rows`) calls it too, so training and serving features cannot drift apart. The analyzers
(vocabularies, z-score statistics) see train only; eval and test are transformed with the train graph.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
import shlex
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from musicrec import features, schema
from musicrec.artifacts import directory_sha256, publish, staging_directory
from musicrec.progress import Progress
from musicrec.settings import TransformSettings
from musicrec.text import normalize_columns

logger = logging.getLogger(__name__)

RECORD_BATCH_ROWS = 16_384  # measured: larger batches amortize Beam's per-bundle cost on the DirectRunner
TRANSFORMED_SUFFIX = ".tfrecord.gz"
_LENGTH_HISTOGRAM_BINS = 1_024  # token counts above this land in the last bin (percentiles stay exact below)


class PreprocessError(RuntimeError):
    """The preprocess step cannot run on its input; the one-line message names what is wrong."""


# --- raw features ---------------------------------------------------------------------------------------
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

    The review text and summary are normalized by :func:`musicrec.text.normalize_columns`, the function the
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
def make_preprocessing_fn(settings: TransformSettings) -> Any:
    """The tf.Transform ``preprocessing_fn`` for ``settings``; every output name comes from :mod:`features`."""
    import tensorflow as tf
    import tensorflow_transform as tft

    def token_ids(text: tf.Tensor, top_k: int, length: int, vocabulary: str) -> tuple[tf.Tensor, tf.Tensor]:
        tokens = tf.strings.split(text)
        vocab = tft.vocabulary(
            tokens, top_k=top_k, frequency_threshold=settings.min_token_frequency, vocab_filename=vocabulary
        )
        # Shift by one so 0 is padding: 1..V are vocabulary tokens, V+1 is out of vocabulary.
        ids = tft.apply_vocabulary(tokens[:, :length], vocab, num_oov_buckets=1) + 1
        return ids.to_tensor(default_value=features.PADDING_ID, shape=[None, length]), tokens.row_lengths()

    def optional_log_z(values: tf.SparseTensor) -> tuple[tf.Tensor, tf.Tensor]:
        logged = tf.SparseTensor(
            values.indices, tf.math.log1p(tf.maximum(tf.cast(values.values, tf.float32), 0.0)), values.dense_shape
        )
        scaled = tft.scale_to_z_score(logged)  # statistics over present values only
        dense = tft.sparse_tensor_to_dense_with_shape(scaled, [None, 1], default_value=0.0)[:, 0]
        present = tf.SparseTensor(values.indices, tf.ones_like(values.values, tf.float32), values.dense_shape)
        missing = 1.0 - tft.sparse_tensor_to_dense_with_shape(present, [None, 1], default_value=0.0)[:, 0]
        return dense, missing

    def preprocessing_fn(inputs: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        out[features.REVIEW_IDS], out[features.REVIEW_LENGTH] = token_ids(
            inputs[features.REVIEW_TOKENS],
            settings.review_vocabulary_size,
            settings.max_review_tokens,
            features.REVIEW_VOCABULARY,
        )
        out[features.SUMMARY_IDS], out[features.SUMMARY_LENGTH] = token_ids(
            inputs[features.SUMMARY_TOKENS], settings.summary_vocabulary_size, settings.max_summary_tokens,
            features.SUMMARY_VOCABULARY,
        )  # fmt: skip
        out[features.USER_INDEX] = tft.compute_and_apply_vocabulary(
            inputs[schema.REVIEWER_ID], num_oov_buckets=1, vocab_filename=features.USER_VOCABULARY
        )
        out[features.ITEM_INDEX] = tft.compute_and_apply_vocabulary(
            inputs[schema.ASIN], num_oov_buckets=1, vocab_filename=features.ITEM_VOCABULARY
        )
        # The vocabulary analyzer drops empty strings; name the unknown format so it is a token of its own.
        known_format = tf.where(tf.equal(inputs[schema.FORMAT], ""), "unknown", inputs[schema.FORMAT])
        out[features.FORMAT_INDEX] = tft.compute_and_apply_vocabulary(
            known_format, num_oov_buckets=1, vocab_filename=features.FORMAT_VOCABULARY
        )
        out[features.PRICE_Z], out[features.PRICE_MISSING] = optional_log_z(inputs[schema.PRICE])
        out[features.SALES_RANK_Z], out[features.SALES_RANK_MISSING] = optional_log_z(inputs[schema.SALES_RANK])
        votes = tf.math.log1p(tf.cast(inputs[schema.HELPFUL_VOTES], tf.float32))
        out[features.HELPFUL_VOTES_Z] = tft.scale_to_z_score(votes)
        out[features.VERIFIED_FLAG] = tf.cast(inputs[schema.VERIFIED] > 0, tf.float32)
        rating = inputs[schema.RATING]
        out[features.RATING_LABEL] = tf.cast(rating, tf.float32)
        out[features.SENTIMENT_LABEL] = tf.cast(rating > schema.POSITIVE_RATING_THRESHOLD, tf.int64)
        return out

    return preprocessing_fn


# --- statistics for the data report ---------------------------------------------------------------------
def _matrix(batch: pa.RecordBatch, name: str) -> np.ndarray:
    column = batch.column(name)
    return pc.list_flatten(column).to_numpy(zero_copy_only=False).reshape(batch.num_rows, -1)


def _vector(batch: pa.RecordBatch, name: str) -> np.ndarray:
    return _matrix(batch, name)[:, 0]


def _padded_add(total: np.ndarray, counts: np.ndarray) -> np.ndarray:
    if counts.size > total.size:
        total, counts = counts, total
    total = total.copy()
    total[: counts.size] += counts
    return total


class SplitStatistics(beam.CombineFn):
    """Combines transformed record batches into rows, token-id counts by sentiment, and length histograms."""

    def create_accumulator(self) -> dict[str, Any]:
        """An empty accumulator."""
        return {"rows": 0}

    def add_input(self, accumulator: dict[str, Any], element: Any) -> dict[str, Any]:
        """Add one transformed batch."""
        batch = element[0] if isinstance(element, tuple) else element  # (record batch, passthrough features)
        labels = _vector(batch, features.SENTIMENT_LABEL)
        update: dict[str, Any] = {"rows": batch.num_rows}
        for feature, length in (
            (features.REVIEW_IDS, features.REVIEW_LENGTH),
            (features.SUMMARY_IDS, features.SUMMARY_LENGTH),
        ):
            ids = _matrix(batch, feature)
            for label in (0, 1):
                update[f"{feature}/{label}"] = np.bincount(ids[labels == label].ravel())
            lengths = np.minimum(_vector(batch, length), _LENGTH_HISTOGRAM_BINS - 1)
            update[f"{length}/histogram"] = np.bincount(lengths, minlength=_LENGTH_HISTOGRAM_BINS)
        return self.merge_accumulators([accumulator, update])

    def merge_accumulators(self, accumulators: Any) -> dict[str, Any]:
        """Sum counts; arrays of different lengths are zero-padded."""
        merged: dict[str, Any] = {"rows": 0}
        for accumulator in accumulators:
            for key, value in accumulator.items():
                if key == "rows":
                    merged[key] += value
                else:
                    merged[key] = _padded_add(merged.get(key, np.zeros(0, np.int64)), value)
        return merged

    def extract_output(self, accumulator: dict[str, Any]) -> str:
        """One JSON line, so any runner can write it as text."""
        return json.dumps({k: v if k == "rows" else v.tolist() for k, v in accumulator.items()})


def _percentiles(histogram: list[int], quantiles: Sequence[int] = (50, 90, 95, 99)) -> dict[str, int]:
    cumulative = np.cumsum(histogram)
    total = cumulative[-1] if len(cumulative) else 0
    if not total:
        return {f"p{q}": 0 for q in quantiles}
    return {f"p{q}": int(np.searchsorted(cumulative, total * q / 100.0)) for q in quantiles}


def _split_report(stats: dict[str, Any], sizes: dict[str, int]) -> dict[str, Any]:
    report: dict[str, Any] = {"rows": stats.get("rows", 0)}
    for feature, length, vocabulary in (
        (features.REVIEW_IDS, features.REVIEW_LENGTH, features.REVIEW_VOCABULARY),
        (features.SUMMARY_IDS, features.SUMMARY_LENGTH, features.SUMMARY_VOCABULARY),
    ):
        counts = _padded_add(
            np.array(stats.get(f"{feature}/0", []), np.int64), np.array(stats.get(f"{feature}/1", []))
        )
        oov_id = sizes[vocabulary] + 1
        tokens = int(counts[1:].sum()) if counts.size > 1 else 0
        oov = int(counts[oov_id]) if counts.size > oov_id else 0
        report[vocabulary] = {
            "tokens_kept": tokens,
            "oov_rate": round(oov / tokens, 4) if tokens else 0.0,
            "length_percentiles": _percentiles(stats.get(f"{length}/histogram", [])),
        }
    return report


def _top_tokens(stats: dict[str, Any], feature: str, vocabulary: list[str], k: int = 15) -> dict[str, list]:
    top: dict[str, list] = {}
    for label, name in ((1, "positive"), (0, "negative")):
        counts = np.array(stats.get(f"{feature}/{label}", []), np.int64)
        known = counts[1 : len(vocabulary) + 1]  # drop padding and out-of-vocabulary ids
        order = np.argsort(-known, kind="stable")[:k]
        top[name] = [[vocabulary[i], int(known[i])] for i in order if known[i] > 0]
    return top


# --- the step -------------------------------------------------------------------------------------------
def _shards(examples_dir: Path) -> dict[str, list[Path]]:
    shards = {split: sorted((examples_dir / split).glob("*.parquet")) for split in schema.SPLITS}
    missing = [split for split, files in shards.items() if not files]
    if missing:
        raise PreprocessError(f"no Parquet shards for split(s) {', '.join(missing)} under {examples_dir}")
    return shards


def usable_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may use: its affinity, capped by a cgroup CPU quota (a Kubernetes CPU limit).

    ``os.cpu_count()`` reports every CPU of the node, so a pod sized for 2 would start a worker per node core.
    Reads cgroup v2 ``cpu.max``, else v1 ``cpu/cpu.cfs_quota_us`` and ``cpu/cpu.cfs_period_us``.
    """
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = (cgroup_root / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        try:
            quota = (cgroup_root / "cpu" / "cpu.cfs_quota_us").read_text().strip()
            period = (cgroup_root / "cpu" / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            return cpus
    if quota in ("max", "-1"):
        return cpus
    return max(1, min(cpus, math.ceil(int(quota) / int(period))))


# Below this many rows, starting the DirectRunner's worker processes costs more than they save.
MULTI_PROCESS_MIN_ROWS = 250_000


def _pipeline_options(runner: str, options: Sequence[str], rows: int) -> Any:
    from apache_beam.options.pipeline_options import PipelineOptions

    flags = list(options)
    workers = usable_cpus()
    chosen = any(f.startswith(("--direct_num_workers", "--direct_running_mode")) for f in flags)
    if runner == "DirectRunner" and not chosen and workers > 1 and rows >= MULTI_PROCESS_MIN_ROWS:
        # Measured on 2 cores, text normalized beforehand: at full scale a worker process per core ran 174.7 s,
        # the single in-memory worker 231.7 s; at 100k rows 51.2 s against 43.4 s (the workers' start-up).
        flags += ["--direct_running_mode=multi_processing", f"--direct_num_workers={workers}"]
    return PipelineOptions(flags=flags, runner=runner, save_main_session=False)


def _run_beam(
    shards: dict[str, list[Path]],
    staging: Path,
    settings: TransformSettings,
    runner: str,
    options: Sequence[str],
    normalizer_processes: int,
    rows: int,
) -> None:
    """Build and run the Beam job over ``rows`` input rows; everything Beam and tf.Transform hold dies here."""
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io, schema_utils

    adapter_config = tensor_adapter_config()
    normalized = normalizer_processes > 0
    if normalized:
        shards = normalize_shards(shards, staging / "normalized", normalizer_processes)
    columns = list(features.RAW_FEATURES if normalized else features.INGEST_COLUMNS_READ)
    with tft_beam.Context(temp_dir=str(staging / "tft-tmp"), force_tf_compat_v1=False):
        with beam.Pipeline(options=_pipeline_options(runner, options, rows)) as pipeline:

            def read(split: str, purpose: str) -> beam.PCollection:
                pattern = str(shards[split][0].parent / "*.parquet")
                return (
                    pipeline
                    | f"Read {split} {purpose}" >> beam.io.ReadFromParquetBatched(pattern, columns=columns)
                    | f"Raw features {split} {purpose}" >> beam.ParDo(ToRawBatches(split, normalized))
                )

            raw = {split: read(split, "to transform") for split in schema.SPLITS}
            # Normalized files are cheap to read again: a second read saves materializing train between the
            # analysis and the transform. Normalizing inline, the one read feeds both.
            analysis_input = read(schema.TRAIN, "to analyze") if normalized else raw[schema.TRAIN]
            transform_fn = (analysis_input, adapter_config) | "Analyze train" >> tft_beam.AnalyzeDataset(
                make_preprocessing_fn(settings)
            )
            _ = transform_fn | "Write transform graph" >> tft_beam.WriteTransformFn(
                str(staging / "transform_graph")
            )
            for split in schema.SPLITS:
                transformed = ((raw[split], adapter_config), transform_fn) | f"Transform {split}" >> (
                    tft_beam.TransformDataset(output_record_batches=True)
                )
                _ = (
                    transformed
                    | f"Encode {split}" >> tft_beam.EncodeTransformedDataset()
                    | f"Write {split}" >> beam.io.WriteToTFRecord(
                        str(staging / "transformed" / split / "part"), file_name_suffix=TRANSFORMED_SUFFIX,
                        compression_type=beam.io.filesystem.CompressionTypes.GZIP,
                    )
                )  # fmt: skip
                _ = (
                    transformed[0]  # (record batches, metadata): the batches
                    | f"Statistics {split}" >> beam.CombineGlobally(SplitStatistics())
                    | f"Write statistics {split}" >> beam.io.WriteToText(
                        str(staging / "statistics" / split), shard_name_template="", num_shards=1
                    )
                )  # fmt: skip
    # WriteTransformFn stores the transformed schema only; serving needs the raw one too.
    raw_metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(raw_feature_spec()))
    metadata_io.write_metadata(
        raw_metadata, str(staging / "transform_graph" / tft.TFTransformOutput.RAW_METADATA_DIR)
    )


def _markdown(report: dict[str, Any]) -> str:
    lines = ["# Preprocess report", "", "## Vocabularies (fit on train only)", "", "| vocabulary | size |",
             "| --- | ---: |"]  # fmt: skip
    lines += [f"| {name} | {size:,} |" for name, size in report["vocabulary_sizes"].items()]
    lines += ["", "## Per split", "",
              "| split | rows | review OOV | summary OOV | review tokens p50 / p90 / p99 |",
              "| --- | ---: | ---: | ---: | --- |"]  # fmt: skip
    for split, info in report["splits"].items():
        pct = info[features.REVIEW_VOCABULARY]["length_percentiles"]
        lines.append(
            f"| {split} | {info['rows']:,} | {info[features.REVIEW_VOCABULARY]['oov_rate']:.2%} "
            f"| {info[features.SUMMARY_VOCABULARY]['oov_rate']:.2%} | {pct['p50']} / {pct['p90']} / {pct['p99']} |"
        )
    for vocabulary, classes in report["top_tokens"].items():
        lines += ["", f"## Most frequent {vocabulary} in train, by sentiment", "", "| positive | negative |",
                  "| --- | --- |"]  # fmt: skip
        for pos, neg in zip(classes["positive"], classes["negative"], strict=False):
            lines.append(f"| `{pos[0]}` ({pos[1]:,}) | `{neg[0]}` ({neg[1]:,}) |")
    return "\n".join(lines) + "\n"


def preprocess(
    examples_dir: str | Path,
    transformed_dir: str | Path,
    transform_graph_dir: str | Path,
    report_path: str | Path,
    markdown_path: str | Path | None = None,
    settings: TransformSettings | None = None,
    beam_runner: str = "DirectRunner",
    beam_options: Sequence[str] | str = (),
    normalizer_processes: int | None = None,
) -> dict[str, Any]:
    """Run the preprocess step and return its report (also written as JSON to ``report_path``).

    Args:
        examples_dir: the ingest ``examples`` directory (``train/``, ``eval/``, ``test/`` Parquet shards).
        transformed_dir: receives ``train/``, ``eval/``, ``test/`` gzipped TFRecords of transformed tf.Examples.
        transform_graph_dir: receives the tf.Transform output (graph, vocabularies, raw and transformed schema).
        report_path: the JSON data report.
        markdown_path: the same report rendered for the Kubeflow UI, if given.
        settings: vocabulary and sequence settings.
        beam_runner: any Beam runner (``DirectRunner`` here; ``DataflowRunner``, ``FlinkRunner``, ...).
        beam_options: further Beam flags, a list or one shell-quoted string (e.g. ``"--project=p --region=r"``).
        normalizer_processes: processes normalizing text before the Beam job (:func:`normalize_shards`);
            default: one per core on the DirectRunner; 0 normalizes inside the job (the default elsewhere:
            distributed runners already run a worker per core).

    Raises:
        PreprocessError: missing input shards or settings out of range.
    """
    import tensorflow_transform as tft

    started = time.monotonic()
    settings = settings or TransformSettings()
    try:
        settings.validate()
    except ValueError as error:
        raise PreprocessError(str(error)) from None
    options = shlex.split(beam_options) if isinstance(beam_options, str) else list(beam_options)
    if normalizer_processes is None:
        normalizer_processes = usable_cpus() if beam_runner == "DirectRunner" else 0
    shards = _shards(Path(examples_dir))
    rows_in = {split: sum(_parquet_rows(f) for f in files) for split, files in shards.items()}
    logger.info("preprocess: %s rows (%s) with %s", f"{sum(rows_in.values()):,}", rows_in, settings)
    targets = [Path(transformed_dir), Path(transform_graph_dir), Path(report_path)]
    if markdown_path is not None:
        targets.append(Path(markdown_path))
    with staging_directory(targets[0]) as staging:
        _run_beam(shards, staging, settings, beam_runner, options, normalizer_processes, sum(rows_in.values()))
        output = tft.TFTransformOutput(str(staging / "transform_graph"))
        sizes = {name: output.vocabulary_size_by_name(name) for name in features.VOCABULARIES}
        statistics = {
            split: json.loads((staging / "statistics" / split).read_text() or "{}") for split in schema.SPLITS
        }
        seconds = time.monotonic() - started
        total_rows = sum(rows_in.values())
        report = {
            "settings": asdict(settings),
            "beam_runner": beam_runner,
            "vocabulary_sizes": sizes,
            "splits": {split: _split_report(statistics[split], sizes) for split in schema.SPLITS},
            "top_tokens": {
                features.REVIEW_VOCABULARY: _top_tokens(
                    statistics[schema.TRAIN],
                    features.REVIEW_IDS,
                    output.vocabulary_by_name(features.REVIEW_VOCABULARY),
                ),
                features.SUMMARY_VOCABULARY: _top_tokens(
                    statistics[schema.TRAIN],
                    features.SUMMARY_IDS,
                    output.vocabulary_by_name(features.SUMMARY_VOCABULARY),
                ),
            },
            "transformed_features": sorted(output.transformed_feature_spec()),
            "transformed_sha256": directory_sha256(staging / "transformed"),
            "transform_graph_sha256": directory_sha256(staging / "transform_graph"),
            "seconds": round(seconds, 3),
            "reviews_per_second": round(total_rows / max(seconds, 1e-9), 1),
        }
        _decode_vocabulary_names(report)
        for split in schema.SPLITS:
            if report["splits"][split]["rows"] != rows_in[split]:
                raise PreprocessError(
                    f"{split}: {rows_in[split]:,} rows in but {report['splits'][split]['rows']:,} transformed"
                )
        (staging / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        staged = [staging / "transformed", staging / "transform_graph", staging / "report.json"]
        if markdown_path is not None:
            (staging / "report.md").write_text(_markdown(report))
            staged.append(staging / "report.md")
        for source, target in zip(staged, targets, strict=True):
            publish(source, target)
    logger.info("preprocess: %s rows in %.1fs (%.0f reviews/s)", f"{total_rows:,}", seconds, total_rows / seconds)
    return report


def _parquet_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def _decode_vocabulary_names(report: dict[str, Any]) -> None:
    """Vocabulary entries come back as bytes; the report is JSON."""
    for classes in report["top_tokens"].values():
        for entries in classes.values():
            for entry in entries:
                if isinstance(entry[0], bytes):
                    entry[0] = entry[0].decode("utf-8", errors="replace")


# --- serving --------------------------------------------------------------------------------------------
def transform_rows(transform_graph_dir: str | Path, rows: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Transform raw review rows (ingest columns; rating may be absent) exactly as the Beam job did.

    This is the serving path: the same :func:`to_raw_record_batch` (so the same normalizer) and the saved
    transform graph.
    """
    import tensorflow_transform as tft
    from tfx_bsl.public import tfxio

    filled = [{schema.RATING: 0, **row} for row in rows]
    arrow_schema = schema.EXAMPLES_SCHEMA
    table = pa.Table.from_pylist(
        [{name: row.get(name) for name in features.INGEST_COLUMNS_READ} for row in filled],
        schema=pa.schema([arrow_schema.field(name).with_nullable(True) for name in features.INGEST_COLUMNS_READ]),
    )
    batch = to_raw_record_batch(table)
    tensors = tfxio.TensorAdapter(tensor_adapter_config()).ToBatchTensors(batch, produce_eager_tensors=True)
    output = tft.TFTransformOutput(str(transform_graph_dir))
    return {name: value.numpy() for name, value in output.transform_raw_features(tensors).items()}


def artifact_metadata(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """What the Kubeflow UI shows beside each preprocess artifact, keyed by output name."""
    return {
        "transformed_examples": {
            "format": "tfrecord-gzip-tf.Example",
            **{f"{split}_rows": info["rows"] for split, info in report["splits"].items()},
            "features": report["transformed_features"],
            "sha256": report["transformed_sha256"],
        },
        "transform_graph": {
            **{f"vocabulary_size_{name}": size for name, size in report["vocabulary_sizes"].items()},
            **report["settings"],
            "sha256": report["transform_graph_sha256"],
        },
        "report": {"seconds": report["seconds"], "reviews_per_second": report["reviews_per_second"]},
    }
