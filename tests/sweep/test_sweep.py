import json
import sys
import types

import pandas as pd
import pytest

from harness.config import ConfigError
from harness.sweep import load_sweep, run_sweep, write_runs_csv


def _write(tmp_path, sweep_text, base_text="train:\n  steps: 10\n"):
    (tmp_path / "base.yaml").write_text(base_text)
    path = tmp_path / "sweep.yaml"
    path.write_text(sweep_text + f"storage: {tmp_path / 'results'}\n")
    return path


SWEEP = """name: demo
base: base.yaml
grid:
  stacking.variant: [none, interleaved]
  loss.w: [0.0, 0.5]
seeds: [0, 1]
"""


def test_expands_grid_times_seeds(tmp_path):
    sweep = load_sweep(_write(tmp_path, SWEEP))
    assert len(sweep.trials) == 8
    ids = [t.run_id for t in sweep.trials]
    assert ids[0] == "variant=none-w=0.0-s0" and len(set(ids)) == 8
    t = sweep.trials[-1]
    assert t.config.stacking.variant == "interleaved" and t.config.loss.w == 0.5 and t.config.train.seed == 1
    assert t.config.train.steps == 10  # from the base


def test_misspelled_keys_name_file_key_and_nearest(tmp_path):
    path = _write(tmp_path, SWEEP.replace("seeds:", "seed:"))
    with pytest.raises(ConfigError, match=r"sweep.yaml: unknown key 'seed'; did you mean 'seeds'"):
        load_sweep(path)
    path = _write(tmp_path, SWEEP.replace("stacking.variant", "stacking.varaint"))
    with pytest.raises(ConfigError) as err:
        load_sweep(path)
    assert "sweep.yaml" in str(err.value) and "stacking.varaint" in str(err.value)
    assert "stacking.variant" in str(err.value)
    path = _write(tmp_path, SWEEP.replace("[0.0, 0.5]", "[0.0, lots]"))
    with pytest.raises(ConfigError, match="loss.w: expected a number"):
        load_sweep(path)


@pytest.fixture
def fake_distill(monkeypatch):
    """A stand-in for harness.distill that writes the contract summary (and fails on w=1)."""
    calls = []

    def run_distill(cfg, out_dir, resume=True, on_log=None, sweep=None, threads=None):
        calls.append(out_dir.name)
        if cfg.loss.w == 1.0:
            raise RuntimeError("boom")
        (out_dir / "summary.json").write_text(json.dumps({
            "run_id": out_dir.name, "sweep": sweep, "variant": cfg.stacking.variant,
            "seed": cfg.train.seed, "status": "ok", "train_seconds": 1.5, "stages": [{"steps": 10}],
            "tasks": {}, "superb_score": None,
        }))

    mod = types.ModuleType("harness.distill")
    mod.run_distill = run_distill
    monkeypatch.setitem(sys.modules, "harness.distill", mod)
    return calls


def test_local_sweep_records_failures_and_resumes_without_rerunning(tmp_path, fake_distill):
    path = _write(tmp_path, SWEEP.replace("[0.0, 0.5]", "[0.5, 1.0]") + "backend: local\n")
    csv = run_sweep(path, log=lambda s: None)
    df = pd.read_csv(csv)
    assert len(df) == 8 and (df.status == "ok").sum() == 4
    failed = df[df.status != "ok"]
    assert failed.status.str.contains("boom").all() and set(failed["grid.loss.w"]) == {1.0}
    with pytest.raises(ConfigError, match="--resume"):
        run_sweep(path, log=lambda s: None)
    fake_distill.clear()
    run_sweep(path, resume=True, log=lambda s: None)
    assert fake_distill == []  # finished (ok or failed) trials are not rerun
    # an interrupted trial (no summary yet) is the only one rerun
    (tmp_path / "results/demo/variant=none-w=0.5-s0/summary.json").unlink()
    run_sweep(path, resume=True, log=lambda s: None)
    assert fake_distill == ["variant=none-w=0.5-s0"]
    assert pd.read_csv(csv).drop(columns=["train_seconds"]).equals(df.drop(columns=["train_seconds"]))


def test_runs_csv_has_one_row_per_run_and_task(tmp_path):
    run = tmp_path / "r1"
    run.mkdir()
    (run / "trial.json").write_text(json.dumps({"sweep": "s", "overrides": {"stacking.variant": "top", "train.seed": 0}}))
    (run / "summary.json").write_text(json.dumps({
        "status": "ok", "variant": "top", "seed": 0, "tasks": {
            "ks": {"metric": "accuracy", "direction": "higher", "value": 0.9, "n": 100},
            "pr": {"metric": "per", "direction": "lower", "value": 0.2, "n": 50}}}))
    df = pd.read_csv(write_runs_csv(tmp_path))
    assert list(df.task) == ["ks", "pr"] and list(df.value) == [0.9, 0.2]
    assert (df.run_dir == str(run)).all()


def test_quick_pass_options(tmp_path):
    sweep = load_sweep(_write(tmp_path, SWEEP), seeds=[7], overrides=["train.steps=8"], suffix="-quick")
    assert sweep.config.name == "demo-quick" and sweep.out_dir.name == "demo-quick"
    assert len(sweep.trials) == 4 and all(t.config.train.seed == 7 and t.config.train.steps == 8 for t in sweep.trials)
    assert load_sweep(_write(tmp_path, SWEEP + "evaluate: [ks, pr]\n"), tasks=["ks"]).config.evaluate == ["ks"]
    with pytest.raises(ConfigError, match="train.stepz"):
        load_sweep(_write(tmp_path, SWEEP), overrides=["train.stepz=3"])


def test_reuse_copies_an_identical_finished_run_of_another_sweep(tmp_path, fake_distill, monkeypatch):
    from harness import runs

    real = sys.modules["harness.distill"].run_distill

    def with_config(cfg, out_dir, **kw):  # the real run writes config.yaml first
        runs.write_config(out_dir, cfg)
        real(cfg, out_dir, **kw)
        summary = json.loads((out_dir / "summary.json").read_text())
        summary.update(tasks={"ks": {"value": 0.5}, "sid": {"value": 0.1}}, superb_score=600.0)
        (out_dir / "summary.json").write_text(json.dumps(summary))
        (out_dir / "superb.json").write_text(json.dumps({"tasks": summary["tasks"], "score": {
            "score": 600.0, "per_task": {"ks": 400.0, "sid": 800.0}, "tasks": ["ks", "sid"], "skipped": {}}}))

    monkeypatch.setattr(sys.modules["harness.distill"], "run_distill", with_config)
    main = _write(tmp_path, SWEEP.replace("[0.0, 0.5]", "[0.5]").replace("[0, 1]", "[0]") + "backend: local\n")
    run_sweep(main, log=lambda s: None)
    ablation = tmp_path / "ablation.yaml"
    ablation.write_text(
        "name: ablation\nbase: base.yaml\noverrides: {stacking.variant: interleaved}\n"
        "grid:\n  loss.w: [0.25, 0.5]\nseeds: [0]\nbackend: local\nreuse: [demo]\nevaluate: [ks]\n"
        f"storage: {tmp_path / 'results'}\n"
    )
    fake_distill.clear()
    logs = []
    csv = run_sweep(ablation, log=logs.append)
    assert fake_distill == ["w=0.25-s0"]  # w=0.5 is the main sweep's interleaved run
    copied = json.loads((tmp_path / "results/ablation/w=0.5-s0/summary.json").read_text())
    assert copied["reused_from"].endswith("demo/variant=interleaved-w=0.5-s0") and copied["sweep"] == "ablation"
    # trimmed to the ablation's tasks; the score is the mean over those tasks' per-task scores
    assert list(copied["tasks"]) == ["ks"] and copied["superb_score"] == 400.0
    assert any("reused" in m for m in logs)
    df = pd.read_csv(csv)
    assert sorted(set(df.run_id)) == ["w=0.25-s0", "w=0.5-s0"] and (df.status == "ok").all()
    # a different config is never reused
    ablation.write_text(ablation.read_text().replace(
        "name: ablation", "name: ablation2").replace("{stacking.variant: interleaved}", "{stacking.variant: interleaved, train.steps: 11}"))
    fake_distill.clear()
    run_sweep(ablation, log=lambda s: None)
    assert fake_distill == ["w=0.25-s0", "w=0.5-s0"]


def test_ray_temp_dir_keeps_socket_paths_short(tmp_path):
    from harness.sweep import _RAY_SOCKET_TAIL, _ray_temp_dir

    # the path that crashed a real run: Ray's plasma socket came to 109 bytes
    long_out = tmp_path / ("x" * 60) / "embedded-loss-weight"
    got = _ray_temp_dir(long_out)
    assert len(got) + len(_RAY_SOCKET_TAIL) <= 107 and not got.startswith(str(long_out))
    short = _ray_temp_dir(__import__("pathlib").Path("/tmp/r"))
    assert short == "/tmp/r/_ray"


def test_ray_that_cannot_start_is_one_line_and_keeps_finished_trials(tmp_path, fake_distill, monkeypatch):
    ray = pytest.importorskip("ray")

    def refuse(*a, **k):
        raise OSError("validate_socket_filename failed: AF_UNIX path length cannot exceed 107 bytes\nmore")

    monkeypatch.setattr(ray, "init", refuse)
    path = _write(tmp_path, SWEEP.replace("[0.0, 0.5]", "[0.5]").replace("[0, 1]", "[0]"))
    done = tmp_path / "results/demo/variant=none-w=0.5-s0"
    done.mkdir(parents=True)
    (done / "trial.json").write_text("{}")
    (done / "summary.json").write_text(json.dumps({"status": "ok", "tasks": {}}))
    with pytest.raises(ConfigError, match=r"could not start a local Ray instance \(OSError: .*107 bytes.*--resume") as err:
        run_sweep(path, resume=True, log=lambda s: None)
    assert "\n" not in str(err.value) and (done / "summary.json").is_file()


def test_dry_run_sizes_come_from_the_real_student_presets():
    from harness.config import RunConfig, from_dict
    from harness.student import PRESETS
    from harness.sweep import estimate_params

    cfg = from_dict(RunConfig, {"profile": "embedded", "student": {"preset": "student_embedded"}})
    p = PRESETS["student_embedded"]
    assert (p["layers"], p["width"], p["ffn"]) == (8, 128, 512)
    assert estimate_params(cfg) == 8 * (4 * 128 * 128 + 2 * 128 * 512 + 128 * 192)
    wide = from_dict(RunConfig, {"profile": "embedded", "student": {"preset": "student_embedded", "width": 256,
                                                                    "heads": 4}})
    assert estimate_params(wide) == 8 * (4 * 256 * 256 + 2 * 256 * 512 + 256 * 192)


def test_points_add_trials_after_the_grid(tmp_path):
    text = SWEEP.replace("  loss.w: [0.0, 0.5]\n", "") + (
        "points:\n  - {stacking.variant: none, train.compute_matched: true}\n")
    sweep = load_sweep(_write(tmp_path, text, base_text="train:\n  steps: 10\nstacking:\n  stages: 2\n"))
    ids = [t.run_id for t in sweep.trials]
    assert ids == ["variant=none-s0", "variant=none-s1", "variant=interleaved-s0", "variant=interleaved-s1",
                   "variant=none-compute_matched=True-s0", "variant=none-compute_matched=True-s1"]
    cm = sweep.trials[-1].config
    assert cm.train.compute_matched and cm.stacking.variant == "none" and cm.train.seed == 1
    assert not sweep.trials[0].config.train.compute_matched
    # a point is validated like a grid point: a bad one names the file and the point
    bad = SWEEP + "points:\n  - {stacking.variant: top, train.compute_matched: true}\n"
    with pytest.raises(ConfigError, match=r"sweep.yaml: grid point .*compute_matched: only for stacking.variant none"):
        load_sweep(_write(tmp_path, bad))
    with pytest.raises(ConfigError, match=r"points\[0\] must be a non-empty mapping"):
        load_sweep(_write(tmp_path, SWEEP + "points:\n  - {}\n"))


def test_evaluate_seeds_score_only_those_seeds(tmp_path):
    from harness.sweep.trials import trial_payloads

    text = SWEEP + "evaluate: [ks, pr]\nevaluate_seeds: [0]\n"
    sweep = load_sweep(_write(tmp_path, text))
    tasks = {p["run_id"]: p["evaluate"] for p in trial_payloads(sweep, threads=1)}
    assert tasks["variant=none-w=0.0-s0"] == ["ks", "pr"] and tasks["variant=none-w=0.0-s1"] == []
    everyone = load_sweep(_write(tmp_path, SWEEP + "evaluate: [ks]\n"))
    assert all(p["evaluate"] == ["ks"] for p in trial_payloads(everyone, threads=1))


@pytest.fixture
def flaky_distill(monkeypatch):
    """A stand-in run: w=0.0 fails on a full disk (environment) until ``state["disk"]`` is
    freed, w=1.0 fails with a bug (deterministic); the others finish."""
    import errno

    from harness import runs

    calls, state = [], {"disk": "full"}

    def run_distill(cfg, out_dir, resume=True, on_log=None, sweep=None, threads=None):
        calls.append(out_dir.name)
        runs.write_config(out_dir, cfg)
        if cfg.loss.w == 0.0 and state["disk"] == "full":
            raise OSError(errno.ENOSPC, "No space left on device")
        if cfg.loss.w == 1.0:
            raise RuntimeError("boom")
        runs.write_summary(out_dir, {"run_id": out_dir.name, "sweep": sweep, "variant": cfg.stacking.variant,
                                     "seed": cfg.train.seed, "status": "ok", "tasks": {}, "superb_score": None})

    mod = types.ModuleType("harness.distill")
    mod.run_distill = run_distill
    monkeypatch.setitem(sys.modules, "harness.distill", mod)
    return calls, state


def test_failures_are_classified_resume_retries_environment_and_retry_failed_all(tmp_path, flaky_distill, capsys):
    from harness.cli import main
    from harness.sweep.run import TrialsFailed

    calls, state = flaky_distill
    path = _write(tmp_path, SWEEP.replace("[0.0, 0.5]", "[0.0, 0.5, 1.0]").replace("[0, 1]", "[0]")
                  + "backend: local\n")
    logs = []
    with pytest.raises(TrialsFailed) as err:
        run_sweep(path, log=logs.append, check=True)
    line = str(err.value)
    csv = tmp_path / "results/demo/runs.csv"
    assert line == f"[sweep] demo: 4 of 6 trials failed (2 environment, 2 deterministic): see {csv}"
    assert logs[-2:] == [line, "[sweep] deterministic failures (NaN, config) are rerun only with --retry-failed; "
                          "environment ones (disk, memory, input files, killed) with --resume"]
    assert logs[-3] == f"[sweep] wrote {csv}"  # the line comes after runs.csv is written
    df = pd.read_csv(csv)
    assert dict(zip(df["grid.loss.w"], df.failure.fillna(""))) == {0.0: "environment", 0.5: "", 1.0: "deterministic"}
    assert df[df["grid.loss.w"] == 0.0].status.str.startswith("failed: no space left in ").all()
    summary = json.loads((tmp_path / "results/demo/variant=none-w=0.0-s0/summary.json").read_text())
    assert summary["status"].startswith("failed: no space left in") and summary["failure"] == "environment"

    # --resume reruns the environment failures only (still a full disk: they fail again)
    calls.clear()
    assert main(["sweep", str(path), "--resume"]) == 1
    assert sorted(calls) == ["variant=interleaved-w=0.0-s0", "variant=none-w=0.0-s0"]
    assert capsys.readouterr().out.strip().splitlines()[-2] == line
    # the disk freed: --resume finishes them; the deterministic failures stay
    state["disk"] = "freed"
    calls.clear()
    assert main(["sweep", str(path), "--resume"]) == 1
    assert sorted(calls) == ["variant=interleaved-w=0.0-s0", "variant=none-w=0.0-s0"]
    assert "2 of 6 trials failed (2 deterministic)" in capsys.readouterr().out
    calls.clear()
    assert main(["sweep", str(path), "--resume"]) == 1 and calls == []
    # --retry-failed reruns every failed trial (implies --resume)
    assert main(["sweep", str(path), "--retry-failed"]) == 1
    assert sorted(calls) == ["variant=interleaved-w=1.0-s0", "variant=none-w=1.0-s0"]


def test_resume_with_other_settings_is_refused_naming_them(tmp_path, flaky_distill):
    calls, state = flaky_distill
    state["disk"] = "freed"
    path = _write(tmp_path, SWEEP.replace("[0.0, 0.5]", "[0.5]").replace("[0, 1]", "[0]") + "backend: local\n")
    run_sweep(path, log=lambda s: None)
    calls.clear()
    with pytest.raises(ConfigError) as err:
        run_sweep(path, resume=True, overrides=["train.steps=40", "optim.lr=0.01"], log=lambda s: None)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{tmp_path / 'results/demo'}: 2 of 2 trial(s) were run with other settings")
    assert "train.steps: 10 -> 40" in msg and "optim.lr: 0.0002 -> 0.01" in msg and "--suffix" in msg
    assert calls == []
    run_sweep(path, resume=True, log=lambda s: None)  # the same settings: resumes (nothing to do)
    assert calls == []
    # a new suffix is a new folder: runs
    run_sweep(path, resume=True, overrides=["train.steps=40"], suffix="-40", log=lambda s: None)
    assert len(calls) == 2


def test_a_trial_whose_process_was_killed_is_an_environment_failure(tmp_path, flaky_distill, monkeypatch):
    """What a Ray worker killed out of memory leaves: trial.json and a 'running' summary."""
    import harness.sweep.run as sweep_run
    from harness import runs
    from harness.sweep.run import TrialsFailed

    calls, state = flaky_distill
    state["disk"] = "freed"

    def killed(p):
        runs.write_trial(p["run_dir"], p)
        runs.write_summary(p["run_dir"], {"run_id": p["run_id"], "status": "running"})
        return {"status": "running"}

    real = sweep_run.run_trial
    monkeypatch.setattr(sweep_run, "run_trial", killed)
    path = _write(tmp_path, SWEEP.replace("[0.0, 0.5]", "[0.5]").replace("[0, 1]", "[0]").replace(
        "[none, interleaved]", "[none]") + "backend: local\n")
    with pytest.raises(TrialsFailed, match=r"1 of 1 trials failed \(1 environment\)"):
        run_sweep(path, log=lambda s: None, check=True)
    df = pd.read_csv(tmp_path / "results/demo/runs.csv")
    assert df.status[0].startswith("failed: killed") and df.failure[0] == "environment"
    run = tmp_path / "results/demo/variant=none-w=0.5-s0"
    assert json.loads((run / "summary.json").read_text())["status"] == "running"  # resumable
    monkeypatch.setattr(sweep_run, "run_trial", real)
    run_sweep(path, resume=True, log=lambda s: None, check=True)
    assert calls == ["variant=none-w=0.5-s0"]


def test_a_full_disk_for_runs_csv_is_one_line_after_the_summary(tmp_path, flaky_distill, monkeypatch):
    import errno

    from harness import runs
    from harness.failures import NoSpaceError

    calls, state = flaky_distill
    path = _write(tmp_path, SWEEP.replace("[0.0, 0.5]", "[0.0, 0.5]").replace("[0, 1]", "[0]") + "backend: local\n")

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runs, "write_table", full)
    logs = []
    with pytest.raises(NoSpaceError) as err:
        run_sweep(path, log=logs.append, check=True)
    out = tmp_path / "results/demo"
    assert str(err.value).startswith(f"no space left in {out} (") and str(err.value).endswith("(runs.csv not written)")
    assert logs[-1].startswith("[sweep] demo: 2 of 4 trials failed (2 environment)")  # still reported
    assert len(calls) == 4  # every trial ran


def test_resume_says_when_finished_trials_were_run_by_other_code(tmp_path, flaky_distill):
    from harness import runs

    calls, state = flaky_distill
    state["disk"] = "freed"
    path = _write(tmp_path, SWEEP.replace("[0.0, 0.5]", "[0.5]").replace("[0, 1]", "[0]") + "backend: local\n")
    run_sweep(path, log=lambda s: None)
    run = tmp_path / "results/demo/variant=none-w=0.5-s0"
    runs.write_summary(run, {**runs.read_summary(run), "git_commit": "0123456789abcdef"})
    logs = []
    run_sweep(path, resume=True, log=logs.append)
    assert any("finished trials run by other code versions are kept (1 at 0123456789ab;" in m for m in logs), logs
