"""Whisper checkpoint folders: a tiny one saved here loads through the real-checkpoint path
and decodes; missing folders and files give one-line errors."""


import numpy as np
import pytest
import torch

from harness.asr.data import featurize
from harness.asr.evaluate import beam_decode, greedy_decode, transcribe
from harness.asr.teacher import PROMPT_TOKENS, load_asr_model, new_char_model, save_asr_model

SHAPE = dict(d_model=32, encoder_layers=1, decoder_layers=2, heads=2, ffn=64, n_mels=16, max_target_positions=12)


def _wavs(n=2, seconds=0.8):
    rng = np.random.default_rng(0)
    return [(0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32) for _ in range(n)]


def test_saved_checkpoint_loads_and_decodes(tmp_path):
    asr = new_char_model("tiny", chunk_seconds=1, seed=0, **SHAPE)
    save_asr_model(asr, tmp_path / "ckpt")
    names = {p.name for p in (tmp_path / "ckpt").iterdir()}
    assert {"config.json", "tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"} <= names
    # Drop the harness side file: the folder must load like any real Whisper checkpoint.
    (tmp_path / "ckpt" / "harness_asr.json").unlink()
    back = load_asr_model(tmp_path / "ckpt")
    assert back.prompt == [1] and back.eos_id == 2
    feats = featurize(back, _wavs())
    assert feats.shape == (2, 16, 50)  # 1 s at a 20 ms hop
    for a, b in zip(asr.model.state_dict().values(), back.model.state_dict().values()):
        assert torch.equal(a, b)
    texts = transcribe(back, feats, "greedy")
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    greedy = greedy_decode(back, feats)
    assert all(len(g) <= 12 - 1 for g in greedy)
    assert beam_decode(back, feats, beam=1) == greedy  # beam 1 is greedy
    assert len(transcribe(back, feats, "beam", beam=3)) == 2


def test_whisper_prompt_from_vocabulary(tmp_path):
    asr = new_char_model("tiny", chunk_seconds=1, seed=0, **SHAPE)
    asr.tokenizer.add_special_tokens({"additional_special_tokens": list(PROMPT_TOKENS)})
    asr.model.resize_token_embeddings(len(asr.tokenizer))
    asr.model.save_pretrained(str(tmp_path))
    asr.tokenizer.save_pretrained(str(tmp_path))
    asr.features.save_pretrained(str(tmp_path))
    back = load_asr_model(tmp_path)
    vocab = back.tokenizer.get_vocab()
    assert back.prompt == [vocab[t] for t in PROMPT_TOKENS]
    assert len(greedy_decode(back, featurize(back, _wavs(1)))) == 1


def test_missing_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'nope'}: no such Whisper checkpoint folder"):
        load_asr_model(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="config.json: missing"):
        load_asr_model(tmp_path)
    asr = new_char_model("tiny", chunk_seconds=1, seed=0, **SHAPE)
    asr.model.save_pretrained(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="preprocessor_config.json: missing"):
        load_asr_model(tmp_path)
    with pytest.raises(ValueError, match="no ASR teacher preset"):
        new_char_model("huge", chunk_seconds=1)
