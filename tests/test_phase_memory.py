"""benchmarks/phase_memory.py: each log line closes a phase with the peak memory the phase reached."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))

from phase_memory import PhaseMemory, resident_bytes  # noqa: E402

MIB = 2**20


def test_a_phase_that_held_memory_briefly_reports_it_as_its_peak_and_not_at_its_end():
    logger = logging.getLogger("musicrec.test_phase_memory")
    logger.setLevel(logging.INFO)
    recorder = PhaseMemory()
    logger.addHandler(recorder)
    try:
        logger.info("start")
        block = np.ones(300 * MIB // 8)  # written, so resident
        time.sleep(0.5)  # the sampler sees it
        del block
        logger.info("after a 300 MiB block came and went")
    finally:
        logger.removeHandler(recorder)
        recorder.close()
    start, after = recorder.phases
    assert after["line"] == "after a 300 MiB block came and went"
    assert after["peak_bytes"] - start["end_bytes"] >= 250 * MIB  # the block, seen while it lived
    assert after["end_bytes"] < after["peak_bytes"] - 250 * MIB  # and gone at the phase's end
    assert abs(after["end_bytes"] - resident_bytes()) < 100 * MIB
