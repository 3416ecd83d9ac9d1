"""Resident memory of process trees, read from /proc: what the benchmarks report as a step's peak memory."""

from __future__ import annotations

import os
from pathlib import Path


def process_table() -> dict[int, tuple[int, int]]:
    """Every live process: pid -> (parent pid, resident KiB)."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:  # the process ended while we looked
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        table[int(entry)] = (int(fields["PPid"]), int(fields.get("VmRSS", "0 kB").split()[0]))
    return table


def tree_rss_kib(root: int, table: dict[int, tuple[int, int]] | None = None) -> int:
    """Resident memory of ``root`` and all its descendants, in KiB."""
    table = process_table() if table is None else table
    tree, frontier = {root}, {root}
    while frontier:
        frontier = {pid for pid, (parent, _) in table.items() if parent in frontier and pid not in tree}
        tree |= frontier
    return sum(table[pid][1] for pid in tree if pid in table)


def children(parent: int, table: dict[int, tuple[int, int]]) -> list[int]:
    """The direct children of ``parent``."""
    return [pid for pid, (ppid, _) in table.items() if ppid == parent]


def command_line(pid: int) -> list[str]:
    """The arguments a process was started with (empty when it has ended)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []
