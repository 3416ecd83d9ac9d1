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


def _check(uri: str, expected: str) -> str | None:
    """``None`` if ``uri`` still hashes to ``expected``, else what is wrong."""
    try:
        actual = open_store(uri).tree_sha256("")
    except StorageError as error:
        return f"unreachable: {error}"
    return None if actual == expected else f"sha256 mismatch: recorded {expected[:12]}, now {actual[:12]}"


def verify(lineage: dict[str, Any]) -> list[dict[str, str]]:
    """Re-hash every recorded artifact, raw input and pushed file that can be reached.

    Returns:
        One entry per check: ``uri``, ``status`` (``ok``, ``mismatch`` or ``unreachable``) and ``detail``.
    """
    checks: list[tuple[str, str]] = []
    model = lineage.get("model")
    if model:
        checks += [(f"{model['uri']}/{name}", digest) for name, digest in sorted(model["files"].items())]
    for step in lineage["steps"].values():
        checks += [(artifact["uri"], artifact["sha256"]) for artifact in step["artifacts"]]
        checks += [(source["uri"], source["sha256"]) for source in step.get("inputs", {}).values()]
    results = []
    for uri, expected in checks:
        problem = _check(uri, expected)
        status = "ok" if problem is None else problem.split(":")[0].split(" ")[-1]
        results.append({"uri": uri, "status": status, "detail": problem or ""})
    return results


def load(target: str) -> dict[str, Any]:
    """The lineage of a pushed version, a pushed model (its newest version) or a ``musicrec run`` directory.

    ``target`` is ``<base>/<model>/<version>``, ``<base>/<model>`` (local, ``s3://`` or ``gs://``), or the local
    output directory of ``musicrec run`` (the chain its evaluate step recorded).

    Raises:
        LineageError: nothing lineage-like at ``target``.
    """
    local = Path(target)
    if "://" not in target and (local / "summary.json").is_file():
        summary = json.loads((local / "summary.json").read_text())
        evaluation = Path(summary["run_dir"]) / "evaluate" / "evaluation"
        if not evaluation.is_file():
            raise LineageError(f"{target}: the run has no evaluate output (did the pipeline finish?)")
        return json.loads(evaluation.read_text())["lineage"]
    try:
        store = open_store(target)
        if store.exists(LINEAGE_FILE):
            return json.loads(store.read(LINEAGE_FILE))
        version = latest_version(store)
        if version is not None:
            return json.loads(store.read(f"{version}/{LINEAGE_FILE}"))
    except StorageError as error:
        raise LineageError(str(error)) from None
    raise LineageError(
        f"{target}: no {LINEAGE_FILE} here; expected a pushed model version, a pushed model or a run directory"
    )
