"""Run the whole DAG on this machine with ``kfp.local`` and gather every step's results into ``summary.json``."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from musicrec import features, schema
from musicrec.data.generate import generate_dataset
from musicrec.errors import RunError
from musicrec.release.model_store import push_of_evaluation
from musicrec.release.summary import run_summary
from musicrec.settings import check_pipeline_arguments
from pipelines.supervision import Interrupted, TaskRunner, controlled

logger = logging.getLogger("musicrec.run")

DEFAULT_SAMPLE_REVIEWS = 40_000
DEFAULT_SAMPLE_SEED = 2018
MODEL_STORE = "model_store"  # push_destination of a local run, under its output directory
RUNNERS = ("subprocess", "docker")
DATA_FLAGS = {"reviews_uri": "--reviews", "metadata_uri": "--metadata"}
IMAGE_USER = (1000, 1000)  # the user the project image runs as (containers/Dockerfile)
LOGS = "logs"  # under the run directory: <task>.log per task (what kfp.local streams), kfp.log (its own lines)
# A musicrec log line of a task (progress.LOG_FORMAT): what a quiet run shows of a task's output.


def pipeline_parameters() -> dict[str, str]:
    """The pipeline's parameters and their KFP types (``String``, ``Integer``, ``Float``, ``Boolean``)."""
    from pipelines.music_recommender import music_recommender

    inputs = music_recommender.component_spec.inputs or {}
    return {name: spec.type for name, spec in inputs.items()}


def parse_parameters(pairs: list[str], flags: dict[str, str] | None = None) -> dict[str, Any]:
    """Turn ``name=value`` strings into typed pipeline arguments.

    Args:
        pairs: the ``--param`` values.
        flags: parameters that have a flag of their own (name -> flag); ``--param`` may not set them, so one
            value never silently overrides another. The data URIs always have theirs.

    Raises:
        RunError: a pair without ``=``, an unknown name, a parameter with its own flag, or a value of the wrong
            type.
        SettingsError: a hyperparameter or threshold out of range.
    """
    known = pipeline_parameters()
    flags = {**DATA_FLAGS, **(flags or {})}
    parsed: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise RunError(f"--param {pair!r}: expected name=value")
        if name in flags:
            raise RunError(f"--param {name}: give it with {flags[name]} instead")
        if name not in known:
            raise RunError(f"--param {name!r}: unknown parameter; the pipeline takes {', '.join(sorted(known))}")
        kind = known[name]
        try:
            if kind == "Integer":
                parsed[name] = int(value)
            elif kind == "Float":
                parsed[name] = float(value)
            elif kind == "Boolean":
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(value)
                parsed[name] = value.lower() in ("true", "1")
            else:
                parsed[name] = value
        except ValueError:
            raise RunError(f"--param {name}={value!r}: expected {kind.lower()}") from None
    check_pipeline_arguments(parsed)
    return parsed


def _local_path(uri: str) -> Path | None:
    """The filesystem path of a local input (a plain path or ``file://``); ``None`` for a remote URI."""
    if "://" in uri and not uri.startswith("file://"):
        return None
    return Path(uri.removeprefix("file://"))


def _check_local_input(uri: str) -> None:
    """Fail before starting the DAG when a local input is plainly missing (remote ones are checked by ingest)."""
    path = _local_path(uri)
    if path is not None and not path.is_file():
        raise RunError(f"cannot read {uri}: {'is a directory' if path.is_dir() else 'not found'}")


def _check_visible_in_containers(uri: str, output: Path) -> None:
    """A local input of a docker run must be inside the run directory, the one directory its containers see."""
    path = _local_path(uri)
    if path is not None and not path.resolve().is_relative_to(output):
        raise RunError(f"{uri}: with --runner docker a local input must be inside {output} (the one directory "
                       "the step containers see): copy it there, or give an s3:// or gs:// URI")  # fmt: skip


def _docker_pipeline(output: Path, image: str | None, gpu_image: str | None) -> tuple[Any, Any]:
    """The compiled package pointed at the images, loaded for kfp.local, and a DockerRunner that can write here."""
    from kfp import components, local

    from components import BASE_IMAGE
    from pipelines.package import compile_pipeline

    image = image or BASE_IMAGE
    package = compile_pipeline(output / "music_recommender.yaml", image, gpu_image or image)
    if os.getuid() == 0:
        # Root here: run the steps as the image's own non-root user, as a cluster would, on a tree it owns.
        for path in (output, *output.rglob("*")):
            os.chown(path, *IMAGE_USER, follow_symlinks=False)
        user = ":".join(map(str, IMAGE_USER))
    else:
        user = f"{os.getuid()}:{os.getgid()}"
    return components.load_component_from_file(str(package)), local.DockerRunner(user=user)


def run_locally(
    output_dir: str | Path,
    reviews_uri: str | None = None,
    metadata_uri: str | None = None,
    parameters: dict[str, Any] | None = None,
    sample_reviews: int = DEFAULT_SAMPLE_REVIEWS,
    runner: str = "subprocess",
    image: str | None = None,
    gpu_image: str | None = None,
    verbose: bool = False,
) -> dict[str, Any]:
    """Run the DAG with ``kfp.local`` and write ``<output_dir>/summary.json``.

    Args:
        output_dir: receives ``data/`` (a generated sample), ``pipeline_root/`` (every task's artifacts),
            ``model_store/`` (blessed models, unless ``push_destination`` is given) and ``summary.json``.
        reviews_uri: reviews file; with ``metadata_uri`` unset too, a sample is generated instead.
        metadata_uri: metadata file.
        parameters: further pipeline arguments by name.
        sample_reviews: size of the generated sample when no data is given.
        runner: ``subprocess`` runs each step in this interpreter; ``docker`` runs the compiled package
            (``<output_dir>/music_recommender.yaml``) with each step in its image, as a cluster does. The
            containers see ``output_dir`` only (mounted at the same path), so local inputs must be inside it;
            tasks then run as the image's user (1000) when this process is root, else as this process's user.
        image: with ``docker``, every step's image (default ``components.BASE_IMAGE``).
        gpu_image: with ``docker``, the training steps' image (default: ``image``; no GPU is used locally).
        verbose: stream kfp.local's own output (executor input JSON, task banners) and every task's whole
            output to stdout, as kfp.local does. Otherwise only the steps' progress lines show (stderr), and each
            task's output is in ``<output_dir>/logs/<task>.log``, kfp.local's in ``logs/kfp.log``.

    Returns:
        The summary (also in ``summary.json``).

    Raises:
        RunError: bad arguments, a missing local input, or a failed step, whose own one-line message it carries.
        Interrupted: SIGINT, SIGTERM or SIGHUP; every task process has ended by then, and nothing half-written
            is published (each step publishes its outputs whole).
    """
    if (reviews_uri is None) != (metadata_uri is None):
        raise RunError("give both --reviews and --metadata, or neither to use the generated sample")
    if runner not in RUNNERS:
        raise RunError(f"--runner {runner!r}: expected one of {', '.join(RUNNERS)}")
    if runner != "docker" and (image or gpu_image):
        raise RunError("--image and --gpu-image choose the images of --runner docker")
    for uri in (reviews_uri, metadata_uri):
        if uri is not None:
            _check_local_input(uri)
    output = Path(output_dir).resolve()
    if output.exists() and not output.is_dir():
        raise RunError(f"--output {output_dir} is a file: give a directory (it is created if missing)")
    try:
        output.mkdir(parents=True, exist_ok=True)
        (output / LOGS).mkdir(exist_ok=True)
    except OSError as error:
        raise RunError(f"--output {output_dir}: cannot write {error.filename}: {error.strerror}") from None
    task_runner = TaskRunner(output / LOGS, verbose)
    with controlled(task_runner), _task_temporary_directory(output / "workspace" / "tmp"):
        try:
            return _run_pipeline(task_runner, output, reviews_uri, metadata_uri, parameters or {}, sample_reviews,
                                 runner, image, gpu_image)  # fmt: skip
        except Interrupted:
            task_runner.finish_stop()
            raise


@contextlib.contextmanager
def _task_temporary_directory(directory: Path) -> Iterator[None]:
    """The tasks' temporary files in ``directory``, removed afterwards: no pile-up in the system's TMPDIR.

    kfp.local's component sources and Beam's and tf.Transform's scratch directories are never removed by them.
    """
    directory.mkdir(parents=True, exist_ok=True)
    previous = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(directory)  # the tasks inherit it
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = previous
        shutil.rmtree(directory, ignore_errors=True)


def _run_pipeline(
    task_runner: TaskRunner, output: Path, reviews_uri: str | None, metadata_uri: str | None,
    parameters: dict[str, Any], sample_reviews: int, runner: str, image: str | None, gpu_image: str | None,
) -> dict[str, Any]:  # fmt: skip
    """The body of :func:`run_locally`, under its task runner's control."""
    from kfp import local

    from pipelines.music_recommender import music_recommender

    started = time.monotonic()
    seconds: dict[str, float] = {}
    if reviews_uri is None:
        logger.info("no data given: generating the default sample of %s reviews", f"{sample_reviews:,}")
        task_runner.stage = "generate"
        files = generate_dataset(output / "data", sample_reviews, seed=DEFAULT_SAMPLE_SEED)
        reviews_uri, metadata_uri = str(files.reviews_path), str(files.metadata_path)
        seconds["generate"] = round(time.monotonic() - started, 3)
        task_runner.stage = None
    assert metadata_uri is not None

    workspace = output / "workspace"
    workspace.mkdir(exist_ok=True)
    if runner == "docker":
        for uri in (reviews_uri, metadata_uri):
            _check_visible_in_containers(uri, output)
        pipeline, local_runner = _docker_pipeline(output, image, gpu_image)
        pipeline_root = output  # the one directory the containers see
    else:
        pipeline, local_runner = music_recommender, local.SubprocessRunner(use_venv=False)
        pipeline_root = output / "pipeline_root"
    local.init(runner=local_runner, pipeline_root=str(pipeline_root), workspace_root=str(workspace))
    arguments = {"push_destination": str(output / MODEL_STORE), **parameters}
    failed: RuntimeError | None = None
    with warnings.catch_warnings():
        # Locally every task runs in this interpreter, whatever image the component names.
        warnings.filterwarnings("ignore", message=".*non-Python base image.*")
        warnings.filterwarnings("ignore", message=".*no effect in the current local runner.*")
        task_runner.in_pipeline = True
        try:
            run = pipeline(reviews_uri=reviews_uri, metadata_uri=metadata_uri, **arguments)
        except RuntimeError as error:
            failed = error
        finally:
            task_runner.in_pipeline = False
    if task_runner.signum is not None:  # whatever kfp.local made of the stopped task, the signal is the cause
        raise task_runner.interrupted()
    if failed is not None:
        raise task_runner.run_error(failed) from None
    task_runner.stage = "summary"
    evaluation_path = Path(run.output.path)
    evaluation = json.loads(evaluation_path.read_text())
    pushed = push_of_evaluation(arguments["push_destination"], evaluation["id"]) if evaluation["blessed"] else None
    summary = run_summary(evaluation, pushed, str(evaluation_path.parents[1]))
    summary["seconds"] = {**seconds, **summary["seconds"], "total": round(time.monotonic() - started, 3)}
    partial = output / "summary.json.partial"
    partial.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(partial, output / "summary.json")
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """A short plain-text table of a run summary for the terminal."""
    lines = [f"run: {summary['run_dir']}"]
    ingest = summary.get("ingest")
    if ingest:
        lines.append(
            f"ingest    lines {ingest['lines_read']:>10,}  kept {ingest['kept']:>10,}  "
            f"quarantined {ingest['quarantined']:>7,}  duplicates {ingest['duplicates']:>7,}"
        )
        lines.append(
            "splits    "
            + "  ".join(f"{name} {ingest['splits'][name]['rows']:,}" for name in schema.SPLITS)
            + f"  (users {ingest['users']:,}, items {ingest['items']:,})"
        )
    preprocess = summary.get("preprocess")
    if preprocess:
        sizes = preprocess["vocabulary_sizes"]
        oov = preprocess["splits"][schema.TEST][features.REVIEW_VOCABULARY]["oov_rate"]
        lines.append(
            f"preprocess vocabularies: review {sizes[features.REVIEW_VOCABULARY]:,}  "
            f"summary {sizes[features.SUMMARY_VOCABULARY]:,}  users {sizes[features.USER_VOCABULARY]:,}  "
            f"items {sizes[features.ITEM_VOCABULARY]:,}; test review OOV {oov:.2%}"
        )
    sentiment = summary.get("sentiment")
    if sentiment:
        test, base = sentiment[schema.TEST], sentiment["baselines"]
        lines.append(
            f"sentiment test: CNN accuracy {test['accuracy']:.3f} AUC {test['auc']:.3f} | bag-of-words "
            f"{base['bow_linear']['accuracy']:.3f} / {base['bow_linear']['auc']:.3f} | n-gram "
            f"{base['ngram_linear']['accuracy']:.3f} / {base['ngram_linear']['auc']:.3f} | majority "
            f"{base['majority']['accuracy']:.3f}"
        )
    autoencoder = summary.get("autoencoder")
    if autoencoder and "note" in autoencoder:
        lines.append(f"autoencoder: {autoencoder['note']}")
    elif autoencoder:
        lines.append(
            f"autoencoder test reconstruction MSE {autoencoder[schema.TEST]['reconstruction_mse']:.4f} | PCA "
            f"{autoencoder['baselines']['pca']['reconstruction_mse']:.4f}"
        )
    rating, ranking = summary.get("rating"), summary.get("ranking")
    if rating and ranking:
        base, ranked = rating["baselines"], ranking["baselines"]
        lines.append(
            f"rating test RMSE: DNN {rating[schema.TEST]['rmse']:.4f} | damped bias {base['bias']['rmse']:.4f} | "
            f"biased MF {base['mf']['rmse']:.4f} | global mean {base['global_mean']['rmse']:.4f}"
        )
        lines.append(
            f"ranking test NDCG@10: recommender {ranking['test']['ndcg@10']:.4f} | two-tower alone "
            f"{ranking['two_tower']['ndcg@10']:.4f} | "
            f"MostPop {ranked['mostpop']['ndcg@10']:.4f} | item-kNN {ranked['itemknn']['ndcg@10']:.4f} | "
            f"EASE^R {ranked['ease']['ndcg@10']:.4f} ({ranking['users']:,} users)"
        )
    lines.append("seconds   " + "  ".join(f"{step} {s:.1f}" for step, s in summary["seconds"].items()))
    return "\n".join(lines)
