"""Benchmark: the sentiment CNN trained by two local workers (MultiWorkerMirroredStrategy) against one worker.

Usage: ``python benchmarks/multiworker.py PREPROCESSED [--workers N] [--param cnn_NAME=VALUE] [--workdir DIR]``;
PREPROCESSED holds ``transformed/`` and ``graph/`` (as ``benchmarks/steps.py`` writes them). Runs ``musicrec
train-cnn --workers N`` (N processes over loopback, TF_CONFIG set for each), then ``musicrec train-cnn`` (one
process) on the same data and settings; prints the wall seconds and the test scores of both as a Markdown table
and writes ``results.json`` into the work directory.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def train(preprocessed: Path, out: Path, workers: int, params: list[str]) -> dict[str, float]:
    """Run ``musicrec train-cnn`` with ``workers`` processes; its wall seconds and test scores."""
    data = ["--transformed", str(preprocessed / "transformed"), "--graph", str(preprocessed / "graph")]
    command = [sys.executable, "-m", "pipelines.cli", "train-cnn", *data, "--out", str(out),
               "--workers", str(workers), *(f"--param={pair}" for pair in params)]  # fmt: skip
    environment = {key: value for key, value in os.environ.items() if key != "TF_CONFIG"}
    started = time.monotonic()
    subprocess.run(command, env=environment, check=True)
    seconds = time.monotonic() - started
    report = json.loads((out / "report.json").read_text())
    scores = {name: report["test"][name] for name in ("accuracy", "balanced_accuracy", "auc")}
    return {"seconds": round(seconds, 1), **scores,
            "ngram_linear_auc": report["baselines"]["test"]["ngram_linear"]["auc"],
            "epochs": len(report["history"]["val_auc"]), "replicas": report["replicas"]}  # fmt: skip


def main() -> None:
    """Run the benchmark and print the README table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("preprocessed", type=Path)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--param", action="append", default=[], metavar="cnn_NAME=VALUE")
    parser.add_argument("--workdir", type=Path, default=Path(".tmp/bench-multiworker"))
    args = parser.parse_args()
    results = {
        f"{args.workers} workers": train(args.preprocessed, args.workdir / "workers", args.workers, args.param),
        "1 worker": train(args.preprocessed, args.workdir / "one", 1, args.param),
    }
    (args.workdir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print("| run | wall seconds | test accuracy | balanced accuracy | AUC | n-gram AUC | CNN epochs |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for run, r in results.items():
        print(f"| {run} | {r['seconds']:,} | {r['accuracy']} | {r['balanced_accuracy']} | {r['auc']} | "
              f"{r['ngram_linear_auc']} | {r['epochs']} |")  # fmt: skip


if __name__ == "__main__":
    main()
