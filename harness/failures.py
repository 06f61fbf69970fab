"""Why a run failed, in two classes: what the environment broke, and what would fail again.

``summary.json`` keeps ``status: "failed: <reason>"`` and adds ``failure``:

- ``environment``: the disk was full (``ENOSPC``) or another ``OSError``, memory ran out
  (``MemoryError``, CUDA out of memory), an input file is missing or corrupt (audio,
  manifest, teacher cache, checkpoint), the trial's process was killed. Fixing the
  environment and rerunning can succeed: ``harness sweep --resume`` retries these.
- ``deterministic``: a non-finite loss, a config value, a bug: the same run fails the
  same way. ``harness sweep --resume --retry-failed`` retries these too.

An error is classified by its type (names only, so that this module imports nothing
heavy) and, for the few that torch raises as a bare ``RuntimeError``, by its message.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path
from typing import Optional

from harness.errors import HarnessError

ENVIRONMENT = "environment"
DETERMINISTIC = "deterministic"

# error classes (by name) for inputs that are missing, unreadable or corrupt
_INPUT_ERRORS = {"AudioError", "ManifestError", "CacheError", "CheckpointError", "DataError", "LibsndfileError",
                 "UnpicklingError", "BadZipFile", "EOFError", "FolderLocked"}
_MEMORY_ERRORS = {"MemoryError", "OutOfMemoryError"}
# a data-parallel group that lost a worker (killed, a node gone): rerun, it resumes
_WORKER_ERRORS = {"GroupFailed"}
# torch's RuntimeError texts for a full disk (its zip writer) or memory, or a truncated file
_ENV_TEXTS = ("out of memory", "unexpected pos", "pytorchstreamwriter failed", "pytorchstreamreader failed",
              "file write failed", "no space left", "cannot allocate memory", "defaultcpuallocator",
              # a data-parallel peer that died mid-collective (gloo / NCCL): rerun, it resumes
              "connection reset by peer", "connection closed by peer", "nccl error", "collective operation timeout")
# status texts of failures that predate the ``failure`` key: the error's type name after "failed: "
_ENV_STATUS = tuple(n.lower() for n in _INPUT_ERRORS | _MEMORY_ERRORS | _WORKER_ERRORS) + (
    "oserror", "filenotfounderror", "permissionerror", "ioerror", "nospaceerror", "killed", "no space left")


class NoSpaceError(OSError, HarnessError):
    """A run or sweep folder's disk is full; one line naming the folder and the free space."""

    def __init__(self, message: str):
        super().__init__(errno.ENOSPC, message)

    def __str__(self) -> str:
        return self.strerror


def is_no_space(err: BaseException) -> bool:
    """A full disk (or quota): ``ENOSPC``/``EDQUOT``, or torch's writer failing on one; also
    when the error was raised from or while handling one (Ray wraps its own)."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(err).lower()
        if "no space left" in text or (isinstance(err, RuntimeError) and ("unexpected pos" in text
                                                                          or "file write failed" in text)):
            return True
        err = err.__cause__ or err.__context__
    return False


def release(err: BaseException) -> None:
    """Free what a failed write still holds: torch's zip writer keeps its (already unlinked)
    temporary file open from the traceback's frames, so its blocks stay used and even the
    failure's summary would not fit. Clearing the frames' locals closes it."""
    import gc
    import traceback

    seen: set[int] = set()
    todo: list[Optional[BaseException]] = [err]
    while todo:  # the error and those it was raised from or during (torch's writer raises twice)
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        traceback.clear_frames(e.__traceback__)
        todo += [e.__context__, e.__cause__]
    gc.collect()


def no_space_message(folder: str | Path, need_bytes: Optional[float] = None) -> str:
    """``no space left in DIR (0.1 GB free): free N GB or point --out elsewhere``.

    Args:
        folder: the run or sweep folder whose write failed.
        need_bytes: what the run still needs to write, when known (else "free space").
    """
    folder = Path(folder)
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        n = shutil.disk_usage(probe).free
        free = f"{n / 1e9:.1f} GB free" if n >= 1e8 else f"{n / 1e6:.1f} MB free"
    except OSError:
        free = "free space unknown"
    if need_bytes:
        amount = f"{need_bytes / 1e9:.1f} GB" if need_bytes >= 1e8 else f"{max(1, round(need_bytes / 1e6))} MB"
    else:
        amount = "space"
    return f"no space left in {folder} ({free}): free {amount} or point --out elsewhere"


def classify(err: BaseException) -> str:
    """:data:`ENVIRONMENT` or :data:`DETERMINISTIC` for an exception a run raised."""
    names = {c.__name__ for c in type(err).__mro__}
    if names & (_INPUT_ERRORS | _MEMORY_ERRORS | _WORKER_ERRORS):
        return ENVIRONMENT
    if isinstance(err, OSError):
        return ENVIRONMENT  # disk full, missing file, permissions, I/O error
    if isinstance(err, RuntimeError) and any(t in str(err).lower() for t in _ENV_TEXTS):
        return ENVIRONMENT
    return DETERMINISTIC


def failure_of(summary: dict) -> Optional[str]:
    """The failure class of a summary: its ``failure`` key, or (a summary written before that
    key existed) read from the ``failed: <Type>: ...`` status; None for a run that did not fail."""
    status = str(summary.get("status", ""))
    if not status.startswith("failed"):
        return None
    if summary.get("failure") in (ENVIRONMENT, DETERMINISTIC):
        return summary["failure"]
    reason = status[len("failed:"):].strip().lower()
    return ENVIRONMENT if reason.startswith(_ENV_STATUS) else DETERMINISTIC
