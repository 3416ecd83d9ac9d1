"""Local multi-worker training: the processes of one ``MultiWorkerMirroredStrategy`` cluster on this machine.

Each worker runs the same command with its own ``TF_CONFIG``, naming every worker on a loopback port as
Kubeflow's Training Operator does for the pods of a ``TFJob``; worker 0 is the chief. The first worker to fail,
the timeout or a stop signal ends them all: the others would wait for the missing one in a collective forever.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import IO, Any

from components.runtime import handling_signals
from musicrec.errors import RunError

GRACE_SECONDS = 10.0  # how long a stopped worker may take to end before it is killed
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on 127.0.0.1 (held open together while chosen, so none repeats).

    Another process may take one before a worker binds it; the worker then fails and the run says so.
    """
    with contextlib.ExitStack() as stack:
        probes = [stack.enter_context(socket.socket()) for _ in range(count)]
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]


def tf_config(ports: Sequence[int], index: int) -> str:
    """The ``TF_CONFIG`` of worker ``index`` in a cluster of one worker per loopback port."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    return json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})


def _relay(stream: IO[str], index: int, tail: collections.deque[str]) -> None:
    """Copy a worker's output lines to stderr, prefixed with its index, keeping the last few."""
    for line in stream:
        tail.append(line.rstrip("\n"))
        sys.stderr.write(f"[worker {index}] {line}")


def _stop(processes: list[subprocess.Popen[str]]) -> None:
    """End every worker still running: SIGTERM, then SIGKILL after :data:`GRACE_SECONDS`."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + GRACE_SECONDS
    for process in processes:
        try:
            process.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_workers(command: list[str], workers: int, timeout: float | None = None) -> None:
    """Run ``command`` as the ``workers`` processes of one cluster on loopback; return when all exited 0.

    Every line a worker prints goes to stderr prefixed with ``[worker <index>]``.

    Raises:
        RunError: a worker failed (its exit code and last line), ``timeout`` seconds passed, or a stop signal
            came. Every worker has ended by then.
    """

    def stop(signum: int, frame: Any) -> None:
        raise RunError(f"stopped by {signal.Signals(signum).name}")

    ports = free_ports(workers)
    processes: list[subprocess.Popen[str]] = []
    relays: list[threading.Thread] = []
    tails: list[collections.deque[str]] = [collections.deque(maxlen=1) for _ in range(workers)]
    deadline = None if timeout is None else time.monotonic() + timeout
    with handling_signals(STOP_SIGNALS, stop):
        try:
            for index in range(workers):
                environment = {**os.environ, "TF_CONFIG": tf_config(ports, index)}
                process = subprocess.Popen(command, env=environment, stdout=subprocess.PIPE,
                                           stderr=subprocess.STDOUT, text=True)  # fmt: skip
                processes.append(process)
                relays.append(threading.Thread(target=_relay, args=(process.stdout, index, tails[index]),
                                               daemon=True))  # fmt: skip
                relays[-1].start()
            while (codes := [process.poll() for process in processes]) != [0] * workers:
                for index, code in enumerate(codes):
                    if code not in (None, 0):
                        relays[index].join(timeout=5)  # its last words, which say why
                        last = tails[index][-1] if tails[index] else "no output"
                        raise RunError(f"worker {index} exited with code {code}: {last}")
                if deadline is not None and time.monotonic() > deadline:
                    raise RunError(f"the {workers} workers did not finish within {timeout:g} s")
                time.sleep(0.2)
        finally:
            _stop(processes)
