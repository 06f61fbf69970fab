"""``harness.bench.stepcost`` / ``datacost`` / ``posconv``: the fit, the fitted theory, the
data-cost record and the positional-conv timing (no timed assertions: speed claims live
in the benchmarks)."""

import json

import pytest

from harness.bench import datacost, stepcost
from harness.bench.posconv import bench_posconv
from harness.stacking import CostModel, stage_depths, stage_steps, theoretical_speedup


@pytest.mark.parametrize("a,b", [(35.0, 33.0), (2.5, 0.0), (10.0, -4.0)])
def test_fit_recovers_a_and_b_exactly(a, b):
    depths = [2, 4, 6, 8]
    fit = stepcost.fit_cost(depths, [a * d + b for d in depths])
    assert fit["a"] == pytest.approx(a) and fit["b"] == pytest.approx(b, abs=1e-9)
    assert fit["r2"] == pytest.approx(1.0) and fit["residuals"] == pytest.approx([0.0] * 4, abs=1e-9)


def test_fit_is_least_squares_on_noisy_costs():
    depths, costs = [1, 2, 3], [1.0, 3.0, 2.0]  # by hand: a = 0.5, b = 1.0, residuals -0.5, 1, -0.5
    fit = stepcost.fit_cost(depths, costs)
    assert (fit["a"], fit["b"]) == pytest.approx((0.5, 1.0))
    assert fit["residuals"] == pytest.approx([-0.5, 1.0, -0.5]) and fit["r2"] == pytest.approx(0.25)


def test_fit_refuses_what_cannot_be_fitted():
    with pytest.raises(ValueError, match="two distinct depths"):
        stepcost.fit_cost([4, 4], [1.0, 2.0])
    with pytest.raises(ValueError, match="3 depths but 2 costs"):
        stepcost.fit_cost([1, 2, 3], [1.0, 2.0])


def test_fitted_theory_of_the_paper_schedule():
    depths, steps = stage_depths(8, 4, 2), stage_steps(100, 4, "proportional")
    assert (depths, steps) == ([2, 4, 6, 8], [10, 20, 30, 40])
    # by hand: none = 100 (8a + b); schedule = 10(2a+b) + 20(4a+b) + 30(6a+b) + 40(8a+b) = 100 (6a + b)
    a, b = 35.0, 33.0
    assert stepcost.fitted_speedup(depths, steps, a, b) == pytest.approx((8 * a + b) / (6 * a + b))
    assert stepcost.schedule_cost(depths, steps, a, b) == pytest.approx(100 * (6 * a + b))
    # no fixed part: the pure layer ratio 8/6; a larger fixed part (a live teacher) lowers it
    assert stepcost.fitted_speedup(depths, steps, 1.0, 0.0) == pytest.approx(8 / 6)
    assert stepcost.fitted_speedup(depths, steps, a, b + 150) < stepcost.fitted_speedup(depths, steps, a, b)
    assert stepcost.fitted_speedup([8], [100], a, b) == 1.0
    # the fitted theory with the FLOP model's a and b is the FLOP theory
    m = CostModel(width=128, ffn=512, seq_frames=150, teacher_width=192, frontend_dim=256, conv_pos=32,
                  conv_pos_groups=8)
    assert stepcost.fitted_speedup(depths, steps, m.layer(), m.fixed()) == pytest.approx(
        theoretical_speedup(depths, steps, m))


def test_spread():
    assert stepcost.spread([3, 1, 2]) == {"median": 2.0, "min": 1.0, "max": 3.0, "runs": [3.0, 1.0, 2.0]}


class _Cache:
    plan = {"utts": [["a", 0, 100, 0, 100], ["b", 100, 300, 100, 301]]}
    dims = {"frontend": 256, "layer_4": 192, "layer_8": 192}


def test_expected_bytes_per_step():
    # crops of 150 frames: E[min(T, 150)] = (100 + 150) / 2 = 125 frames; float16
    got = datacost.expected_bytes_per_step(_Cache(), ["frontend", "layer_4", "layer_8"], 8, 150)
    assert got == 8 * 125 * (256 + 2 * 192) * 2


def test_summarise_reads_per_stage():
    records = [{"step": s, "arrays": ["frontend", "layer_4"] if s < 2 else ["frontend", "layer_4", "layer_8"],
                "frames": 10, "bytes": 100 if s < 2 else 160, "wall_ms": 1.0, "cpu_ms": 0.5} for s in range(4)]
    got = datacost.summarise_reads(records, [0, 2])
    assert [st["arrays"] for st in got["stages"]] == [["frontend", "layer_4"], ["frontend", "layer_4", "layer_8"]]
    assert [st["bytes_per_step"] for st in got["stages"]] == [100, 160]
    assert got["bytes_per_step"] == 130 and got["arrays_per_step"] == 2.5 and got["read_cpu_ms_per_step"] == 0.5
    assert datacost.summarise_reads([], [0]) == {}


def test_observe_reads_records_and_restores(tmp_path):
    import numpy as np

    from harness.data.loader import CachedBatches

    class Cache:
        def get(self, utt_id):
            return {"frontend": np.ones((20, 6), np.float16), "layer_1": np.ones((20, 4), np.float16),
                    "layer_2": np.ones((20, 4), np.float16)}

    original = CachedBatches.__getitem__
    records: list = []
    with datacost.observe_reads(records):
        item = CachedBatches(Cache(), ["u"], [2], 3, 8, 0, range(5, 7))[1]
    assert CachedBatches.__getitem__ is original
    assert item["feats"].shape == (3, 8, 6) and set(item["targets"]) == {2}
    assert records[0]["step"] == 6 and records[0]["arrays"] == ["frontend", "layer_2"]
    assert records[0]["frames"] == 24 and records[0]["bytes"] == 24 * (6 + 4) * 2


def test_bench_posconv_reports_both_paths(tmp_path):
    out = tmp_path / "posconv.json"
    lines = []
    report = bench_posconv(out, shapes=(("small", 2, 9, 16, 4, 4), ("odd", 1, 7, 12, 5, 3)), repeats=2, n=1,
                           log=lines.append)
    assert json.loads(out.read_text())["benchmark"] == "posconv"
    assert report["settings"]["threads"] == 1 and report["settings"]["cpu_clock"] == "thread_time"
    for r in report["results"]:
        assert r["max_abs_diff"] < 1e-5
        for path in ("channels_last", "conv1d"):
            assert len(r[path]["total_ms"]["runs"]) == 2 and r[path]["forward_ms"]["median"] > 0
        assert r["speedup"] == pytest.approx(r["conv1d"]["total_ms"]["median"] / r["channels_last"]["total_ms"]["median"])
    assert "conv1d / channels_last" in lines[-1]
    with pytest.raises(ValueError, match="must be >= 1"):
        bench_posconv(None, repeats=0)
