"""Biased MF's factors, L2 (a review) and batch: eval and test RMSE and seconds of each fit on a run's split.

Usage: ``python benchmarks/mf_choices.py --examples <run>/ingest/examples [--factors 8,16,32]
[--l2 0.003,0.03,0.3] [--batches 4096:1e-2,1024:5e-3]`` (batch size:Adam learning rate pairs). Users and items
are indexed by their train appearance (others share one unseen index, as the transform's vocabularies do);
each grid point is one ``biased_mf`` fit with early stopping on eval, 400,000 examples an epoch as train_dnn
runs it. Prints one Markdown row per point.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from musicrec import metrics, schema
from musicrec.models.recommender.classic import MF_BATCH, MF_LEARNING_RATE, biased_mf
from musicrec.settings import RatingSettings


def indexed_splits(examples: Path) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Each split's (user index, item index, rating), indices from train's ids (the last index: unseen)."""
    tables = {split: pq.read_table(examples / split, columns=[schema.REVIEWER_ID, schema.ASIN, schema.RATING])
              for split in schema.SPLITS}  # fmt: skip
    train = tables[schema.TRAIN]
    vocabularies = {column: {value: i for i, value in enumerate(dict.fromkeys(train.column(column).to_pylist()))}
                    for column in (schema.REVIEWER_ID, schema.ASIN)}  # fmt: skip

    def index(table: pa.Table, column: str) -> np.ndarray:
        vocabulary = vocabularies[column]
        return np.array([vocabulary.get(v, len(vocabulary)) for v in table.column(column).to_pylist()], np.int64)

    return {split: (index(table, schema.REVIEWER_ID), index(table, schema.ASIN),
                    table.column(schema.RATING).to_numpy().astype(np.float32))
            for split, table in tables.items()}  # fmt: skip


def main() -> None:
    """Fit every grid point and print its row."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=Path, required=True, help="an ingest output's examples directory")
    parser.add_argument("--factors", default="8,16,32", help="comma-separated factor counts")
    parser.add_argument("--l2", default="0.003,0.03,0.3", help="comma-separated L2 weights a review")
    parser.add_argument("--batches", default=f"{MF_BATCH}:{MF_LEARNING_RATE:g}",
                        help="comma-separated batch_size:learning_rate pairs")  # fmt: skip
    args = parser.parse_args()
    splits, defaults = indexed_splits(args.examples), RatingSettings()
    n_users, n_items = (int(splits[schema.TRAIN][side].max()) + 2 for side in (0, 1))
    print(f"{len(splits[schema.TRAIN][0]):,} train ratings, {n_users - 1:,} users, {n_items - 1:,} items")
    print("| factors | L2 a review | batch | learning rate | eval RMSE | test RMSE | seconds |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    grid = [(int(f), float(l2), int(b.split(":")[0]), float(b.split(":")[1])) for f in args.factors.split(",")
            for l2 in args.l2.split(",") for b in args.batches.split(",")]  # fmt: skip
    for factors, l2, batch, rate in grid:
        started = time.monotonic()
        predict, _ = biased_mf(splits[schema.TRAIN], splits[schema.EVAL], n_users, n_items, defaults.seed,
                               defaults.epoch_examples, factors, (l2,), batch, rate)  # fmt: skip
        seconds = time.monotonic() - started
        rmse = {split: metrics.rmse(splits[split][2], predict(*splits[split][:2]))
                for split in (schema.EVAL, schema.TEST)}  # fmt: skip
        print(f"| {factors} | {l2:g} | {batch} | {rate:g} | {rmse[schema.EVAL]:.4f} | {rmse[schema.TEST]:.4f} | "
              f"{seconds:.1f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
