"""One writer per folder (harness.locks): a second writer is refused with the holder named,
a dead holder's lock is taken over, the lock is re-entrant within a process."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import locks

ROOT = Path(__file__).resolve().parent.parent

HOLDER = """
import sys, time
from harness import locks
with locks.hold(sys.argv[1], "test holder"):
    print("held", flush=True)
    time.sleep(60)
"""


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.fixture
def holder(tmp_path):
    """Another process holding ``tmp_path / "run"``'s lock."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "run")], stdout=subprocess.PIPE, text=True,
                         env=env)
    assert p.stdout.readline().strip() == "held"
    yield p
    p.kill()
    p.wait()


def test_a_second_writer_is_refused_with_the_holder_named(tmp_path, holder):
    with pytest.raises(locks.FolderLocked) as err:
        with locks.hold(tmp_path / "run", "second"):
            pass
    msg = str(err.value)
    assert "\n" not in msg and f"pid {holder.pid} on " in msg and "since 20" in msg and "test holder" in msg
    assert str(tmp_path / "run") in msg


def test_a_distill_into_a_folder_another_process_writes_is_refused(tmp_path, holder):
    from harness.config import RunConfig
    from harness.distill import run_distill

    with pytest.raises(locks.FolderLocked, match=f"pid {holder.pid}"):
        run_distill(RunConfig(), tmp_path / "run")
    assert not (tmp_path / "run" / "summary.json").exists()  # nothing of the holder's run touched


def test_the_lock_of_a_killed_holder_is_taken_over(tmp_path, holder):
    holder.kill()  # kill -9: the kernel drops the flock, the lock file still names it
    holder.wait()
    assert locks.read_holder(tmp_path / "run")["pid"] == holder.pid
    logs = []
    with locks.hold(tmp_path / "run", "next", log=logs.append):
        assert locks.read_holder(tmp_path / "run")["pid"] == os.getpid()
    assert len(logs) == 1 and f"took over the stale lock of pid {holder.pid}" in logs[0]


def test_a_planted_lock_file_of_a_dead_pid_is_stale(tmp_path):
    dead = _dead_pid()
    (tmp_path / locks.LOCK).write_text(json.dumps({"pid": dead, "host": "h", "started": "2026-01-01T00:00:00Z"}))
    logs = []
    with locks.hold(tmp_path, "me", log=logs.append):
        pass
    assert logs and f"pid {dead} on h since 2026-01-01" in logs[0]
    assert locks.read_holder(tmp_path) is None  # released: emptied, so the next one is silent
    logs.clear()
    with locks.hold(tmp_path, "me", log=logs.append):
        pass
    assert logs == []


def test_reentrant_within_a_process(tmp_path):
    with locks.hold(tmp_path, "outer"):
        with locks.hold(tmp_path, "inner"):
            assert locks.read_holder(tmp_path)["what"] == "outer"
        assert locks.read_holder(tmp_path)["pid"] == os.getpid()  # still held
    assert locks.read_holder(tmp_path) is None


def test_holder_text_is_one_line():
    t = locks.holder_text({"pid": 1, "host": "x", "started": time.strftime("%Y"), "what": "harness sweep s"})
    assert t.startswith("pid 1 on x since ") and t.endswith("(harness sweep s)")


def test_a_file_system_without_locks_is_said_and_a_full_disk_is_one_line(tmp_path, monkeypatch):
    import errno
    import fcntl

    from harness.failures import NoSpaceError

    def no_locks(fh, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    logs = []
    with locks.hold(tmp_path, "me", log=logs.append):
        pass
    assert logs == [f"[lock] {tmp_path}: this file system does not support locks; nothing stops a second writer here"]
    monkeypatch.undo()

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("builtins.open", full)
    with pytest.raises(NoSpaceError, match=f"no space left in {tmp_path / 'x'}"):
        with locks.hold(tmp_path / "x", "me"):
            pass
