"""The distillation run: contract files, every variant, resume after a kill, NaN guard,
cached and live teacher paths, strict errors. Tiny runs on CPU with the dummy teacher."""

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.config import ConfigError, load_run_config
from harness.distill import RunInterrupted, lr_at, run_distill
from harness.stacking import stage_boundaries

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "sweeps" / "base" / "tiny.yaml"
VARIANTS = ["none", "top", "bottom", "middle", "interleaved"]


@pytest.fixture(scope="module")
def corpus(fake_corpus):
    """Eight short FLACs (0.6-1.6 s of tones in noise) and their distill manifest."""
    return fake_corpus("tones")


def tiny_cfg(corpus, tmp_path, *overrides):
    """The shipped tiny config, shortened, on the fabricated corpus."""
    return load_run_config(TINY, [
        f"data.corpus={corpus}", f"teacher.cache_dir={corpus / 'cache'}", "data.max_seconds=1.0",
        "train.steps=20", "train.log_every=1", "train.threads=1", "train.device=cpu", "data.heldout=0", *overrides,
    ])


def read_metrics(run_dir):
    return [json.loads(ln) for ln in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def test_lr_schedule_warmup_then_decay():
    cfg = load_run_config(TINY, ["optim.lr=1.0", "optim.warmup_frac=0.1", "optim.decay=linear"])
    lrs = [lr_at(s, 100, cfg.optim) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)  # 10 warmup steps
    assert lrs[10] == pytest.approx(1.0) and lrs[55] == pytest.approx(0.5)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    cos = load_run_config(TINY, ["optim.lr=1.0", "optim.warmup_frac=0.0", "optim.decay=cosine"]).optim
    assert lr_at(50, 100, cos) == pytest.approx(0.5) and lr_at(0, 100, cos) == pytest.approx(1.0)
    assert stage_boundaries([2, 4, 6, 8]) == [0, 2, 6, 12]


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_variant_writes_the_contract_files(corpus, tmp_path, variant):
    cfg = tiny_cfg(corpus, tmp_path, f"stacking.variant={variant}")
    out = tmp_path / f"run-{variant}"
    summary = run_distill(cfg, out, sweep="demo")
    assert summary["status"] == "ok"
    for name in ("config.yaml", "summary.json", "metrics.jsonl", "student.ckpt"):
        assert (out / name).is_file(), name
    assert not (out / "train.pt").exists()  # superseded by student.ckpt
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary, default=str))
    for key in ("run_id", "sweep", "variant", "schedule", "seed", "teacher", "student_params", "stages",
                "train_seconds", "flops", "final_losses", "hardware", "git_commit", "started", "ended",
                "status", "tasks", "superb_score"):
        assert key in on_disk, key
    assert on_disk["run_id"] == out.name and on_disk["sweep"] == "demo" and on_disk["variant"] == variant
    assert on_disk["tasks"] == {} and on_disk["superb_score"] is None
    stages = on_disk["stages"]
    assert sum(s["steps"] for s in stages) == 20 == on_disk["steps"]
    assert on_disk["train_seconds"] == pytest.approx(sum(s["seconds"] for s in stages))
    assert all(s["seconds"] > 0 for s in stages)
    depths = [s["depth"] for s in stages]
    if variant == "none":
        assert len(stages) == 1
    else:
        assert len(stages) == 4 and depths == sorted(depths) and depths[0] < depths[-1]
    assert on_disk["flops"] > 0
    # config.yaml is the resolved config: it loads back to the same run
    assert load_run_config(out / "config.yaml") == cfg
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == list(range(1, 21))
    assert {"step", "stage", "depth", "loss", "lr", "time", "cpu_time"} <= set(rows[0])
    assert [r["depth"] for r in rows][-1] == depths[-1]
    assert on_disk["final_losses"]["loss"] == pytest.approx(rows[-1]["loss"])
    # the saved student is an upstream of the final depth
    from harness.student import load_student

    student = load_student(out / "student.ckpt", "cpu")
    assert len(student.layers) == depths[-1]
    assert student.encoder_params() == on_disk["student_params"]
    # depths 1..4 for 2, 4, 6, 8 steps: 30/40 of the layer cost, plus the depth-free part
    if variant == "none":
        assert on_disk["theoretical_speedup"] == pytest.approx(1.0)
    else:
        assert 1.0 < on_disk["theoretical_speedup"] < 40 / 30


def test_killed_run_resumes_to_the_same_result(corpus, tmp_path):
    cfg = tiny_cfg(corpus, tmp_path, "train.steps=24", "train.ckpt_every=5")
    ref = run_distill(cfg, tmp_path / "ref")

    def kill(row):
        if row["step"] == 13:  # mid-stage (stages of ~2, 5, 7, 10 steps: 1:2:3:4)
            raise RunInterrupted("simulated kill")

    with pytest.raises(RunInterrupted):
        run_distill(cfg, tmp_path / "run", on_log=kill)
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "running"
    ck = torch.load(tmp_path / "run" / "train.pt", weights_only=True)
    assert 10 <= ck["step"] < 13  # ckpt_every=5, or a growth in between
    summary = run_distill(cfg, tmp_path / "run")
    assert summary["status"] == "ok" and summary["steps"] == 24
    assert [s["steps"] for s in summary["stages"]] == [s["steps"] for s in ref["stages"]]
    rows, ref_rows = read_metrics(tmp_path / "run"), read_metrics(tmp_path / "ref")
    assert [r["step"] for r in rows] == list(range(1, 25))  # no step lost or logged twice
    # batches and RNG are functions of (seed, step): the resumed run is the same run
    assert [r["loss"] for r in rows] == pytest.approx([r["loss"] for r in ref_rows], rel=1e-4, abs=1e-6)
    # a finished run is returned as is
    assert run_distill(cfg, tmp_path / "run")["ended"] == summary["ended"]


def test_a_resume_mid_log_window_logs_the_same_window_means(corpus, tmp_path):
    """A checkpoint between two log lines (a growth) keeps the log window's sums, so the
    first line after a resume averages the same steps as the uninterrupted run's."""
    cfg = tiny_cfg(corpus, tmp_path, "train.steps=40", "train.log_every=10", "train.ckpt_every=0")
    run_distill(cfg, tmp_path / "ref")

    def kill(row):
        if row["step"] == 30:
            raise RunInterrupted("simulated kill")

    with pytest.raises(RunInterrupted):
        run_distill(cfg, tmp_path / "run", on_log=kill)
    ck = torch.load(tmp_path / "run" / "train.pt", weights_only=True)
    assert ck["step"] % 10 and ck["log_window"]["n"] == ck["step"] % 10  # a growth's checkpoint, mid-window
    run_distill(cfg, tmp_path / "run")
    rows, ref_rows = read_metrics(tmp_path / "run"), read_metrics(tmp_path / "ref")
    assert [r["step"] for r in rows] == [10, 20, 30, 40]
    assert [r["loss"] for r in rows] == pytest.approx([r["loss"] for r in ref_rows], rel=1e-6)


def test_nan_guard_stops_and_keeps_the_last_good_checkpoint(corpus, tmp_path, monkeypatch):
    from harness.student import Student

    real = Student.project
    calls = {"n": 0}

    def poisoned(self, states):  # the 9th step's predictions are NaN
        calls["n"] += 1
        preds = real(self, states)
        return [p * math.nan for p in preds] if calls["n"] == 9 else preds

    monkeypatch.setattr(Student, "project", poisoned)
    cfg = tiny_cfg(corpus, tmp_path, "stacking.variant=none", "train.ckpt_every=4")
    summary = run_distill(cfg, tmp_path / "run")
    assert summary["status"] == "failed: nan at step 9"
    assert summary["steps"] == 8
    assert not (tmp_path / "run" / "student.ckpt").exists()
    ck = torch.load(tmp_path / "run" / "train.pt", weights_only=True)
    assert ck["step"] == 8
    assert all(torch.isfinite(v).all() for v in ck["student"].values() if v.is_floating_point())
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == summary["status"]


@pytest.mark.parametrize("variant, poison, at, kept", [
    ("none", "weights", 8, 4), ("none", "optimizer", 8, 4), ("none", "weights", 20, 16),
    ("interleaved", "weights", 6, 4),  # stages start at steps 0, 2, 6, 12: the growth checkpoint
])
def test_nan_weights_never_replace_the_last_finite_checkpoint(corpus, tmp_path, monkeypatch, variant, poison, at,
                                                              kept):
    """An update that turns the weights (or Adam's moments) non-finite while its loss was
    finite: the checkpoint due right after it (step 8 with ckpt_every=4, or a growth's),
    or the final student (step 20), is not written; the run fails at that step and keeps
    the earlier finite train.pt."""
    from harness import distill

    real = distill.train_step

    def step_then_poison(run, batch, matched, lr):
        result = real(run, batch, matched, lr)
        if run.step == at:
            with torch.no_grad():
                if poison == "weights":
                    for p in run.student.parameters():
                        p.fill_(math.nan)
                else:
                    next(iter(run.opt.state.values()))["exp_avg"].fill_(math.inf)
        return result

    monkeypatch.setattr(distill, "train_step", step_then_poison)
    cfg = tiny_cfg(corpus, tmp_path, f"stacking.variant={variant}", "train.ckpt_every=4")
    summary = run_distill(cfg, tmp_path / "run")
    assert summary["status"] == f"failed: nan at step {at}"
    assert not (tmp_path / "run" / "student.ckpt").exists()
    ck = torch.load(tmp_path / "run" / "train.pt", weights_only=True)
    assert ck["step"] == kept
    tensors = list(ck["student"].values()) + [v for st in ck["optimizer"]["state"].values() for v in st.values()]
    assert all(torch.isfinite(v).all() for v in tensors if v.is_floating_point())


def test_live_and_cached_teacher_both_train(corpus, tmp_path):
    results = {}
    for cache in (True, False):
        cfg = tiny_cfg(corpus, tmp_path, f"teacher.cache={str(cache).lower()}", "stacking.variant=none")
        summary = run_distill(cfg, tmp_path / f"run-{cache}")
        assert summary["status"] == "ok" and summary["teacher_cached"] is cache
        rows = read_metrics(tmp_path / f"run-{cache}")
        results[cache] = rows
        assert np.mean([r["loss"] for r in rows[-4:]]) < np.mean([r["loss"] for r in rows[:4]])
    assert any((corpus / "cache").glob("dummy-*/COMPLETE.json")), "the cached run used the feature cache"


def test_bad_inputs_are_one_line_errors(corpus, tmp_path):
    cfg = tiny_cfg(corpus, tmp_path, f"data.corpus={tmp_path / 'nowhere'}")
    with pytest.raises(FileNotFoundError, match=r"data.corpus: .*nowhere/distill.jsonl not found"):
        run_distill(cfg, tmp_path / "a")
    # a misspelled variant is a load-time error now (harness.config), before any run
    with pytest.raises(ConfigError, match="interleaved"):
        tiny_cfg(corpus, tmp_path, "stacking.variant=interleave")
    cfg = tiny_cfg(corpus, tmp_path, "train.precision=bf16")
    with pytest.raises(ConfigError, match="train.precision"):
        run_distill(cfg, tmp_path / "c")


def test_base_configs_validate_and_paper_asks_for_its_checkpoint():
    for name in ("tiny", "embedded"):
        load_run_config(ROOT / "sweeps" / "base" / f"{name}.yaml")
    with pytest.raises(ConfigError, match="teacher.spec .*placeholder"):
        load_run_config(ROOT / "sweeps" / "base" / "paper.yaml")
    paper = load_run_config(ROOT / "sweeps" / "base" / "paper.yaml", ["teacher.spec=s3prl:hubert:/x.pt"])
    assert paper.train.steps == 200000 and paper.stacking.stages == 4 and paper.stacking.add == 3


def test_cli_distill(corpus, tmp_path, capsys):
    from harness.cli import main

    args = ["distill", "--config", str(TINY), f"data.corpus={corpus}", f"teacher.cache_dir={tmp_path / 'c'}",
            "train.steps=8", "train.device=cpu", "data.heldout=0", "train.log_every=2", "--out", str(tmp_path / "run")]
    assert main(args) == 0
    got = capsys.readouterr()
    assert got.out.startswith("ok")
    # progress: one plain line per log interval on a pipe, with the rate and an ETA once measurable
    lines = [ln for ln in got.err.splitlines() if ln.startswith("[distill] step ")]
    assert [ln.split(",")[0] for ln in lines] == [f"[distill] step {k}/8 ({100 * k // 8}%)" for k in (2, 4, 6, 8)]
    assert "depth " in lines[1] and "loss " in lines[1] and "steps/s" in lines[1] and "ETA 00:" in lines[1]
    assert main(args[:2] + ["nope.yaml", "--out", str(tmp_path / "x")]) == 2
    assert "nope.yaml" in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "distill.jsonl").write_text("{not json\n")
    assert main(args[:3] + [f"data.corpus={bad}", "teacher.cache=false", "--out", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "distill.jsonl:1" in err


@pytest.mark.parametrize("extra", [
    ["loss.objective=askd_l2l"],
    ["loss.objective=pred_heads", "student.target_mode=pred_heads", "student.pred_head_layers=[2, 4]"],
    ["stacking.init=zero"],  # post-LN: MSG masks ramp the new layers in
    ["stacking.init=random", "stacking.optim_state=reset", "stacking.layer_map=proportional"],
])
def test_objectives_and_growth_options_run(corpus, tmp_path, extra):
    cfg = tiny_cfg(corpus, tmp_path, "train.steps=12", *extra)
    summary = run_distill(cfg, tmp_path / "run")
    assert summary["status"] == "ok" and math.isfinite(summary["final_losses"]["loss"])
    if "loss.objective=askd_l2l" in extra:
        rows = read_metrics(tmp_path / "run")
        assert rows[0]["alpha"] == pytest.approx(1.0) and rows[-1]["alpha"] < 0.1  # cosine decay to 0


def test_mismatched_objective_is_a_config_error(corpus, tmp_path):
    with pytest.raises(ConfigError, match="student.target_mode: pred_heads"):
        tiny_cfg(corpus, tmp_path, "loss.objective=pred_heads")  # at load time, before any run
    # a config built in code (never validated) is checked when the run starts
    from harness.config import RunConfig

    cfg = tiny_cfg(corpus, tmp_path)
    cfg.loss.objective = "pred_heads"
    with pytest.raises(ConfigError, match="student.target_mode: pred_heads"):
        run_distill(cfg, tmp_path / "run")
    assert isinstance(cfg, RunConfig)


def test_every_feature_objective_has_a_step_loss():
    from harness.config import FEATURE_OBJECTIVES
    from harness.distill import STEP_LOSSES
    from harness.losses import OBJECTIVES

    assert set(STEP_LOSSES) == set(FEATURE_OBJECTIVES) and all(o in OBJECTIVES for o in STEP_LOSSES)


def test_a_failure_after_stage_one_leaves_a_failed_summary(corpus, tmp_path, monkeypatch):
    from harness import distill

    def broken_growth(run, stage):
        raise RuntimeError("growth exploded\nsecond line")

    monkeypatch.setattr(distill, "grow_to", broken_growth)
    cfg = tiny_cfg(corpus, tmp_path)
    with pytest.raises(RuntimeError, match="growth exploded"):
        run_distill(cfg, tmp_path / "run", sweep="demo")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed: RuntimeError: growth exploded"
    assert summary["run_id"] == "run" and summary["sweep"] == "demo" and summary["ended"]
    assert [r["stage"] for r in read_metrics(tmp_path / "run")] == [0, 0]  # stage 1 trained, then the failure


def test_a_failure_before_training_leaves_a_failed_summary(corpus, tmp_path):
    cfg = tiny_cfg(corpus, tmp_path, "teacher.spec=embedded:/nowhere/teacher.pt")
    with pytest.raises(FileNotFoundError):
        run_distill(cfg, tmp_path / "run")
    status = json.loads((tmp_path / "run" / "summary.json").read_text())["status"]
    assert status.startswith("failed: FileNotFoundError: ") and "\n" not in status


def test_offset_that_fails_a_later_growth_is_a_load_time_error(corpus, tmp_path):
    from harness.stacking import plan_stages

    # tiny: depths 1 -> 2 -> 3 -> 4; offset 1 does not exist at depth 1
    with pytest.raises(ConfigError, match=r"stacking.offset: growth 1 \(1 -> 2 layers\).*did you mean stacking.offset=0"):
        plan_stages(load_run_config(TINY, ["stacking.offset=1"]))
    stages = plan_stages(load_run_config(TINY, ["student.layers=8", "stacking.stages=3", "stacking.offset=1"]))
    assert stages.depths == [4, 6, 8]  # b = 2 then 3: offset 1 fits both growths


def test_rerun_into_a_finished_run_of_another_config_is_refused(corpus, tmp_path, capsys):
    from harness.cli import main

    out = tmp_path / "run"
    first = run_distill(tiny_cfg(corpus, tmp_path, "train.steps=8"), out)
    assert first["status"] == "ok"
    with pytest.raises(ConfigError) as err:
        run_distill(tiny_cfg(corpus, tmp_path, "train.steps=8", "stacking.variant=top"), out)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{out} holds a run of a different config (")
    assert "stacking.variant: interleaved -> top" in msg and "--restart" in msg
    assert json.loads((out / "summary.json").read_text())["variant"] == "interleaved"  # kept as it was
    # the same config returns the finished run; the CLI says the same in one line
    assert run_distill(tiny_cfg(corpus, tmp_path, "train.steps=8"), out)["ended"] == first["ended"]
    args = ["distill", "--config", str(TINY), f"data.corpus={corpus}", f"teacher.cache_dir={corpus / 'cache'}",
            "data.max_seconds=1.0", "train.steps=8", "train.log_every=1", "train.threads=1", "train.device=cpu",
            "data.heldout=0"]
    assert main(args + ["train.steps=9", "--out", str(out)]) == 2
    err_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert err_line.startswith(f"harness: error: {out} holds a run of a different config (train.steps: 8 -> 9)")
    assert main(args + ["train.steps=9", "--out", str(out), "--restart"]) == 0  # an explicit start over replaces it
    assert json.loads((out / "summary.json").read_text())["steps"] == 9


def _full_disk_under(folder, monkeypatch, keep=("trial.json",)):
    """Every run-folder write under ``folder`` fails as on a full disk (except ``keep``)."""
    import errno

    from harness import runs, safeload

    real = runs.atomic_write

    def full(path, data, fsync=False):
        p = Path(path)
        if str(p).startswith(str(folder)) and p.name not in keep:
            raise OSError(errno.ENOSPC, "No space left on device", str(p))
        return real(path, data, fsync=fsync)

    monkeypatch.setattr(runs, "atomic_write", full)
    monkeypatch.setattr(safeload, "atomic_write", full)  # train.pt, student.ckpt


def test_a_full_disk_is_one_line_and_an_environment_failure(corpus, tmp_path, monkeypatch, capsys):
    from harness.cli import main

    out = tmp_path / "run"
    _full_disk_under(out, monkeypatch)
    args = ["distill", "--config", str(TINY), f"data.corpus={corpus}", f"teacher.cache_dir={corpus / 'cache'}",
            "data.max_seconds=1.0", "train.steps=4", "train.device=cpu", "data.heldout=0", "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"harness: error: no space left in {out} (")
    assert re.search(r"GB free\): free \d+ MB or point --out elsewhere$", err), err  # what the run needs


def test_torch_writer_on_a_full_disk_is_the_same_line(corpus, tmp_path, monkeypatch):
    import harness.distill as distill_mod
    from harness.failures import NoSpaceError

    def torch_full(out_dir, state):  # what torch.save raises when the disk fills mid-write
        raise RuntimeError("[enforce fail at inline_container.cc:778] . unexpected pos 4352 vs 4246")

    monkeypatch.setattr(distill_mod, "save_train_state", torch_full)
    out = tmp_path / "run"
    with pytest.raises(NoSpaceError, match=f"no space left in {out}"):
        run_distill(tiny_cfg(corpus, tmp_path, "train.steps=8", "train.ckpt_every=2"), out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"].startswith(f"failed: no space left in {out}") and summary["failure"] == "environment"


def test_a_local_sweep_goes_on_after_a_full_disk_in_one_trial(corpus, tmp_path, monkeypatch):
    """The first trial's folder is full (even its failure cannot be written): it is reported
    from memory, the second trial runs, runs.csv lists both, and --resume retries it."""
    import pandas as pd

    from harness.sweep import run_sweep
    from harness.sweep.run import TrialsFailed

    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(
        f"name: disk\nbase: {TINY}\n"
        f"overrides: {{data.corpus: {corpus}, teacher.cache_dir: {corpus / 'cache'}, data.max_seconds: 1.0, "
        "train.steps: 6, train.log_every: 1, train.device: cpu, data.heldout: 0, train.threads: 1}\n"
        "grid:\n  stacking.variant: [none, top]\nseeds: [0]\nbackend: local\n"
        f"storage: {tmp_path / 'results'}\n")
    out = tmp_path / "results" / "disk"
    monkeypatch.setattr("harness.analysis.analyse_run", lambda run_dir: None)  # not what is tested
    _full_disk_under(out / "variant=none-s0", monkeypatch)
    logs = []
    with pytest.raises(TrialsFailed, match=r"disk: 1 of 2 trials failed \(1 environment\)"):
        run_sweep(sweep, log=logs.append, check=True)
    assert any(m.startswith(f"[sweep] variant=none-s0: failed: no space left in {out / 'variant=none-s0'} (")
               for m in logs), logs
    df = pd.read_csv(out / "runs.csv")
    rows = dict(zip(df.run_id, zip(df.status, df.failure.fillna(""))))
    assert rows["variant=top-s0"] == ("ok", "")
    assert rows["variant=none-s0"][0].startswith("failed: no space left in") and rows["variant=none-s0"][1] == "environment"
    monkeypatch.undo()  # space freed
    csv = run_sweep(sweep, resume=True, log=logs.append, check=True)
    assert (pd.read_csv(csv).status == "ok").all()


@pytest.mark.integration
def test_a_real_full_tmpfs(corpus, tmp_path):
    """The same on a real full disk (a 600 KB tmpfs; skipped where mounting is not allowed):
    torch's own write error becomes the line, and the failed summary still fits."""
    import subprocess

    from harness.failures import NoSpaceError

    fs = tmp_path / "fs"
    fs.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(fs)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (unprivileged)")
    try:
        with pytest.raises(NoSpaceError, match=r"no space left in .*/fs/run \(0\.\d MB free\): free \d+ MB or point"):
            run_distill(tiny_cfg(corpus, tmp_path, "train.steps=8"), fs / "run")  # train.pt at the first growth
        summary = json.loads((fs / "run" / "summary.json").read_text())
        assert summary["status"].startswith("failed: no space left in") and summary["failure"] == "environment"
    finally:
        subprocess.run(["umount", str(fs)], capture_output=True)
