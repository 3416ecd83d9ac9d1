"""Provenance: which code produced an artifact (package version, git revision, container image)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import musicrec

GIT_REVISION_VARIABLE = "MUSICREC_GIT_REVISION"  # baked into the image at build time (containers/)
IMAGE_VARIABLE = "MUSICREC_IMAGE"


def _git_revision() -> str:
    if os.environ.get(GIT_REVISION_VARIABLE):
        return os.environ[GIT_REVISION_VARIABLE]
    source = Path(musicrec.__file__).resolve().parent
    try:
        revision = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True,
                                  timeout=10, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{revision}-dirty" if dirty else revision


def provenance() -> dict[str, str]:
    """Package version, git revision and container image of the code that is running."""
    return {
        "package_version": musicrec.__version__,
        "git_revision": _git_revision(),
        "image": os.environ.get(IMAGE_VARIABLE, "local (not a container)"),
    }
