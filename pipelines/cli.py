"""The ``musicrec`` command line: generate data, run the DAG locally, submit it to Kubeflow, trace lineage."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from musicrec.errors import LineageError, MusicrecError, RunError
from musicrec.progress import configure_logging
from pipelines.local_run import DEFAULT_SAMPLE_REVIEWS, RUNNERS
from pipelines.package import COMPILED_PIPELINE, compile_pipeline


@contextlib.contextmanager
def _writing(target: str) -> Iterator[None]:
    """A failure to write ``target`` (read-only, missing parent, a directory in the way) as one line."""
    try:
        yield
    except OSError as error:
        raise RunError(f"cannot write {error.filename or target}: {error.strerror or error}") from None


def _generate(args: argparse.Namespace) -> None:
    from musicrec.data.generate import generate_dataset

    with _writing(args.out):
        files = generate_dataset(args.out, args.reviews, args.items, args.seed)
    print(
        f"wrote {files.reviews_path} ({files.reviews:,} reviews) and {files.metadata_path} ({files.items:,} items)"
    )


def _run(args: argparse.Namespace) -> None:
    from pipelines.local_run import format_summary, parse_parameters, run_locally

    parameters = parse_parameters(args.param)
    summary = run_locally(args.output, args.reviews, args.metadata, parameters, args.sample_reviews, args.runner,
                          args.image, args.gpu_image, verbose=args.verbose)  # fmt: skip
    print(format_summary(summary))
    print(f"summary: {Path(args.output).resolve() / 'summary.json'}")
    if summary.get("pushed_model"):
        from musicrec.release.lineage import load, render_tree

        print(f"\nlineage of {summary['pushed_model']}:")
        print(render_tree(load(summary["pushed_model"]).lineage))


def _published(args: argparse.Namespace, scratch: Path) -> tuple[Any, Any, Any, dict[str, Any]]:
    """Connect, publish the package (``--package``, or compiled here) as a version, and parse the arguments."""
    from pipelines import kubeflow
    from pipelines.local_run import parse_parameters

    arguments = {"reviews_uri": args.reviews, "metadata_uri": args.metadata,
                 "push_destination": args.push_destination,
                 **parse_parameters(args.param, {"push_destination": "--push-destination"})}  # fmt: skip
    if args.package:
        if args.image or args.gpu_image:
            raise RunError("--package is compiled already: give --image/--gpu-image to `musicrec compile` instead")
        package = Path(args.package)
        if not package.is_file():
            raise RunError(f"--package {package}: not found")
    else:
        package = compile_pipeline(scratch / "music_recommender.yaml", args.image, args.gpu_image)
    target = kubeflow.Target(args.host, args.token, args.token_file, args.namespace)
    version = args.version or kubeflow.default_version()
    client = kubeflow.connect(target)
    published = kubeflow.publish(client, target, package, version, args.experiment, args.pipeline_name)
    print(f"pipeline {args.pipeline_name!r} version {version!r} in experiment {args.experiment!r}")
    return client, target, published, arguments


def _submit(args: argparse.Namespace) -> None:
    import tempfile

    from pipelines import kubeflow

    if args.summary_out and not args.wait:
        raise RunError("--summary-out needs --wait: the summary exists once the run has finished")
    with tempfile.TemporaryDirectory(prefix="musicrec-submit-") as scratch:
        client, target, published, arguments = _published(args, Path(scratch))
    run_name = args.run_name or f"{args.pipeline_name}-{published.version[:12]}"
    run_id = kubeflow.start_run(client, target, published, run_name, arguments)
    print(f"run {run_id} ({run_name}) submitted")
    link = kubeflow.run_link(target, run_id)
    if link:
        print(link)
    state = None
    try:
        if args.wait:
            state = kubeflow.wait_for_run(client, target, run_id, args.timeout, args.poll_seconds)
            if args.summary_out:
                summary = kubeflow.run_summary_of(args.push_destination, run_id, link)
                Path(args.summary_out).write_text(json.dumps(summary, indent=2) + "\n")
                print(
                    f"summary: {args.summary_out} (blessed {summary['blessed']}, pushed {summary['pushed_model']})"
                )
    finally:
        if args.record_out:
            submission = kubeflow.record(published, run_id, state, target)
            Path(args.record_out).write_text(json.dumps(submission, indent=2) + "\n")


def _schedule(args: argparse.Namespace) -> None:
    import tempfile

    from pipelines import kubeflow

    with tempfile.TemporaryDirectory(prefix="musicrec-schedule-") as scratch:
        client, target, published, arguments = _published(args, Path(scratch))
    recurring_id = kubeflow.schedule(client, target, published, args.name, args.cron, arguments)
    print(f"recurring run {recurring_id} ({args.name}) scheduled: {args.cron!r}, one at a time, no catch-up")


def _lineage(args: argparse.Namespace) -> None:
    from dataclasses import asdict

    from musicrec.release.lineage import load, render_tree, verify

    loaded = load(args.target)
    checks = verify(loaded) if args.verify else []
    if args.json:
        document = {"lineage": loaded.lineage, "verification": [asdict(c) for c in checks]}
        print(json.dumps(document if args.verify else loaded.lineage, indent=2))
    else:
        print(render_tree(loaded.lineage))
        if args.verify:
            counts = {
                status: sum(c.status == status for c in checks) for status in ("ok", "mismatch", "unreachable")
            }
            print("verify: " + ", ".join(f"{n} {status}" for status, n in counts.items()))
            for check in checks:
                if check.status != "ok":
                    print(f"  {check.status}: {check.uri}: {check.detail}")
    failed = [
        c for c in checks if c.status == "mismatch" or (c.status == "unreachable" and not args.allow_unreachable)
    ]
    if failed:
        hint = "" if failed[0].status == "mismatch" else " (--allow-unreachable accepts what cannot be reached)"
        raise LineageError(f"{len(failed)} artifact(s) failed verification, first {failed[0].uri}: "
                           f"{failed[0].status} {failed[0].detail}{hint}")  # fmt: skip


def _compile(args: argparse.Namespace) -> None:
    if Path(args.out).is_dir():
        raise RunError(f"--out {args.out} is a directory: give the YAML file's path")
    with _writing(args.out):
        print(f"wrote {compile_pipeline(args.out, args.image, args.gpu_image)}")


@contextlib.contextmanager
def _native_stderr_silenced(verbose: bool) -> Iterator[None]:
    """Hide what TensorFlow's C++ side prints while it loads and probes for CUDA (unless ``verbose``).

    Those lines are written before its logging is configured, so TF_CPP_MIN_LOG_LEVEL cannot stop them; a
    one-shot command should print its answer, not seven lines about a GPU this machine does not have.
    """
    if verbose:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _load_tensorflow(verbose: bool) -> None:
    with _native_stderr_silenced(verbose):
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")  # the CUDA probe, done here once, quietly


def _score(args: argparse.Namespace) -> None:
    _load_tensorflow(args.verbose)
    from musicrec.models.sentiment import score_texts

    probability = score_texts(args.model, [args.text], [args.summary])[0]
    print(f"{probability:.4f}\t{'positive' if probability >= 0.5 else 'negative'}")


def _recommend(args: argparse.Namespace) -> None:
    _load_tensorflow(args.verbose)
    from musicrec.models.recommender.serving import recommend

    result = recommend(args.model, args.user, args.k)
    if not result.personalized:
        print(f"user {args.user} has no train history: the most popular items instead")
    if len(result.items) < args.k:
        print(f"only {len(result.items)} items are left that the user has not reviewed")
    for rank, (asin, rating) in enumerate(result.items, start=1):
        print(f"{rank:>3}  {asin}  {rating:.3f}")


def _serve(args: argparse.Namespace) -> None:
    try:
        from musicrec.release.serve import resolve_model, serve
    except ModuleNotFoundError as error:
        raise RunError(f"serve needs the kserve SDK, not installed here ({error.name}): it cannot share the "
                       "pipeline's environment (pandas < 3); `make serve` builds .venv-serve and serves "
                       "runs/default's models, or run .venv-serve/bin/musicrec serve") from None  # fmt: skip
    serve([resolve_model(spec) for spec in args.model], args.http_port)


def _train_cnn(args: argparse.Namespace) -> None:
    from musicrec.settings import CnnSettings
    from pipelines.local_run import parse_parameters

    wrong = [pair for pair in args.param if not pair.startswith(CnnSettings.PREFIX)]
    if wrong:
        raise RunError(f"--param {wrong[0]}: train-cnn takes the {CnnSettings.PREFIX}* parameters only")
    parameters = parse_parameters(args.param)
    out = Path(args.out)
    if args.workers > 1:
        from pipelines.workers import run_workers

        command = [sys.executable, "-m", "pipelines.cli", "train-cnn", "--transformed", args.transformed,
                   "--graph", args.graph, "--out", args.out]  # fmt: skip
        command += [f"--param={pair}" for pair in args.param]
        run_workers(command, args.workers, args.timeout)
        report = json.loads((out / "report.json").read_text())
    else:
        from musicrec.models.sentiment import train_sentiment

        settings = CnnSettings.from_parameters({name.removeprefix(CnnSettings.PREFIX): value
                                                for name, value in parameters.items()})  # fmt: skip
        report = train_sentiment(args.transformed, args.graph, out / "model", out / "report.json", settings,
                                 out / "importance.html")  # fmt: skip
    test = report["test"]
    print(f"test accuracy {test['accuracy']}, balanced accuracy {test['balanced_accuracy']}, AUC {test['auc']} "
          f"({report['replicas']} replicas, {report['seconds']} s); wrote {out}")  # fmt: skip


def _review_text(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("the review text is empty")
    return text


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _add_image_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", help="image of the CPU steps: a tag or a digest, e.g. an ECR URI "
                        "(default musicrec:<version>)")  # fmt: skip
    parser.add_argument("--gpu-image", help="image of the three training steps (default: --image's tag + '-gpu'; "
                        "required when --image is a digest)")  # fmt: skip


def _add_kubeflow_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="KFP API endpoint, e.g. https://kubeflow.example.com/pipeline "
                        "(default: KF_PIPELINES_ENDPOINT or the in-cluster service)")  # fmt: skip
    parser.add_argument("--token", help="bearer token (default: KF_PIPELINES_TOKEN, then --token-file)")
    parser.add_argument("--token-file", help="file holding the bearer token, e.g. a service-account token")
    parser.add_argument("--namespace", help="user namespace of a multi-user Kubeflow")
    parser.add_argument(
        "--reviews", required=True, help="Digital_Music.json(.gz) as the pods see it: s3:// or gs://"
    )
    parser.add_argument("--metadata", required=True, help="meta_Digital_Music.json(.gz), same schemes")
    parser.add_argument("--push-destination", required=True, help="model store for blessed models: s3:// or gs://")
    parser.add_argument("--experiment", default="musicrec", help="experiment (default musicrec, created if new)")
    parser.add_argument("--pipeline-name", default="music-recommender", help="pipeline (uploaded if missing)")
    parser.add_argument("--version", help="pipeline version name (default: the git revision); reused if present")
    parser.add_argument("--package", help="a compiled package (musicrec compile) instead of compiling here")
    _add_image_arguments(parser)
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="pipeline argument")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="musicrec", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    generate = commands.add_parser("generate", help="write Digital-Music-shaped data in the 2018 layout")
    generate.add_argument("--reviews", type=_positive_int, required=True, help="review lines to write")
    generate.add_argument("--items", type=_positive_int, help="items in the metadata (default: real ratio)")
    generate.add_argument("--seed", type=int, default=0, help="same seed, same bytes (default 0)")
    generate.add_argument("--out", required=True, help="output directory")
    generate.set_defaults(handler=_generate)

    run = commands.add_parser("run", help="run the whole DAG locally with kfp.local")
    run.add_argument("--reviews", help="Digital_Music.json(.gz): path, s3:// or gs:// (default: generated)")
    run.add_argument("--metadata", help="meta_Digital_Music.json(.gz): path, s3:// or gs://")
    run.add_argument("--output", default="runs/latest", help="run directory (default runs/latest)")
    run.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="pipeline argument")
    run.add_argument(
        "--sample-reviews", type=_positive_int, default=DEFAULT_SAMPLE_REVIEWS,
        help=f"size of the generated sample when no data is given (default {DEFAULT_SAMPLE_REVIEWS:,})",
    )  # fmt: skip
    run.add_argument(
        "--runner", choices=RUNNERS, default="subprocess",
        help="subprocess: each step in this Python (default); docker: each step in the project image, as on a "
        "cluster (local inputs must then be inside --output, the one directory the containers see)",
    )  # fmt: skip
    run.add_argument("--image", help="with --runner docker: the image of every step (default musicrec:<version>)")
    run.add_argument("--gpu-image", help="with --runner docker: the training steps' image (default: --image)")
    # The same flag as `musicrec -v`, after the command too; SUPPRESS keeps `musicrec -v run` from being reset.
    run.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                     help="show everything: kfp.local's executor input and task banners, each task's whole "
                     "output (otherwise in <output>/logs/), debug logging")  # fmt: skip
    run.set_defaults(handler=_run)

    compile_ = commands.add_parser("compile", help="compile the DAG to KFP IR YAML")
    compile_.add_argument("--out", default=COMPILED_PIPELINE.name,
                          help=f"YAML file (default: {COMPILED_PIPELINE.name} here)")  # fmt: skip
    _add_image_arguments(compile_)
    compile_.set_defaults(handler=_compile)

    score = commands.add_parser("score", help="sentiment of a raw review with an exported CNN")
    score.add_argument("--model", required=True, help="the exported sentiment model directory (train_cnn 'model')")
    score.add_argument("--summary", default="", help="the review's summary line, if any")
    score.add_argument("text", type=_review_text, help="the raw review text (not empty)")
    score.set_defaults(handler=_score)

    train = commands.add_parser("train-cnn", help="train the sentiment CNN on preprocess output, on one worker "
                                "or several (TF_CONFIG, as a TFJob sets it)")  # fmt: skip
    train.add_argument("--transformed", required=True, help="preprocess's transformed examples (train/ eval/ "
                       "test/)")  # fmt: skip
    train.add_argument("--graph", required=True, help="preprocess's transform graph")
    train.add_argument("--out", required=True, help="receives model/, report.json and importance.html")
    train.add_argument("--param", action="append", default=[], metavar="cnn_NAME=VALUE", help="a CNN setting")
    train.add_argument("--workers", type=_positive_int, default=1, help="start this many local worker "
                       "processes of one MultiWorkerMirroredStrategy cluster over loopback (default 1: this "
                       "process)")  # fmt: skip
    train.add_argument("--timeout", type=_positive_int, help="with --workers: stop them all after this many "
                       "seconds")  # fmt: skip
    train.set_defaults(handler=_train_cnn)

    recommend = commands.add_parser("recommend", help="top-K albums for a user with an exported rating model")
    recommend.add_argument("--model", required=True, help="the train_dnn model directory")
    recommend.add_argument("--user", required=True, help="a reviewerID (without train history: the most popular)")
    recommend.add_argument("-k", type=_positive_int, default=10, help="how many items (default 10)")
    recommend.set_defaults(handler=_recommend)

    serve_ = commands.add_parser("serve", help="serve pushed models over HTTP with KServe's model server (V1)")
    serve_.add_argument("--model", action="append", required=True, metavar="[NAME=]PATH",
                        help="a pushed model base (its newest version is served) or a version directory; NAME "
                        "(default: the base's name) names the URL /v1/models/NAME; repeat it")  # fmt: skip
    serve_.add_argument("--http-port", type=_positive_int, default=8080, help="port (default 8080)")
    serve_.set_defaults(handler=_serve)

    submit = commands.add_parser("submit", help="upload the DAG as a pipeline version and run it on Kubeflow")
    _add_kubeflow_arguments(submit)
    submit.add_argument("--run-name", help="the run's name in the UI (default: pipeline name and version)")
    submit.add_argument("--wait", action="store_true", help="follow the run; exit 1 unless it succeeds")
    submit.add_argument("--timeout", type=_positive_int, default=6 * 3600, help="with --wait: seconds (6 h)")
    submit.add_argument("--poll-seconds", type=float, default=10.0, help="with --wait: seconds between checks")
    submit.add_argument("--record-out", help="write the run's ids, final state and link as JSON to this file")
    submit.add_argument("--summary-out", help="with --wait: write the run's summary.json, as `musicrec run` does")
    submit.set_defaults(handler=_submit)

    schedule = commands.add_parser("schedule", help="upload the DAG as a pipeline version and run it on a cron")
    _add_kubeflow_arguments(schedule)
    schedule.add_argument("--cron", required=True, help="cron expression with seconds, e.g. '0 0 3 * * 1'")
    schedule.add_argument("--name", default="musicrec-retrain", help="the recurring run's name")
    schedule.set_defaults(handler=_schedule)

    lineage = commands.add_parser("lineage", help="where a pushed model or a local run came from")
    lineage.add_argument(
        "target", help="a pushed version <base>/<model>/<N>, a model <base>/<model>, or a run dir"
    )
    lineage.add_argument("--json", action="store_true", help="print the lineage document as JSON")
    lineage.add_argument("--verify", action="store_true",
                         help="re-hash the model's files where TARGET is, each upstream artifact and raw input "
                         "where recorded; exit 1 on a mismatch or on anything that cannot be reached")  # fmt: skip
    lineage.add_argument("--allow-unreachable", action="store_true",
                         help="with --verify: pass when recorded upstream artifacts cannot be reached (e.g. a "
                         "cluster run's pipeline root seen from a laptop); a mismatch still fails")  # fmt: skip
    lineage.set_defaults(handler=_lineage)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``musicrec`` console script; returns the process exit code.

    Every expected failure is a :class:`~musicrec.errors.MusicrecError`: one line on stderr, exit code 1. An
    interrupt (SIGINT; for ``run`` also SIGTERM and SIGHUP) is one line too, exit code 128 + the signal's number.
    """
    from pipelines.local_run import Interrupted

    args = build_parser().parse_args(argv)
    configure_logging(logging.DEBUG if args.verbose else logging.INFO)
    try:
        args.handler(args)
    except MusicrecError as error:
        print(f"musicrec {args.command}: error: {error}", file=sys.stderr)
        return 1
    except Interrupted as interrupted:  # run has stopped its tasks by now
        print(f"musicrec {args.command}: {interrupted}", file=sys.stderr)
        return interrupted.exit_code
    except KeyboardInterrupt:  # Ctrl-C anywhere else (imports, another command): no traceback either
        print(f"musicrec {args.command}: interrupted (SIGINT)", file=sys.stderr)
        return 130  # 128 + SIGINT, as a shell reports it
    return 0


if __name__ == "__main__":
    sys.exit(main())
