"""Writing step outputs safely: stage beside the destination, publish only when whole; content hashes."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from musicrec.io.provenance import provenance
from musicrec.io.storage import file_sha256

_STAGING = ".partial-"  # staging directories are named ".<anchor>.partial-<pid>"


@contextlib.contextmanager
def staging_directory(anchor: Path) -> Iterator[Path]:
    """A scratch directory beside ``anchor`` (same filesystem, so publishing is a rename); always removed.

    Scratch left by a process that no longer exists (one killed outright) is removed on the way in.
    """
    anchor.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{anchor.name}{_STAGING}"
    for stale in anchor.parent.glob(f"{prefix}*"):
        owner = stale.name.removeprefix(prefix)
        if owner.isdigit() and not _alive(int(owner)):
            _remove(stale)
    staging = anchor.parent / f"{prefix}{os.getpid()}"
    _remove(staging)
    staging.mkdir()
    try:
        yield staging
    finally:
        _remove(staging)


def remove_staging(directory: Path) -> None:
    """Remove every staging directory below ``directory``: only where no process writes any more.

    For a supervisor whose task was killed before its own clean-up (the ``finally`` above) could run.
    """
    for staging in sorted(directory.rglob(f".*{_STAGING}*")):
        _remove(staging)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(path: Path, attempts: int = 25) -> None:
    """Remove a directory tree, again while worker processes that are stopping still write into it."""
    for _ in range(attempts):
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            return
        time.sleep(0.2)


def publish(staged: Path, target: Path) -> None:
    """Move a finished file or directory into place; an older one is replaced only after the new is whole."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        os.replace(staged, target)
        return
    retired = target.with_name(f".{target.name}.retired-{os.getpid()}")
    os.replace(target, retired)
    os.replace(staged, target)
    if retired.is_dir():
        shutil.rmtree(retired)
    else:
        retired.unlink()


def directory_sha256(directory: Path) -> str:
    """sha256 over the relative paths and bytes of every file below ``directory``, in sorted order."""
    digest = hashlib.sha256()
    # Sorted as "/"-joined strings, the order an object store lists keys in (see ObjectStore.tree_sha256).
    for path in sorted(
        (p for p in directory.rglob("*") if p.is_file()), key=lambda p: p.relative_to(directory).as_posix()
    ):
        digest.update(path.relative_to(directory).as_posix().encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def content_sha256(path: Path) -> str:
    """sha256 of a file's bytes, or :func:`directory_sha256` of a directory."""
    return directory_sha256(path) if path.is_dir() else file_sha256(path)


def attach_metadata(artifacts: Mapping[str, Any], metadata: Mapping[str, Mapping[str, Any]] | None = None) -> None:
    """Stamp each KFP output artifact (keyed by output name) with its content hash, size and provenance.

    Args:
        artifacts: output name -> KFP artifact object (anything with ``path`` and a ``metadata`` dict); not
            Metrics artifacts, whose metadata the UI reads as the metrics themselves.
        metadata: step-specific metadata by output name (row counts, vocabulary sizes, parameters...).
    """
    stamp = provenance()
    for name, artifact in artifacts.items():
        path = Path(artifact.path)
        if not path.exists():  # Metrics-like artifacts live only in their metadata
            artifact.metadata.update({**stamp, **(metadata or {}).get(name, {})})
            continue
        size = (
            sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
        )
        artifact.metadata.update({"sha256": content_sha256(path), "bytes": size, **stamp})
        artifact.metadata.update((metadata or {}).get(name, {}))
