"""Benchmark the data steps at a given scale: generate, ingest, preprocess; wall seconds and peak memory each.

Usage: ``python benchmarks/steps.py [--reviews N] [--items M] [--workdir DIR]`` (default: the full Digital Music
scale, 1,584,082 reviews and 74,347 items). Each step runs in its own process; its peak resident memory is
summed over its process tree. Also measures the normalizer alone (docs/s, one core) on the train
split. Prints a Markdown table for the README and writes ``results.json`` into the work directory.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from process_tree import tree_rss_kib

from musicrec.data.planted import FULL_SCALE_ITEMS, FULL_SCALE_REVIEWS, ITEMS_PER_REVIEW

_CALL = "import sys; from musicrec.progress import configure_logging; configure_logging(); "


def measure(command: list[str]) -> dict[str, float]:
    """Run ``command``; return its wall seconds and peak resident memory in MiB; stop if it fails.

    The memory is summed over the command's whole process tree (the normalizer pool and Beam's worker
    processes included), sampled every half second.
    """
    started = time.monotonic()
    process = subprocess.Popen(command)
    peak = 0
    while process.poll() is None:
        peak = max(peak, tree_rss_kib(process.pid))
        time.sleep(0.5)
    seconds = time.monotonic() - started
    if process.returncode != 0:
        raise SystemExit(f"benchmark step failed: {' '.join(command)}")
    return {"seconds": round(seconds, 1), "peak_mib": round(peak / 1024)}


def normalizer_docs_per_second(examples: Path, limit: int = 200_000) -> dict[str, float]:
    """The normalizer alone on train review texts and summaries, one core, cold stem cache."""
    import pyarrow.parquet as pq

    from musicrec.data.text import normalize

    table = pq.read_table(examples / "train", columns=["review_text", "summary"]).slice(0, limit)
    rates = {}
    for column in ("review_text", "summary"):
        texts = table.column(column).to_pylist()
        started = time.perf_counter()
        for text in texts:
            normalize(text)
        rates[f"{column}_docs_per_second"] = round(len(texts) / (time.perf_counter() - started))
    return rates


def main() -> None:
    """Run the benchmark and print the README table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reviews", type=int, default=FULL_SCALE_REVIEWS)
    parser.add_argument("--items", type=int, default=None)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    default_items = (
        FULL_SCALE_ITEMS if args.reviews == FULL_SCALE_REVIEWS else round(args.reviews * ITEMS_PER_REVIEW)
    )
    items = args.items or default_items
    work = Path(args.workdir or f".tmp/bench-{args.reviews}").resolve()
    data, ingested, preprocessed = work / "data", work / "ingest", work / "preprocess"
    results = {
        "generate": measure([sys.executable, "-m", "pipelines.cli", "generate", "--reviews", str(args.reviews),
                             "--items", str(items), "--seed", "0", "--out", str(data)]),
        "ingest": measure([sys.executable, "-c",
                           _CALL + "from musicrec.data.ingest import ingest; ingest(*sys.argv[1:])",
                           str(data / "Digital_Music.json.gz"), str(data / "meta_Digital_Music.json.gz"),
                           str(ingested / "examples"), str(ingested / "quarantine.jsonl.gz"),
                           str(ingested / "report.json")]),
        "preprocess": measure([sys.executable, "-c",
                               _CALL + "from musicrec.data.transform import preprocess; preprocess(*sys.argv[1:])",
                               str(ingested / "examples"), str(preprocessed / "transformed"),
                               str(preprocessed / "graph"), str(preprocessed / "report.json")]),
    }  # fmt: skip
    for step in ("generate", "ingest", "preprocess"):
        results[step]["reviews_per_second"] = round(args.reviews / results[step]["seconds"])
    results["normalizer"] = normalizer_docs_per_second(ingested / "examples")
    report = json.loads((preprocessed / "report.json").read_text())
    results["sizes"] = {"reviews": args.reviews, "items": items, "vocabulary_sizes": report["vocabulary_sizes"]}
    (work / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print("| step | reviews | wall seconds | reviews/s | peak memory, all processes |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for step in ("generate", "ingest", "preprocess"):
        seconds, rate, peak = (results[step][k] for k in ("seconds", "reviews_per_second", "peak_mib"))
        print(f"| {step} | {args.reviews:,} | {seconds:,} | {rate:,} | {peak:,} MiB |")
    print(json.dumps(results["normalizer"]), json.dumps(results["sizes"]))


if __name__ == "__main__":
    main()
