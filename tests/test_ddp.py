"""Data-parallel distillation (issue 21): 2 gloo ranks against one process with the same
global batch, growth under DDP, rank 0 the only writer, the rank-sharded batches."""

import json
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.config import ConfigError, load_run_config, to_dict
from harness.data.loader import CachedBatches
from harness.distill import run_distill

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "sweeps" / "base" / "tiny.yaml"
# the documented tolerance (docs/architecture.md, "Data-parallel runs"): the same batches,
# gradients averaged in another order
LOSS_RTOL = 1e-4
WEIGHT_ATOL = 1e-5


@pytest.fixture(scope="module")
def corpus(fake_corpus):
    """Eight FLACs of 0.6-1.6 s: with 1 s crops the ranks' slices hold different numbers of
    valid frames, which the frame-share weighting must get right."""
    return fake_corpus("tones")


def _cfg(corpus, *overrides):
    return load_run_config(TINY, [
        f"data.corpus={corpus}", f"teacher.cache_dir={corpus / 'cache'}", "data.max_seconds=1.0",
        "train.steps=16", "train.log_every=1", "train.threads=1", "train.device=cpu", "data.heldout=0",
        "train.tensorboard=false", "train.ckpt_every=0", "data.batch_size=4", *overrides])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(cfg, run_dir: Path, out: Path, world: int = 2) -> list[dict]:
    import torch.multiprocessing as mp

    from tests.support.ddp_ranks import rank_main

    out.mkdir(parents=True, exist_ok=True)
    mp.spawn(rank_main, args=(world, _free_port(), to_dict(cfg), str(run_dir), str(out)), nprocs=world, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(world)]


def _losses(run_dir: Path) -> list[float]:
    return [json.loads(ln)["loss"] for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_two_ranks_match_one_process_through_every_growth(corpus, tmp_path):
    cfg = _cfg(corpus)
    one = run_distill(cfg, tmp_path / "one", resume=False)
    ranks = _spawn(cfg, tmp_path / "two", tmp_path / "ranks")
    two = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert one["status"] == two["status"] == "ok"
    assert two["distributed"] == {"world_size": 2, "backend": "gloo", "global_batch": 4, "per_rank_batch": 2}
    assert ranks[1]["summary"] == {"run_id": "two", "status": "ok", "rank": 1, "steps": 16}  # rank 1 wrote nothing
    # the same stage boundaries and depths; growth at the same step on both ranks, with the
    # same new weights and AdamW moments on both
    assert [(s["start_step"], s["depth"]) for s in one["stages"]] == [(s["start_step"], s["depth"]) for s in two["stages"]]
    g0, g1 = ranks[0]["growths"], ranks[1]["growths"]
    assert [g[0] for g in g0] == [g[0] for g in g1] == [s["start_step"] for s in two["stages"][1:]]
    for (_, w0, m0), (_, w1, m1) in zip(g0, g1):
        assert torch.equal(w0, w1) and torch.equal(m0, m1)
    # the loss curve and the final student: the single process's up to reduction order
    np.testing.assert_allclose(_losses(tmp_path / "two"), _losses(tmp_path / "one"), rtol=LOSS_RTOL)
    a = torch.load(tmp_path / "one" / "student.ckpt", weights_only=False)["state_dict"]
    b = torch.load(tmp_path / "two" / "student.ckpt", weights_only=False)["state_dict"]
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=WEIGHT_ATOL, rtol=0, msg=k)


def test_rank_slices_are_the_single_batch_cut_in_two(corpus):
    from harness.teachers.cache import ensure_cache

    cache = ensure_cache("dummy", corpus / "distill.jsonl", [1, 2], cache_dir=corpus / "cache", log=None)
    ids = list(cache.ids) if hasattr(cache, "ids") else [json.loads(ln)["id"] for ln in
                                                          (corpus / "distill.jsonl").read_text().splitlines()]
    whole = CachedBatches(cache, ids, [1, 2], 4, 50, seed=3, steps=range(0, 5))
    parts = [CachedBatches(cache, ids, [1, 2], 4, 50, seed=3, steps=range(0, 5), shard=(r, 2)) for r in range(2)]
    for i in range(5):
        w, p0, p1 = whole[i], parts[0][i], parts[1][i]
        torch.testing.assert_close(torch.cat([p0["feats"], p1["feats"]]), w["feats"], atol=0, rtol=0)
        torch.testing.assert_close(torch.cat([p0["targets"][2], p1["targets"][2]]), w["targets"][2], atol=0, rtol=0)
        assert torch.cat([p0["frame_lengths"], p1["frame_lengths"]]).tolist() == w["frame_lengths"].tolist()
        n = w["frame_lengths"].sum().item()
        assert float(p0["share"]) == pytest.approx(p0["frame_lengths"].sum().item() / n)
        assert float(p0["share"] + p1["share"]) == pytest.approx(1.0)


def test_data_parallel_refuses_what_it_cannot_shard(corpus, tmp_path, monkeypatch):
    from harness import ddp

    monkeypatch.setattr(ddp, "current", lambda: ddp.Group(0, 2, 0, "gloo"))
    monkeypatch.setattr(ddp, "broadcast", lambda obj, group: obj)  # no process group here: the checks come first
    with pytest.raises(ConfigError, match=r"data.batch_size 3 \(the global batch\) does not split over 2 ranks"):
        run_distill(_cfg(corpus, "data.batch_size=3"), tmp_path / "odd", resume=False)
    with pytest.raises(ConfigError, match=r"teacher.cache: a data-parallel run \(2 ranks\) reads the cached"):
        run_distill(_cfg(corpus, "teacher.cache=false"), tmp_path / "live", resume=False)


def _torchrun(corpus, run_dir: Path, *extra: str, wait: bool = True):
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--max-restarts", "0",
           "--master-port", str(_free_port()), "-m", "harness.cli", "distill", "--config", str(TINY),
           f"data.corpus={corpus}", f"teacher.cache_dir={corpus / 'cache'}", "data.max_seconds=1.0",
           "train.threads=1", "train.device=cpu", "data.heldout=0", "train.tensorboard=false", "data.batch_size=4",
           *extra, "--out", str(run_dir)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    if wait:
        out, _ = proc.communicate(timeout=300)
        return proc.returncode, out
    return proc


def test_torchrun_kill_9_of_one_rank_then_rerun_resumes(corpus, tmp_path):
    import os
    import signal
    import time

    from tests.support.procs import rank_pid

    steps = ["train.steps=240", "train.ckpt_every=20", "train.log_every=10"]
    rc, out = _torchrun(corpus, tmp_path / "whole", *steps)
    assert rc == 0, out
    assert out.count("[distill] step") >= 1 and "ok  " in out  # rank 0 alone prints progress and the result
    proc = _torchrun(corpus, tmp_path / "cut", *steps, wait=False)
    ckpt, killed = tmp_path / "cut" / "train.pt", None
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if ckpt.is_file() and not killed:
            time.sleep(0.2)  # mid-run, past the first checkpoint
            pid = rank_pid(proc.pid, 1)
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                killed = pid
        time.sleep(0.02)
    proc.communicate(timeout=120)
    assert killed and proc.returncode != 0, "the run finished before a rank could be killed"
    summary = json.loads((tmp_path / "cut" / "summary.json").read_text())
    # killed by torchrun first, or rank 0 saw its peer go mid-collective and recorded that as
    # an environment failure (a sweep's --resume reruns those); the checkpoint is kept either way
    assert summary["status"] == "running" or (summary["failure"] == "environment" and "peer" in summary["status"])
    assert ckpt.is_file()
    done_before = torch.load(ckpt, weights_only=False)["step"]
    assert 0 < done_before < 240
    rc, out = _torchrun(corpus, tmp_path / "cut", *steps)
    assert rc == 0, out
    summary = json.loads((tmp_path / "cut" / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["steps"] == 240 and summary["distributed"]["world_size"] == 2
    rows = [json.loads(ln) for ln in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(10, 241, 10))  # each logged step once
    # resumed exactly where it stopped: the same curve as the uninterrupted 2-rank run
    np.testing.assert_allclose([r["loss"] for r in rows], _losses(tmp_path / "whole"), rtol=1e-6)


def test_sweep_trial_of_two_workers_runs_through_ray_train_and_resumes_after_kill_9(corpus, tmp_path):
    """A tiny sweep whose trial is a Ray Train group of 2 workers (``resources.workers``):
    kill -9 of the whole sweep mid-run, then ``--resume``: the trial continues from its
    ``train.pt`` (the same run: its start time and the logged steps before the kill kept)
    and finishes as a 2-rank run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from harness.sweep import run_sweep
    from tests.support.procs import kill_tree

    base = TINY.read_text().replace("corpus: data/tiny", f"corpus: {corpus}").replace(
        "cache_dir: cache/teacher", f"cache_dir: {corpus / 'cache'}")
    base = base.replace("steps: 80", "steps: 240").replace("ckpt_every: 0", "ckpt_every: 20").replace(
        "heldout: 12", "heldout: 0").replace("max_seconds: 2.0", "max_seconds: 1.0").replace(
        "device: auto", "device: cpu").replace("eval_every: 20", "eval_every: 0").replace(
        "log_every: 5", "log_every: 10")
    (tmp_path / "base.yaml").write_text(base + "  tensorboard: false\n  threads: 1\n")
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"name: dp\nbase: base.yaml\ngrid:\n  stacking.variant: [interleaved]\nseeds: [0]\n"
                     f"resources: {{workers: 2, cpu: 1}}\nstorage: {tmp_path / 'results'}\n")
    run_dir = tmp_path / "results" / "dp" / "variant=interleaved-s0"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "sweep", str(sweep)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    try:
        while time.time() < deadline and not (run_dir / "train.pt").is_file():
            assert proc.poll() is None, "the sweep ended before it could be killed"
            time.sleep(0.05)
        assert (run_dir / "train.pt").is_file(), "no checkpoint within 300 s"
    finally:
        kill_tree(proc.pid)  # kill -9: the driver, the Tune trial, the Ray Train workers
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = json.loads((run_dir / "summary.json").read_text())
    assert before["status"] == "running"
    kept = [json.loads(ln)["step"] for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]
    msgs = []
    run_sweep(sweep, resume=True, log=msgs.append)
    after = json.loads((run_dir / "summary.json").read_text())
    assert after["status"] == "ok" and after["steps"] == 240, after["status"]
    assert after["distributed"] == {"world_size": 2, "backend": "gloo", "global_batch": 4, "per_rank_batch": 2}
    assert after["started"] == before["started"]  # resumed, not restarted
    steps = [json.loads(ln)["step"] for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(10, 241, 10)) and steps[:len(kept)] == kept
    trial = json.loads((run_dir / "trial.json").read_text())
    assert trial["group"] == {"workers": 2, "cpu": 1.0, "gpu": 0.0} and trial.get("node")
