"""Benchmark: ratios in one run: preprocess, the CNN's input pipeline and ranking, each beside a plain reference.

Usage: ``python benchmarks/ratios.py [--preprocess] [--cnn] [--ranking] [--examples DIR] [--limit N]
[--preprocessed DIR] [--steps N] [--users N] [--items N] [--repeats R] [--out FILE]`` (no section flag: all three).
This machine is noisy (other jobs share its 2 cores), so each section runs ours and its reference alternately
(A, B, A, B, ...: ``--repeats`` of each) and reports the median of each and their ratio, which moves far less
than either figure. The ratio is always ours' speed over the reference's (reference seconds / ours seconds, or
ours examples/s / reference examples/s): above 1, ours is faster.

1. **preprocess** (``--examples``: an ingest ``examples/`` directory; ``--limit`` rows, the first rows of each
   split in proportion to its size, copied to ``--workdir``). Ours: :func:`musicrec.data.transform.preprocess`
   as the step runs it (the text normalized by a process per core into Parquet shards, then the Beam job on the
   DirectRunner, a single in-memory worker below 250,000 rows, plus the data report's statistics, the serving
   normalizer's stem table and the hashes of the outputs). Reference (:func:`reference_preprocess`): the
   textbook tf.Transform pipeline a user writes: ``ReadFromParquet`` (a dict a row), the same normalizer
   (:func:`musicrec.data.text.normalize_to_string`) in a ``beam.Map``, instance dicts into
   ``AnalyzeAndTransformDataset`` on train and ``TransformDataset`` on eval and test with the same
   ``preprocessing_fn`` (so the same vocabularies, truncation and z-scores: the vocabularies and row counts of
   both outputs are checked equal), ``ExampleProtoCoder`` and gzipped TFRecords, the transform graph written,
   on the DirectRunner with its default options. It computes no statistics, no report, no stem table and no
   hashes, and writes in place rather than staging. Each run is a fresh process, timed from after its imports.
   Both ask for the DirectRunner, which in Beam 2.77 first tries to fetch its Prism runner from GitHub: offline
   that fails within seconds and both fall back to the in-process FnApiRunner (with GitHub reachable, both
   would run on Prism).
2. **cnn** (``--preprocessed``: ``transformed/`` and ``graph/``). The default CNN, built by ``default_cnn`` of
   ``benchmarks/train_cnn.py``, trains ``--steps`` batches after 30 warm-up ones. Ours: streamed by
   :func:`musicrec.models.training.make_dataset` (gzipped TFRecords, shuffle buffer, parse, each batch cut to its
   longest review) as train_cnn streams them. Reference: the very same batches (same rows, same cuts), taken
   from that pipeline once beforehand and held as NumPy arrays, fed by a Python generator
   (``tf.data.Dataset.from_generator`` with prefetch, what ``model.fit`` does with a generator). Same model,
   same compute a step: the ratio is the input pipeline's overhead. Examples/s are timed between the ends of
   the warm-up's last and the run's last step (tracing and the shuffle buffer's first fill excluded).
3. **ranking** (random ``--users`` x ``--items`` tower vectors of ``retrieval_dim`` floats; every item
   scored for every user, no reviewed items masked in either). Ours: the two-tower retrieval's ranking, a
   matrix product in user chunks of at most :data:`~musicrec.models.recommender.retrieval.SCORE_BLOCK` scores,
   each chunk's top 10 by :func:`~musicrec.models.recommender.retrieval.top_by_score` (a partition). Reference:
   the naive version: the whole users x items score matrix in one product, then ``np.argsort`` of each user's
   row (a full stable sort) and its first 10. The top 10 of both are checked equal, as sets and in order.

Prints a Markdown table and writes every run's figures as JSON to ``--out`` (default ``.tmp/ratios.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras  # Keras 3 before anything imports tensorflow_transform
import numpy as np

from musicrec import features, schema
from musicrec.settings import TransformSettings

_WARMUP_STEPS = 30
_TOP_K = 10


def median(values: list[float]) -> float:
    """The median of some timings."""
    return float(statistics.median(values))


def alternate(ours: Callable[[], float], reference: Callable[[], float], repeats: int) -> tuple[list, list]:
    """Call ``ours`` then ``reference``, ``repeats`` times each, alternately; their results in call order."""
    mine, theirs = [], []
    for _ in range(repeats):
        mine.append(ours())
        theirs.append(reference())
    return mine, theirs


# --- 1. preprocess against a textbook tf.Transform pipeline ----------------------------------------------
def take_rows(examples: Path, target: Path, limit: int) -> dict[str, int]:
    """Copy the first rows of each split of ``examples`` to ``target``, ``limit`` in all, in proportion.

    Returns the rows written per split.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = {split: sorted((examples / split).glob("*.parquet")) for split in schema.SPLITS}
    sizes = {split: sum(pq.ParquetFile(f).metadata.num_rows for f in paths) for split, paths in files.items()}
    total = sum(sizes.values())
    if not total:
        raise SystemExit(f"no Parquet rows under {examples}")
    wanted = {split: min(sizes[split], round(limit * sizes[split] / total)) for split in schema.SPLITS}
    for split, paths in files.items():
        batches, left = [], wanted[split]
        for path in paths:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=min(max(left, 1), 65_536)):
                batches.append(batch.slice(0, left))
                left -= len(batches[-1])
                if not left:
                    break
            if not left:
                break
        (target / split).mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_batches(batches), target / split / "part-00000.parquet", compression="zstd")
    return wanted


def _instance(row: dict[str, Any]) -> dict[str, Any]:
    """One ingest row (a dict from ``ReadFromParquet``) -> the raw feature dict, its text normalized."""
    from musicrec.data.text import normalize_to_string

    price, rank = row[schema.PRICE], row[schema.SALES_RANK]
    return {
        schema.REVIEWER_ID: row[schema.REVIEWER_ID], schema.ASIN: row[schema.ASIN],
        schema.FORMAT: row[schema.FORMAT],
        features.REVIEW_TOKENS: normalize_to_string(row[schema.REVIEW_TEXT]),
        features.SUMMARY_TOKENS: normalize_to_string(row[schema.SUMMARY]),
        schema.RATING: int(row[schema.RATING]), schema.VERIFIED: int(row[schema.VERIFIED]),
        schema.HELPFUL_VOTES: int(row[schema.HELPFUL_VOTES]),
        schema.PRICE: [] if price is None else [price], schema.SALES_RANK: [] if rank is None else [rank],
    }  # fmt: skip


def reference_preprocess(examples: Path, out: Path, settings: TransformSettings) -> None:
    """The textbook tf.Transform pipeline on the DirectRunner (see the module docstring); writes ``out/``."""
    import apache_beam as beam
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

    from musicrec.data.raw_batches import raw_feature_spec
    from musicrec.data.transform import make_preprocessing_fn

    raw_metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(raw_feature_spec()))
    with tft_beam.Context(temp_dir=str(out / "tmp")), beam.Pipeline(runner="DirectRunner") as pipeline:

        def read(split: str) -> beam.PCollection:
            return (
                pipeline
                | f"Read {split}" >> beam.io.ReadFromParquet(str(examples / split / "*.parquet"),
                                                             columns=list(features.INGEST_COLUMNS_READ))
                | f"Normalize {split}" >> beam.Map(_instance)
            )  # fmt: skip

        def write(split: str, transformed: Any) -> None:
            rows, metadata = transformed
            coder = tft.coders.ExampleProtoCoder(metadata.schema)
            _ = (
                rows
                | f"Encode {split}" >> beam.Map(coder.encode)
                | f"Write {split}" >> beam.io.WriteToTFRecord(
                    str(out / "transformed" / split / "part"), file_name_suffix=".tfrecord.gz",
                    compression_type=beam.io.filesystem.CompressionTypes.GZIP,
                )
            )  # fmt: skip

        train, transform_fn = (read(schema.TRAIN), raw_metadata) | "Analyze and transform train" >> (
            tft_beam.AnalyzeAndTransformDataset(make_preprocessing_fn(settings))
        )
        write(schema.TRAIN, train)
        for split in (schema.EVAL, schema.TEST):
            transformed = ((read(split), raw_metadata), transform_fn) | f"Transform {split}" >> (
                tft_beam.TransformDataset()
            )
            write(split, transformed)
        _ = transform_fn | "Write transform graph" >> tft_beam.WriteTransformFn(str(out / "graph"))


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its children that have ended (a pool's workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_preprocess_once(which: str, examples: str, out: str) -> None:
    """In a fresh process (``python -c``): run ours or the reference once; print its wall and CPU seconds as JSON.

    The clocks start after the heavy imports, which both pay alike and a long-running worker pays once.
    """
    import apache_beam  # noqa: F401
    import tensorflow_transform  # noqa: F401

    from musicrec.data.transform import preprocess

    target = Path(out)
    started, cpu = time.perf_counter(), _cpu_seconds()
    if which == "ours":
        preprocess(examples, target / "transformed", target / "graph", target / "report.json")
    else:
        reference_preprocess(Path(examples), target, TransformSettings())
    print(json.dumps({"seconds": time.perf_counter() - started, "cpu_seconds": _cpu_seconds() - cpu}))


def _preprocess_in_process(which: str, examples: Path, out: Path, log: Path) -> dict[str, float]:
    """Run :func:`run_preprocess_once` in a child process (its logs to ``log``); its wall and CPU seconds."""
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            "from musicrec.progress import configure_logging; configure_logging(); "
            "import ratios; ratios.run_preprocess_once(*sys.argv[1:])")  # fmt: skip
    with log.open("a") as stderr:
        done = subprocess.run([sys.executable, "-c", code, which, str(examples), str(out)], stdout=subprocess.PIPE,
                              stderr=stderr, text=True)  # fmt: skip
    if done.returncode:
        raise SystemExit(f"preprocess ({which}) failed: see {log}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _same_outputs(ours: Path, reference: Path) -> dict[str, Any]:
    """Check that both pipelines wrote the same vocabularies and as many rows per split; return the counts."""
    import tensorflow as tf
    import tensorflow_transform as tft

    mine, theirs = tft.TFTransformOutput(str(ours / "graph")), tft.TFTransformOutput(str(reference / "graph"))
    for name in features.VOCABULARIES:
        if mine.vocabulary_by_name(name) != theirs.vocabulary_by_name(name):
            raise SystemExit(f"preprocess: vocabulary {name} differs from the reference's")
    rows = {}
    for split in schema.SPLITS:
        counts = [
            sum(1 for _ in tf.data.TFRecordDataset(sorted(map(str, (root / "transformed" / split).glob("*.gz"))),
                                                   compression_type="GZIP"))
            for root in (ours, reference)
        ]  # fmt: skip
        if counts[0] != counts[1]:
            raise SystemExit(f"preprocess: {split}: {counts[0]:,} transformed rows, the reference {counts[1]:,}")
        rows[split] = counts[0]
    return {"rows": rows, "vocabulary_sizes": {n: mine.vocabulary_size_by_name(n) for n in features.VOCABULARIES}}


def preprocess_ratio(examples: Path, limit: int, repeats: int, workdir: Path) -> dict[str, Any]:
    """Section 1: our preprocess and the textbook pipeline on the same ``limit`` rows, alternately."""
    shutil.rmtree(workdir, ignore_errors=True)
    subset = workdir / "examples"
    rows = take_rows(examples, subset, limit)
    log = workdir / "beam.log"
    cpu: dict[str, list[float]] = {"ours": [], "reference": []}

    def once(which: str) -> Callable[[], float]:
        def run() -> float:
            timed = _preprocess_in_process(which, subset, workdir / f"{which}-{len(cpu[which]) + 1}", log)
            cpu[which].append(timed["cpu_seconds"])
            print(f"preprocess {which} run {len(cpu[which])}: {timed['seconds']:.1f} s, "
                  f"{timed['cpu_seconds']:.1f} CPU s", file=sys.stderr)  # fmt: skip
            return timed["seconds"]

        return run

    ours, reference = alternate(once("ours"), once("reference"), repeats)
    checked = _same_outputs(workdir / f"ours-{repeats}", workdir / f"reference-{repeats}")
    total = sum(rows.values())
    return {
        "rows": total, "split_rows": rows, "ours_seconds": ours, "reference_seconds": reference,
        "ours": median(ours), "reference": median(reference), "ratio": median(reference) / median(ours),
        "unit": "seconds", "ours_cpu_seconds": cpu["ours"], "reference_cpu_seconds": cpu["reference"],
        "cpu_ratio": median(cpu["reference"]) / median(cpu["ours"]), "checked": checked, "log": str(log),
    }  # fmt: skip


# --- 2. the CNN streamed against the same batches from memory ------------------------------------------------
class _StepClock(keras.callbacks.Callback):
    """The time at the end of every training step."""

    def __init__(self) -> None:
        super().__init__()
        self.ends: list[float] = []

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        """Note the time."""
        self.ends.append(time.perf_counter())


def examples_per_second(model: keras.Model, data: Any, steps: int, batch_size: int) -> float:
    """Fit ``model`` on ``data`` (warm-up steps, then ``steps``); examples/s over the steps after the warm-up."""
    clock = _StepClock()
    model.fit(data, epochs=1, verbose=0, callbacks=[clock])
    if len(clock.ends) != _WARMUP_STEPS + steps:
        raise SystemExit(f"expected {_WARMUP_STEPS + steps} steps, ran {len(clock.ends)}")
    return steps * batch_size / (clock.ends[-1] - clock.ends[_WARMUP_STEPS - 1])


def cnn_ratio(preprocessed: Path, steps: int, repeats: int) -> dict[str, Any]:
    """Section 2: the default CNN fed by ``make_dataset`` and by the same batches held in NumPy, alternately."""
    import tensorflow as tf
    from train_cnn import default_cnn

    from musicrec.models.sentiment import TEXT_INPUTS
    from musicrec.models.training import make_dataset

    model, files, spec, settings = default_cnn(preprocessed)

    def streamed() -> tf.data.Dataset:
        return make_dataset(files, spec, TEXT_INPUTS, features.SENTIMENT_LABEL, settings.batch_size,
                            settings.seed, trim_padding=True).take(_WARMUP_STEPS + steps)  # fmt: skip

    batches = [({name: ids.numpy() for name, ids in x.items()}, labels.numpy()) for x, labels in streamed()]
    signature = (
        {name: tf.TensorSpec((None, None), tf.int64, name=name) for name in TEXT_INPUTS},
        tf.TensorSpec((None,), tf.int64),
    )

    def in_memory() -> tf.data.Dataset:
        return tf.data.Dataset.from_generator(lambda: iter(batches), output_signature=signature).prefetch(
            tf.data.AUTOTUNE
        )

    model.fit(in_memory(), epochs=1, verbose=0)  # trace once before either is timed
    ours, reference = alternate(
        lambda: examples_per_second(model, streamed(), steps, settings.batch_size),
        lambda: examples_per_second(model, in_memory(), steps, settings.batch_size),
        repeats,
    )
    widths = [inputs[features.REVIEW_IDS].shape[1] for inputs, _ in batches]
    return {
        "steps": steps, "batch_size": settings.batch_size, "ours_examples_per_second": ours,
        "reference_examples_per_second": reference, "ours": median(ours), "reference": median(reference),
        "ratio": median(ours) / median(reference), "unit": "examples/s",
        "mean_review_width": round(float(np.mean(widths)), 1),
    }  # fmt: skip


# --- 3. ranking against brute force -----------------------------------------------------------------------
def chunked_top(user_vectors: np.ndarray, item_vectors: np.ndarray, k: int) -> np.ndarray:
    """Ours: each user's ``k`` best items by dot product, in user chunks of at most ``SCORE_BLOCK`` scores."""
    from musicrec.models.recommender.retrieval import SCORE_BLOCK, top_by_score

    chunk = max(1, SCORE_BLOCK // max(len(item_vectors), 1))
    return np.concatenate([
        top_by_score(user_vectors[start : start + chunk] @ item_vectors.T, k)[0]
        for start in range(0, len(user_vectors), chunk)
    ])  # fmt: skip


def brute_force_top(user_vectors: np.ndarray, item_vectors: np.ndarray, k: int) -> np.ndarray:
    """The naive reference: the whole score matrix, then a full stable sort of each user's row."""
    scores = user_vectors @ item_vectors.T
    return np.stack([np.argsort(-row, kind="stable")[:k] for row in scores])


def ranking_ratio(users: int, items: int, repeats: int) -> dict[str, Any]:
    """Section 3: :func:`chunked_top` against :func:`brute_force_top` on random vectors, alternately."""
    from musicrec.settings import RatingSettings

    rng = np.random.default_rng(0)
    dim = RatingSettings().retrieval_dim
    user_vectors = rng.normal(size=(users, dim)).astype(np.float32)
    item_vectors = rng.normal(size=(items, dim)).astype(np.float32)
    found: dict[str, np.ndarray] = {}

    def timed(name: str, rank: Callable[[np.ndarray, np.ndarray, int], np.ndarray]) -> Callable[[], float]:
        def run() -> float:
            started = time.perf_counter()
            found[name] = rank(user_vectors, item_vectors, _TOP_K)
            seconds = time.perf_counter() - started
            print(f"ranking {name}: {seconds:.1f} s", file=sys.stderr)
            return seconds

        return run

    ours, reference = alternate(timed("ours", chunked_top), timed("reference", brute_force_top), repeats)
    same_sets = bool((np.sort(found["ours"], axis=1) == np.sort(found["reference"], axis=1)).all())
    if not same_sets:
        raise SystemExit("ranking: the top 10 of ours and of brute force differ")
    return {
        "users": users, "items": items, "dim": dim, "k": _TOP_K, "ours_seconds": ours,
        "reference_seconds": reference, "ours": median(ours), "reference": median(reference),
        "ratio": median(reference) / median(ours), "unit": "seconds", "same_top_sets": same_sets,
        "same_top_order": bool((found["ours"] == found["reference"]).all()),
    }  # fmt: skip


# --- the report -------------------------------------------------------------------------------------------
_WHAT = {
    "preprocess": "preprocess, {rows:,} rows, vs a textbook tf.Transform pipeline (normalizer in a beam.Map)",
    "cnn": "train_cnn's CNN, {steps} steps of {batch_size}: make_dataset streaming vs the same batches from NumPy",
    "ranking": "top {k} of {items:,} items for {users:,} users: chunked product + top_by_score vs full matrix, "
    "argsort a row",
}


def _figure(result: dict[str, Any], key: str) -> str:
    value = result[key]
    if result["unit"] == "seconds":
        rows = result.get("rows")
        return f"{value:,.1f} s" + (f" ({rows / value:,.0f} rows/s)" if rows else "")
    return f"{value:,.0f} examples/s"


def markdown(results: dict[str, dict[str, Any]], repeats: int) -> str:
    """The README table: what, ours, reference (medians of ``repeats`` alternated runs), ratio."""
    lines = [
        f"| what (median of {repeats} alternated runs each) | ours | reference | speed ratio (ours / reference) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for section, result in results.items():
        what = _WHAT[section].format(**result)
        lines.append(f"| {what} | {_figure(result, 'ours')} | {_figure(result, 'reference')} | "
                     f"**{result['ratio']:.2f}** |")  # fmt: skip
        if "cpu_ratio" in result:
            ours, reference = (median(result[f"{side}_cpu_seconds"]) for side in ("ours", "reference"))
            lines.append(f"| the same runs' CPU seconds (user + system, every process) | {ours:,.1f} CPU s | "
                         f"{reference:,.1f} CPU s | **{result['cpu_ratio']:.2f}** |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    """Run the chosen sections, print the table, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preprocess", action="store_true", help="run the preprocess section")
    parser.add_argument("--cnn", action="store_true", help="run the CNN input pipeline section")
    parser.add_argument("--ranking", action="store_true", help="run the ranking section")
    parser.add_argument("--examples", default=".tmp/bench-1584082/ingest/examples", help="ingest examples/ dir")
    parser.add_argument("--limit", type=int, default=100_000, help="rows preprocessed (from all splits)")
    parser.add_argument("--workdir", default=".tmp/ratios", help="where the preprocess runs write (emptied)")
    parser.add_argument("--preprocessed", default=".tmp/bench-1584082/preprocess", help="transformed/ + graph/")
    parser.add_argument("--steps", type=int, default=400, help="CNN steps timed per run")
    parser.add_argument("--users", type=int, default=5_000)
    parser.add_argument("--items", type=int, default=70_000)
    parser.add_argument("--repeats", type=int, default=2, help="runs of ours and of the reference, alternated")
    parser.add_argument("--out", default=".tmp/ratios.json")
    args = parser.parse_args()
    chosen = [s for s in ("preprocess", "cnn", "ranking") if getattr(args, s)] or ["preprocess", "cnn", "ranking"]
    load_before = os.getloadavg()
    results: dict[str, dict[str, Any]] = {}
    for section in chosen:
        started = time.monotonic()
        if section == "preprocess":
            results[section] = preprocess_ratio(Path(args.examples), args.limit, args.repeats, Path(args.workdir))
        elif section == "cnn":
            results[section] = cnn_ratio(Path(args.preprocessed), args.steps, args.repeats)
        else:
            results[section] = ranking_ratio(args.users, args.items, args.repeats)
        results[section]["section_seconds"] = round(time.monotonic() - started, 1)
    table = markdown(results, args.repeats)
    report = {"results": results, "repeats": args.repeats, "cpus": os.cpu_count(),
              "load_average_before": load_before, "load_average_after": os.getloadavg(),
              "markdown": table}  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(table)


if __name__ == "__main__":
    main()
