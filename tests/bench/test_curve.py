"""``harness bench curve``: the held-out learning curve of a reference run (tiny corpus)."""

import json

import pytest

from harness.bench.curve import bench_curve, format_curve
from harness.errors import UserError


@pytest.fixture(scope="module")
def corpus(fake_corpus):
    """Distill utterances with phone alignments (the held-out probe needs them)."""
    return fake_corpus("teacher", n_distill=24)


def test_curve_json_table_and_figure(corpus, tmp_path):
    out = tmp_path / "curve.json"
    lines = []
    report = bench_curve(
        "tiny", out, steps=40, eval_every=20,
        overrides=[f"data.corpus={corpus}", f"teacher.cache_dir={tmp_path / 'cache'}", "data.heldout=6",
                   "data.max_seconds=1.0", "train.device=cpu", "train.threads=1", "train.steps=20"],
        log=lines.append,
    )
    assert json.loads(out.read_text()) == json.loads(json.dumps(report, default=str))
    assert [p["step"] for p in report["curve"]] == [20, 40]
    assert report["settings"]["default_steps"] == 20 and report["settings"]["variant"] == "none"
    assert all(p["output_loss"] > 0 for p in report["curve"])
    table = format_curve(report)
    assert "| 20 **(default)** |" in table and table.count("\n| ") == 4  # header, rule, 2 rows
    assert out.with_suffix(".png").is_file() and lines[-1].startswith("figure:")
    assert report["machine"]["cpu_count"] and len(report["load_average"]["start"]) == 3


def test_curve_refuses_bad_settings(tmp_path):
    with pytest.raises(UserError, match="--steps and --eval-every must be >= 1"):
        bench_curve("tiny", tmp_path / "c.json", steps=0, eval_every=10)
    with pytest.raises(UserError, match="has no held-out set"):
        bench_curve("tiny", tmp_path / "c.json", steps=10, eval_every=5, overrides=["data.heldout=0"])
