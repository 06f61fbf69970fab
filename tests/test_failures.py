"""Failure classes (harness.failures): what the environment broke vs what fails again."""

import errno

import pytest

from harness import failures
from harness.config import ConfigError
from harness.data.audio import AudioError
from harness.data.manifest import ManifestError
from harness.teachers.cache import CacheError

ENV, DET = failures.ENVIRONMENT, failures.DETERMINISTIC


@pytest.mark.parametrize("err, cls", [
    (OSError(errno.ENOSPC, "No space left on device"), ENV),
    (FileNotFoundError("data.corpus: x/distill.jsonl not found"), ENV),
    (MemoryError(), ENV),
    (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), ENV),
    (RuntimeError("[enforce fail at inline_container.cc:778] . unexpected pos 512 vs 448"), ENV),
    (AudioError("a.flac: truncated (read 10 of 20 samples)"), ENV),
    (ManifestError("distill.jsonl:3: not valid JSON"), ENV),
    (CacheError("cache/x: not a finished feature cache (no COMPLETE.json)"), ENV),
    (ConfigError("stacking.variant: unknown"), DET),
    (RuntimeError("boom"), DET),
    (ValueError("shape mismatch"), DET),
])
def test_classify(err, cls):
    assert failures.classify(err) == cls


def test_failure_of_reads_the_key_or_an_old_status():
    assert failures.failure_of({"status": "ok"}) is None
    assert failures.failure_of({"status": "running"}) is None
    assert failures.failure_of({"status": "failed: nan at step 9", "failure": DET}) == DET
    # summaries written before the key existed
    assert failures.failure_of({"status": "failed: OSError: [Errno 28] No space left on device"}) == ENV
    assert failures.failure_of({"status": "failed: AudioError: x.flac: empty file"}) == ENV
    assert failures.failure_of({"status": "failed: nan at step 9"}) == DET
    assert failures.failure_of({"status": "failed: ConfigError: train.steps"}) == DET


def test_no_space_is_one_line_naming_the_folder(tmp_path):
    assert failures.is_no_space(OSError(errno.ENOSPC, "full"))
    assert failures.is_no_space(RuntimeError("[enforce fail at inline_container.cc:778] . unexpected pos 9 vs 3"))
    assert not failures.is_no_space(OSError(errno.ENOENT, "missing"))
    try:  # wrapped, as Ray's controller raises it
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise RuntimeError("trial failed") from inner
    except RuntimeError as outer:
        assert failures.is_no_space(outer)
    msg = failures.no_space_message(tmp_path / "not" / "yet")
    assert msg.startswith(f"no space left in {tmp_path / 'not' / 'yet'} (") and "GB free): free space or point --out" in msg
    assert "): free 3.0 GB or point" in failures.no_space_message(tmp_path, 3e9)
    assert "): free 2 MB or point" in failures.no_space_message(tmp_path, 2e6)
    err = failures.NoSpaceError(msg)
    assert str(err) == msg and err.errno == errno.ENOSPC and failures.classify(err) == ENV
