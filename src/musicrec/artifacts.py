"""Writing step outputs safely: stage beside the destination, publish only when whole; content hashes."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def staging_directory(anchor: Path) -> Iterator[Path]:
    """A scratch directory beside ``anchor`` (same filesystem, so publishing is a rename); always removed."""
    anchor.parent.mkdir(parents=True, exist_ok=True)
    staging = anchor.parent / f".{anchor.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


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
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(directory)).encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def attach_metadata(artifacts: Mapping[str, Any], metadata: Mapping[str, Mapping[str, Any]]) -> None:
    """Copy each step output's metadata (keyed by output name) onto the KFP artifact object of that name."""
    for name, artifact in artifacts.items():
        artifact.metadata.update(metadata[name])
