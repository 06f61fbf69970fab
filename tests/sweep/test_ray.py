"""Sweeps end to end on the tiny profile: through Ray Tune, and killed with kill -9 then resumed."""

import json
import os
import shutil
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


def _ray(*args, env):
    return subprocess.run([str(Path(sys.executable).parent / "ray"), *args], env=env, capture_output=True,
                          text=True, timeout=120)


def _stop_nodes(*marks: str) -> None:
    """Kill this test's Ray processes only (not `ray stop`, which stops every Ray on the
    machine): those whose command line names one of ``marks``, and their descendants (the
    agents rename themselves)."""
    def procs():
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                    ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, ValueError, IndexError):
                    continue
                yield int(d.name), ppid, cmd

    table = list(procs())
    doomed = {pid for pid, _, cmd in table if any(m in cmd for m in marks)} - {os.getpid()}
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


@pytest.mark.integration
def test_sweep_on_a_two_node_cluster_runs_trials_on_both_nodes(tiny_corpus, tmp_path):
    """A real cluster on one machine: a head and a second node (own CPU, own temp dir),
    joined by `harness sweep --address`; each trial records the node it ran on."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    head_tmp, node_tmp = Path(f"/tmp/hr{port}h"), Path(f"/tmp/hr{port}w")  # short: unix socket paths
    address = f"127.0.0.1:{port}"
    try:
        started = _ray("start", "--head", f"--port={port}", "--num-cpus=1", f"--temp-dir={head_tmp}",
                       "--include-dashboard=false", "--disable-usage-stats", env=env)
        assert started.returncode == 0, started.stderr[-2000:]
        joined = _ray("start", f"--address={address}", "--num-cpus=1", f"--temp-dir={node_tmp}", env=env)
        assert joined.returncode == 0, joined.stderr[-2000:]
        path = _sweep(tmp_path, tiny_corpus, "two", "[none, top, middle, interleaved]", steps=8,
                      extra="resources: {cpu: 1}\n")
        proc = subprocess.run([sys.executable, "-m", "harness.cli", "sweep", str(path), "--address", address],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        df = pd.read_csv(tmp_path / "results/two/runs.csv")
        assert len(df) == 4 and (df.status == "ok").all()
        nodes = {json.loads((Path(d) / "trial.json").read_text())["node"]["id"] for d in df.run_dir}
        assert len(nodes) == 2, nodes  # one CPU per node: four trials cannot all run on one
    finally:
        _stop_nodes(str(head_tmp), str(node_tmp), address)
        shutil.rmtree(head_tmp, ignore_errors=True)
        shutil.rmtree(node_tmp, ignore_errors=True)
