"""The README's tables of what the default run resolves are generated from the committed
reference report's stats.json (harness.stats.headline_markdown): a number typed by hand,
or a stats.json regenerated without updating the README, fails here."""

import json
from pathlib import Path

import pytest

from harness import stats

ROOT = Path(__file__).resolve().parents[2]
STATS = ROOT / "reports" / "embedded" / "stats.json"


@pytest.mark.skipif(not STATS.is_file(), reason="no committed reference report")
def test_readme_headline_tables_match_the_committed_stats():
    recs = json.loads(STATS.read_text())
    readme = (ROOT / "README.md").read_text()
    assert stats.headline_markdown(recs, "embedded-main", "heldout.output_loss") in readme
    assert stats.headline_markdown(recs, "embedded-main", "heldout.probe_best") in readme
    assert stats.headline_markdown(recs, "embedded-main", "ttq.cpu_time", digits=1) in readme


def test_bench_spread_as_min_max_list_is_read():
    """``harness bench stacking`` writes ``speedup_cpu_spread: [min, max]``: the report's
    speed table and figure show that range (not a zero-width bar)."""
    from harness.report.speed import value

    v = value({"speedup_cpu": 1.135, "speedup_cpu_spread": [0.924, 1.195]}, "speedup_cpu")
    assert v["value"] == 1.135 and v["low"] == 0.924 and v["high"] == 1.195


ASKD = ROOT / "reports" / "embedded" / "tables" / "table-askd.json"


@pytest.mark.skipif(not ASKD.is_file(), reason="no committed ASKD study in the reference report")
def test_readme_askd_tables_match_the_committed_study():
    """The README's ASKD numbers are the committed reference report's askd.json (the copy
    harness report writes beside table-askd), formatted by harness.asr.tables.format_study;
    the stats.json records of the study agree with it."""
    from harness.asr.tables import format_study

    data = json.loads(ASKD.read_text())
    readme = (ROOT / "README.md").read_text()
    assert format_study(data) in readme
    assert len(data["stats"]["wer"]) == 3 and all(w["n"] >= 5 for w in data["stats"]["wer"].values())
    assert data["teacher"]["wer"] <= 0.20 and data["teacher"]["n"] == 496
    recs = [r for r in json.loads(STATS.read_text()) if r["metric"] == "asr.wer" and r["design"] == "paired"]
    got = {tuple(r["arms"]): r["estimate"] for r in recs}
    for d in data["stats"]["differences"]:
        assert got[(d["first"], d["second"])] == pytest.approx(d["estimate"])
