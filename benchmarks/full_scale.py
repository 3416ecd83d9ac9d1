"""Benchmark: generate the full Digital Music scale, then ingest it; wall seconds and peak memory per step.

Usage: ``python benchmarks/full_scale.py [--reviews N] [--items M] [--workdir DIR]``. Each step runs in its
own process so its peak resident memory (``ru_maxrss`` from ``wait4``) is its own. Prints a Markdown table
for the README and writes ``results.json`` into the work directory.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from musicrec.generate import FULL_SCALE_ITEMS, FULL_SCALE_REVIEWS


def measure(command: list[str]) -> dict[str, float]:
    """Run ``command``; return its wall seconds and peak RSS in MiB, or raise if it fails."""
    started = time.monotonic()
    process = subprocess.Popen(command)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.monotonic() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"benchmark step failed: {' '.join(command)}")
    return {"seconds": round(seconds, 1), "peak_mib": round(usage.ru_maxrss / 1024)}


def main() -> None:
    """Run the benchmark and print the README table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reviews", type=int, default=FULL_SCALE_REVIEWS)
    parser.add_argument("--items", type=int, default=FULL_SCALE_ITEMS)
    parser.add_argument("--workdir", default=".tmp/bench-full-scale")
    args = parser.parse_args()
    work = Path(args.workdir).resolve()
    data, out = work / "data", work / "ingest"
    results = {
        "generate": measure([sys.executable, "-m", "pipelines.cli", "generate", "--reviews", str(args.reviews),
                             "--items", str(args.items), "--seed", "0", "--out", str(data)]),
        "ingest": measure([sys.executable, "-c",
                           "import sys; from musicrec.progress import configure_logging; configure_logging();"
                           "from musicrec.ingest import ingest; ingest(*sys.argv[1:])",
                           str(data / "Digital_Music.json.gz"), str(data / "meta_Digital_Music.json.gz"),
                           str(out / "examples"), str(out / "quarantine.jsonl.gz"), str(out / "report.json")]),
    }  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    results["ingest"]["reviews_per_second"] = round(args.reviews / results["ingest"]["seconds"])
    results["sizes"] = {
        "reviews": args.reviews,
        "items": args.items,
        "reviews_gz_mib": round((data / "Digital_Music.json.gz").stat().st_size / 2**20),
        "kept": report["kept"],
        "users": report["users"],
    }
    (work / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print("| step | reviews | wall seconds | peak memory |")
    print("| --- | ---: | ---: | ---: |")
    for step in ("generate", "ingest"):
        print(f"| {step} | {args.reviews:,} | {results[step]['seconds']:,} | {results[step]['peak_mib']:,} MiB |")
    print(json.dumps(results["sizes"]))


if __name__ == "__main__":
    main()
