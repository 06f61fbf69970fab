"""``harness bench``: the stacking and teacher-cache benchmarks on a tiny fabricated corpus."""

import json

import pytest

from harness.bench import bench_stacking, bench_teacher_cache, time_to_quality


@pytest.fixture(scope="module")
def corpus(fake_corpus):
    """The distillation tests' corpus: eight tone FLACs and their distill manifest."""
    return fake_corpus("tones")


def test_time_to_quality_is_the_first_logged_time_at_or_below_target():
    rows = [{"loss": 3.0, "time": 1.0}, {"loss": 2.0, "time": 2.0}, {"loss": 1.0, "time": 3.0}]
    assert time_to_quality(rows, 2.0) == 2.0
    assert time_to_quality(rows, 1.5) == 3.0
    assert time_to_quality(rows, 0.5) is None


def test_bench_stacking_reports_every_variant(corpus, tmp_path):
    out = tmp_path / "stacking.json"
    lines = []
    report = bench_stacking(
        "tiny", out, variants=("interleaved",), live=True,
        overrides=[f"data.corpus={corpus}", f"teacher.cache_dir={tmp_path / 'cache'}", "train.steps=16",
                   "data.max_seconds=1.0", "train.device=cpu", "train.threads=1"],
        log=lines.append,
    )
    assert json.loads(out.read_text()) == json.loads(json.dumps(report, default=str))
    rows = {(r["teacher"], r["variant"]): r for r in report["results"]}
    assert list(rows) == [("cached", "none"), ("cached", "interleaved"), ("live", "none"), ("live", "interleaved")]
    for (mode, _), r in rows.items():
        none = rows[mode, "none"]
        assert r["train_seconds"] > 0 and r["train_cpu_seconds"] > 0
        assert r["ratio"] == pytest.approx(r["speedup"] / r["theoretical_speedup"])
        assert r["speedup"] == pytest.approx(none["train_seconds"] / r["train_seconds"])
        assert r["cpu_speedup"] == pytest.approx(none["train_cpu_seconds"] / r["train_cpu_seconds"])
    assert rows["cached", "none"]["speedup"] == 1.0 and rows["cached", "none"]["theoretical_speedup"] == 1.0
    # 4 stages, proportional 1:2:3:4, depths 1..4 of 4: at most 40/30; a live teacher's
    # cost does not shrink with the student, so its theoretical speedup is lower
    cached, live = rows["cached", "interleaved"], rows["live", "interleaved"]
    assert 1.0 < live["theoretical_speedup"] < cached["theoretical_speedup"] < 40 / 30
    assert cached["stage_depths"] == [1, 2, 3, 4]
    assert report["machine"]["cpu_count"] and report["versions"]["torch"]
    assert report["settings"]["teacher_modes"] == ["cached", "live"] and report["settings"]["profile"] == "tiny"
    assert "interleaved" in lines[-1] and "ratio" in lines[-1]


def test_bench_teacher_cache(corpus, tmp_path):
    out = tmp_path / "cache.json"
    report = bench_teacher_cache(
        "tiny", out, overrides=[f"data.corpus={corpus}", "train.steps=8", "stacking.variant=none",
                                "data.max_seconds=1.0", "train.device=cpu", "train.threads=1"],
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
