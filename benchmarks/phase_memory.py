"""Peak memory of a training step, phase by phase, on the artifacts of a finished ``musicrec run``.

Usage: ``python benchmarks/phase_memory.py RUN_DIR [--step train_dnn|train_autoencoder] [--out DIR]
[--param NAME=VALUE]``, where ``RUN_DIR`` is ``<output>/pipeline_root/<run>`` (``summary.json``'s ``run_dir``).

The step's library function runs in this process while a thread samples its resident memory every 0.1 s. Each
log line the step writes closes a phase: the table shows, per line, the seconds since the start, the peak
resident memory since the line before (what that phase needed at most) and the memory left when it ended.
Writes ``phase_memory.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from musicrec.progress import configure_logging
from musicrec.settings import AutoencoderSettings, RatingSettings

_SAMPLE_SECONDS = 0.1


def resident_bytes() -> int:
    """The resident memory of the running process."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class PhaseMemory(logging.Handler):
    """Records, at every log line, the peak resident memory since the previous line and the memory now."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.started = time.monotonic()
        self.phases: list[dict[str, Any]] = []
        self._peak = resident_bytes()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        while not self._stop.wait(_SAMPLE_SECONDS):
            now = resident_bytes()
            with self._lock:
                self._peak = max(self._peak, now)

    def emit(self, record: logging.LogRecord) -> None:
        """Close the phase that ``record`` ends."""
        now = resident_bytes()
        with self._lock:
            peak, self._peak = max(self._peak, now), now
        self.phases.append({"seconds": round(time.monotonic() - self.started, 1), "peak_bytes": peak,
                            "end_bytes": now, "line": record.getMessage()[:160]})  # fmt: skip

    def close(self) -> None:
        """Stop sampling."""
        self._stop.set()
        super().close()


def _settings(kind: type, parameters: list[str]) -> Any:
    """``kind`` with its defaults, overridden by ``NAME=VALUE`` pairs (the step's own parameter names)."""
    defaults = kind()
    values = dict(item.split("=", 1) for item in parameters)
    return kind.from_parameters({name: type(getattr(defaults, name))(value) for name, value in values.items()})


def step_runner(step: str, run: Path, out: Path, parameters: list[str]) -> Callable[[], Any]:
    """The library call ``step`` makes, on the artifacts ``run`` holds, writing to ``out``."""
    preprocess, cnn = run / "preprocess", run / "train-cnn" / "model"
    if step == "train_dnn":
        from musicrec.models.recommender.train import train_rating

        return lambda: train_rating(
            preprocess / "transformed_examples", preprocess / "transform_graph", cnn,
            run / "train-autoencoder" / "encoder", out / "model", out / "report.json",
            _settings(RatingSettings, parameters),
        )  # fmt: skip
    from musicrec.models.autoencoder import train_autoencoder

    return lambda: train_autoencoder(
        preprocess / "transformed_examples", preprocess / "transform_graph", cnn, out / "encoder",
        out / "report.json", out / "projection.json", _settings(AutoencoderSettings, parameters),
    )  # fmt: skip


def main() -> None:
    """Run the step under the sampler; print the phase table and write ``phase_memory.json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--step", choices=("train_dnn", "train_autoencoder"), default="train_dnn")
    parser.add_argument("--out", type=Path, default=Path(".tmp/phase-memory"))
    parser.add_argument("--param", action="append", default=[], help="NAME=VALUE, a step parameter")
    args = parser.parse_args()
    configure_logging()
    args.out.mkdir(parents=True, exist_ok=True)
    recorder = PhaseMemory()
    logging.getLogger("musicrec").addHandler(recorder)
    step_runner(args.step, args.run_dir.resolve(), args.out.resolve(), args.param)()
    recorder.close()
    peak = max(phase["peak_bytes"] for phase in recorder.phases)
    result = {"step": args.step, "peak_bytes": peak, "phases": recorder.phases}
    (args.out / "phase_memory.json").write_text(json.dumps(result, indent=1) + "\n")
    print("\n| seconds | peak GiB | end GiB | phase ended by |\n| ---: | ---: | ---: | --- |")
    for phase in recorder.phases:
        print(
            f"| {phase['seconds']} | {phase['peak_bytes'] / 2**30:.2f} | {phase['end_bytes'] / 2**30:.2f} | "
            f"{phase['line'][:100]} |"
        )
    print(f"\n{args.step}: peak {peak / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
