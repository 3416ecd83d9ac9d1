"""One error hierarchy: every failure a user can cause or meet ends in a :class:`MusicrecError`.

Each message is one line that names what is wrong (a URI, a setting, a split). The command line prints it as
``musicrec <command>: error: <message>`` and exits 1; a pipeline component exits with ``<step> failed:
<message>``. Both mappings live in one place each (``pipelines.cli.main``, ``components.runtime``).
"""

from __future__ import annotations


class MusicrecError(Exception):
    """Base of every expected failure; the message is one line for the user."""


def first_line(error: BaseException) -> str:
    """The first line of a library's error message (its type name when it has none), to quote in ours."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class SettingsError(MusicrecError, ValueError):
    """A setting (pipeline parameter) is out of range or malformed."""


class StorageError(MusicrecError):
    """An object or file could not be read or written; the message names the URI and the cause."""


class GeneratorError(MusicrecError, ValueError):
    """The requested data set cannot be generated (sizes out of range)."""


class IngestError(MusicrecError):
    """Ingest cannot produce a usable dataset; the message names the input URI and the cause."""


class PreprocessError(MusicrecError):
    """The preprocess step cannot run on its input."""


class TrainingError(MusicrecError):
    """A training step cannot run on its input."""


class ModelLoadError(MusicrecError):
    """A model directory holds no model this version can load."""


class EvaluationError(MusicrecError):
    """An input of the evaluate step is missing or malformed."""


class PushError(MusicrecError):
    """A push failed; nothing of the version stays visible."""


class LineageError(MusicrecError):
    """A lineage target cannot be found or read."""


class RunError(MusicrecError):
    """A pipeline run could not start, a step failed, or Kubeflow refused a submission."""
