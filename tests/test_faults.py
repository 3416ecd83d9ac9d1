"""What goes wrong on purpose: a failing step, SIGINT and SIGTERM, and runs killed at random moments.

The runs are real ``musicrec run`` processes, each in a session of its own (``start_new_session``), so the test
can tell every process a run started from the rest of the machine: by session, and by ``/proc`` ancestry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pipelines.cli import main
from pipelines.supervision import STOP_SIGNALS, task_failure

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("sentiment", "encoder", "recommender")
# A small sample, short training, and thresholds any such run passes: every completed run pushes a version.
QUICK = ["--sample-reviews", "1500", "--param", "cnn_epochs=1", "--param", "ae_epochs=2",
         "--param", "dnn_epochs=1", "--param", "blessing_min_sentiment_auc=0.5",
         "--param", "blessing_max_rating_rmse=5", "--param", "blessing_min_ranking_ndcg=0",
         "--param", "blessing_max_regression=1", "--param", "blessing_serving_tolerance=1"]  # fmt: skip
# Where the random kills fall, as fractions of a completed run's duration (seeded).
KILL_SEED, KILLS, KILL_WINDOW = 7, 3, (0.05, 0.95)


# --- processes --------------------------------------------------------------------------------------------


def _processes() -> dict[int, tuple[int, int, int, str]]:
    """pid -> (parent pid, session, start time, command line) of every live process that is not a zombie."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
            command = Path(f"/proc/{name}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z":
            table[int(name)] = (int(fields[1]), int(fields[3]), int(fields[19]), command)
    return table


def _descendants(root: int, table: dict[int, tuple[int, int, int, str]]) -> dict[int, int]:
    """Every process below ``root``, with its depth (1: a child)."""
    found: dict[int, int] = {}
    frontier = [(root, 0)]
    while frontier:
        parent, depth = frontier.pop()
        for pid, (ppid, *_) in table.items():
            if ppid == parent and pid not in found:
                found[pid] = depth + 1
                frontier.append((pid, depth + 1))
    return found


def _signals_as_from_a_terminal() -> None:
    """Child set-up: SIGINT with its default action, as a terminal gives it.

    Tests run as a background job (``make test &``, a CI runner's shell) inherit SIGINT ignored, and the code
    under test rightly keeps a signal its starter ignored; these tests are about the signal arriving.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Run:
    """A ``musicrec run`` in a session of its own; remembers every process seen below it."""

    def __init__(self, tmp_path: Path, name: str, *arguments: str, cli: tuple[str, ...] = ("run",)) -> None:
        self.out = tmp_path / "run"
        self.stdout, self.stderr = tmp_path / f"{name}.stdout", tmp_path / f"{name}.stderr"
        with open(self.stdout, "w") as stdout, open(self.stderr, "w") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pipelines.cli", *cli, "--output", str(self.out), *arguments],
                stdout=stdout, stderr=stderr, cwd=ROOT, start_new_session=True,
                preexec_fn=_signals_as_from_a_terminal,
            )  # fmt: skip
        self.started = time.monotonic()
        self.seen: dict[int, int] = {}  # pid -> start time

    def look(self) -> dict[int, int]:
        """The run's processes now (pid -> depth below it), remembered in ``seen``."""
        table = _processes()
        below = _descendants(self.process.pid, table)
        self.seen.update({pid: table[pid][2] for pid in below})
        return below

    def wait_for(self, what: str, condition: Callable[[], bool], timeout: float = 300) -> None:
        """Poll ``condition`` (looking at the processes meanwhile); fail if the run ends or time runs out first."""
        deadline = time.monotonic() + timeout
        while not condition():
            self.look()
            assert self.process.poll() is None, f"the run ended before {what}:\n{self.stderr.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no {what} after {timeout} s"
            time.sleep(0.1)

    def in_preprocess_with_workers(self) -> bool:
        """Preprocess runs, three levels below musicrec run (sh, the executor, its normalizer pool or resource
        tracker): a whole tree to stop."""
        return any(self.out.glob("pipeline_root/*/preprocess")) and max(self.look().values(), default=0) >= 3

    def finish(self, timeout: float = 600) -> int:
        """Wait for the run to end; its exit code."""
        return self.process.wait(timeout=timeout)

    def kill_tree(self) -> None:
        """SIGKILL the run and every process below it, all at once, as a crash or the OOM killer might."""
        for _ in range(5):
            table = _processes()
            pids = [self.process.pid, *_descendants(self.process.pid, table)]
            pids += [pid for pid, (_, session, _, _) in table.items() if session == self.process.pid]
            for pid in set(pids):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if self.process.poll() is not None and not _descendants(self.process.pid, _processes()):
                break
            time.sleep(0.2)
        self.process.wait(timeout=30)

    def left_behind(self) -> list[str]:
        """Live processes of the run's session, seen below it, or naming its directory; after a short wait."""
        deadline = time.monotonic() + 5
        while True:
            table = _processes()
            left = [f"{pid}: {command[:200]}" for pid, (_, session, started, command) in table.items()
                    if pid != os.getpid() and (session == self.process.pid or self.seen.get(pid) == started
                                               or str(self.out) in command)]  # fmt: skip
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.2)

    def output(self) -> tuple[str, str]:
        """The run's stdout and stderr."""
        return self.stdout.read_text(), self.stderr.read_text()


# --- a failing step ---------------------------------------------------------------------------------------


def _bad_inputs(tmp_path: Path) -> list[str]:
    reviews = tmp_path / "Digital_Music.json"
    reviews.write_text('{"overall": 9.0}\nnot json\n')
    metadata = tmp_path / "meta.json"
    metadata.write_text('{"asin": "B1"}\n')
    return ["--reviews", str(reviews), "--metadata", str(metadata)]


@pytest.mark.parametrize(
    "cli", [("run",), ("-v", "run"), ("run", "--verbose")], ids=["quiet", "-v run", "run --verbose"]
)
def test_a_failing_steps_own_cause_is_the_last_stderr_line_and_kfp_noise_needs_verbose(tmp_path, cli):
    run = Run(tmp_path, "failing", *_bad_inputs(tmp_path), cli=cli)
    assert run.finish() == 1
    stdout, stderr = run.output()
    reviews = tmp_path / "Digital_Music.json"
    assert stderr.strip().splitlines()[-1] == (
        f"musicrec run: error: ingest failed: no valid reviews in {reviews}: all 2 lines were quarantined "
        "(most often: missing_reviewerID) or duplicates"
    )
    assert "Traceback" not in stdout + stderr
    log = (run.out / "logs" / "ingest.log").read_text()
    assert '"outputFile"' in log and "ingest failed: no valid reviews" in log  # the whole output, always
    executor_json = ('"outputFile"', "executor_input", "Executing task", "Inner task failed")
    if cli == ("run",):
        assert stdout == ""
        assert not [noise for noise in executor_json if noise in stderr]
        assert "musicrec.data.ingest: reviews read: 2" in stderr  # the step's progress lines still show
        assert "Executing task 'ingest'" in (run.out / "logs" / "kfp.log").read_text()
    else:
        assert all(noise in stdout for noise in executor_json[:3])


def test_an_in_process_run_gives_back_the_signal_handlers_logging_and_kfp_local_it_borrowed(tmp_path, capsys):
    from kfp.local import logging_utils, subprocess_task_handler

    borrowed = [(subprocess_task_handler, "run_local_subprocess"), (logging_utils, "local_logger_context"),
                (logging_utils, "print_horizontal_line")]  # fmt: skip
    before = ([getattr(module, name) for module, name in borrowed], logging.getLogger().handlers[:],
              {signum: signal.getsignal(signum) for signum in STOP_SIGNALS})  # fmt: skip
    assert main(["run", "--output", str(tmp_path / "run"), *_bad_inputs(tmp_path)]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("musicrec run: error: ingest failed: ")
    after = ([getattr(module, name) for module, name in borrowed], logging.getLogger().handlers[:],
             {signum: signal.getsignal(signum) for signum in STOP_SIGNALS})  # fmt: skip
    assert after == before


def test_the_cause_of_a_failed_task_is_its_own_last_line_or_the_end_of_its_traceback():
    own = task_failure(
        "train-cnn", 1, ["[KFP Executor] noise\n", "train_cnn failed: too few rows\n", "\n", "  \n"]
    )
    assert (own.cause, own.traceback) == ("train_cnn failed: too few rows", "")
    crash = ["noise\n", "Traceback (most recent call last):\n", '  File "x.py", line 1\n', "KeyError: 'auc'\n"]
    bug = task_failure("evaluate", 1, crash)
    assert bug.cause == "evaluate failed: KeyError: 'auc'"
    assert bug.traceback.splitlines()[0] == "Traceback (most recent call last):"
    assert task_failure("preprocess", -9, ["half a line"]).cause == "preprocess was killed by SIGKILL"
    assert task_failure("push", 2, []).cause == "push failed with exit code 2"


# --- signals inside a step --------------------------------------------------------------------------------

STEP_SCRIPT = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from components.runtime import step
    from musicrec.io.artifacts import publish, staging_directory

    target = Path(sys.argv[1])
    with step("demo"):
        with staging_directory(target) as staging:
            (staging / "part-0").write_text("half of the output")
            worker = os.fork()  # inherits the step's handler, which must not make it act as the step
            if worker == 0:
                # Said by the worker itself: a signal that arrives before Python's post-fork bookkeeping is
                # dropped by it (it clears the flags of signals caught in between), so the test waits for this.
                print(os.getpid(), flush=True)
                time.sleep(60)
                os._exit(0)
            time.sleep(60)
            publish(staging, target)
""")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_ends_a_step_in_one_line_and_publishes_nothing(tmp_path, signum):
    target = tmp_path / "out" / "examples"
    stderr = tmp_path / "stderr"
    with open(stderr, "w") as err:
        step = subprocess.Popen(
            [sys.executable, "-c", STEP_SCRIPT, str(target)], stdout=subprocess.PIPE, stderr=err, text=True,
            cwd=ROOT, preexec_fn=_signals_as_from_a_terminal,
        )  # fmt: skip
    assert step.stdout is not None
    worker = int(step.stdout.readline())
    assert [p.name for p in target.parent.iterdir()] == [f".examples.partial-{step.pid}"]
    os.kill(worker, signal.SIGTERM)  # a forked worker dies of it as usual
    deadline = time.monotonic() + 10
    while worker in _processes() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert worker not in _processes()
    step.send_signal(signum)
    assert step.wait(timeout=30) == 128 + signum
    assert stderr.read_text() == f"demo stopped by {signal.Signals(signum).name}\n"
    assert list(target.parent.iterdir()) == []  # nothing published, the staged half removed


@pytest.mark.slow
def test_sigterm_to_a_running_step_fails_the_run_with_its_line_and_publishes_nothing(tmp_path):
    """A pod's SIGTERM, locally: the step's own process is told to stop, not musicrec run."""
    run = Run(tmp_path, "pod", "--sample-reviews", "2000")
    run.wait_for("preprocess with its workers", run.in_preprocess_with_workers)
    table = _processes()
    (executor,) = [pid for pid in run.look() if " -m kfp.dsl.executor_main " in table.get(pid, (0, 0, 0, ""))[3]
                   and not table[pid][3].startswith("sh ")]  # fmt: skip
    os.kill(executor, signal.SIGTERM)
    assert run.finish() == 1
    stdout, stderr = run.output()
    assert stderr.strip().splitlines()[-1] == "musicrec run: error: preprocess stopped by SIGTERM"
    assert "Traceback" not in stdout + stderr
    (task,) = run.out.glob("pipeline_root/*/preprocess")
    assert list(task.iterdir()) == []  # no output, whole or partial, and no executor output
    assert not (run.out / "summary.json").exists()
    assert run.left_behind() == []


# --- signals to musicrec run ------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "to_group"),
    [(signal.SIGINT, False), (signal.SIGTERM, False), (signal.SIGINT, True)],
    ids=["kill -INT", "kill -TERM", "Ctrl-C (the whole process group)"],
)
def test_an_interrupted_run_stops_every_process_and_says_so_in_one_line(tmp_path, signum, to_group):
    run = Run(tmp_path, "interrupted", "--sample-reviews", "2000")
    run.wait_for("preprocess with its workers", run.in_preprocess_with_workers)
    (os.killpg if to_group else os.kill)(run.process.pid, signum)
    assert run.finish(timeout=120) == 128 + signum
    stdout, stderr = run.output()
    assert "Traceback" not in stdout + stderr
    assert [line for line in stderr.splitlines() if line.startswith("musicrec run:")] == [
        f"musicrec run: interrupted ({signal.Signals(signum).name}) during preprocess; nothing was pushed; "
        "re-run to start again"
    ]
    assert stderr.strip().splitlines()[-1].startswith("musicrec run: interrupted")  # the last word
    assert run.seen and run.left_behind() == []
    (task,) = run.out.glob("pipeline_root/*/preprocess")
    assert list(task.iterdir()) == []
    assert not (run.out / "summary.json").exists()


# --- random kills -----------------------------------------------------------------------------------------


def _complete_versions(store: Path) -> dict[str, dict[str, str]]:
    """``<model>/<version>`` -> sha256 of each of its files; fails on a version without lineage.json."""
    versions: dict[str, dict[str, str]] = {}
    for model in MODELS:
        for version in sorted((store / model).iterdir()) if (store / model).is_dir() else []:
            assert version.name.isdigit(), f"a visible non-version entry: {version}"
            assert (version / "lineage.json").is_file(), f"an incomplete version is visible: {version}"
            json.loads((version / "lineage.json").read_text())
            versions[f"{model}/{version.name}"] = {
                str(path.relative_to(version)): hashlib.sha256(path.read_bytes()).hexdigest()
                for path in sorted(version.rglob("*")) if path.is_file()
            }  # fmt: skip
    return versions


def _assert_nothing_half_written(out: Path) -> None:
    summary = out / "summary.json"
    if summary.exists():
        json.loads(summary.read_text())
    for record in (out / "model_store" / ".versions").glob("*.json"):
        json.loads(record.read_text())
    # The steps' JSON outputs, where present, are whole (evaluate's report is HTML; its JSON is evaluation).
    for document in [*out.glob("pipeline_root/*/*/report"), *out.glob("pipeline_root/*/evaluate/evaluation")]:
        if document.parent.name != "evaluate" or document.name == "evaluation":
            json.loads(document.read_text())


@pytest.mark.slow
def test_runs_killed_at_random_moments_leave_nothing_half_written_and_the_next_run_pushes_anew(tmp_path):
    store = tmp_path / "run" / "model_store"
    first = Run(tmp_path, "first", *QUICK)
    assert first.finish() == 0, first.output()[1][-3000:]
    duration = time.monotonic() - first.started
    earlier = _complete_versions(store)
    assert {name.split("/")[1] for name in earlier} == {"1"} and len(earlier) == len(MODELS)

    rng = random.Random(KILL_SEED)
    for kill in range(KILLS):
        moment = rng.uniform(*KILL_WINDOW) * duration
        run = Run(tmp_path, f"killed-{kill}", *QUICK)
        while time.monotonic() - run.started < moment and run.process.poll() is None:
            run.look()
            time.sleep(0.1)
        run.kill_tree()
        tasks = sorted(run.out.glob("pipeline_root/*/*"), key=lambda task: task.stat().st_mtime)
        where = f"kill {kill} at {moment:.1f} s of {duration:.1f} s, in {tasks[-1].name if tasks else 'generate'}"
        print(where)
        assert run.left_behind() == [], where
        _assert_nothing_half_written(run.out)
        now = _complete_versions(store)
        assert {name: now[name] for name in earlier} == earlier, f"{where}: an earlier version changed"
        earlier = now  # a kill after push finished leaves a whole new version; later runs must not touch it

    last = Run(tmp_path, "last", *QUICK)
    assert last.finish() == 0, last.output()[1][-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    final = _complete_versions(store)
    assert {name: final[name] for name in earlier} == earlier
    pushed = summary["pushed_version"]
    assert pushed > max(int(name.split("/")[1]) for name in earlier)
    assert {f"{model}/{pushed}" for model in MODELS} <= set(final)
    assert last.left_behind() == []


def test_scratch_of_a_process_that_is_gone_is_removed_and_a_live_ones_kept(tmp_path):
    """A step killed outright leaves its hidden scratch; the next step that stages beside it removes it."""
    from musicrec.io.artifacts import staging_directory

    gone = subprocess.Popen(["true"])
    gone.wait()
    stale = tmp_path / f".examples.partial-{gone.pid}"
    stale.mkdir()
    (stale / "part-00000.parquet").write_bytes(b"half")
    live = tmp_path / f".examples.partial-{os.getppid()}"
    live.mkdir()
    with staging_directory(tmp_path / "examples") as staging:
        assert staging.is_dir() and not stale.exists()
    assert not staging.exists() and live.is_dir()
