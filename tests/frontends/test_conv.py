"""Front-ends: conv length arithmetic, shapes and rates, spec round trip, wav normalisation,
and exact equality with s3prl's and transformers' conv feature extractors."""

import pytest
import torch
import torch.nn.functional as F

from harness.frontends import (
    STANDARD_CONV_LAYERS,
    ConvFrontend,
    build_frontend,
    conv_layers,
    normalize_waveforms,
)

torch.set_num_threads(1)


def test_standard_stack_arithmetic_matches_closed_form_and_conv_output():
    fe = ConvFrontend()  # standard 7-layer stack
    assert fe.hop == 320 and fe.receptive_field == 400 and fe.frame_rate == 50.0 and fe.out_dim == 512
    n = torch.tensor([0, 399, 400, 719, 720, 16000, 16319, 16320, 48123])
    expected = torch.where(n >= 400, torch.div(n - 400, 320, rounding_mode="floor") + 1, 0)
    assert fe.frame_lengths(n).tolist() == expected.tolist()
    assert fe.frame_lengths(torch.tensor([16000])).item() == 49  # 1 s of audio -> 49 frames (HuBERT)
    small = ConvFrontend(conv_layers(8), mode="layer_norm")
    for s in (400, 1000, 16000, 16321):
        feats, frames = small(torch.randn(2, s), torch.tensor([s, s]))
        assert feats.shape == (2, small.frame_lengths(torch.tensor([s])).item(), 8)
        assert frames.tolist() == [feats.shape[1]] * 2


def test_forward_returns_valid_frames_per_utterance():
    fe = ConvFrontend(conv_layers(8), mode="group_norm")
    feats, frames = fe(torch.randn(3, 8000), torch.tensor([8000, 4000, 1000]))
    assert feats.shape == (3, 24, 8)
    assert frames.tolist() == [24, 12, 2]


def test_spec_round_trip_rebuilds_the_same_module():
    fe = ConvFrontend([[16, 10, 5], [16, 8, 4], [16, 4, 4], [16, 2, 2], [16, 2, 2]], mode="layer_norm",
                      conv_bias=True, normalize_wav=True, wav_norm_eps=1e-7)
    assert fe.hop == 320
    again = build_frontend(fe.spec)
    assert isinstance(again, ConvFrontend) and again.spec == fe.spec
    again.load_state_dict(fe.state_dict())
    x, lengths = torch.randn(2, 5000), torch.tensor([5000, 3000])
    a, fa = fe(x, lengths)
    b, fb = again(x, lengths)
    assert torch.equal(a, b) and torch.equal(fa, fb)


def test_bad_specs_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="type 'mel'"):
        build_frontend({"type": "mel"})
    with pytest.raises(ValueError, match="'type' key"):
        build_frontend({"layers": []})
    with pytest.raises(ValueError, match="mode"):
        build_frontend({"type": "conv", "mode": "batch_norm"})
    with pytest.raises(ValueError, match="unexpected keyword"):
        build_frontend({"type": "conv", "dims": 3})
    with pytest.raises(ValueError, match="positive"):
        ConvFrontend([[8, 0, 1]])


def test_fbank_type_dispatches_to_fbank_module():
    fbank = pytest.importorskip("harness.frontends.fbank")
    fe = fbank.FbankFrontend()
    again = build_frontend(fe.spec)
    assert type(again) is type(fe) and again.spec == fe.spec


def test_normalize_waveforms_is_per_utterance_layer_norm_over_valid_samples():
    x = torch.randn(2, 1000) * 3 + 1
    lengths = torch.tensor([1000, 600])
    x[1, 600:] = 0
    y = normalize_waveforms(x, lengths, 1e-5)
    assert torch.allclose(y[0], F.layer_norm(x[0], (1000,)), atol=1e-5)
    assert torch.allclose(y[1, :600], F.layer_norm(x[1, :600], (600,)), atol=1e-5)
    assert torch.all(y[1, 600:] == 0)


@pytest.mark.parametrize("mode,bias", [("default", False), ("layer_norm", True)])
def test_matches_s3prl_conv_feature_extractor(mode, bias):
    from harness.compat import apply_s3prl_shim

    apply_s3prl_shim()
    from s3prl.upstream.wav2vec2.wav2vec2_model import ConvFeatureExtractionModel

    layers = [(16, 10, 5)] + [(16, 3, 2)] * 4 + [(16, 2, 2)] * 2
    ref = ConvFeatureExtractionModel(layers, mode=mode, conv_bias=bias).eval()
    with torch.no_grad():  # give the norms non-trivial affine parameters
        for p in ref.parameters():
            p.add_(0.1 * torch.randn_like(p))
    fe = ConvFrontend(layers, mode="group_norm" if mode == "default" else "layer_norm", conv_bias=bias)
    fe.load_fairseq_extractor(ref.state_dict())
    x = torch.randn(2, 7000)
    with torch.no_grad():
        ours, _ = fe(x, torch.tensor([7000, 7000]))
        theirs = ref(x).transpose(1, 2)
    assert ours.shape == theirs.shape
    assert torch.allclose(ours, theirs, atol=1e-6)


@pytest.mark.parametrize("norm,bias", [("group", False), ("layer", True)])
def test_matches_transformers_feature_encoder(norm, bias):
    from transformers import HubertConfig, HubertModel

    cfg = HubertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                       conv_dim=(16,) * 7, feat_extract_norm=norm, conv_bias=bias,
                       num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    torch.manual_seed(0)
    enc = HubertModel(cfg).feature_extractor.eval()
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(0.1 * torch.randn_like(p))
    fe = ConvFrontend(list(zip(cfg.conv_dim, cfg.conv_kernel, cfg.conv_stride)),
                      mode=f"{norm}_norm", conv_bias=bias)
    fe.load_hf_extractor(enc.state_dict())
    x = torch.randn(2, 6400)
    with torch.no_grad():
        ours, _ = fe(x)
        theirs = enc(x).transpose(1, 2)
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_standard_layers_constant_is_the_wav2vec2_stack():
    assert [list(x) for x in STANDARD_CONV_LAYERS] == conv_layers(512)
