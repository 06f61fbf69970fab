"""One writer per folder: an advisory lock file that names its holder.

A sweep holds ``<storage>/<sweep>/.lock`` while it runs; whoever writes a run folder
(``harness distill``, a sweep trial in this process or on a Ray worker) holds
``<run_dir>/.lock``. A second writer is refused with one line naming the holder (pid,
host, start time) instead of both writing the same files.

The lock is ``fcntl.flock`` on the lock file, so the kernel releases it when its holder
dies, ``kill -9`` included: a lock file that still names a holder but is not locked was
left by a dead process, and is taken over (the caller logs that). The file is kept after
release, emptied, so that two processes never lock two different files of one name.
Within one process the lock is re-entrant (a sweep trial and the distillation run inside
it take the same run lock).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

from harness import failures
from harness.errors import HarnessError

LOCK = ".lock"

_held: dict[str, list] = {}  # resolved lock path -> [open file, depth] (this process)


class FolderLocked(HarnessError):
    """Another live process writes this folder; the message names it."""


def holder_text(holder: dict) -> str:
    """``pid 123 on host since 2026-12-01T16:55:01Z (harness sweep ...)``."""
    what = f" ({holder['what']})" if holder.get("what") else ""
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} since {holder.get('started', '?')}{what}"


def read_holder(folder: str | Path) -> Optional[dict]:
    """The holder a lock file names (None: no lock file, or an empty or unreadable one)."""
    try:
        text = (Path(folder) / LOCK).read_text()
    except OSError:
        return None
    try:
        data = json.loads(text) if text.strip() else None
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


@contextlib.contextmanager
def hold(folder: str | Path, what: str, log: Optional[Callable[[str], None]] = print) -> Iterator[None]:
    """Hold ``<folder>/.lock`` for the ``with`` block.

    Args:
        folder: the results or run folder (created).
        what: what writes it, named in a refusal (``sweep tiny-main``, ``run variant=top-s0``).
        log: told when a stale lock of a dead process is taken over (None: silent).

    Raises:
        FolderLocked: another live process holds it (one line: the folder and the holder).
        NoSpaceError: the disk is too full for even the lock file.
    """
    folder = Path(folder)
    path = folder / LOCK
    key = str(path.resolve())
    if key in _held:  # this process already holds it (re-entrant)
        _held[key][1] += 1
        try:
            yield
        finally:
            _held[key][1] -= 1
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fh = open(path, "a+")
    except OSError as err:
        if failures.is_no_space(err):
            raise failures.NoSpaceError(failures.no_space_message(folder)) from None
        raise
    locked = True
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            locked = False
            if log is not None:  # some network/FUSE file systems: write on, but say so
                log(f"[lock] {folder}: this file system does not support locks; "
                    "nothing stops a second writer here")
        else:
            fh.close()
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = read_holder(folder)
            who = holder_text(holder) if holder else "another process"
            raise FolderLocked(f"{folder} is being written by {who}: wait for it to finish or stop it "
                               "(a lock left by a dead process is taken over automatically)") from None
    stale = read_holder(folder) if locked else None
    if stale and log is not None:
        log(f"[lock] {folder}: took over the stale lock of {holder_text(stale)}; that process is gone")
    me = {"pid": os.getpid(), "host": socket.gethostname(),
          "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "what": what}
    try:
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps(me) + "\n")
        fh.flush()
    except OSError:  # a full disk: the lock holds all the same, it only cannot name its holder
        pass
    _held[key] = [fh, 1]
    try:
        yield
    finally:
        _held[key][1] -= 1
        if _held[key][1] == 0:
            del _held[key]
            with contextlib.suppress(OSError):
                fh.seek(0)
                fh.truncate()
            fh.close()  # closing releases the flock
