"""``harness sweep --dry-run``: trial costs measured here (a cached calibration), priced per
stage depth, with the sweep's concurrency (issue 20, item 4)."""

import json
from pathlib import Path

import pytest

from harness.cli import main
from harness.sweep import calibrate as cal_mod
from harness.sweep import dry_run
from harness.sweep.estimate import estimate

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[2]


def test_makespan_fills_the_first_free_slot_in_order():
    assert cal_mod.makespan([], 2) == 0.0
    assert cal_mod.makespan([3, 3, 3], 1) == 9
    assert cal_mod.makespan([3, 3, 3], 2) == 6  # the third waits for a slot
    assert cal_mod.makespan([5, 1, 1, 1], 2) == 5  # the short ones run beside the long one
    assert cal_mod.makespan([1, 1, 5], 2) == 6  # in order: the long one starts last


def test_trial_seconds_counts_each_part_once():
    cal = {"setup_s": 2.0, "depth_ms": {"2": 10.0, "4": 20.0}, "data_ms": 5.0, "eval_s": 1.0,
           "eval_probe_s": 3.0, "ckpt_s": 0.5}
    p = cal_mod.trial_seconds(cal, [2, 4], [100, 200], eval_every=100, ckpt_every=100, superb_s=7.0)
    assert p["train"] == pytest.approx((100 * 15 + 200 * 25) / 1000)
    assert p["eval"] == pytest.approx(2 * 1.0 + 3.0)  # at 100 and 200, then the last (probe) at 300
    assert p["ckpt"] == pytest.approx((2 + 1) * 0.5)  # at 100, 200 (not the end) + the growth's
    assert p["total"] == pytest.approx(2.0 + p["train"] + 5.0 + 1.5 + 7.0)
    none = cal_mod.trial_seconds(cal, [4], [300], eval_every=0, ckpt_every=0, superb_s=0.0)
    assert none["eval"] == 3.0 and none["ckpt"] == 0 and none["train"] == pytest.approx(7.5)


def _sweep(tmp_path, corpus, evaluate=""):
    base = (ROOT / "sweeps/base/tiny.yaml").read_text()
    base = base.replace("corpus: data/tiny", f"corpus: {corpus}").replace("cache_dir: cache/teacher",
                                                                         f"cache_dir: {tmp_path / 'tcache'}")
    base = base.replace("steps: 80", "steps: 40").replace("device: auto", "device: cpu")
    (tmp_path / "base.yaml").write_text(base)
    path = tmp_path / "sweep.yaml"
    path.write_text(f"name: est\nbase: base.yaml\ngrid:\n  stacking.variant: [none, interleaved]\nseeds: [0, 1]\n"
                    f"resources: {{cpu: 1}}\n{evaluate}storage: {tmp_path / 'results'}\n")
    return path


def _build_cache(path):
    from harness.distill import run_distill
    from harness.sweep import load_sweep

    sweep = load_sweep(path)
    run_distill(sweep.trials[0].config, sweep.out_dir.parent / "warm", resume=False)


def test_dry_run_calibrates_once_then_reads_the_cache_and_checks_finished_trials(tmp_path, tiny_corpus, capsys):
    path = _sweep(tmp_path, tiny_corpus)
    no_cache = dry_run(path, log=lambda s: None)
    assert "rough guess for 4 trial(s), not measured: the teacher cache of" in no_cache
    assert "is not built" in no_cache and not list(tmp_path.glob("tcache/*/meta.json"))  # nothing was built
    _build_cache(path)
    lines = []
    first = dry_run(path, log=lines.append)
    assert any("calibrating on this machine" in ln for ln in lines)
    files = list((tmp_path / "results" / cal_mod.CALIBRATION_DIR).glob("stepcost-*.json"))
    assert len(files) == 1
    cal = json.loads(files[0].read_text())
    assert set(cal["depth_ms"]) == {"1", "2", "3", "4"} and cal["slots"] == min(2, __import__("os").cpu_count())
    assert all(v > 0 for v in cal["depth_ms"].values()) and cal["step_ms"] > 0 and cal["setup_s"] > 0
    assert "measured now" in first and "rough guess" not in first and "of wall-clock for the 4 trial(s)" in first
    # the stacking trial is priced below the full-depth one: its stages run shallower
    est = estimate(path, log=lines.append)
    secs = {r["trial"].run_id: r["parts"] for r in est["rows"]}
    assert secs["variant=interleaved-s0"]["train"] < secs["variant=none-s0"]["train"]
    assert est["wall_s"] == pytest.approx(cal_mod.makespan([p["total"] for p in secs.values()], cal["slots"]))
    lines.clear()
    second = dry_run(path, log=lines.append)
    assert not lines and f"cached in {files[0]}" in second
    third = dry_run(path, recalibrate=True, log=lines.append)
    assert lines and "measured now" in third
    # finished trials are set against the model; the sweep logs its own wall-clock
    from harness.sweep import run_sweep

    run_sweep(path, local=True, seeds=[0], log=lambda s: None)
    out = dry_run(path, seeds=[0], log=lambda s: None)
    assert out.count(" done ") == 2 and "check: 2 finished trial(s) took" in out and "0 trial(s) to run" in out
    log = [json.loads(ln) for ln in (tmp_path / "results/est/sweep_log.jsonl").read_text().splitlines()]
    assert len(log) == 1 and log[0]["ran"] == 2 and log[0]["seconds"] > 0 and log[0]["backend"] == "local"


def test_superb_cost_comes_from_the_nearest_measurement(tmp_path):
    sweep = tmp_path / "results" / "mine"
    other = tmp_path / "results" / "other" / "r0"
    memo = tmp_path / "cache" / "results"
    for d in (sweep, other, memo):
        d.mkdir(parents=True)
    tasks = {"ks": {"status": "ok", "task_seconds": 10.0}, "ic": {"status": "ok", "task_seconds": 20.0}}
    assert cal_mod.superb_seconds([], "embedded", sweep, tmp_path / "cache") == (0.0, "no task scored")
    secs, why = cal_mod.superb_seconds(["ks"], "embedded", sweep, tmp_path / "cache")
    assert secs is None and "not measured yet" in why
    (memo / "a.json").write_text(json.dumps({"profile": "embedded", "upstream_id": "fbank", "tasks": tasks}))
    assert cal_mod.superb_seconds(["ks"], "embedded", sweep, tmp_path / "cache")[0] is None  # fbank is no guide
    (memo / "b.json").write_text(json.dumps({"profile": "embedded", "upstream_id": "embedded", "tasks": tasks}))
    secs, why = cal_mod.superb_seconds(["ks", "ic"], "embedded", sweep, tmp_path / "cache")
    assert secs == 30.0 and "teacher's SUPERB baseline" in why
    (other / "superb.json").write_text(json.dumps({"profile": "embedded", "tasks": {**tasks, "ks": {
        "status": "ok", "task_seconds": 4.0}}}))
    secs, why = cal_mod.superb_seconds(["ks", "ic"], "embedded", sweep, tmp_path / "cache")
    assert secs == 24.0 and "other embedded sweeps" in why
    assert cal_mod.superb_seconds(["ks", "ic"], "paper", sweep, tmp_path / "cache")[0] is None  # another profile
    (sweep / "r1").mkdir()
    (sweep / "r1" / "superb.json").write_text(json.dumps({"profile": "embedded", "tasks": {
        "ks": {"status": "ok", "task_seconds": 1.0}, "ic": {"status": "failed: x", "task_seconds": 1.0}}}))
    assert cal_mod.superb_seconds(["ks", "ic"], "embedded", sweep, tmp_path / "cache")[0] == 24.0  # ic failed there
    assert cal_mod.superb_seconds(["ks"], "embedded", sweep, tmp_path / "cache") == (
        1.0, "measured: the median of this sweep's 1 scored run(s)")


def test_cli_dry_run_recalibrate_option_has_help(capsys):
    with pytest.raises(SystemExit):
        main(["sweep", "--help"])
    out = capsys.readouterr().out
    assert "--recalibrate" in out and "cached in the results folder" in out
