"""What every component's body goes through: logging, one-line failures, Kubeflow UI metrics, artifact stamps.

A component is its signature, its docstring and one call of the library inside :func:`step`, then
:func:`publish` of what the call returned. Imported inside the component bodies (KFP runs a component's
function source alone), so this module needs only what the image holds.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any


@contextlib.contextmanager
def step(name: str) -> Iterator[None]:
    """Configure logging; end an expected failure (:class:`~musicrec.errors.MusicrecError`) in one line.

    The task then exits 1 with ``<name> failed: <message>`` instead of a traceback, and publishes nothing:
    the library stages every output and publishes it only when whole.
    """
    from musicrec.errors import MusicrecError
    from musicrec.progress import configure_logging

    configure_logging()
    try:
        yield
    except MusicrecError as error:
        raise SystemExit(f"{name} failed: {error}") from None


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
