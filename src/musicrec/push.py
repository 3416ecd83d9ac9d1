"""push: publish a blessed run's models in the layout TF Serving and KServe load, with lineage.

Layout under the destination ``<base>`` (a local directory, ``s3://bucket/prefix`` or ``gs://bucket/prefix``)::

    <base>/<model>/<version>/saved_model.pb, variables/, assets/, (assets.extra/), model_card.md, lineage.json
    <base>/.versions/<version>.json     claim, then commit record of each push (metrics, URIs, provenance)

One push publishes the three models under one integer version. The version number is claimed with an atomic
create-if-absent (an S3 conditional write, a GCS generation precondition, a hard link locally), so concurrent
pushes get distinct versions and nothing is ever overwritten. Files go to a staging prefix first, are read
back and checked against their sha256, then published: a directory rename locally; on S3 and GCS a copy with
``saved_model.pb`` next to last and ``lineage.json`` last, so a version without ``lineage.json`` is never
complete and :func:`latest_version` ignores it. A failure removes whatever it had published.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import re
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from musicrec.artifacts import content_sha256
from musicrec.evaluate import scorecard_rows
from musicrec.lineage import LINEAGE_FILE, ArtifactRef, add_artifact, provenance
from musicrec.storage import ObjectStore, StorageError, open_store

logger = logging.getLogger(__name__)

# Each pushed model and the step that trained it.
MODELS: dict[str, str] = {"sentiment": "train_cnn", "encoder": "train_autoencoder", "recommender": "train_dnn"}
VERSIONS_PREFIX = ".versions"
STAGING_PREFIX = ".staging"
MODEL_CARD_FILE = "model_card.md"
EXTRA_DIRECTORY = "assets.extra"  # TF Serving's place for files beside a SavedModel that it does not load
SAVED_MODEL_FILE = "saved_model.pb"
_VERSION_RECORD = re.compile(r"(\d+)\.json")


class PushError(RuntimeError):
    """A push failed; the message is one line and nothing of the version stays visible."""


def _version_records(store: ObjectStore) -> dict[int, dict[str, Any]]:
    records = {}
    for key in store.list(VERSIONS_PREFIX):
        match = _VERSION_RECORD.fullmatch(key.rsplit("/", 1)[-1])
        if match:
            records[int(match.group(1))] = json.loads(store.read(key))
    return records


def current_push(base_uri: str) -> dict[str, Any] | None:
    """The commit record of the newest complete push at ``base_uri`` (``None`` if there is none)."""
    store = open_store(base_uri)
    committed = {v: r for v, r in _version_records(store).items() if r.get("state") == "committed"}
    return committed[max(committed)] if committed else None


def latest_version(model_store: ObjectStore) -> int | None:
    """The newest complete version under one model's prefix (one whose ``lineage.json`` exists)."""
    versions = []
    for key in model_store.list():
        version, _, name = key.partition("/")
        if version.isdigit() and name == LINEAGE_FILE:
            versions.append(int(version))
    return max(versions, default=None)


def serving_directory(name: str, source: Path, out: Path) -> None:
    """Lay out one trained model as a SavedModel directory TF Serving can load.

    A SavedModel (the sentiment model) is copied as it is; a Keras model is exported with ``model.export``
    and its companion files (normalization, history, vocabularies) go to ``assets.extra/``.
    """
    if (source / SAVED_MODEL_FILE).is_file():
        shutil.copytree(source, out)
        return
    keras_files = sorted(source.glob("*.keras"))
    if len(keras_files) != 1:
        raise PushError(f"{name}: expected a SavedModel or one .keras file in {source}")
    import keras

    keras.models.load_model(keras_files[0]).export(str(out), verbose=False)
    (out / EXTRA_DIRECTORY).mkdir()
    for path in source.iterdir():
        target = out / EXTRA_DIRECTORY / path.name
        shutil.copytree(path, target) if path.is_dir() else shutil.copy2(path, target)


def _files(directory: Path) -> list[str]:
    """Relative paths in publishing order: ``saved_model.pb`` next to last, ``lineage.json`` last."""

    def rank(relative: str) -> tuple[int, str]:
        return ({SAVED_MODEL_FILE: 1, LINEAGE_FILE: 2}.get(relative, 0), relative)

    return sorted((p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()), key=rank)


def _claim_version(store: ObjectStore, push_id: str) -> int:
    """The next free version number, claimed atomically; numbers already used by any model are skipped."""
    used = set(_version_records(store))
    for name in MODELS:
        used |= {int(key.split("/")[1]) for key in store.list(name) if key.split("/")[1].isdigit()}
    version = max(used, default=0) + 1
    claim = json.dumps({"state": "claimed", "push_id": push_id, "claimed_at": time.time()}).encode()
    while not store.create(f"{VERSIONS_PREFIX}/{version}.json", claim):
        version += 1  # another push holds it: never reuse or overwrite a version
    return version


def model_card_text(name: str, version: int, uri: str, evaluation: dict[str, Any]) -> str:
    """A Markdown model card: what the model does, how it was measured, where it came from."""
    card, lineage = evaluation["scorecard"], evaluation["lineage"]
    purposes = {
        "sentiment": "P(review is positive, rating > 3) from normalized review and summary text "
        "(`musicrec.text.normalize_to_string`; `musicrec score` normalizes for you).",
        "encoder": "Compresses a review's CNN text code and item metadata into a small code (the autoencoder's "
        "encoder; normalization constants in assets.extra/).",
        "recommender": "Two heads over train-history features: a user's predicted rating of an item, and the "
        "probability they review it, which ranks recommendations. `serving_default` takes raw `user_id` and "
        "`item_id` strings; `musicrec recommend` ranks the unseen items of a user.",
    }
    rows = [f"| {task} | {name} | " + ", ".join(f"{k} {v:.4f}" for k, v in values.items()) + " |"
            for task, name, values in scorecard_rows(card)]  # fmt: skip
    inputs = lineage["steps"]["ingest"]["inputs"]
    code = lineage["provenance"]
    return "\n".join([
        f"# {name}, version {version}", "", f"`{uri}`", "", f"**Purpose.** {purposes[name]}", "",
        "**Trained on** Amazon Review Data (2018) Digital Music layout: "
        + ", ".join(f"{role} `{src['uri']}` (sha256 `{src['sha256'][:16]}…`)" for role, src in inputs.items())
        + ".",
        "", "**Evaluation** on the chronologically last 10% of reviews (held out from every statistic):", "",
        "| task | model / baseline | test |", "| --- | --- | --- |", *rows, "",
        "**Blessing.**", "", *[f"- {reason}" for reason in evaluation["reasons"]], "",
        "**Limitations.** Users and items unseen in train get the model's cold-start behaviour (history "
        "features empty); text is English-only; numbers above are from this run's data only.", "",
        f"**Code.** musicrec {code['package_version']} at `{code['git_revision']}`, image `{code['image']}`. "
        f"Full chain: `{LINEAGE_FILE}` (`musicrec lineage {uri} --verify`).", "",
    ])  # fmt: skip


def push_models(
    model_dirs: dict[str, str | Path], evaluation: dict[str, Any], base_uri: str,
    evaluation_ref: ArtifactRef | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Publish the models of a blessed run as one new version at ``base_uri``.

    Args:
        model_dirs: the trained model directories by name (:data:`MODELS`).
        evaluation: the evaluate step's output (scorecard, blessing, lineage chain).
        base_uri: the model store.
        evaluation_ref: where ``evaluation`` is stored, recorded in the lineage as the evaluate step's artifact.

    Returns:
        The commit record: ``version``, ``models`` (URI of each pushed version), ``metrics``, provenance.

    Raises:
        PushError: the run is not blessed, an input is missing, a checksum differs, or the store fails
            (permission errors at once; transient errors after retries).
    """
    if not evaluation.get("blessed"):
        raise PushError("refusing to push: the evaluation did not bless this run")
    if set(model_dirs) != set(MODELS):
        raise PushError(f"expected models {sorted(MODELS)}, got {sorted(model_dirs)}")
    started = time.monotonic()
    push_id = uuid.uuid4().hex
    evaluation = {**evaluation, "lineage": copy.deepcopy(evaluation["lineage"])}
    if evaluation_ref is not None:
        add_artifact(evaluation["lineage"]["steps"], evaluation_ref)
    try:
        store = open_store(base_uri)
        with tempfile.TemporaryDirectory(prefix="musicrec-push-") as scratch:
            return _push(store, {k: Path(v) for k, v in model_dirs.items()}, evaluation, push_id, Path(scratch),
                         started)  # fmt: skip
    except StorageError as error:
        raise PushError(str(error)) from None


def _push(
    store: ObjectStore, model_dirs: dict[str, Path], evaluation: dict[str, Any], push_id: str, scratch: Path,
    started: float,
) -> dict[str, Any]:  # fmt: skip
    for name, source in model_dirs.items():
        logger.info("push: preparing %s from %s", name, source)
        serving_directory(name, source, scratch / name)
    version = _claim_version(store, push_id)
    staging = f"{STAGING_PREFIX}/{version}-{push_id}"
    uris = {name: store.uri(f"{name}/{version}") for name in model_dirs}
    manifests: dict[str, dict[str, str]] = {}
    for name in model_dirs:
        local = scratch / name
        (local / MODEL_CARD_FILE).write_text(model_card_text(name, version, uris[name], evaluation))
        manifests[name] = {relative: content_sha256(local / relative) for relative in _files(local)}
        lineage = {**evaluation["lineage"],
                   "model": {"name": name, "version": version, "uri": uris[name], "trained_by": MODELS[name],
                             "files": manifests[name]},
                   "push": {"base_uri": store.base_uri, "version": version, "push_id": push_id,
                            "pushed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                            **provenance()}}  # fmt: skip
        (local / LINEAGE_FILE).write_text(json.dumps(lineage, indent=2) + "\n")
    published: list[str] = []
    try:
        for name in model_dirs:
            files = _files(scratch / name)
            logger.info("push: uploading %s (%d files) to %s", name, len(files), store.uri(f"{staging}/{name}"))
            for relative in files:
                store.upload(f"{staging}/{name}/{relative}", scratch / name / relative)
            for relative, digest in manifests[name].items():
                if store.sha256(f"{staging}/{name}/{relative}") != digest:
                    raise PushError(f"checksum mismatch after upload: {store.uri(f'{staging}/{name}/{relative}')}")
        for name in model_dirs:
            store.promote(f"{staging}/{name}", f"{name}/{version}", _files(scratch / name))
            published.append(name)
        record = {"state": "committed", "version": version, "push_id": push_id, "models": uris,
                  "metrics": evaluation["gated_metrics"], "seconds": round(time.monotonic() - started, 3),
                  **provenance()}  # fmt: skip
        store.write(f"{VERSIONS_PREFIX}/{version}.json", json.dumps(record, indent=2).encode())
    except BaseException:
        for name in published:  # a version is all three models or nothing
            with contextlib.suppress(Exception):
                store.delete(f"{name}/{version}")
        raise
    finally:
        with contextlib.suppress(Exception):
            store.delete(staging)
    logger.info("push: version %d published: %s", version, ", ".join(uris.values()))
    return record
