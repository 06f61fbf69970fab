"""The student: shapes, the Upstream protocol, padding, presets and the paper's parameter
count, pred-head mode, frozen/trainable front-end, save/load round trip."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from harness.config import StudentConfig
from harness.stacking import grow, plan
from harness.student import (
    PosConv,
    TeacherInfo,
    build_student,
    load_student,
    pos_conv_channels_last,
    pos_conv_reference,
    proportional_targets,
    save_student,
    student_embedded,
    student_paper,
    student_tiny,
)
from harness.teachers.base import Upstream
from tests.support.modules import StridedFrontend


pytestmark = pytest.mark.usefixtures("one_thread")


def build_strided(spec: dict) -> nn.Module:
    assert spec["type"] == "strided"
    return StridedFrontend(spec["dim"])


def teacher(width: int = 24, layers: int = 6) -> TeacherInfo:
    torch.manual_seed(0)
    return TeacherInfo(width=width, num_layers=layers, frame_rate=50.0, frontend=StridedFrontend())


def small(**kw):
    shape = {"layers": 3, "width": 32, "heads": 4, "ffn": 64, "conv_pos": 8, "conv_pos_groups": 4, **kw}
    return student_tiny(teacher(), **shape)


def test_shapes_and_upstream_protocol():
    s = small().eval()
    assert isinstance(s, Upstream)
    assert (s.num_layers, s.width, s.frame_rate) == (3, 32, 50.0)
    assert s.targets == [2, 4, 6]
    wavs = torch.randn(2, 16000) * 0.1
    lengths = torch.tensor([16000, 8000])
    states, frames = s.hidden_states(wavs, lengths)
    assert frames.tolist() == [49, 24] == s.frame_lengths(lengths).tolist()
    assert len(states) == 4 and all(x.shape == (2, 49, 32) for x in states)
    proj = s.project(states)
    assert len(proj) == 3 and all(p.shape == (2, 49, 24) for p in proj)
    assert s.id.startswith("student-") and s.id == s.id


@pytest.mark.parametrize("pre_ln", [False, True])
def test_padding_does_not_change_valid_frames(pre_ln):
    s = small(layer_norm_first=pre_ln).eval()
    feats = torch.randn(1, 15, 12)
    alone = s.forward_features(feats, torch.tensor([15]))
    padded = torch.cat([feats, 50 * torch.randn(1, 6, 12)], dim=1)
    both = s.forward_features(torch.cat([padded, torch.randn(1, 21, 12)]), torch.tensor([15, 21]))
    for a, b in zip(alone, both):
        assert torch.allclose(a[0], b[0, :15], atol=1e-5)


def test_attention_matches_closed_form():
    """SDPA with a key-padding mask = softmax(QK^T / sqrt(d)) V over the valid keys."""
    s = small(heads=1, conv_pos=0).eval()
    layer = s.layers[0].self_attn
    x = torch.randn(1, 5, 32)
    mask = torch.tensor([[True, True, True, False, False]])
    out = layer(x, mask[:, None, None, :])
    q, k, v = layer.q_proj(x), layer.k_proj(x), layer.v_proj(x)
    scores = (q @ k.transpose(1, 2)) / math.sqrt(32)
    scores = scores.masked_fill(~mask[:, None, :], float("-inf"))
    expect = layer.out_proj(torch.softmax(scores, -1) @ v)
    assert torch.allclose(out, expect, atol=1e-5)


def test_pre_and_post_ln_differ_and_post_ln_states_are_normalised():
    post = small(layer_norm_first=False).eval()
    states = post.forward_features(torch.randn(2, 10, 12))
    # post-LN: every state ends with a LayerNorm (unit affine at init): ~zero mean per frame
    assert all(st.mean(-1).abs().max() < 1e-4 for st in states)
    pre = small(layer_norm_first=True).eval()
    assert pre.forward_features(torch.randn(2, 10, 12))[-1].mean(-1).abs().max() > 1e-3


def test_frontend_frozen_or_trainable():
    s = small()
    assert not any(p.requires_grad for p in s.frontend.parameters())
    assert all(p.requires_grad for n, p in s.named_parameters() if not n.startswith("frontend."))
    t = small(frontend_trainable=True)
    assert all(p.requires_grad for p in t.frontend.parameters())
    # the student owns a copy: training it leaves the teacher's front-end alone
    info = teacher()
    u = student_tiny(info, frontend_trainable=True)
    assert u.frontend is not info.frontend


def test_pred_heads_mode():
    s = small(target_mode="pred_heads", pred_head_layers=[2, 4, 6]).eval()
    assert len(s.proj) == 0 and s.targets == [2, 4, 6]
    states = s.forward_features(torch.randn(2, 7, 12))
    preds = s.project(states)
    assert len(preds) == 3 and all(p.shape == (2, 7, 24) for p in preds)


def test_build_student_from_config():
    cfg = StudentConfig(preset="student_tiny", layers=2, width=48, heads=3, layer_norm_first=True, conv_pos=-1)
    s = build_student(cfg, teacher())
    assert (len(s.layers), s.shape.width, s.shape.heads, s.shape.ffn) == (2, 48, 3, 256)
    assert s.layer_norm_first and s.pos_conv is None
    s = build_student(StudentConfig(preset="student_embedded"), teacher())
    assert (len(s.layers), s.shape.width) == (8, 128)
    # teacher info as a plain dict
    s = build_student(StudentConfig(), {"width": 24, "num_layers": 6, "frontend": StridedFrontend()})
    assert s.shape.teacher_width == 24
    with pytest.raises(ValueError, match="heads"):
        small(heads=5)


def test_presets_and_paper_parameter_count():
    assert len(student_embedded(teacher()).layers) == 8
    # HuBERT Base's conv front-end (512 channels, 7 layers, 320 hop) and a 768 x 12 teacher
    from tests.support.modules import ConvStack

    fe = ConvStack(layers=[[512, 10, 5]] + [[512, 3, 2]] * 4 + [[512, 2, 2]] * 2)
    s = student_paper(TeacherInfo(width=768, num_layers=12, frontend=fe))
    assert (len(s.layers), s.shape.width, s.shape.ffn, s.shape.heads) == (12, 384, 1536, 12)
    # the paper's 26.87M: front-end + projection + positional conv + 12 layers
    assert s.encoder_params() == 26_871_936
    assert sum(p.numel() for p in s.proj.parameters()) == 12 * (384 * 768 + 768)


def test_proportional_targets():
    assert proportional_targets(3, 12) == [4, 8, 12]
    assert proportional_targets(12, 12) == list(range(1, 13))
    assert proportional_targets(8, 12) == [2, 3, 5, 6, 8, 9, 11, 12]
    assert proportional_targets(4, 2) == [1, 1, 2, 2]


def test_save_load_round_trip_after_growth(tmp_path):
    s = small()
    grow(s, None, plan("interleaved", 3, 3), init="copy")
    with torch.no_grad():
        for p in s.parameters():
            p.add_(0.01 * torch.randn_like(p))
    s.eval()
    path = tmp_path / "student.ckpt"
    save_student(s, path, extra={"run_id": "r1"})
    t = load_student(path, frontend_builder=build_strided)
    assert len(t.layers) == 6 and t.targets == s.targets == [2, 2, 4, 4, 6, 6]
    assert t.extra == {"run_id": "r1"} and not t.training
    wavs, lengths = torch.randn(2, 8000) * 0.1, torch.tensor([8000, 6000])
    a, fa = s.hidden_states(wavs, lengths)
    b, fb = t.hidden_states(wavs, lengths)
    assert torch.equal(fa, fb) and all(torch.equal(x, y) for x, y in zip(a, b))
    assert t.id == s.id
    # a student trained on cached features (no front-end) keeps the spec, not weights
    s.frontend = None
    save_student(s, path)
    u = load_student(path, frontend_builder=build_strided)
    assert u.frontend is None and u.frontend_spec == {"type": "strided", "dim": 12}


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_student(tmp_path / "none.ckpt")
    torch.save({"x": 1}, tmp_path / "bad.ckpt")
    with pytest.raises(ValueError, match="not a harness student"):
        load_student(tmp_path / "bad.ckpt")


def test_masked_layer_blends_with_identity():
    s = small().eval()
    x = torch.randn(1, 6, 32)
    layer = s.layers[0]
    full = layer(x, None)
    layer.set_mask(0.25)
    assert torch.allclose(layer(x, None), x + 0.25 * (full - x), atol=1e-6)
    # the mask survives a state-dict round trip (a resumed run)
    t = small()
    t.load_state_dict(s.state_dict())
    assert t.layers[0].mask_value == 0.25 and t.layers[0].blend


def test_student_of_the_dummy_teacher():
    """With a real teacher (``dummy``): the student copies its conv front-end and matches
    its frame grid, so student and teacher states line up frame for frame."""
    pytest.importorskip("harness.teachers.dummy")
    from harness.teachers.base import load_teacher

    teacher_model = load_teacher("dummy", "cpu")
    s = build_student(StudentConfig(preset="student_tiny", layers=2), teacher_model).eval()
    assert s.frontend is not teacher_model.frontend
    assert s.frontend.spec == teacher_model.frontend.spec
    assert (s.shape.teacher_width, s.shape.teacher_layers) == (teacher_model.width, teacher_model.num_layers)
    wavs, lengths = torch.randn(2, 16000) * 0.1, torch.tensor([16000, 9000])
    t_states, t_frames = teacher_model.hidden_states(wavs, lengths)
    states, frames = s.hidden_states(wavs, lengths)
    assert torch.equal(frames, t_frames) and states[0].shape[1] == t_states[0].shape[1]
    proj = s.project(states)
    assert proj[-1].shape == t_states[s.targets[-1]].shape


# ----------------------------------------------------------------------------- positional conv


def _fairseq_pos_conv(x: torch.Tensor, conv: "PosConv") -> torch.Tensor:
    """fairseq's positional conv written out: weight norm over the kernel axis, F.conv1d
    with padding K // 2 on (B, D, T), the extra frame of an even kernel dropped, GELU."""
    v, g = conv.weight_v, conv.weight_g
    w = g * v / v.norm(dim=(0, 1), keepdim=True)
    y = F.conv1d(x.transpose(1, 2), w, conv.bias, padding=conv.kernel // 2, groups=conv.groups)
    if conv.kernel % 2 == 0:
        y = y[:, :, :-1]
    return F.gelu(y).transpose(1, 2)


@pytest.mark.parametrize("width,kernel,groups", [(128, 32, 8), (128, 33, 8), (24, 4, 3), (16, 5, 1), (12, 1, 4)])
def test_pos_conv_matches_conv1d_outputs_and_gradients(width, kernel, groups):
    torch.manual_seed(kernel)
    conv = PosConv(width, kernel, groups)
    with torch.no_grad():  # a non-trivial gain and bias, so their gradients are tested too
        conv.weight_g.mul_(torch.rand_like(conv.weight_g) + 0.5)
        conv.bias.normal_()
    lengths = torch.tensor([37, 20, 1])  # a batch of different lengths, padded frames zeroed
    x = torch.randn(3, 37, width)
    x = x * (torch.arange(37)[None, :] < lengths[:, None])[:, :, None]
    x_ref = x.clone().requires_grad_()
    x_new = x.clone().requires_grad_()
    ref, new = _fairseq_pos_conv(x_ref, conv), conv(x_new)
    assert new.shape == ref.shape == x.shape
    torch.testing.assert_close(new, ref)
    grad_out = torch.randn_like(ref)
    params = [conv.weight_g, conv.weight_v, conv.bias]
    g_ref = torch.autograd.grad(ref, [x_ref, *params], grad_out)
    g_new = torch.autograd.grad(new, [x_new, *params], grad_out)
    for a, b in zip(g_new, g_ref):
        torch.testing.assert_close(a, b)


def test_pos_conv_reference_is_the_conv1d_path():
    torch.manual_seed(0)
    conv = PosConv(16, 6, 4)
    x = torch.randn(2, 11, 16)
    w = conv.weight()
    torch.testing.assert_close(pos_conv_channels_last(x, w, conv.bias, 6, 4), pos_conv_reference(x, w, conv.bias, 6, 4))
    torch.testing.assert_close(F.gelu(pos_conv_reference(x, w, conv.bias, 6, 4)), conv(x))


def test_pos_conv_state_dict_keys_and_padding_invariance():
    torch.manual_seed(0)
    conv = PosConv(16, 8, 4)
    assert sorted(conv.state_dict()) == ["bias", "weight_g", "weight_v"]
    assert conv.weight_g.shape == (1, 1, 8) and conv.weight_v.shape == (16, 4, 8)
    # a frame's output depends on its neighbours only (zero padding): appending zero frames
    # past the end leaves the valid frames unchanged, as the student's padding mask relies on
    x = torch.randn(1, 9, 16)
    longer = torch.cat([x, torch.zeros(1, 5, 16)], dim=1)
    torch.testing.assert_close(conv(longer)[:, :9], conv(x))
