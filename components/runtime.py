"""What every component's body goes through: logging, one-line failures, Kubeflow UI metrics, artifact stamps.

A component is its signature, its docstring and one call of the library inside :func:`step`, then
:func:`publish` of what the call returned. Imported inside the component bodies (KFP runs a component's
function source alone), so this module needs only what the image holds.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)  # a pod being deleted; a terminal's Ctrl-C under `musicrec run`


class StepInterrupted(BaseException):  # noqa: N818 -- a stop, not an error; like KeyboardInterrupt
    """SIGTERM (a pod being deleted, ``musicrec run`` stopping its tasks) or SIGINT reached a running step.

    A ``BaseException``, so no ``except Exception`` in the library swallows it on its way out of the step.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def handling_signals(signals: tuple[int, ...], handler: Callable[[int, Any], None]) -> Iterator[None]:
    """Handle ``signals`` with ``handler`` for the duration, then restore what was there.

    A signal ignored by whoever started the process (``nohup``, a ``&`` job) stays ignored; outside the main
    thread, which alone may handle signals, nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in signals}
    for signum, old in previous.items():
        if old is not signal.SIG_IGN:
            signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old if old is not None else signal.SIG_DFL)


def _raise_on_stop() -> Callable[[int, Any], None]:
    """A handler that raises :class:`StepInterrupted` in the step, once.

    The library's ``finally`` blocks then remove what was staged, so nothing half-written is published.
    """
    owner = os.getpid()
    raised = False

    def handler(signum: int, frame: Any) -> None:
        nonlocal raised
        if os.getpid() != owner:  # a forked worker inherited this handler: end as it would have
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        if not raised:  # once: a second signal must not cut the clean-up short (SIGKILL is the last word)
            raised = True
            raise StepInterrupted(signum)

    return handler


@contextlib.contextmanager
def step(name: str) -> Iterator[None]:
    """Configure logging; end an expected failure (:class:`~musicrec.errors.MusicrecError`) in one line.

    The task then exits 1 with ``<name> failed: <message>`` instead of a traceback, and publishes nothing:
    the library stages every output and publishes it only when whole. SIGTERM or SIGINT ends the step the same
    way: ``<name> stopped by SIGTERM`` on stderr, exit code 128 + the signal's number, nothing published.
    """
    from musicrec.errors import MusicrecError
    from musicrec.progress import configure_logging

    configure_logging()
    try:
        with handling_signals(STOP_SIGNALS, _raise_on_stop()):
            yield
    except MusicrecError as error:
        raise SystemExit(f"{name} failed: {error}") from None
    except StepInterrupted as stop:
        print(f"{name} stopped by {signal.Signals(stop.signum).name}", file=sys.stderr, flush=True)
        raise SystemExit(128 + stop.signum) from None


def publish(
    artifacts: Mapping[str, Any], metadata: Mapping[str, Mapping[str, Any]], metrics: Any = None,
    values: Mapping[str, float] | None = None, classification: Any = None,
    classified: Mapping[str, Any] | None = None,
) -> None:  # fmt: skip
    """Show a step's results in the Kubeflow UI and stamp its output artifacts.

    Args:
        artifacts: output artifacts by name, stamped with hash, size, provenance and ``metadata[name]``.
        metadata: step-specific metadata by output name.
        metrics: the step's ``Metrics`` output, which gets ``values``.
        values: scalar metrics by name.
        classification: the step's ``ClassificationMetrics`` output, which gets the confusion matrix and ROC
            curve of ``classified`` (a report split with ``confusion_matrix`` and ``roc``).
        classified: see ``classification``.
    """
    from musicrec.io.artifacts import attach_metadata

    for name, value in (values or {}).items():
        metrics.log_metric(name, value)
    if classification is not None and classified is not None:
        classification.log_confusion_matrix(["negative", "positive"], classified["confusion_matrix"])
        roc = classified["roc"]
        classification.log_roc_curve(roc["fpr"], roc["tpr"], roc["thresholds"])
    attach_metadata(artifacts, metadata)
