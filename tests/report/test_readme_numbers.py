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
