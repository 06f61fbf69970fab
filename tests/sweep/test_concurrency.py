"""Two real sweeps into one results folder: the second is refused (naming the first), and the
first's runs are complete. Subprocesses on the tiny profile, local backend (harness.locks)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import locks

ROOT = Path(__file__).resolve().parents[2]
STEPS = 12


@pytest.fixture(scope="module")
def corpus(fake_corpus):
    return fake_corpus("tones")


def _sweep_file(tmp_path, corpus) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(
        f"name: race\nbase: {ROOT / 'sweeps/base/tiny.yaml'}\n"
        f"overrides: {{data.corpus: {corpus}, teacher.cache_dir: {corpus / 'cache'}, data.max_seconds: 1.0, "
        f"train.steps: {STEPS}, train.log_every: 1, train.device: cpu, data.heldout: 0, train.threads: 1}}\n"
        "grid:\n  stacking.variant: [none, interleaved]\nseeds: [0]\nbackend: local\n"
        f"storage: {tmp_path / 'results'}\n"
    )
    return path


def _harness(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "harness.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=str(ROOT))


def test_a_second_sweep_into_the_same_folder_is_refused(tmp_path, corpus):
    sweep = _sweep_file(tmp_path, corpus)
    out = tmp_path / "results" / "race"
    first = _harness("sweep", str(sweep), "--local")
    try:
        deadline = time.time() + 120
        while (locks.read_holder(out) or {}).get("pid") != first.pid:
            assert first.poll() is None, first.communicate()
            assert time.time() < deadline, "the first sweep never took its lock"
            time.sleep(0.05)
        os.kill(first.pid, signal.SIGSTOP)  # hold it mid-sweep, so the race cannot be lost by timing
        try:
            second = _harness("sweep", str(sweep), "--local", "--resume")
            _, err = second.communicate(timeout=120)
        finally:
            os.kill(first.pid, signal.SIGCONT)
        assert second.returncode == 2
        line = err.strip()
        assert "\n" not in line and f"{out} is being written by pid {first.pid} on " in line
        assert "harness sweep race" in line
        stdout, stderr = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, stderr
    for variant in ("none", "interleaved"):
        run = out / f"variant={variant}-s0"
        summary = json.loads((run / "summary.json").read_text())
        assert summary["status"] == "ok"
        lines = (run / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(ln)["step"] for ln in lines] == list(range(1, STEPS + 1))
    assert locks.read_holder(out) is None  # released at the end
