"""run_all.sh caches the teacher features of the utterances the embedded studies train on:
its --limit must equal sweeps/base/embedded.yaml's data.max_utterances (a mismatch makes
every trial build its own cache inside a one-CPU trial)."""

import re
from pathlib import Path

from harness.config import load_run_config

ROOT = Path(__file__).resolve().parent.parent


def test_cache_limit_matches_the_embedded_base_config():
    script = (ROOT / "run_all.sh").read_text()
    limit = int(re.search(r"^limit=(\d+)", script, re.M).group(1))
    quick = int(re.search(r'^\[ "\$quick" = 1 \] && limit=(\d+)', script, re.M).group(1))
    cfg = load_run_config(ROOT / "sweeps" / "base" / "embedded.yaml")
    assert limit == cfg.data.max_utterances > cfg.data.heldout
    assert f"data.max_utterances={quick}" in script and quick > cfg.data.heldout
