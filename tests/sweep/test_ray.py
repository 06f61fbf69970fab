"""Sweeps end to end on the tiny profile: through Ray Tune, and killed with kill -9 then resumed."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from harness.sweep import run_sweep

ROOT = Path(__file__).resolve().parents[2]


def _sweep(tmp_path, corpus, name, variants, steps=8, extra=""):
    tmp_path.mkdir(parents=True, exist_ok=True)
    base = yaml.safe_load((ROOT / "sweeps/base/tiny.yaml").read_text())
    base["data"]["corpus"] = str(corpus)
    base["teacher"]["cache_dir"] = str(tmp_path / "cache")
    base["train"]["steps"] = steps
    base["train"]["threads"] = 1
    base["train"]["ckpt_every"] = 2
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"name: {name}\nbase: base.yaml\ngrid:\n  stacking.variant: {variants}\nseeds: [0]\n"
        f"storage: {tmp_path / 'results'}\n{extra}"
    )
    return path


@pytest.mark.integration
def test_two_trial_sweep_through_ray(tiny_corpus, tmp_path, monkeypatch):
    path = _sweep(tmp_path, tiny_corpus, "ray2", "[none, interleaved]", extra="resources: {cpu: 1}\n")
    # relative paths in the run config resolve from where the sweep is launched, not from
    # the folder Ray runs each trial in
    monkeypatch.chdir(tmp_path)
    (tmp_path / "corpus").symlink_to(tiny_corpus)
    base = yaml.safe_load((tmp_path / "base.yaml").read_text())
    base["data"]["corpus"] = "corpus"
    base["teacher"]["cache_dir"] = "cache"
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    df = pd.read_csv(run_sweep(path, log=lambda s: None))
    assert sorted(df.variant) == ["interleaved", "none"] and (df.status == "ok").all()
    for run_dir in df.run_dir:
        for name in ("config.yaml", "summary.json", "metrics.jsonl", "student.ckpt"):
            assert (Path(run_dir) / name).is_file()


@pytest.mark.integration
def test_kill_9_then_resume_matches_an_uninterrupted_sweep(tiny_corpus, tmp_path):
    variants = "[none, top, interleaved]"
    ref = pd.read_csv(run_sweep(_sweep(tmp_path / "a", tiny_corpus, "k", variants, steps=40, extra="backend: local\n"),
                                log=lambda s: None))
    path = _sweep(tmp_path / "b", tiny_corpus, "k", variants, steps=40, extra="backend: local\n")
    cmd = [sys.executable, "-m", "harness.cli", "sweep", str(path)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs = tmp_path / "b/results/k"
    deadline = time.time() + 300
    # kill -9 once the first trial is finished and the second has started training
    while time.time() < deadline:
        done = [p for p in runs.glob("*/summary.json") if '"status": "ok"' in p.read_text()]
        started = list(runs.glob("*/metrics.jsonl"))
        if len(done) >= 1 and len(started) >= 2:
            break
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished_before = {p.parent.name: p.stat().st_mtime for p in runs.glob("*/student.ckpt")}
    df = pd.read_csv(run_sweep(path, resume=True, log=lambda s: None))
    for name, mtime in finished_before.items():  # finished trials were not rerun
        assert (runs / name / "student.ckpt").stat().st_mtime == mtime
    timing = ["train_seconds", "run_dir"]
    assert df.drop(columns=timing).equals(ref.drop(columns=timing))
