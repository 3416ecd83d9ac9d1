"""Supervision of ``musicrec run``'s tasks: their output in log files, one-line failures, a clean stop on a signal.

kfp.local starts each task as a child process (or a container) and streams its output to the terminal, with the
executor's input JSON; a signal to ``musicrec run`` would leave the running task orphaned. :class:`TaskRunner`
takes kfp.local's place as the launcher of tasks (:func:`controlled`) to keep the terminal to the steps'
progress lines, put each task's output in ``logs/<task>.log``, and stop every process of every task on SIGINT,
SIGTERM or SIGHUP (:class:`Interrupted`).
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from components.runtime import handling_signals
from musicrec.errors import RunError
from musicrec.io.artifacts import remove_staging

logger = logging.getLogger("musicrec.run")

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
GRACE_SECONDS = 10.0  # how long a stopped task may take to end cleanly (step() turns SIGTERM into an exit)
_PROGRESS_LINE = re.compile(r"^\d\d:\d\d:\d\d [A-Z]+ musicrec[\w.]*: ")
_TRACEBACK = "Traceback (most recent call last):"


class Interrupted(BaseException):  # noqa: N818 -- named like KeyboardInterrupt, which it stands in for
    """A signal stopped ``musicrec run``; by the time this propagates every task process has ended.

    A ``BaseException`` like ``KeyboardInterrupt``, so no ``except Exception`` on the way swallows it.
    """

    def __init__(self, signum: int, during: str | None = None, pushed: bool = False) -> None:
        super().__init__(signum, during, pushed)
        self.signum, self.during, self.pushed = signum, during, pushed

    @property
    def exit_code(self) -> int:
        """128 + the signal's number, what a shell reports for a process the signal ended (130, 143)."""
        return 128 + self.signum

    def __str__(self) -> str:
        during = f" during {self.during}" if self.during else ""
        outcome = (
            "the models were pushed but summary.json was not written" if self.pushed else "nothing was pushed"
        )
        return f"interrupted ({signal.Signals(self.signum).name}){during}; {outcome}; re-run to start again"


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time) of a live process, from ``/proc``; ``None`` if it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after the command name, which may hold spaces and ")"
    return None if fields[0] == "Z" else (int(fields[1]), int(fields[19]))


def _tree(root: int) -> dict[int, tuple[int, int]]:
    """``root`` and every live process below it: pid -> (parent pid, start time)."""
    names = os.listdir("/proc") if os.path.isdir("/proc") else []
    live = {pid: stat for pid in map(int, filter(str.isdigit, names)) if (stat := _stat(pid)) is not None}
    children: dict[int, list[int]] = collections.defaultdict(list)
    for pid, (parent, _) in live.items():
        children[parent].append(pid)
    found: set[int] = set()
    stack = [root]
    while stack:
        pid = stack.pop()
        if pid not in found:
            found.add(pid)
            stack.extend(children.get(pid, ()))
    return {pid: live[pid] for pid in found if pid in live}


class _Task(Protocol):
    def stop(self) -> None: ...

    def kill(self) -> None: ...

    def alive(self) -> bool: ...


@dataclass
class _ProcessTask:
    """A task's process and each process seen below it: ``sh``, the executor, Beam or normalizer workers."""

    process: subprocess.Popen[str]
    seen: dict[int, int] = field(default_factory=dict)

    def stop(self) -> None:
        """SIGTERM to the task's own processes: the shell kfp.local starts and the executor it runs.

        Not to their workers: the executor's clean-up stops those itself. A ``multiprocessing`` pool whose idle
        worker is killed while it holds the pool's queue lock hangs its parent's ``terminate()`` for good.
        """
        tree = self._look()
        for pid, (parent, _) in tree.items():
            if pid == self.process.pid or parent == self.process.pid:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL to every process of the task's tree, seen now or before."""
        # Seen before too: a worker whose parent died first has left the tree (its parent is now PID 1), but not
        # this list. The task shares musicrec's process group, so no group signal: a terminal's Ctrl-C, Ctrl-Z or
        # a kill of the whole group reach the tasks as they reach musicrec.
        self._look()
        for pid in self._live():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def alive(self) -> bool:
        """Whether any process of the tree is still running."""
        return self.process.poll() is None or bool(self._live())

    def _look(self) -> dict[int, tuple[int, int]]:
        """The task's tree now, also remembered in :attr:`seen`; empty once its process is reaped."""
        if self.process.poll() is not None:  # reaped: its number may be another's now, not ours to walk
            return {}
        tree = _tree(self.process.pid)
        self.seen.update({pid: started for pid, (_, started) in tree.items()})
        return tree

    def _live(self) -> list[int]:
        # Same start time: the same process, not a new one that got its number.
        return [pid for pid, started in self.seen.items() if (_stat(pid) or (0, None))[1] == started]


@dataclass
class _ContainerTask:
    """A task's container (``--runner docker``): a signal goes to its main process, as a pod's would."""

    container: Any

    def stop(self) -> None:
        """SIGTERM to the container's main process."""
        self._signal("SIGTERM")

    def kill(self) -> None:
        """SIGKILL to the container's main process."""
        self._signal("SIGKILL")

    def _signal(self, name: str) -> None:
        with contextlib.suppress(Exception):  # gone already, or the daemon with it: nothing left to stop
            self.container.kill(signal=name)

    def alive(self) -> bool:
        """Whether the container still runs."""
        try:
            self.container.reload()
        except Exception:  # removed (auto_remove) or unreachable: nothing to wait for
            return False
        return self.container.status in ("created", "running", "restarting")


@dataclass
class TaskFailure:
    """Why a task failed: its own one-line message, and its traceback when it died of a bug."""

    task: str
    cause: str
    traceback: str


def task_of_command(command: list[str]) -> str:
    """The KFP task a command runs (``train-cnn``): the directory its executor output goes to."""
    directory = _task_directory(command)
    return directory.name if directory is not None else "task"


def _task_directory(command: list[str]) -> Path | None:
    """The directory a task's command writes its outputs to, from its executor input."""
    try:
        executor_input = json.loads(command[command.index("--executor_input") + 1])
        return Path(executor_input["outputs"]["outputFile"]).parent
    except (ValueError, IndexError, KeyError, TypeError):
        return None


def _step_name(task: str) -> str:
    """A KFP task name as the step registry and the steps' own messages spell it (``train_cnn``)."""
    return task.replace("-", "_")


def task_failure(task: str, code: int, tail: Iterable[str]) -> TaskFailure:
    """The one line that says why a task ended with ``code``: the step's own message when it gave one."""
    step = _step_name(task)
    lines = [stripped for line in tail if (stripped := _ANSI.sub("", line).rstrip())]
    starts = [i for i, line in enumerate(lines) if line.startswith(_TRACEBACK)]
    traceback = "\n".join(lines[starts[-1] :]) if starts else ""
    if code < 0:  # no message: e.g. the kernel's out-of-memory killer
        name = signal.Signals(-code).name if -code in signal.valid_signals() else f"signal {-code}"
        return TaskFailure(task, f"{step} was killed by {name}", traceback)
    if not lines:
        return TaskFailure(task, f"{step} failed with exit code {code}", traceback)
    # components.runtime.step ends with "<step> failed: <message>" or "<step> stopped by SIGTERM"; a bug with
    # the last line of its traceback.
    last = lines[-1].strip()
    return TaskFailure(task, last if last.startswith(f"{step} ") else f"{step} failed: {last}", traceback)


class TaskRunner:
    """Runs kfp.local's tasks under musicrec's control: output to log files, one-line failures, stop on a signal.

    kfp.local's task handlers call :meth:`run_subprocess` / :meth:`run_container` in place of their own (see
    :func:`controlled`), from the orchestrator's worker threads. A signal to ``musicrec run`` alone (``kill``,
    a service manager) stops the tasks: SIGTERM to each task's executor (``step()`` ends the task cleanly, its
    workers with it), SIGKILL to whatever of the task's tree is left after :data:`GRACE_SECONDS` or at a second
    signal. A stopped task fails, kfp.local starts nothing more and unwinds, and :func:`run_locally` raises
    :class:`Interrupted`.

    Args:
        logs: receives ``<task>.log``, each task's whole output.
        verbose: stream every task's output to stdout, as kfp.local does; else only musicrec's log lines, on
            stderr.
    """

    def __init__(self, logs: Path, verbose: bool) -> None:
        self.logs = logs
        self.verbose = verbose
        self.signum: int | None = None
        self.in_pipeline = False  # inside kfp.local: a signal stops the tasks and kfp.local unwinds by itself
        self.stage: str | None = None  # what runs outside kfp.local (generating the sample, the summary)
        self.during: str | None = None
        self.succeeded: set[str] = set()
        self.failure: TaskFailure | None = None
        self._running: dict[str, _Task] = {}
        self._stopped: list[_Task] = []
        self._directories: list[Path] = []  # where the tasks write their outputs
        self._lock = threading.RLock()  # re-entrant: the signal handler may run on a thread that holds it
        self._watchdog: threading.Timer | None = None

    def run_subprocess(self, full_command: list[str], env_vars: dict[str, str] | None = None) -> int:
        """kfp.local's ``run_local_subprocess``, with the task's output logged and a stop that reaches its tree."""

        def start() -> tuple[_Task, Iterable[str], Callable[[], int]]:
            process = subprocess.Popen(
                full_command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                text=True, errors="replace", bufsize=1, env={**os.environ, **(env_vars or {})},
            )  # fmt: skip
            assert process.stdout is not None
            return _ProcessTask(process), process.stdout, process.wait

        return self._follow(full_command, start)

    def run_container(
        self, client: Any, image: str, command: list[str], volumes: dict[str, Any], **run_args: Any
    ) -> int:
        """kfp.local's ``run_docker_container``, with the container's output logged and a stop that reaches it."""
        from docker.errors import NotFound
        from kfp.local.docker_task_handler import add_latest_tag_if_not_present

        image = add_latest_tag_if_not_present(image)
        if not any(image in known.tags + known.attrs["RepoDigests"] for known in client.images.list()):
            logger.info("pulling %s", image)
            client.images.pull(image)

        def start() -> tuple[_Task, Iterable[str], Callable[[], int]]:
            container = client.containers.run(image=image, command=command, detach=True, stdout=True, stderr=True,
                                              volumes=volumes, auto_remove=True, **run_args)  # fmt: skip

            def lines() -> Iterator[str]:
                with contextlib.suppress(NotFound):  # removed already: it ended before its logs were read
                    for chunk in container.logs(stream=True):
                        yield chunk.decode(errors="replace")

            def wait() -> int:
                try:
                    return int(container.wait()["StatusCode"])
                except NotFound:  # kfp.local's reading: removed once its logs were complete, so it succeeded
                    return 0

            return _ContainerTask(container), lines(), wait

        return self._follow(command, start)

    def _follow(
        self, command: list[str], start: Callable[[], tuple[_Task, Iterable[str], Callable[[], int]]]
    ) -> int:
        """Start a task, copy its output to its log (and the terminal), and return its exit code."""
        task = task_of_command(command)
        if (directory := _task_directory(command)) is not None:
            self._directories.append(directory)
        log_path = self.logs / f"{task}.log"
        tail: collections.deque[str] = collections.deque(maxlen=200)
        with open(log_path, "w", buffering=1) as log:  # line-buffered: the file follows the task
            with self._lock:
                if self.signum is not None:
                    log.write("not started: the run was interrupted\n")
                    return 1  # kfp.local sees a failure and starts nothing more
                logger.info("running %s (log: %s)", _step_name(task), log_path)
                handle, lines, wait = start()
                self._running[task] = handle
                if self.signum is not None:  # the signal came while starting it, on this very thread
                    self._stopped.append(handle)
                    handle.stop()
            try:
                for line in lines:
                    log.write(line)
                    tail.append(line)
                    self._show(line)
                code = wait()
            except BaseException:
                handle.kill()  # never leave a task behind, whatever went wrong here
                raise
            finally:
                with self._lock:
                    del self._running[task]
        if self.verbose:
            print("\n")  # as kfp.local separates a task's lines from its own
        if code == 0:
            self.succeeded.add(task)
        elif self.signum is None:
            self.failure = task_failure(task, code, tail)
        return code

    def _show(self, line: str) -> None:
        if self.verbose:
            print(line, end="")  # kfp.local's own way: stdout, indented by its print patch
        elif _PROGRESS_LINE.match(line):
            sys.stderr.write(line)
            sys.stderr.flush()

    def on_signal(self, signum: int, frame: Any) -> None:
        """Stop every task on SIGINT, SIGTERM or SIGHUP; outside kfp.local, raise :class:`Interrupted` at once."""
        with self._lock:
            if self.signum is not None:
                self._kill_all()  # a second signal: no more patience
                return
            self.signum = signum
            self.during = ", ".join(_step_name(task) for task in self._running) or self.stage
            self._stopped.extend(self._running.values())
            for handle in self._running.values():
                handle.stop()
            self._watchdog = threading.Timer(GRACE_SECONDS, self._kill_all)
            self._watchdog.daemon = True
            self._watchdog.start()
        if not self.in_pipeline:
            raise self.interrupted()

    def _kill_all(self) -> None:
        with self._lock:
            handles = [*self._stopped, *self._running.values()]
        for handle in handles:
            handle.kill()

    def interrupted(self) -> Interrupted:
        """The exception that says what the signal interrupted."""
        assert self.signum is not None
        return Interrupted(self.signum, self.during, "push" in self.succeeded)

    def finish_stop(self) -> None:
        """After a signal: kill whatever of the stopped tasks outlived them and wait until it is gone.

        Then remove the staging directories of any task killed before its own clean-up could run.
        """
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._kill_all()
        deadline = time.monotonic() + GRACE_SECONDS
        while any(handle.alive() for handle in self._stopped) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not any(handle.alive() for handle in self._stopped):  # nothing writes there any more
            for directory in self._directories:
                remove_staging(directory)

    def run_error(self, error: RuntimeError) -> RunError:
        """kfp.local's failure as the failed step's own one line; a bug's traceback goes to stderr first."""
        if self.failure is None:
            message = _ANSI.sub("", str(error)).splitlines()[0]
            return RunError(f"{message} (the task logs in {self.logs} say why)")
        if self.failure.traceback and not self.verbose:
            print(self.failure.traceback, file=sys.stderr)  # a bug keeps its traceback (verbose showed it)
        return RunError(self.failure.cause)


@contextlib.contextmanager
def _replaced(module: Any, name: str, value: Any) -> Iterator[None]:
    """Replace ``module.name`` for the duration; an AttributeError means kfp.local changed under us."""
    original = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, original)


class _PlainFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return _ANSI.sub("", super().format(record))


@contextlib.contextmanager
def _root_logging_to(path: Path) -> Iterator[None]:
    """Send the root logger's records (kfp.local logs there) to ``path`` instead of the terminal."""
    root = logging.getLogger()
    level, handlers = root.level, root.handlers[:]
    handler = logging.FileHandler(path, mode="w")
    handler.setFormatter(_PlainFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        handler.close()


@contextlib.contextmanager
def controlled(runner: TaskRunner) -> Iterator[None]:
    """Run kfp.local's tasks through ``runner``; unless verbose, kfp.local's own lines go to ``kfp.log``."""
    from kfp.local import docker_task_handler, logging_utils, subprocess_task_handler

    with contextlib.ExitStack() as stack:
        stack.enter_context(_replaced(subprocess_task_handler, "run_local_subprocess", runner.run_subprocess))
        stack.enter_context(_replaced(docker_task_handler, "run_docker_container", runner.run_container))
        if not runner.verbose:
            # Its executor input JSON, task banners and output listings: in the log files, not the terminal.
            stack.enter_context(_replaced(logging_utils, "local_logger_context", contextlib.nullcontext))
            stack.enter_context(_replaced(logging_utils, "print_horizontal_line", lambda: None))
            stack.enter_context(_root_logging_to(runner.logs / "kfp.log"))
        stack.enter_context(handling_signals(STOP_SIGNALS, runner.on_signal))
        yield
