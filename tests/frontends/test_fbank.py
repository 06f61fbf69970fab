"""The fbank front-end: frame arithmetic, padding invariance, spec round trip."""

import pytest
import torch

from harness.frontends import FbankFrontend


def test_frames_follow_documented_arithmetic():
    fe = FbankFrontend(n_mels=40, dim=32)
    lengths = torch.tensor([16000, 12345, 400, 399])
    # (S - 400) // 160 + 1 fbank frames at 100 Hz, halved to 50 Hz
    expect = [((16000 - 400) // 160 + 1) // 2, ((12345 - 400) // 160 + 1) // 2, 0, 0]
    assert fe.frame_lengths(lengths).tolist() == expect == [49, 37, 0, 0]
    feats, flen = fe(torch.randn(1, 16000), torch.tensor([16000]))
    assert feats.shape == (1, 49, 32) and flen.tolist() == [49]
    assert fe.out_dim == 32 and fe.frame_rate == 50.0


def test_padded_batch_equals_single_utterances():
    torch.manual_seed(0)
    fe = FbankFrontend(n_mels=40, dim=16).eval()
    a, b = torch.randn(16000) * 0.1, torch.randn(9000) * 0.1
    wavs = torch.zeros(2, 16000)
    wavs[0], wavs[1, :9000] = a, b
    feats, flen = fe(wavs, torch.tensor([16000, 9000]))
    fa, _ = fe(a[None], torch.tensor([16000]))
    fb, _ = fe(b[None], torch.tensor([9000]))
    assert flen.tolist() == [49, 27]
    torch.testing.assert_close(feats[0], fa[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(feats[1, :27], fb[0], atol=1e-5, rtol=1e-4)


def test_spec_rebuilds_same_architecture():
    fe = FbankFrontend(n_mels=24, dim=8, kernel=5)
    assert fe.spec == {"type": "fbank", "n_mels": 24, "dim": 8, "kernel": 5}
    twin = FbankFrontend(**{k: v for k, v in fe.spec.items() if k != "type"})
    twin.load_state_dict(fe.state_dict())
    x = torch.randn(2, 8000)
    torch.testing.assert_close(twin(x, torch.tensor([8000, 8000]))[0], fe(x, torch.tensor([8000, 8000]))[0])


def test_too_short_and_bad_shape():
    fe = FbankFrontend(n_mels=24, dim=8)
    feats, flen = fe(torch.zeros(2, 300), torch.tensor([300, 200]))
    assert feats.shape == (2, 0, 8) and flen.tolist() == [0, 0]
    with pytest.raises(ValueError, match=r"\(B, S\)"):
        fe(torch.zeros(8000), torch.tensor([8000]))
    with pytest.raises(ValueError, match="odd"):
        FbankFrontend(kernel=4)
