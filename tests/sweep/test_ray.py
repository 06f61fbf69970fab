"""Sweeps end to end on the tiny profile: through Ray Tune (local, and a two-node cluster on one
machine that loses a node mid-sweep), and killed with kill -9 then resumed."""

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
from tests.support.procs import _procs, _stop_nodes  # noqa: F401  (the cluster tests use both)

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
    lines = []
    df = pd.read_csv(run_sweep(path, log=lambda s: lines.append((time.time(), s))))
    assert sorted(df.variant) == ["interleaved", "none"] and (df.status == "ok").all()
    # a live line per trial event, printed while the trials run: both starts come before
    # either trial has ended, each finish names its status and key numbers, the first an ETA
    ended = min(json.loads((Path(d) / "summary.json").read_text())["ended"] for d in df.run_dir)
    from datetime import datetime

    ended_at = datetime.fromisoformat(ended).timestamp()
    starts = [(t, s) for t, s in lines if s.startswith("[sweep] started ")]
    finishes = [s for _, s in lines if s.startswith("[sweep] finished ")]
    assert sorted(s.split()[2] for _, s in starts) == sorted(Path(d).name for d in df.run_dir)
    assert all(t < ended_at + 1 for t, _ in starts)
    assert len(finishes) == 2 and all(": ok in " in s and "loss " in s for s in finishes)
    assert "(1/2 done, 1 running, ETA " in finishes[0] and "(2/2 done, 0 running)" in finishes[1]
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


def _raylet_node_id(temp_dir: Path) -> str:
    """The node id of the raylet started with ``temp_dir`` (from its command line)."""
    for _, _, args in _procs():
        if args and args[0].endswith("raylet") and f"--temp_dir={temp_dir}" in args:
            return next(a.split("=", 1)[1] for a in args if a.startswith("--node_id="))
    raise AssertionError(f"no raylet with --temp_dir={temp_dir}")


@pytest.mark.integration
def test_two_node_cluster_uses_both_nodes_and_survives_losing_one(tiny_corpus, tmp_path):
    """A real cluster on one machine: a head and a second node (one CPU each, own temp
    dirs) joined by `harness sweep --address`. Trials run on both nodes (each records its
    node). Killing the second node while one of its trials trains fails that trial only;
    the finished trials stay as they are, and `--resume` on the head alone completes the
    sweep with the results of an uninterrupted in-process sweep."""
    import socket

    variants = "[none, top, middle, interleaved]"
    ref = pd.read_csv(run_sweep(_sweep(tmp_path / "a", tiny_corpus, "k", variants, steps=120, extra="backend: local\n"),
                                log=lambda s: None))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    head_tmp, node_tmp = Path(f"/tmp/hr{port}h"), Path(f"/tmp/hr{port}w")  # short: unix socket paths
    address = f"127.0.0.1:{port}"
    try:
        started = _ray("start", "--head", f"--port={port}", "--num-cpus=1", f"--temp-dir={head_tmp}",
                       "--include-dashboard=false", "--disable-usage-stats", env=env)
        assert started.returncode == 0, started.stderr[-2000:]
        joined = _ray("start", f"--address={address}", "--num-cpus=1", f"--temp-dir={node_tmp}", env=env)
        assert joined.returncode == 0, joined.stderr[-2000:]
        head_id, worker_id = _raylet_node_id(head_tmp), _raylet_node_id(node_tmp)
        path = _sweep(tmp_path / "b", tiny_corpus, "k", variants, steps=120, extra="resources: {cpu: 1}\n")
        cmd = [sys.executable, "-m", "harness.cli", "sweep", str(path), "--address", address]
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        runs = tmp_path / "b/results/k"
        seen, victim, deadline = {}, None, time.time() + 300
        while time.time() < deadline and victim is None and proc.poll() is None:
            for t in runs.glob("*/trial.json"):
                try:
                    node = json.loads(t.read_text()).get("node") or {}
                except ValueError:  # being written
                    continue
                seen[t.parent.name] = node.get("id")
                summary = t.parent / "summary.json"
                running = (t.parent / "metrics.jsonl").exists() and (
                    not summary.exists() or '"status": "running"' in summary.read_text())
                if node.get("id") == worker_id and running:
                    victim = t.parent.name
            time.sleep(0.1)
        assert victim is not None, f"no trial was caught training on the second node: {seen}"
        _stop_nodes(str(node_tmp))  # the second node dies mid-trial
        assert proc.wait(timeout=300) != 0  # its trial failed; the sweep says so
        assert head_id in seen.values()  # both nodes ran trials (the victim was on the second)
        finished = {p.parent.name: p.read_bytes() for p in runs.glob("*/student.ckpt")
                    if '"status": "ok"' in (p.parent / "summary.json").read_text()}
        assert victim not in finished
        resumed = subprocess.run(cmd + ["--resume"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        for name, blob in finished.items():  # finished trials were kept, not rerun
            assert (runs / name / "student.ckpt").read_bytes() == blob
        df = pd.read_csv(runs / "runs.csv")
        timing = ["train_seconds", "run_dir"]
        assert df.drop(columns=timing).equals(ref.drop(columns=timing))
    finally:
        _stop_nodes(str(head_tmp), str(node_tmp), address)
        shutil.rmtree(head_tmp, ignore_errors=True)
        shutil.rmtree(node_tmp, ignore_errors=True)
