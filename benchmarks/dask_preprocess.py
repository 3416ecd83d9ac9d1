"""Benchmark: the preprocess step on the DirectRunner and on Dask, their wall seconds and whether outputs agree.

Usage: ``python benchmarks/dask_preprocess.py --examples DIR [--limit N] [--workers W] [--workdir DIR]``; DIR is an
ingest ``examples`` directory. The first rows of each split, N in all in the splits' proportions, are copied in
row groups of ``--row-group-rows`` (Dask reads a row group a task), then preprocess runs with default settings on
the DirectRunner (its defaults) and on a Dask LocalCluster of W worker processes. Prints one line per runner
and the outputs' differences (vocabularies, transformed rows, report; floats to 1e-4), none when they are equal,
then each split's largest float difference.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from musicrec import schema
from musicrec.data.transform import preprocess
from musicrec.data.transform_compare import float_difference, output_differences, transformed_rows


def slice_examples(examples: Path, out: Path, limit: int | None, row_group_rows: int) -> dict[str, int]:
    """Copy the first rows of each split (``limit`` in all, split proportions kept); return rows per split."""
    tables = {split: pq.read_table(sorted((examples / split).glob("*.parquet"))) for split in schema.SPLITS}
    total = sum(table.num_rows for table in tables.values())
    rows = {}
    for split, table in tables.items():
        kept: pa.Table = table if limit is None else table.slice(0, max(1, round(limit * table.num_rows / total)))
        (out / split).mkdir(parents=True)
        pq.write_table(kept, out / split / "part-00000.parquet", row_group_size=row_group_rows)
        rows[split] = kept.num_rows
    return rows


def run(examples: Path, out: Path, **options: object) -> tuple[dict[str, Path], float]:
    """Preprocess ``examples`` into ``out``; return the output paths and the wall seconds."""
    started = time.monotonic()
    preprocess(examples, out / "transformed", out / "graph", out / "report.json", **options)  # type: ignore[arg-type]
    paths = {"transformed": out / "transformed", "transform_graph": out / "graph", "report": out / "report.json"}
    return paths, time.monotonic() - started


def main() -> None:
    """Run both runners on the slice and print their seconds and differences."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=None, help="rows in all (default: every row)")
    parser.add_argument("--workers", type=int, default=2, help="Dask LocalCluster worker processes")
    parser.add_argument("--row-group-rows", type=int, default=10_000)
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary directory, removed")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="dask-preprocess-"))
    try:
        rows = slice_examples(args.examples, workdir / "examples", args.limit, args.row_group_rows)
        print(f"rows: {sum(rows.values()):,} ({rows})", flush=True)
        direct, direct_seconds = run(workdir / "examples", workdir / "direct")
        print(f"DirectRunner: {direct_seconds:.1f} s", flush=True)
        dask, dask_seconds = run(workdir / "examples", workdir / "dask", beam_runner="DaskRunner",
                                 beam_options=f"--dask_local_workers={args.workers}")  # fmt: skip
        print(f"DaskRunner ({args.workers} worker processes): {dask_seconds:.1f} s", flush=True)
        differences = output_differences(direct, dask)
        print("outputs equal" if not differences else "outputs differ: " + "; ".join(differences))
        for split in schema.SPLITS:
            rows = [transformed_rows(run["transformed"], split) for run in (direct, dask)]
            print(f"{split}: largest float difference {float_difference(*rows):.3g} (inf: other integer or bytes)")
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
