"""Shared ASR fixtures: a fake tone corpus and a tiny teacher trained on it (once per module)."""

import pytest

from harness.asr.train import train_teacher


@pytest.fixture(scope="module")
def tone(fake_corpus):
    """``(corpus root, teacher folder)``: 48 training and 6 test utterances, a 30-step teacher."""
    root = fake_corpus("asr_tones", n_train=48, n_test=6)
    teacher = train_teacher("tiny", root / "teacher", root, steps=30, batch_size=8, log=lambda m: None,
                            d_model=32, ffn=64, n_mels=16, max_target_positions=24)
    return root, teacher
