"""Finding and killing a test's own processes (Ray nodes and workers) by their command
lines, without `ray stop` (which stops every Ray on the machine)."""

import os
import signal
from pathlib import Path


def _procs():
    """``(pid, ppid, argv)`` of every process this user can see (from /proc)."""
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                argv = [a.decode(errors="replace") for a in (d / "cmdline").read_bytes().split(b"\0") if a]
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            yield int(d.name), ppid, argv


def _descendants(table: list, roots: set[int]) -> set[int]:
    """``roots`` and every process below them in ``table`` (this process excluded)."""
    doomed = set(roots) - {os.getpid()}
    grew = True
    while grew:
        more = {pid for pid, ppid, _ in table if ppid in doomed} - doomed - {os.getpid()}
        doomed |= more
        grew = bool(more)
    return doomed


def _kill(pids: set[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _stop_nodes(*marks: str) -> None:
    """Kill this test's Ray processes only (not `ray stop`, which stops every Ray on the
    machine): those whose command line names one of ``marks``, and their descendants (the
    agents rename themselves)."""
    table = list(_procs())
    _kill(_descendants(table, {pid for pid, _, argv in table if any(m in " ".join(argv) for m in marks)}))


def kill_tree(pid: int) -> None:
    """kill -9 of a process and everything it started, found while the tree is whole (Ray's
    workers leave the driver's process group and rename themselves, so neither ``killpg``
    nor their command lines reach them once their parents are gone)."""
    _kill(_descendants(list(_procs()), {pid}))


def rank_pid(parent: int, rank: int):
    """The pid of the process below ``parent`` whose environment says ``RANK=<rank>`` and
    that runs ``harness.cli`` (a torchrun worker), or None."""
    table = list(_procs())
    for pid in sorted(_descendants(table, {parent}) - {parent}):
        argv = next((a for p, _, a in table if p == pid), [])
        if "harness.cli" not in argv:
            continue
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env:
            return pid
    return None
