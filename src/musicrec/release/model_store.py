"""The read side of a model store: which versions a push committed, and the newest complete one.

Layout under ``<base>`` (a local directory, ``s3://bucket/prefix`` or ``gs://bucket/prefix``), written by
:mod:`musicrec.release.push`::

    <base>/<model>/<version>/saved_model.pb, variables/, assets/, (assets.extra/), model_card.md, lineage.json
    <base>/.versions/<version>.json     claim, then commit record of each push (metrics, URIs, provenance)
    <base>/.runs/<run id>/evaluation.json   evaluate's output of every pipeline run, blessed or not

A version directory is complete once its ``lineage.json`` exists (it is published last); a push is complete
once its record's ``state`` is ``committed``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from musicrec.errors import PushError, StorageError
from musicrec.io.object_store import ObjectStore, open_store

LINEAGE_FILE = "lineage.json"
VERSIONS_PREFIX = ".versions"
RUNS_PREFIX = ".runs"
_VERSION_RECORD = re.compile(r"(\d+)\.json")


def version_records(store: ObjectStore) -> dict[int, dict[str, Any]]:
    """Every push record (claimed or committed) at the store, by version."""
    records = {}
    for key in store.list(VERSIONS_PREFIX):
        match = _VERSION_RECORD.fullmatch(key.rsplit("/", 1)[-1])
        if match:
            records[int(match.group(1))] = json.loads(store.read(key))
    return records


def current_push(base_uri: str) -> dict[str, Any] | None:
    """The commit record of the newest complete push at ``base_uri`` (``None`` if there is none)."""
    store = open_store(base_uri)
    committed = {v: r for v, r in version_records(store).items() if r.get("state") == "committed"}
    return committed[max(committed)] if committed else None


def latest_version(model_store: ObjectStore) -> int | None:
    """The newest complete version under one model's prefix (one whose ``lineage.json`` exists)."""
    versions = []
    for key in model_store.list():
        version, _, name = key.partition("/")
        if version.isdigit() and name == LINEAGE_FILE:
            versions.append(int(version))
    return max(versions, default=None)


def push_of_evaluation(base_uri: str, evaluation_id: str) -> dict[str, Any] | None:
    """The commit record of the push that published evaluation ``evaluation_id`` (``None`` if none did)."""
    records = version_records(open_store(base_uri)).values()
    return next((r for r in records if r.get("state") == "committed" and r.get("evaluation_id") == evaluation_id),
                None)  # fmt: skip


def record_run_evaluation(base_uri: str, run_id: str, evaluation: dict[str, Any]) -> str:
    """Keep a run's evaluation beside the models it may push (``musicrec submit`` reads it); returns its URI."""
    store = open_store(base_uri)
    key = f"{RUNS_PREFIX}/{run_id}/evaluation.json"
    store.write(key, (json.dumps(evaluation, indent=2) + "\n").encode())
    return store.uri(key)


def run_evaluation(base_uri: str, run_id: str) -> dict[str, Any] | None:
    """What :func:`record_run_evaluation` kept for ``run_id`` (``None`` if nothing)."""
    store = open_store(base_uri)
    key = f"{RUNS_PREFIX}/{run_id}/evaluation.json"
    return json.loads(store.read(key)) if store.exists(key) else None


def check_push_destination(base_uri: str) -> None:
    """Fail now, before hours of training, if a push to ``base_uri`` could not write there.

    Raises:
        PushError: ``push destination <uri> is not writable: cannot write …`` (read-only, unreachable, missing
            bucket, denied).
    """
    try:
        open_store(base_uri).check_writable()
    except StorageError as error:
        raise PushError(f"push destination {base_uri} is not writable: {error}") from None
