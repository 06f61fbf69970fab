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
