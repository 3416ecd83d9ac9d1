"""Kubeflow Pipelines on a cluster: upload the package as a pipeline version, run it (and wait), or schedule it.

What CI retraining calls (`musicrec submit`, `musicrec schedule`), through the KFP SDK's client against the v2beta1
REST API. A pipeline is found by name or uploaded; a version is found by name (the git revision by default) or
uploaded; the experiment is found or created. Authentication is a bearer token (``--token``,
``KF_PIPELINES_TOKEN``, or a token file such as a projected service-account token); multi-user Kubeflow takes a
namespace. Every failure of the endpoint is one :class:`~musicrec.errors.RunError` line.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from musicrec.errors import RunError, first_line
from musicrec.io.provenance import provenance

logger = logging.getLogger("musicrec.kubeflow")

PIPELINE_NAME = "music-recommender"
TOKEN_VARIABLE = "KF_PIPELINES_TOKEN"
SUCCEEDED = "SUCCEEDED"
FAILED_STATES = frozenset({"FAILED", "CANCELED", "CANCELING", "SKIPPED"})


@dataclass(frozen=True)
class Target:
    """Where and as whom to talk to Kubeflow Pipelines.

    Args:
        host: the KFP API endpoint (``None``: ``KF_PIPELINES_ENDPOINT`` or the in-cluster default).
        token: a bearer token (``None``: ``KF_PIPELINES_TOKEN``, then ``token_file``).
        token_file: a file holding the token, e.g. a projected service-account token.
        namespace: the user namespace of a multi-user Kubeflow (``None``: single-user).
    """

    host: str | None = None
    token: str | None = None
    token_file: str | None = None
    namespace: str | None = None

    def bearer_token(self) -> str | None:
        """The token to send, from the argument, the environment or the file, in that order."""
        if self.token:
            return self.token
        if os.environ.get(TOKEN_VARIABLE):
            return os.environ[TOKEN_VARIABLE]
        if self.token_file:
            try:
                return Path(self.token_file).read_text().strip()
            except OSError as error:
                raise RunError(f"cannot read the token file {self.token_file}: {error.strerror}") from None
        return None

    def describe(self) -> str:
        """The endpoint as a person reads it."""
        return self.host or "the default endpoint"


@dataclass(frozen=True)
class Published:
    """A pipeline version on the server, and the experiment runs of it are filed under."""

    pipeline_id: str
    version_id: str
    version: str
    experiment_id: str


def default_version() -> str:
    """The version name of this code: its git revision (the image's, inside one).

    Raises:
        RunError: the revision is unknown (not a git checkout, no MUSICREC_GIT_REVISION): name it with --version.
    """
    revision = provenance()["git_revision"]
    if revision == "unknown":
        raise RunError("the git revision is unknown here: name the pipeline version with --version")
    return revision


def _call(target: Target, what: str, action: Callable[[], Any]) -> Any:
    """Run one client call; any failure of the endpoint becomes a one-line RunError naming it."""
    try:
        return action()
    except RunError:
        raise
    except Exception as error:  # kfp_server_api ApiException, urllib3 and socket errors all end here
        raise RunError(f"{what} at {target.describe()}: {first_line(error)}") from None


def connect(target: Target) -> Any:
    """A KFP client for ``target`` (checks the endpoint answers)."""
    import kfp

    return _call(target, "cannot reach Kubeflow Pipelines",
                 lambda: kfp.Client(host=target.host, existing_token=target.bearer_token(),
                                    namespace=target.namespace or "kubeflow"))  # fmt: skip


def publish(client: Any, target: Target, package: Path, version: str, experiment: str,
            pipeline_name: str = PIPELINE_NAME) -> Published:  # fmt: skip
    """Find or upload the pipeline and its version ``version``; find or create the experiment.

    Re-running with the same version name reuses that version (a retry of the same commit uploads nothing).
    """

    def pipeline_id() -> str:
        found = client.get_pipeline_id(pipeline_name)
        if found:
            return found
        logger.info("uploading pipeline %s", pipeline_name)
        uploaded = client.upload_pipeline(str(package), pipeline_name=pipeline_name,
                                          description="Review-aware music recommender (musicrec)")  # fmt: skip
        return uploaded.pipeline_id

    def version_id(pid: str) -> str:
        predicate = {"key": "display_name", "operation": "EQUALS", "stringValue": version}
        by_name = json.dumps({"predicates": [predicate]})
        existing = client.list_pipeline_versions(pid, filter=by_name).pipeline_versions or []
        if existing:
            logger.info("reusing pipeline version %s", version)
            return existing[0].pipeline_version_id
        logger.info("uploading pipeline version %s", version)
        return client.upload_pipeline_version(str(package), pipeline_version_name=version,
                                              pipeline_id=pid).pipeline_version_id  # fmt: skip

    pid = _call(target, f"cannot find or upload pipeline {pipeline_name!r}", pipeline_id)
    vid = _call(target, f"cannot find or upload version {version!r}", lambda: version_id(pid))
    found = _call(target, f"cannot find or create experiment {experiment!r}",
                  lambda: client.create_experiment(experiment, namespace=target.namespace))  # fmt: skip
    experiment_id = found.experiment_id
    return Published(pid, vid, version, experiment_id)


def start_run(client: Any, target: Target, published: Published, run_name: str, arguments: dict[str, Any]) -> str:
    """Start a run of the published version; returns its id."""
    run = _call(target, f"cannot start run {run_name!r}", lambda: client.run_pipeline(
        published.experiment_id, run_name, pipeline_id=published.pipeline_id, version_id=published.version_id,
        params=arguments,
    ))  # fmt: skip
    return run.run_id


def wait_for_run(client: Any, target: Target, run_id: str, timeout_seconds: float, poll_seconds: float = 10.0,
                 echo: Callable[[str], None] = print) -> str:  # fmt: skip
    """Follow a run until it ends, echoing each state change; returns the final state on success.

    Raises:
        RunError: the run failed, was canceled or skipped, or is still going after ``timeout_seconds``.
    """
    started, state = time.monotonic(), None
    while True:
        run = _call(target, f"cannot read run {run_id}", lambda: client.get_run(run_id))
        if run.state != state:
            state = run.state
            echo(f"run {run_id}: {state} ({time.monotonic() - started:.0f} s)")
        if state == SUCCEEDED:
            return state
        if state in FAILED_STATES:
            detail = f": {run.error.message}" if getattr(run, "error", None) and run.error.message else ""
            raise RunError(f"run {run_id} ended {state}{detail}")
        if time.monotonic() - started > timeout_seconds:
            raise RunError(f"run {run_id} is still {state} after {timeout_seconds:.0f} s (--timeout)")
        time.sleep(poll_seconds)


def schedule(client: Any, target: Target, published: Published, name: str, cron: str,
             arguments: dict[str, Any]) -> str:  # fmt: skip
    """Create a recurring run of the published version: one at a time, no catch-up of missed runs.

    Returns:
        The recurring run's id.
    """
    recurring = _call(target, f"cannot schedule {name!r}", lambda: client.create_recurring_run(
        published.experiment_id, name, cron_expression=cron, max_concurrency=1, no_catchup=True,
        pipeline_id=published.pipeline_id, version_id=published.version_id, params=arguments,
    ))  # fmt: skip
    return recurring.recurring_run_id


def run_link(target: Target, run_id: str) -> str | None:
    """The run's page in the Kubeflow UI, when the endpoint is known."""
    return f"{target.host.rstrip('/')}/#/runs/details/{run_id}" if target.host else None


def record(published: Published, run_id: str, state: str | None, target: Target) -> dict[str, Any]:
    """What CI keeps of a submission: ids, version, the run's final state and its link."""
    return {**asdict(published), "run_id": run_id, "state": state, "url": run_link(target, run_id)}


def run_summary_of(push_destination: str, run_id: str, run_dir: str | None) -> dict[str, Any]:
    """The summary of a finished run, as ``musicrec run`` writes it, from what it left at ``push_destination``.

    Evaluate keeps each run's evaluation there (``.runs/<run_id>/evaluation.json``), and push its commit record.

    Raises:
        RunError: the run left no evaluation there (it failed before evaluate, or pushes elsewhere).
    """
    from musicrec.errors import StorageError
    from musicrec.release.model_store import push_of_evaluation, run_evaluation
    from musicrec.release.summary import run_summary

    try:
        evaluation = run_evaluation(push_destination, run_id)
        if evaluation is None:
            raise RunError(f"run {run_id} left no evaluation at {push_destination}/.runs/{run_id}/evaluation.json")
        pushed = push_of_evaluation(push_destination, evaluation["id"]) if evaluation["blessed"] else None
    except StorageError as error:
        raise RunError(f"cannot read run {run_id}'s evaluation: {error}") from None
    return run_summary(evaluation, pushed, run_dir or run_id)
