"""The tables of docs/benchmarks.md "Sizing the default study" are generated from the
committed JSON files: a doc number that drifts from its result file fails here."""

import json
from pathlib import Path

from harness.bench.curve import format_curve, format_lr_pilot, format_sizing

ROOT = Path(__file__).resolve().parents[2]


def test_sizing_tables_match_their_json():
    doc = (ROOT / "docs" / "benchmarks.md").read_text()
    curve = json.loads((ROOT / "docs" / "benchmarks" / "curve-embedded-none.json").read_text())
    lr = json.loads((ROOT / "docs" / "benchmarks" / "lr-pilot-embedded.json").read_text())
    assert format_curve(curve) in doc
    assert format_lr_pilot(lr) in doc
    sizing = json.loads((ROOT / "docs" / "benchmarks" / "sizing-pilots-embedded.json").read_text())
    assert format_sizing(sizing) in doc
    assert (ROOT / "docs" / "benchmarks" / "curve-embedded-none.png").is_file()
    # the default budget the docs mark is the shipped base config's
    from harness.config import load_run_config

    base = load_run_config(ROOT / "sweeps" / "base" / "embedded.yaml")
    assert curve["settings"]["default_steps"] == base.train.steps


def test_paper_smoke_tables_match_their_json():
    from harness.bench.papersmoke import format_paper_smoke

    doc = (ROOT / "docs" / "benchmarks.md").read_text()
    res = json.loads((ROOT / "docs" / "benchmarks" / "paper-smoke-cpu.json").read_text())
    assert format_paper_smoke(res) in doc
    assert res["checks"]["status"] == "ok" and res["settings"]["batch_size"] == 24  # the paper's batch
    assert res["settings"]["depths"] == [3, 6, 9, 12] and "ARITHMETIC" in res["extrapolated_paper_cost"]["label"]


def test_asr_pilot_and_ablation_tables_match_their_json():
    from harness.asr.tables import format_pilots, format_study

    doc = (ROOT / "docs" / "benchmarks.md").read_text()
    pilots = json.loads((ROOT / "docs" / "benchmarks" / "asr-student-pilots-embedded.json").read_text())
    assert format_pilots(pilots) in doc
    ablation = ROOT / "docs" / "benchmarks" / "askd-ablation-embedded.json"
    if ablation.is_file():
        data = json.loads(ablation.read_text())
        assert format_study(data) in doc and data["reference"] == "askd (decay=cosine, self_teacher=ema)"


def test_ddp_and_estimate_tables_match_their_json():
    from harness.bench.ddp import format_ddp
    from harness.bench.estimate import TOLERANCE, format_estimate

    doc = (ROOT / "docs" / "benchmarks.md").read_text()
    ddp = json.loads((ROOT / "docs" / "benchmarks" / "ddp-embedded-cpu.json").read_text())
    assert format_ddp(ddp) in doc
    losses = [r["loss"] for a in ddp["arrangements"].values() for r in a["runs"]]
    assert max(losses) - min(losses) < 1e-6  # the arrangements trained the same run
    assert ddp["arrangements"]["2x1"]["runs"][0]["distributed"]["world_size"] == 2
    est = json.loads((ROOT / "docs" / "benchmarks" / "estimate-embedded-main.json").read_text())
    assert format_estimate(est) in doc
    # the estimate was written before the sweep started, and the sweep ran every trial
    assert est["date"] <= est["measured"]["started"] and est["measured"]["ran"] == est["estimate"]["trials"] == 35
    assert est["within_tolerance"] == (abs(est["ratio"] - 1) <= TOLERANCE)
