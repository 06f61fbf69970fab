"""harness.stats against hand-computed values (and scipy's own functions)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats as st

from harness import stats


def test_mean_ci_by_hand():
    v = [1.0, 2.0, 4.0]
    r = stats.mean_ci(v)
    mean, sd = 7 / 3, math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2)
    half = 4.302652729911275 * sd / math.sqrt(3)  # t_{0.975, 2}
    assert r["n"] == 3 and r["estimate"] == pytest.approx(mean) and r["sd"] == pytest.approx(sd)
    assert r["ci_low"] == pytest.approx(mean - half) and r["ci_high"] == pytest.approx(mean + half)
    assert r["half_width"] == pytest.approx(half)
    one = stats.mean_ci([5.0, float("nan")])
    assert one["n"] == 1 and one["estimate"] == 5.0 and one["ci_low"] is None and "no spread" in one["note"]


def test_paired_by_hand_and_scipy():
    a = {0: 1.00, 1: 1.10, 2: 0.95}
    b = {0: 1.02, 1: 1.13, 2: 0.99}
    d = np.array([-0.02, -0.03, -0.04])
    r = stats.paired(a, b)
    half = 4.302652729911275 * d.std(ddof=1) / math.sqrt(3)
    assert r["n"] == 3 and r["estimate"] == pytest.approx(-0.03)
    assert r["ci_low"] == pytest.approx(-0.03 - half) and r["ci_high"] == pytest.approx(-0.03 + half)
    assert r["p"] == pytest.approx(st.ttest_rel([1.0, 1.1, 0.95], [1.02, 1.13, 0.99]).pvalue)
    assert r["resolved"] is True  # -0.03 +/- 0.0248
    assert r["mean_second"] == pytest.approx(np.mean([1.02, 1.13, 0.99]))
    assert r["relative"] == pytest.approx(-0.03 / np.mean([1.02, 1.13, 0.99]))
    # Noisy differences of mixed sign: not resolved.
    r2 = stats.paired({0: 1.0, 1: 2.0, 2: 3.0}, {0: 1.5, 1: 1.4, 2: 3.2})
    assert r2["ci_low"] < 0 < r2["ci_high"] and r2["resolved"] is False


def test_pairing_by_seed_drops_missing_seed():
    obs = [{"sweep": "s", "metric": "m", "direction": "lower", "arm": arm, "seed": seed, "value": v}
           for arm, seed, v in [("none", 0, 1.0), ("none", 1, 1.2), ("none", 2, 1.1),
                                ("top", 0, 1.1), ("top", 2, 1.3)]]
    recs = stats.compare(obs)
    pair = next(r for r in recs if r["design"] == "paired")
    assert pair["arms"] == ["top", "none"] and pair["n"] == 2 and pair["seeds"] == [0, 2]
    assert pair["excluded"] == [{"arm": "top", "seed": 1, "why": "no run of this seed"}]
    assert "seed(s) 1 not paired" in pair["note"]
    assert pair["estimate"] == pytest.approx(((1.1 - 1.0) + (1.3 - 1.1)) / 2)
    means = {r["arms"][0]: r for r in recs if r["design"] == "mean"}
    assert means["none"]["n"] == 3 and means["top"]["n"] == 2
    for r in recs:
        assert stats.check_record(r) == []


def test_one_pair_and_zero_spread():
    one = stats.paired({0: 1.0}, {0: 2.0})
    assert one["n"] == 1 and one["ci_low"] is None and one["p"] is None and not one["resolved"]
    assert "one pair" in one["note"]
    flat = stats.paired({0: 2.0, 1: 3.0}, {0: 1.0, 1: 2.0})  # every difference exactly 1
    assert flat["ci_low"] == flat["ci_high"] == 1.0 and flat["p"] == 0.0 and flat["resolved"]
    assert "zero spread" in flat["note"]
    same = stats.paired({0: 2.0, 1: 3.0}, {0: 2.0, 1: 3.0})
    assert same["estimate"] == 0.0 and same["p"] == 1.0 and not same["resolved"]


def test_reference_pairs():
    arms = ["none", "none_cm", "top", "interleaved"]
    assert stats.reference_pairs(arms) == [
        ("none_cm", "none"), ("top", "none"), ("interleaved", "none"),
        ("top", "none_cm"), ("interleaved", "none_cm"),
        ("top", "interleaved"),
    ]
    assert stats.reference_pairs(["w=0", "w=1"]) == []


def test_time_to_quality_interpolates():
    pts = [(10.0, 9.0, 2.0), (20.0, 18.0, 1.5), (30.0, 27.0, 1.0)]
    t, c = stats.time_to_quality(pts, 1.25)
    assert t == pytest.approx(25.0) and c == pytest.approx(22.5)
    assert stats.time_to_quality(pts, 0.5) is None
    assert stats.time_to_quality(pts, 3.0) == (10.0, 9.0)  # already there at the first evaluation


def test_write_and_read_stats(tmp_path):
    obs = [{"sweep": "s", "metric": "m", "direction": "higher", "arm": a, "seed": s, "value": v}
           for a, s, v in [("none", 0, 1.0), ("none", 1, float("nan")), ("top", 0, 2.0), ("top", 1, 3.0)]]
    path = stats.write_stats(tmp_path / "stats.json", stats.compare(obs))
    data = json.loads(path.read_text())  # strict JSON: no NaN
    assert stats.read_stats(path) == data
    assert any(r["design"] == "paired" and r["n"] == 1 for r in data)
    with pytest.raises(ValueError):
        stats.write_stats(tmp_path / "bad.json", [{"metric": "m", "design": "paired", "arms": ["a"]}])


def test_headline_markdown_lists_only_existing_records():
    obs = [{"sweep": "s", "setting": None, "arm": arm, "seed": seed, "metric": "heldout.output_loss",
            "direction": "lower", "value": v}
           for arm, vals in {"none": [0.30, 0.31, 0.32], "interleaved": [0.33, 0.335, 0.35]}.items()
           for seed, v in enumerate(vals)]
    recs = stats.compare(obs)
    md = stats.headline_markdown(recs, "s", "heldout.output_loss")
    rows = [ln for ln in md.splitlines() if ln.startswith("| interleaved - none ")]
    assert len(rows) == 1 and "| 3 | +0.0283 |" in rows[0] and rows[0].endswith("| yes |")
    assert "none_cm" not in md and "none: mean 0.3100 (n = 3)." in md
    rec = next(r for r in recs if r["design"] == "paired")
    assert f"{100 * rec['half_width'] / 0.31:.2f} %" in rows[0]
