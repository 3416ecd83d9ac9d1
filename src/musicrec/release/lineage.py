"""Lineage: where every artifact came from, checkable without an ML Metadata server.

Each step stamps its outputs with content hashes and :func:`provenance`. The evaluate step gathers the
artifacts it consumed into a chain (evaluate <- training steps <- preprocess <- ingest <- raw input URIs, each
with its URI, sha256 and metadata); push writes that chain as ``lineage.json`` beside every model version.
``musicrec lineage TARGET`` prints it as a tree and ``--verify`` re-hashes whatever it can reach.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from musicrec.errors import LineageError, StorageError
from musicrec.io.artifacts import content_sha256
from musicrec.io.object_store import open_store
from musicrec.io.provenance import provenance
from musicrec.release.model_store import LINEAGE_FILE, latest_version
from musicrec.steps import BY_NAME, EVALUATE, STEPS

LINEAGE_FORMAT = "musicrec.lineage/1"


@dataclass(frozen=True)
class ArtifactRef:
    """One artifact a step consumed: where it is stored (``uri``), where it is readable now (``path``)."""

    step: str
    name: str
    uri: str
    path: Path
    metadata: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """The lineage entry: URI, content sha256 (hashed now, from ``path``) and the step's metadata."""
        return {"name": self.name, "uri": self.uri, "sha256": content_sha256(self.path),
                "metadata": {k: v for k, v in self.metadata.items() if k != "sha256"}}  # fmt: skip


def add_artifact(steps: dict[str, dict[str, Any]], ref: ArtifactRef) -> None:
    """Record ``ref`` under its step in a lineage ``steps`` mapping."""
    steps.setdefault(ref.step, {"upstream": list(BY_NAME[ref.step].upstream), "artifacts": []})
    steps[ref.step]["artifacts"].append(ref.record())


def build_chain(artifacts: list[ArtifactRef], raw_inputs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The lineage chain of a run from the artifacts evaluate consumed.

    Args:
        artifacts: every upstream artifact, tagged with the step that produced it.
        raw_inputs: ingest's input files by role (``reviews``, ``metadata``), each with ``uri``, ``sha256``
            and ``bytes`` as ingest measured them while reading.
    """
    steps: dict[str, dict[str, Any]] = {}
    for ref in artifacts:
        add_artifact(steps, ref)
    steps.setdefault("ingest", {"upstream": [], "artifacts": []})["inputs"] = raw_inputs
    return {"format": LINEAGE_FORMAT, "steps": steps, "provenance": provenance()}


def record_evaluation(
    lineage: dict[str, Any], blessed: bool, reasons: list[str], metrics: dict[str, float]
) -> None:
    """Add the evaluate step's verdict (the node between the models and their training) to a chain."""
    lineage["evaluation"] = {"blessed": blessed, "reasons": reasons, "metrics": metrics}


def _short(digest: str) -> str:
    return f"sha256:{digest[:12]}"


def render_tree(lineage: dict[str, Any]) -> str:
    """The lineage as an indented tree: the pushed model or evaluation at the root, raw inputs at the leaves."""
    lines: list[str] = []
    steps = lineage["steps"]
    shown: set[str] = set()

    def add(text: str, depth: int) -> None:
        lines.append(("   " * (depth - 1) + "└─ " if depth else "") + text)

    def visit(step: str, depth: int) -> None:
        if step not in steps:
            return
        if step in shown:
            add(f"{step} (see above)", depth)
            return
        shown.add(step)
        add(step, depth)
        for artifact in steps[step]["artifacts"]:
            add(f"{artifact['name']}  {_short(artifact['sha256'])}  {artifact['uri']}", depth + 1)
        for role, source in steps[step].get("inputs", {}).items():
            add(f"input {role}  {_short(source['sha256'])}  {source['bytes']:,} bytes  {source['uri']}", depth + 1)
        for parent in steps[step]["upstream"]:
            visit(parent, depth + 1)

    model, evaluation = lineage.get("model"), lineage.get("evaluation", {})
    depth = 0
    if model:
        add(f"model {model['name']} version {model['version']}  {model['uri']}  ({len(model['files'])} files)", 0)
        depth = 1
    if evaluation:
        add(f"evaluate: {'blessed' if evaluation.get('blessed') else 'NOT blessed'}", depth)
        for reason in evaluation.get("reasons", []):
            add(reason, depth + 1)
        for artifact in steps.get("evaluate", {}).get("artifacts", []):
            add(f"{artifact['name']}  {_short(artifact['sha256'])}  {artifact['uri']}", depth + 1)
    # A pushed model starts from the step that trained it; a run from the steps nothing else consumed.
    consumed = {parent for name, step in steps.items() if name != "evaluate" for parent in step["upstream"]}
    roots = (
        [model["trained_by"]]
        if model
        else [s.name for s in STEPS if s.name in steps and s.name not in consumed | {EVALUATE.name}]
    )
    for root in roots:
        visit(root, depth + 1)
    provenance_ = lineage.get("provenance", {})
    if provenance_:
        lines.append("code: musicrec {package_version} @ {git_revision}, image {image}".format(**provenance_))
    return "\n".join(lines)


@dataclass(frozen=True)
class Loaded:
    """A lineage document and the version directory it was read from (``None`` for a run directory)."""

    lineage: dict[str, Any]
    location: str | None


@dataclass(frozen=True)
class Check:
    """One verification: the URI hashed, ``ok`` / ``mismatch`` / ``unreachable``, and what is wrong."""

    uri: str
    status: str
    detail: str = ""


def _check(uri: str, expected: str) -> Check:
    try:
        actual = open_store(uri).tree_sha256("")
    except StorageError as error:
        return Check(uri, "unreachable", str(error))
    if actual != expected:
        return Check(uri, "mismatch", f"sha256 recorded {expected[:12]}, now {actual[:12]}")
    return Check(uri, "ok")


def _model_checks(files: dict[str, str], location: str) -> list[Check]:
    """The model's own files where the user found it: each recorded file as recorded, and no file added."""
    store = open_store(location)
    try:
        present = set(store.list())
    except StorageError as error:
        return [Check(location, "unreachable", str(error))]
    checks = []
    for name, digest in sorted(files.items()):
        uri = store.uri(name)
        checks.append(_check(uri, digest) if name in present else Check(uri, "mismatch", "missing"))
    checks += [Check(store.uri(name), "mismatch", "not in the recorded model")
               for name in sorted(present - files.keys() - {LINEAGE_FILE})]  # fmt: skip
    return checks


def verify(loaded: Loaded) -> list[Check]:
    """Re-hash the model's files where it was found, and every upstream artifact and raw input where recorded."""
    lineage = loaded.lineage
    model = lineage.get("model")
    checks = _model_checks(model["files"], loaded.location or model["uri"]) if model else []
    recorded: list[tuple[str, str]] = []
    for step in lineage["steps"].values():
        recorded += [(artifact["uri"], artifact["sha256"]) for artifact in step["artifacts"]]
        recorded += [(source["uri"], source["sha256"]) for source in step.get("inputs", {}).values()]
    return checks + [_check(uri, expected) for uri, expected in recorded]


def _json(text: bytes | str, where: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as error:
        raise LineageError(f"{where}: not valid JSON ({error})") from None


def _checked(lineage: Any, where: str) -> dict[str, Any]:
    if not (isinstance(lineage, dict) and lineage.get("format") == LINEAGE_FORMAT
            and isinstance(lineage.get("steps"), dict)):  # fmt: skip
        raise LineageError(f"{where}: not a {LINEAGE_FORMAT} document")
    return lineage


def load(target: str) -> Loaded:
    """The lineage of a pushed version, a pushed model (its newest version) or a ``musicrec run`` directory.

    ``target`` is ``<base>/<model>/<version>``, ``<base>/<model>`` (local, ``s3://`` or ``gs://``), or the local
    output directory of ``musicrec run`` (the chain its evaluate step recorded).

    Raises:
        LineageError: nothing lineage-like at ``target``, or a lineage file that is not one.
    """
    local = Path(target)
    if "://" not in target and (local / "summary.json").is_file():
        summary = json.loads((local / "summary.json").read_text())
        evaluation = Path(summary["run_dir"]) / "evaluate" / "evaluation"
        if not evaluation.is_file():
            raise LineageError(f"{target}: the run has no evaluate output (did the pipeline finish?)")
        recorded = _json(evaluation.read_text(), str(evaluation))
        return Loaded(
            _checked(recorded.get("lineage") if isinstance(recorded, dict) else None, str(evaluation)), None
        )
    try:
        store = open_store(target)
        if not store.exists(LINEAGE_FILE):
            version = latest_version(store)
            if version is None:
                raise LineageError(f"{target}: no {LINEAGE_FILE} here; expected a pushed model version, a pushed "
                                   "model or a run directory")  # fmt: skip
            store = open_store(store.uri(str(version)))
        where = store.uri(LINEAGE_FILE)
        return Loaded(_checked(_json(store.read(LINEAGE_FILE), where), where), store.base_uri)
    except StorageError as error:
        raise LineageError(str(error)) from None
