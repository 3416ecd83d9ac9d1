"""Logging set-up and rate-limited progress lines for long loops (generate, ingest, training)."""

from __future__ import annotations

import logging
import os
import sys
import time

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: int = logging.INFO) -> None:
    """Send musicrec's log lines to stderr with timestamps (idempotent; safe inside a KFP executor).

    Also quiets TensorFlow's C++ start-up chatter (CUDA probing, oneDNN notes) unless the caller chose a level.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    root = logging.getLogger("musicrec")
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT, datefmt="%H:%M:%S"))
        root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False


class Progress:
    """Counts items and logs ``<what>: N <unit> (R/s)`` at most every ``interval_seconds``.

    Args:
        logger: where the lines go.
        what: a short label, e.g. ``"reviews read"``.
        total: the expected count, if known, to show a percentage.
        interval_seconds: the least time between two lines.
    """

    def __init__(
        self, logger: logging.Logger, what: str, total: int | None = None, interval_seconds: float = 10.0
    ) -> None:
        self._logger = logger
        self._what = what
        self._total = total
        self._interval = interval_seconds
        self._start = time.monotonic()
        self._last = self._start
        self.count = 0

    def advance(self, n: int = 1) -> None:
        """Add ``n`` items and log a line if the interval has passed."""
        self.count += n
        now = time.monotonic()
        if now - self._last >= self._interval:
            self._last = now
            self._log(now)

    def done(self) -> float:
        """Log the final count and rate; return the elapsed seconds."""
        now = time.monotonic()
        self._log(now)
        return now - self._start

    def _log(self, now: float) -> None:
        elapsed = max(now - self._start, 1e-9)
        share = f" ({100 * self.count / self._total:.0f}%)" if self._total else ""
        self._logger.info(
            "%s: %s%s, %.0f/s, %.0fs elapsed",
            self._what,
            f"{self.count:,}",
            share,
            self.count / elapsed,
            elapsed,
        )
