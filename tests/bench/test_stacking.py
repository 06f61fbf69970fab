"""``harness bench``: the stacking and teacher-cache benchmarks on a tiny fabricated corpus."""

import json

import pytest

from harness.bench import StackingSettings, bench_stacking, bench_teacher_cache, time_to_quality


@pytest.fixture(scope="module")
def corpus(fake_corpus):
    """The distillation tests' corpus: eight tone FLACs and their distill manifest."""
    return fake_corpus("tones")


def test_time_to_quality_is_the_first_logged_time_at_or_below_target():
    rows = [{"loss": 3.0, "time": 1.0}, {"loss": 2.0, "time": 2.0}, {"loss": 1.0, "time": 3.0}]
    assert time_to_quality(rows, 2.0) == 2.0
    assert time_to_quality(rows, 1.5) == 3.0
    assert time_to_quality(rows, 0.5) is None


TINY = ["train.steps=16", "data.max_seconds=1.0", "train.device=cpu", "train.threads=1", "data.heldout=0"]


def test_bench_stacking_reports_every_variant(corpus, tmp_path):
    out = tmp_path / "stacking.json"
    lines = []
    settings = StackingSettings(variants=("interleaved",), repeats=2, cost_steps=2, cost_warmup=1, live=True)
    report = bench_stacking(
        "tiny", out, settings,
        overrides=[f"data.corpus={corpus}", f"teacher.cache_dir={tmp_path / 'cache'}", *TINY],
        log=lines.append,
    )
    assert json.loads(out.read_text()) == json.loads(json.dumps(report, default=str))
    rows = {(r["teacher"], r["variant"]): r for r in report["results"]}
    assert list(rows) == [("cached", "none"), ("cached", "interleaved"), ("live", "none"), ("live", "interleaved")]
    for (mode, v), r in rows.items():
        none = rows[mode, "none"]
        assert CONTRACT <= set(r)
        # each round: none, interleaved, none; the speedup against the none runs either side
        assert len(r["train_seconds_runs"]) == len(r["speedup_cpu_runs"]) == (4 if v == "none" else 2)
        assert r["ratio_cpu_fitted"] == pytest.approx(r["speedup_cpu"] / r["theory_fitted"])
        if v != "none":
            assert r["none_pairs"] == [[0, 1], [2, 3]]
            cpu = none["train_cpu_seconds_runs"]
            assert r["speedup_cpu_runs"] == pytest.approx(
                [(cpu[i] + cpu[j]) / 2 / t for (i, j), t in zip(r["none_pairs"], r["train_cpu_seconds_runs"])])
        assert r["speedup_wall_spread"][0] <= r["speedup_wall"] <= r["speedup_wall_spread"][1]
        assert r["speedup_cpu_spread"][0] <= r["speedup_cpu"] <= r["speedup_cpu_spread"][1]
    assert rows["cached", "none"]["speedup_cpu"] == 1.0 and rows["cached", "none"]["theory_flop"] == 1.0
    assert rows["cached", "none"]["theory_fitted"] == 1.0
    cached, live = rows["cached", "interleaved"], rows["live", "interleaved"]
    assert cached["stage_depths"] == [1, 2, 3, 4]
    # a live teacher's cost does not shrink with the student: every live theory is lower
    assert 1.0 < cached["theory_flop_live"] < cached["theory_flop"] < 40 / 30
    assert cached["theory_fitted_live"] < cached["theory_fitted"] < 40 / 30
    assert live["theory_fitted"] == cached["theory_fitted_live"]
    cost = report["step_cost"]
    assert [r["depth"] for r in cost["per_depth"]] == cost["depths"] == [1, 2, 3, 4]
    assert all(len(r["cpu_ms"]["runs"]) == 2 and len(r["cpu_ms_steps"][0]) == 2 for r in cost["per_depth"])
    assert {"a", "b", "r2", "residuals"} <= set(cost["fit"]) and cost["pos_conv"]["channels_last_ms"]["median"] > 0
    assert cost["teacher_forward"]["teacher_ms"]["median"] > 0
    assert [g["to_depth"] for g in cost["growth"]["interleaved"]] == [2, 3, 4]
    # the grown student is timed beside the fresh one of its depth, in every round
    grown = cost["grown"]["grown-interleaved"]
    assert grown["depth"] == 4 and len(grown["cpu_ms"]["runs"]) == len(grown["over_depth"]["runs"]) == 2
    assert cached["grown_over_fresh_cpu"] == grown["over_depth"] and rows["cached", "none"]["grown_over_fresh_cpu"] is None
    # the data each arm reads: the arrays per stage and the bytes they make per step
    data = cached["data"]
    assert [st["stage"] for st in data["stages"]] == [0, 1, 2, 3]
    assert data["bytes_per_step"] > 0 and all(a.startswith(("frontend", "layer_")) for a in data["stages"][0]["arrays"])
    assert report["settings"]["threads"] == 1 and report["settings"]["cpu_clock"] == "thread_time"
    assert len(report["load_average"]["start"]) == 3
    assert report["machine"]["cpu_count"] and report["versions"]["torch"]
    assert "interleaved" in lines[-1] and "cpu/fit" in lines[-1] and "fit (CPU)" in lines[-1]


CONTRACT = {"speedup_wall", "speedup_wall_spread", "speedup_cpu", "speedup_cpu_spread", "theory_flop",
            "theory_fitted", "ratio_cpu_fitted", "theory_flop_live", "theory_fitted_live", "data", "growth"}


@pytest.mark.parametrize("bad,msg", [
    ({"variants": ("interleaved", "interleave")}, "did you mean 'interleaved'"),
    ({"repeats": 0}, "repeats must be >= 1"),
    ({"cost_steps": 0}, "cost-steps must be >= 1"),
    ({"cost_warmup": -1}, "cost-warmup must be >= 0"),
])
def test_settings_refuse_bad_input_in_one_line(bad, msg):
    with pytest.raises(ValueError, match=msg) as err:
        StackingSettings(**bad).validate()
    assert "\n" not in str(err.value)


def test_cli_parses_repeats_and_refuses_bad_values(monkeypatch, capsys):
    from harness.cli import main

    seen = {}
    monkeypatch.setattr("harness.bench.stacking.bench_stacking",
                        lambda profile, out, settings, overrides, work_dir: seen.update(
                            profile=profile, settings=settings, overrides=overrides))
    assert main(["bench", "stacking", "--profile", "tiny", "--out", "x.json", "--repeats", "5",
                 "--variants", "top,interleaved", "--cost-steps", "4", "train.steps=12"]) == 0
    s = seen["settings"]
    assert (s.repeats, s.variants, s.cost_steps, s.live) == (5, ("top", "interleaved"), 4, False)
    assert seen["overrides"] == ["train.steps=12"] and seen["profile"] == "tiny"
    for argv, msg in ((["--repeats", "0"], "repeats must be >= 1"), (["--variants", "tpo"], "did you mean 'top'")):
        seen.clear()
        assert main(["bench", "stacking", "--profile", "tiny", "--out", "x.json", *argv]) != 0
        err = capsys.readouterr().err.strip()
        assert msg in err and len(err.splitlines()) == 1 and not seen


def test_bench_teacher_cache(corpus, tmp_path):
    out = tmp_path / "cache.json"
    report = bench_teacher_cache(
        "tiny", out, overrides=[f"data.corpus={corpus}", "train.steps=8", "stacking.variant=none",
                                "data.max_seconds=1.0", "train.device=cpu", "train.threads=1", "data.heldout=0"],
        log=lambda s: None,
    )
    r = report["results"]
    assert r["live_step_seconds"] > 0 and r["cached_step_seconds"] > 0
    assert r["ratio_live_over_cached"] == pytest.approx(r["live_step_seconds"] / r["cached_step_seconds"])
    assert set(r["sweep_saving_seconds"]) == {"1", "5", "15"}
    assert json.loads(out.read_text())["benchmark"] == "teacher-cache"


def test_quality_key_prefers_the_output_layer_loss():
    from harness.bench import quality_key

    rows = [{"loss": 2.0, "out": 1.0, "time": 1.0}, {"loss": 1.0, "out": 0.5, "time": 2.0}]
    assert quality_key(rows) == "out" and quality_key([{"loss": 1.0}]) == "loss"
    assert time_to_quality(rows, 1.0, key="out") == 1.0 and time_to_quality(rows, 1.0) == 2.0
