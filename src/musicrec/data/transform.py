"""Preprocess: NLTK text normalization, then tf.Transform analyzers in Apache Beam fit on the train split only.

The raw features and their normalized text come from :mod:`musicrec.data.raw_batches` (the same code at
training and serving time); the data report from :mod:`musicrec.data.data_report`. The analyzers
(vocabularies, z-score statistics) see train only; eval and test are transformed with the train graph.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shlex
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa

from musicrec import features, schema
from musicrec.data.dask_runner import DaskRunner, dask_cluster, is_dask, read_parquet
from musicrec.data.data_report import SplitStatistics, markdown_report, split_report, top_tokens
from musicrec.data.raw_batches import (
    ToRawBatches,
    normalize_shards,
    raw_feature_spec,
    tensor_adapter_config,
    to_raw_record_batch,
)
from musicrec.data.text_graph import write_stems
from musicrec.errors import PreprocessError
from musicrec.io.artifacts import directory_sha256, publish, staging_directory
from musicrec.settings import TransformSettings

logger = logging.getLogger(__name__)

TRANSFORMED_SUFFIX = ".tfrecord.gz"


def make_preprocessing_fn(settings: TransformSettings) -> Any:
    """The tf.Transform ``preprocessing_fn`` for ``settings``; every output name comes from :mod:`features`."""
    import tensorflow as tf
    import tensorflow_transform as tft

    def token_ids(
        text: tf.Tensor, top_k: int, length: int, tail: int, vocabulary: str
    ) -> tuple[tf.Tensor, tf.Tensor]:
        tokens = tf.strings.split(text)
        vocab = tft.vocabulary(
            tokens, top_k=top_k, frequency_threshold=settings.min_token_frequency, vocab_filename=vocabulary
        )
        # A longer text keeps its first length - tail tokens and its last tail ones. A mask rather than a ragged
        # concat: that one runs int64 kernels oneDNN logs an error line about on CPUs without AVX-512.
        positions = tf.ragged.range(tokens.row_lengths())
        from_the_end = tf.expand_dims(tokens.row_lengths(), 1) - positions
        kept = tf.ragged.boolean_mask(tokens, (positions < length - tail) | (from_the_end <= tail))
        # Shift by one so 0 is padding: 1..V are vocabulary tokens, V+1 is out of vocabulary.
        ids = tft.apply_vocabulary(kept, vocab, num_oov_buckets=1) + 1
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
            settings.review_tail_tokens,
            features.REVIEW_VOCABULARY,
        )
        out[features.SUMMARY_IDS], out[features.SUMMARY_LENGTH] = token_ids(
            inputs[features.SUMMARY_TOKENS], settings.summary_vocabulary_size, settings.max_summary_tokens, 0,
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
    if is_dask(runner):
        return PipelineOptions(flags=flags, save_main_session=False)
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
    dask = is_dask(runner)
    cluster = dask_cluster(options, usable_cpus()) if dask else contextlib.nullcontext(list(options))
    with cluster as flags, tft_beam.Context(temp_dir=str(staging / "tft-tmp"), force_tf_compat_v1=False):
        runner_instance = DaskRunner() if dask else None
        with beam.Pipeline(runner=runner_instance, options=_pipeline_options(runner, flags, rows)) as pipeline:

            def read(split: str, purpose: str) -> beam.PCollection:
                pattern = str(shards[split][0].parent / "*.parquet")
                if dask:
                    tables = read_parquet(pipeline, f"Read {split} {purpose}", shards[split], columns)
                else:
                    tables = pipeline | f"Read {split} {purpose}" >> beam.io.ReadFromParquetBatched(
                        pattern, columns=columns
                    )
                return tables | f"Raw features {split} {purpose}" >> beam.ParDo(ToRawBatches(split, normalized))

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
        beam_runner: any Beam runner (``DirectRunner`` here; ``DaskRunner`` runs :mod:`musicrec.data.dask_runner`'s
            on a ``dask.distributed`` cluster; ``DataflowRunner``, ``FlinkRunner``, ...).
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
        # The raw train tokens' stems, for the TensorFlow port of the normalizer the served model carries.
        serving_tokens = write_stems(Path(examples_dir), staging / "transform_graph", normalizer_processes)
        output = tft.TFTransformOutput(str(staging / "transform_graph"))
        sizes = {name: output.vocabulary_size_by_name(name) for name in features.VOCABULARIES}
        statistics = {
            split: json.loads((staging / "statistics" / split).read_text() or "{}") for split in schema.SPLITS
        }
        seconds = time.monotonic() - started
        total_rows = sum(rows_in.values())
        report = {
            "settings": settings.to_dict(),
            "beam_runner": beam_runner,
            "vocabulary_sizes": sizes,
            "splits": {split: split_report(statistics[split], sizes) for split in schema.SPLITS},
            "top_tokens": {
                features.REVIEW_VOCABULARY: top_tokens(
                    statistics[schema.TRAIN],
                    features.REVIEW_IDS,
                    output.vocabulary_by_name(features.REVIEW_VOCABULARY),
                ),
                features.SUMMARY_VOCABULARY: top_tokens(
                    statistics[schema.TRAIN],
                    features.SUMMARY_IDS,
                    output.vocabulary_by_name(features.SUMMARY_VOCABULARY),
                ),
            },
            "transformed_features": sorted(output.transformed_feature_spec()),
            "serving_normalizer_tokens": serving_tokens,
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
            (staging / "report.md").write_text(markdown_report(report))
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
