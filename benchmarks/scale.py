"""Benchmark the whole DAG at several data sizes: seconds, reviews/s, peak memory and output bytes of every step.

Usage: ``python benchmarks/scale.py [--sizes 100000,400000,800000,1584082] [--workdir DIR] [--param NAME=VALUE]``.
For each size it generates seed-0 data (74,347 items at full scale, proportionally fewer below; kept in the work
directory and reused), runs ``musicrec run`` on it (kfp.local, default parameters unless ``--param``), and reads
each step's seconds from the run's ``summary.json``. While the run goes it samples, every half second, the
resident memory of each task's process tree (the task is the DAG step the process runs). ``reviews_per_second``
is the input reviews over the step's seconds, for every step, so the rates compare across steps and sizes.

Writes ``docs/scale.json`` (sizes measured earlier are kept unless measured again), the log-log picture
``docs/scale.png`` of seconds against reviews per step, and prints the README table with the exponent of
seconds ~ reviews^k fitted per step over the sizes of 400,000 reviews and more.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from process_tree import children, command_line, process_table, tree_rss_kib

from musicrec.data.planted import FULL_SCALE_ITEMS, FULL_SCALE_REVIEWS, ITEMS_PER_REVIEW
from musicrec.steps import STEPS
from pipelines.supervision import task_of_command

DEFAULT_SIZES = (100_000, 400_000, 800_000, FULL_SCALE_REVIEWS)
FIT_FROM = 400_000  # the exponent is fitted over sizes from here up: below, fixed start-up costs dominate
_SAMPLE_SECONDS = 0.5


def items_for(reviews: int) -> int:
    """The catalogue size that goes with ``reviews``: the category's own at full scale, the same ratio below."""
    return FULL_SCALE_ITEMS if reviews == FULL_SCALE_REVIEWS else round(reviews * ITEMS_PER_REVIEW)


def machine() -> str:
    """CPU model, cores and memory of this machine, for the record."""
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
                 platform.processor())  # fmt: skip
    memory_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return f"{model}, {os.cpu_count()} cores, {memory_kib / 2**20:.0f} GiB, Python {platform.python_version()}"


def run_sampled(command: list[str]) -> dict[str, int]:
    """Run ``musicrec run``; return each task's peak process-tree memory in bytes; stop if the run fails."""
    process = subprocess.Popen(command)
    peaks: dict[str, int] = {}
    while process.poll() is None:
        table = process_table()
        for child in children(process.pid, table):
            task = task_of_command(command_line(child))
            peaks[task] = max(peaks.get(task, 0), tree_rss_kib(child, table) * 1024)
        time.sleep(_SAMPLE_SECONDS)
    if process.returncode != 0:
        raise SystemExit(f"benchmark run failed (exit {process.returncode}): {' '.join(command)}")
    return peaks


def directory_bytes(path: Path) -> int:
    """The bytes of every file under ``path``."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def measure_size(reviews: int, work: Path, parameters: list[str]) -> dict[str, Any]:
    """Generate (once) and run the DAG at one size; the ``sizes`` entry of scale.json."""
    items = items_for(reviews)
    data, output = work / f"{reviews}" / "data", work / f"{reviews}" / "run"
    if not (data / "meta_Digital_Music.json.gz").exists():
        subprocess.run([sys.executable, "-m", "pipelines.cli", "generate", "--reviews", str(reviews), "--items",
                        str(items), "--seed", "0", "--out", str(data)], check=True)  # fmt: skip
    command = [sys.executable, "-m", "pipelines.cli", "run", "--reviews", str(data / "Digital_Music.json.gz"),
               "--metadata", str(data / "meta_Digital_Music.json.gz"), "--output", str(output)]  # fmt: skip
    shutil.rmtree(output, ignore_errors=True)  # a fresh model store: every size's run is its first
    for parameter in parameters:
        command += ["--param", parameter]
    started = time.monotonic()
    peaks = run_sampled(command)
    total = time.monotonic() - started
    summary = json.loads((output / "summary.json").read_text())
    steps = {}
    for step in STEPS:
        seconds = summary["seconds"][step.task]
        steps[step.name] = {
            "seconds": round(seconds, 1),
            "peak_rss_bytes": peaks.get(step.task, 0),
            "rows_per_second": round(reviews / seconds),
            "output_bytes": directory_bytes(Path(summary["run_dir"]) / step.task),
        }
    return {"reviews": reviews, "items": items, "date": datetime.date.today().isoformat(),
            "total_seconds": round(total, 1), "parameters": parameters, "steps": steps}  # fmt: skip


def exponents(sizes: list[dict[str, Any]]) -> dict[str, float]:
    """The fitted k of seconds ~ reviews^k per step, over the sizes from :data:`FIT_FROM` reviews up."""
    fitted = [s for s in sizes if s["reviews"] >= FIT_FROM]
    if len(fitted) < 2:
        return {}
    x = np.log([s["reviews"] for s in fitted])
    return {
        step.name: round(float(np.polyfit(x, np.log([s["steps"][step.name]["seconds"] for s in fitted]), 1)[0]), 2)
        for step in STEPS
    }


def plot(sizes: list[dict[str, Any]], path: Path) -> None:
    """Seconds against reviews per step (and the whole run), log-log."""
    from musicrec.plots import new_figure

    figure, axes = new_figure(width=7.5, height=5.0)
    reviews = [s["reviews"] for s in sizes]
    for step in STEPS:
        axes.plot(reviews, [s["steps"][step.name]["seconds"] for s in sizes], marker="o", label=step.name)
    axes.plot(reviews, [s["total_seconds"] for s in sizes], marker="s", color="black", label="whole run")
    axes.axhline(1_800, color="grey", linestyle="--", linewidth=1, label="30 minutes")
    axes.set(xscale="log", yscale="log", xlabel="reviews", ylabel="wall seconds",
             title="musicrec DAG: seconds per step against data size")  # fmt: skip
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.savefig(path, bbox_inches="tight")


def table(results: dict[str, Any]) -> str:
    """The README table: seconds (peak GiB) per step and size, the fitted exponent last."""
    sizes, fitted = results["sizes"], results["exponents"]
    lines = ["| step | " + " | ".join(f"{s['reviews']:,}" for s in sizes) + " | exponent |",
             "| --- |" + " ---: |" * (len(sizes) + 1)]  # fmt: skip
    for step in STEPS:
        measured = [s["steps"][step.name] for s in sizes]
        cells = [f"{m['seconds']:,} s ({m['peak_rss_bytes'] / 2**30:.1f} GiB)" for m in measured]
        lines.append(f"| {step.name} | " + " | ".join(cells) + f" | {fitted.get(step.name, '')} |")
    lines.append("| **whole run** | " + " | ".join(f"**{s['total_seconds']:,} s**" for s in sizes) + " | |")
    return "\n".join(lines)


def main() -> None:
    """Run the benchmark, write docs/scale.json and docs/scale.png, print the README table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)), help="comma-separated review counts")
    parser.add_argument("--workdir", default=".tmp/scale", help="generated data and run outputs, per size")
    parser.add_argument("--param", action="append", default=[], help="NAME=VALUE passed to musicrec run")
    parser.add_argument("--out", default="docs/scale.json", help="results; the picture goes beside it (.png)")
    args = parser.parse_args()
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {"sizes": []}
    for reviews in (int(size) for size in args.sizes.split(",")):
        measured = measure_size(reviews, Path(args.workdir).resolve(), args.param)
        results["sizes"] = [s for s in results["sizes"] if s["reviews"] != reviews] + [measured]
        results["sizes"].sort(key=lambda s: s["reviews"])
        results.update(machine=machine(), date=datetime.date.today().isoformat())
        results["exponents"] = exponents(results["sizes"])
        out.write_text(json.dumps(results, indent=2) + "\n")  # after every size: a long benchmark keeps its work
        plot(results["sizes"], out.with_suffix(".png"))
        print(table(results), flush=True)


if __name__ == "__main__":
    main()
