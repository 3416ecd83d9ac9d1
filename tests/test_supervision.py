"""``musicrec run``'s task supervision on real processes: how a signal stops a task's tree, and what it leaves."""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
import threading
import time
from pathlib import Path

from pipelines import supervision
from pipelines.supervision import TaskRunner

ROOT = Path(__file__).resolve().parents[1]

# A step that stages its output and holds a process pool, idle, as preprocess's normalizer pool may be.
POOL_STEP = textwrap.dedent("""
    import multiprocessing, sys, time
    from pathlib import Path
    from components.runtime import step
    from musicrec.io.artifacts import publish, staging_directory

    def echo(value):
        return value

    if __name__ == "__main__":
        target = Path(sys.argv[1])
        with step("demo"):
            with staging_directory(target) as staging, multiprocessing.get_context("spawn").Pool(2) as pool:
                assert list(pool.imap(echo, range(4))) == [0, 1, 2, 3]
                print("ready", flush=True)
                time.sleep(60)
                publish(staging, target)
""")

# A step that ignores SIGTERM: only the supervisor's SIGKILL ends it, before its own clean-up can run.
STUBBORN_STEP = textwrap.dedent("""
    import signal, sys, time
    from pathlib import Path
    from musicrec.io.artifacts import staging_directory

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with staging_directory(Path(sys.argv[1])) as staging:
        (staging / "part-0").write_text("half of the output")
        print("ready", flush=True)
        time.sleep(60)
""")


class Task:
    """One task run by a :class:`TaskRunner` on a thread, the way kfp.local's subprocess runner starts it."""

    def __init__(self, tmp_path: Path, script: str) -> None:
        self.directory = tmp_path / "pipeline_root" / "run" / "demo"
        self.directory.mkdir(parents=True)
        (tmp_path / "logs").mkdir()
        path = tmp_path / "step.py"
        path.write_text(script)
        self.target = self.directory / "examples"
        executor_input = {"outputs": {"outputFile": str(self.directory / "executor_output.json")}}
        # As kfp.local: a shell that runs the executor as its child (which runs its workers in turn).
        command = ["sh", "-c", f'"{sys.executable}" "{path}" "{self.target}"; exit $?',
                   "--executor_input", json.dumps(executor_input)]  # fmt: skip
        self.runner = TaskRunner(tmp_path / "logs", verbose=False)
        self.runner.in_pipeline = True
        self.log = tmp_path / "logs" / "demo.log"
        environment = {"PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
        self.thread = threading.Thread(target=self.runner.run_subprocess, args=(command, environment), daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 120
        while not (self.log.exists() and "ready" in self.log.read_text()):
            assert self.thread.is_alive() and time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.05)

    def staged(self) -> list[str]:
        """The names in the task's directory (staging directories are hidden)."""
        return sorted(path.name for path in self.directory.iterdir())


def test_a_stopped_step_stops_its_own_idle_pool_and_cleans_up_before_any_sigkill(tmp_path):
    """SIGTERM goes to the executor, not its workers: a pool worker killed while it holds the pool's queue lock
    would hang the executor's ``terminate()`` until the SIGKILL, which leaves the staged half behind."""
    task = Task(tmp_path, POOL_STEP)
    assert len(task.staged()) == 1
    task.runner.on_signal(signal.SIGTERM, None)
    task.thread.join(timeout=60)
    assert not task.thread.is_alive()
    assert "demo stopped by SIGTERM" in task.log.read_text()  # its own clean-up ran to the end
    assert task.staged() == []  # by the step itself: the supervisor's sweep has not run yet
    task.runner.finish_stop()
    assert not any(handle.alive() for handle in task.runner._stopped)


def test_a_task_killed_before_its_clean_up_leaves_no_staging_once_the_stop_is_finished(tmp_path, monkeypatch):
    monkeypatch.setattr(supervision, "GRACE_SECONDS", 1.0)
    task = Task(tmp_path, STUBBORN_STEP)
    task.runner.on_signal(signal.SIGTERM, None)
    task.thread.join(timeout=60)  # the watchdog's SIGKILL after the grace period
    assert not task.thread.is_alive()
    (staging,) = task.staged()
    assert staging.startswith(".examples.partial-")  # SIGKILL: the step's finally never ran
    task.runner.finish_stop()
    assert task.staged() == []
    assert not any(handle.alive() for handle in task.runner._stopped)
