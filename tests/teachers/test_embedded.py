"""The embedded SFM: Upstream protocol, padding invariance, checkpoints, registry, errors."""

from dataclasses import replace

import pytest
import torch

from harness.teachers import TEACHERS, Upstream, load_teacher
from harness.teachers.embedded import (
    EmbeddedSFM, load_embedded, random_twin, save_embedded, teacher_tiny,
)


def _model(**kw):
    torch.manual_seed(0)
    return EmbeddedSFM(replace(teacher_tiny(), **kw)).eval()


def test_upstream_protocol_shapes():
    m = _model()
    assert isinstance(m, Upstream) and m.num_layers == 4 and m.width == 64 and m.frame_rate == 50.0
    wavs = torch.randn(2, 16000) * 0.1
    states, flen = m.hidden_states(wavs, torch.tensor([16000, 8000]))
    assert len(states) == 5 and all(s.shape == (2, 49, 64) for s in states)
    assert flen.tolist() == [49, 24] == m.frame_lengths(torch.tensor([16000, 8000])).tolist()
    assert float(states[-1][1, 24:].detach().abs().max()) == 0.0  # padded frames zeroed
    assert m.frontend.spec["type"] == "fbank"


@pytest.mark.parametrize("post_ln", [True, False])
def test_padded_batch_equals_single(post_ln):
    m = _model(post_ln=post_ln)
    a, b = torch.randn(16000) * 0.1, torch.randn(7000) * 0.1
    wavs = torch.zeros(2, 16000)
    wavs[0], wavs[1, :7000] = a, b
    with torch.no_grad():
        states, flen = m.hidden_states(wavs, torch.tensor([16000, 7000]))
        sb, fb = m.hidden_states(b[None], torch.tensor([7000]))
    n = int(fb[0])
    for s, t in zip(states, sb):
        torch.testing.assert_close(s[1, :n], t[0, :n], atol=2e-4, rtol=1e-3)


def test_checkpoint_round_trip_fp16_and_stable_id(tmp_path):
    m = _model()
    path = save_embedded(m, tmp_path / "t.pt", extra={"note": "x", "v": torch.__version__})
    assert path.stat().st_size < 0.6 * 4 * sum(p.numel() for p in m.parameters())  # fp16 on disk
    a, b = load_embedded(path), load_embedded(path)
    assert a.id == b.id and a.id.startswith("embedded-") and not a.training
    assert a.extra["note"] == "x"
    x = torch.randn(1, 8000) * 0.1
    with torch.no_grad():
        ref = m.hidden_states(x, torch.tensor([8000]))[0][-1]
        got = a.hidden_states(x, torch.tensor([8000]))[0][-1]
    torch.testing.assert_close(got, ref, atol=0.05, rtol=0.05)  # fp16 weights
    assert random_twin(a, seed=123).id != a.id  # different weights, different id
    via_spec = load_teacher(f"embedded:{path}")
    assert via_spec.id == a.id and "embedded" in TEACHERS.names()


def test_missing_and_corrupt_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt") as err:
        load_teacher(f"embedded:{tmp_path / 'nope.pt'}")
    assert "\n" not in str(err.value)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt"):
        load_embedded(bad)


def test_plain_embedded_spec_is_the_shipped_asset():
    from harness.teachers.embedded import ASSET

    assert ASSET.is_file(), "the shipped teacher harness/assets/teacher_embedded.pt is missing"
    t = load_teacher("embedded")
    assert (t.num_layers, t.width, t.frame_rate) == (8, 192, 50.0) and t.id == "embedded-fcba576361c44c3c"
    with torch.no_grad():
        states, flen = t.hidden_states(torch.randn(1, 16000) * 0.1, torch.tensor([16000]))
    assert len(states) == 9 and states[0].shape == (1, 49, 192) and torch.isfinite(states[-1]).all()
