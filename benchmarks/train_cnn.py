"""Benchmark: sentiment CNN training throughput streaming from full-scale transformed TFRecords.

Usage: ``python benchmarks/train_cnn.py [--preprocessed DIR] [--steps N]``; DIR holds ``transformed/`` and
``graph/`` as written by ``benchmarks/steps.py`` (default: its full-scale work directory). Trains the CNN
with the default settings for N steps after a warm-up, reads examples/s from the step timings and the peak
resident memory of this process, and prints one Markdown row.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path
from typing import Any

import keras  # Keras 3 before anything imports tensorflow_transform

from musicrec import features, schema
from musicrec.models.sentiment import NGRAM_BUCKETS, TEXT_INPUTS, build_cnn, build_linear
from musicrec.models.training import (
    distribution_strategy,
    make_dataset,
    seed_everything,
    split_files,
    transformed_feature_spec,
    vocabulary_size,
)
from musicrec.settings import CnnSettings

_WARMUP_STEPS = 30


def default_cnn(root: Path) -> tuple[keras.Model, list[str], dict[str, Any], CnnSettings]:
    """The CNN with the default settings, seeded and compiled; the train split's files; the transformed spec.

    ``root`` holds ``transformed/`` and ``graph/``. ``benchmarks/ratios.py`` builds its CNN here too.
    """
    settings = CnnSettings()
    seed_everything(settings.seed)
    spec = transformed_feature_spec(root / "graph")
    sizes = [vocabulary_size(root / "graph", n) for n in (features.REVIEW_VOCABULARY, features.SUMMARY_VOCABULARY)]
    with distribution_strategy().scope():
        model = build_cnn(*sizes, settings, build_linear(*sizes, NGRAM_BUCKETS, "ngram_linear"))
        model.compile(optimizer=keras.optimizers.Adam(settings.learning_rate), loss="binary_crossentropy")
    return model, split_files(root / "transformed", schema.TRAIN), spec, settings


def main() -> None:
    """Run the benchmark and print the README row."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preprocessed", default=".tmp/bench-1584082/preprocess")
    parser.add_argument("--steps", type=int, default=600)
    args = parser.parse_args()
    model, files, spec, settings = default_cnn(Path(args.preprocessed))
    data = make_dataset(
        files, spec, TEXT_INPUTS, features.SENTIMENT_LABEL, settings.batch_size, settings.seed, trim_padding=True
    )
    model.fit(data.take(_WARMUP_STEPS), epochs=1, verbose=0)
    started = time.monotonic()
    model.fit(data.skip(_WARMUP_STEPS).take(args.steps), epochs=1, verbose=0)
    seconds = time.monotonic() - started
    rate = args.steps * settings.batch_size / seconds
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    length = spec[features.REVIEW_IDS].shape[0]
    result = {
        "examples_per_second": round(rate), "seconds": round(seconds, 1), "steps": args.steps,
        "batch_size": settings.batch_size, "max_review_tokens": length, "peak_mib": round(peak_mib),
    }  # fmt: skip
    print(json.dumps(result))
    print(f"| train_cnn (CPU) | {args.steps * settings.batch_size:,} examples | {seconds:.1f} | {rate:,.0f} "
          f"| {peak_mib:,.0f} MiB |")  # fmt: skip


if __name__ == "__main__":
    main()
