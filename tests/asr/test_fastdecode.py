"""The lean greedy loop (harness.asr.fastdecode) computes what the transformers forward
computes: the same log-probabilities step by step and the same transcripts, on random
models of several shapes (a multi-token prompt included) and on the shipped teacher."""

from pathlib import Path

import numpy as np
import pytest
import torch

from harness.asr.data import featurize
from harness.asr.evaluate import _encode, _step, greedy_decode, greedy_decode_hf
from harness.asr.fastdecode import lean_logits
from harness.asr.teacher import load_asr_model, new_char_model

ASSET = Path(__file__).resolve().parents[2] / "harness" / "assets" / "asr_teacher_embedded"


def _hf_logits(asr, enc, prompt, steps):
    ids = torch.tensor([prompt] * enc.shape[0])
    cache, out = None, []
    with torch.no_grad():
        for _ in range(steps):
            logp, cache = _step(asr, enc, ids, cache)
            out.append(logp)
            ids = logp.argmax(-1)[:, None]
    return torch.stack(out, 1)


@pytest.mark.parametrize("shape,prompt", [
    (dict(d_model=32, encoder_layers=1, decoder_layers=3, heads=2, ffn=64, n_mels=16, max_target_positions=12), None),
    (dict(d_model=48, encoder_layers=2, decoder_layers=1, heads=4, ffn=96, n_mels=16, max_target_positions=12),
     [1, 5, 7, 9]),
])
def test_lean_steps_match_the_transformers_forward(shape, prompt):
    asr = new_char_model("tiny", chunk_seconds=1, seed=3, **shape)
    asr.model.eval()
    wavs = [np.random.default_rng(i).standard_normal(8000 + 2000 * i).astype(np.float32) * 0.1 for i in range(3)]
    feats = featurize(asr, wavs)
    prompt = prompt or asr.prompt
    with torch.no_grad():
        enc = _encode(asr, feats)
    steps = shape["max_target_positions"] - len(prompt)
    ref = _hf_logits(asr, enc, prompt, steps)
    lean, ids = lean_logits(asr.model, enc, prompt, steps + 5)  # clipped to the position limit
    assert lean.shape == ref.shape and ids.shape == ref.shape[:2]
    assert torch.allclose(lean, ref, atol=1e-4), (lean - ref).abs().max()
    assert torch.equal(ids, ref.argmax(-1))


def test_lean_greedy_transcribes_like_the_transformers_loop_on_the_shipped_teacher():
    asr = load_asr_model(ASSET)
    rng = np.random.default_rng(0)
    # speech-like input is not needed for equality; a few lengths and levels are
    wavs = [rng.standard_normal(n).astype(np.float32) * s for n, s in ((16000, 0.05), (24000, 0.2), (40000, 0.01))]
    feats = featurize(asr, wavs)
    assert greedy_decode(asr, feats) == greedy_decode_hf(asr, feats)
    assert greedy_decode(asr, feats, max_new=3) == greedy_decode_hf(asr, feats, max_new=3)
