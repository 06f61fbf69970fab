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


def _stop_nodes(*marks: str) -> None:
    """Kill this test's Ray processes only (not `ray stop`, which stops every Ray on the
    machine): those whose command line names one of ``marks``, and their descendants (the
    agents rename themselves)."""
    table = list(_procs())
    doomed = {pid for pid, _, argv in table if any(m in " ".join(argv) for m in marks)} - {os.getpid()}
    grew = True
    while grew:
        more = {pid for pid, ppid, _ in table if ppid in doomed} - doomed - {os.getpid()}
        doomed |= more
        grew = bool(more)
    for pid in doomed:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
