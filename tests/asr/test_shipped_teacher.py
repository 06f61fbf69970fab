"""The shipped ASR teacher (harness/assets/asr_teacher_embedded): it loads as float32, its
recorded WER meets the study's bar, and its recipe is recorded with a reproducing command."""

import json
from pathlib import Path

import torch

from harness.asr.teacher import load_asr_model

ASSET = Path(__file__).resolve().parents[2] / "harness" / "assets" / "asr_teacher_embedded"


def test_shipped_asr_teacher_loads_and_meets_the_bar():
    asr = load_asr_model(ASSET)
    assert next(asr.model.parameters()).dtype == torch.float32
    cfg = asr.model.config
    assert (cfg.d_model, cfg.encoder_layers, cfg.decoder_layers) == (192, 4, 4)
    ev = json.loads((ASSET / "eval.json").read_text())["greedy"]
    assert ev["ic_test"]["n"] == 496 and ev["ic_test"]["wer"] <= 0.20  # the whole test split
    meta = json.loads((ASSET / "harness_asr.json").read_text())
    assert meta["split"] == "ic" and meta["steps"] == 2500 and "--split ic" in meta["command"]
    assert abs(meta["params"] - asr.num_params()) == 0
    doc = (ASSET.parent / "README.md").read_text()
    assert f"{ev['ic_test']['wer']:.3f} on `ic_test`" in doc
