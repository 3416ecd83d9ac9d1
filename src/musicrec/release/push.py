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
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from musicrec.errors import ModelLoadError, PushError, StorageError
from musicrec.io.artifacts import content_sha256
from musicrec.io.object_store import ObjectStore, open_store
from musicrec.io.provenance import provenance
from musicrec.models import bundles
from musicrec.models.bundles import SAVED_MODEL_FILE
from musicrec.release.lineage import ArtifactRef, add_artifact
from musicrec.release.model_store import LINEAGE_FILE, VERSIONS_PREFIX, version_records
from musicrec.release.scorecard import scorecard_rows
from musicrec.steps import INGEST, PUSHED_MODELS

logger = logging.getLogger(__name__)

# Each pushed model and the step that trained it.
MODELS: dict[str, str] = {name: step.name for name, step in PUSHED_MODELS.items()}
STAGING_PREFIX = ".staging"
MODEL_CARD_FILE = "model_card.md"


def _files(directory: Path) -> list[str]:
    """Relative paths in publishing order: ``saved_model.pb`` next to last, ``lineage.json`` last."""

    def rank(relative: str) -> tuple[int, str]:
        return ({SAVED_MODEL_FILE: 1, LINEAGE_FILE: 2}.get(relative, 0), relative)

    return sorted((p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()), key=rank)


def _claim_version(store: ObjectStore, push_id: str) -> int:
    """The next free version number, claimed atomically; numbers already used by any model are skipped."""
    used = set(version_records(store))
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
        "sentiment": "P(review is positive, rating > 3) from raw review and summary text (`serving_default`: "
        "`review_text`, `summary_text`; the model normalizes them itself); `normalize` returns its tokens.",
        "encoder": "Compresses a review's CNN text code and item metadata into a small code (the autoencoder's "
        "encoder; normalization constants in assets.extra/: z-scores clipped to `clip`).",
        "recommender": "Two heads over train-history features: a user's predicted rating of an item, and the "
        "probability they review it, which ranks recommendations. `serving_default` takes raw `user_id` and "
        "`item_id` strings; the `recommend` signature takes `user_id` and `k` and returns the top k items the "
        "user has not reviewed (the most popular for a user without history); `musicrec recommend` calls it.",
    }
    rows = [f"| {task} | {name} | " + ", ".join(f"{k} {v:.4f}" for k, v in values.items()) + " |"
            for task, name, values in scorecard_rows(card)]  # fmt: skip
    inputs = lineage["steps"][INGEST.name]["inputs"]
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
        try:
            bundles.serving_layout(source, scratch / name)
        except ModelLoadError as error:
            raise PushError(f"{name}: {error}") from None
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
                  "evaluation_id": evaluation.get("id"),
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


def push_evaluated_models(
    model_dirs: dict[str, str | Path], evaluation_ref: ArtifactRef, base_uri: str, model_card_path: str | Path
) -> dict[str, Any]:
    """The push step: read evaluate's output, push the blessed models, write the recommender's model card.

    Args:
        model_dirs: the trained model directories by name (:data:`MODELS`).
        evaluation_ref: evaluate's ``evaluation`` artifact (read from its ``path``, recorded in lineage).
        base_uri: the model store.
        model_card_path: receives the recommender's model card (Markdown).

    Returns:
        The commit record (see :func:`push_models`).

    Raises:
        PushError: the evaluation cannot be read, or see :func:`push_models`.
    """
    try:
        evaluation = json.loads(Path(evaluation_ref.path).read_text())
    except (OSError, ValueError) as error:
        raise PushError(f"cannot read the evaluation at {evaluation_ref.path}: {error}") from None
    record = push_models(model_dirs, evaluation, base_uri, evaluation_ref)
    recommender = record["models"]["recommender"]
    Path(model_card_path).write_text(model_card_text("recommender", record["version"], recommender, evaluation))
    return record


def artifact_metadata(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """What the Kubeflow UI shows beside the model card: the version, its seconds and each pushed model's URI."""
    return {"model_card": {"version": record["version"], "seconds": record["seconds"], **record["models"]}}
