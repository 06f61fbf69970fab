"""ASKD schedule, EMA self-teacher (the shared harness.losses ones, as the ASR track calls
them) and the ASR objectives against closed-form values."""

import math

import pytest
import torch

from harness.asr.objectives import EmaTeacher, askd_alpha, asr_loss, masked_ce, masked_kl


@pytest.mark.parametrize("decay", ["linear", "cosine", "exp", "step"])
def test_alpha_endpoints(decay):
    assert askd_alpha(0.0, decay, 1.0, 0.0) == pytest.approx(1.0)
    assert askd_alpha(1.0, decay, 1.0, 0.0) == pytest.approx(0.0, abs=1e-12)
    assert askd_alpha(1.0, decay, 0.9, 0.2) == pytest.approx(0.2)


def test_alpha_closed_forms():
    assert askd_alpha(0.5, "linear", 1.0, 0.0) == pytest.approx(0.5)
    assert askd_alpha(0.25, "linear", 0.8, 0.4) == pytest.approx(0.7)
    assert askd_alpha(0.25, "cosine", 1.0, 0.0) == pytest.approx((1 + math.cos(math.pi / 4)) / 2)
    k = 5.0
    assert askd_alpha(0.5, "exp", 1.0, 0.0) == pytest.approx((math.exp(-k / 2) - math.exp(-k)) / (1 - math.exp(-k)))
    # step (harness.losses): step_count equal drops at u = k / (step_count + 1)
    assert askd_alpha(0.49, "step", 1.0, 0.2) == pytest.approx(1.0)
    assert askd_alpha(0.51, "step", 1.0, 0.2) == pytest.approx(0.2)
    assert askd_alpha(0.24, "step", 1.0, 0.2, step_count=3) == pytest.approx(1.0)
    assert askd_alpha(0.26, "step", 1.0, 0.2, step_count=3) == pytest.approx(1.0 - 0.8 / 3)
    assert askd_alpha(0.76, "step", 1.0, 0.2, step_count=3) == pytest.approx(0.2)
    # start_frac: held at start, then the decay runs over the rest of training
    assert askd_alpha(0.2, "linear", 1.0, 0.0, start_frac=0.4) == 1.0
    assert askd_alpha(0.7, "linear", 1.0, 0.0, start_frac=0.4) == pytest.approx(0.5)


def test_alpha_monotone_and_errors():
    vals = [askd_alpha(p / 20, "cosine", 1.0, 0.0) for p in range(21)]
    assert all(a >= b for a, b in zip(vals, vals[1:]))
    with pytest.raises(ValueError, match="cosin"):
        askd_alpha(0.5, "cosin")


def test_ema_update_closed_form():
    model = torch.nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.fill_(1.0)
        model.bias.fill_(0.0)
    ema = EmaTeacher(model, decay=0.9)
    assert not any(p.requires_grad for p in ema.module.parameters())
    with torch.no_grad():
        model.weight.fill_(3.0)
        model.bias.fill_(1.0)
    ema.update(model)
    assert torch.allclose(ema.module.weight, torch.full((1, 2), 0.9 * 1 + 0.1 * 3))
    assert torch.allclose(ema.module.bias, torch.tensor([0.1]))
    ema.update(model)  # 0.9 * 1.2 + 0.1 * 3 = 1.38
    assert torch.allclose(ema.module.weight, torch.full((1, 2), 1.38))
    with pytest.raises(ValueError):
        EmaTeacher(model, decay=1.5)


def test_ema_follows_a_grown_whisper_decoder():
    from harness.asr.student import grow_decoder, shrink
    from harness.asr.teacher import new_char_model

    teacher = new_char_model("tiny", chunk_seconds=1, d_model=16, encoder_layers=1, decoder_layers=2, heads=2,
                             ffn=32, n_mels=8, max_target_positions=8)
    student = shrink(teacher, decoder_layers=1)
    ema = EmaTeacher(student.model, decay=0.5)
    grow_decoder(student, [0, 0])
    ema.update(student.model)  # architecture changed: the EMA is re-copied
    assert len(ema.module.model.decoder.layers) == 2


def test_kl_and_ce_closed_forms():
    labels = torch.tensor([[1, -100]])
    s = torch.tensor([[[0.0, 0.0], [5.0, -5.0]]])
    t = torch.tensor([[[math.log(3.0), 0.0], [0.0, 0.0]]])  # p = (3/4, 1/4); position 1 masked
    expected = (0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5))
    assert masked_kl(t, s, labels, temperature=1.0).item() == pytest.approx(expected, rel=1e-5)
    # T^2 scaling: teacher logits scaled by T keep the same softmax at temperature T
    assert masked_kl(2 * t, s, labels, temperature=2.0).item() == pytest.approx(4 * expected, rel=1e-5)
    assert masked_kl(s, s, labels).item() == pytest.approx(0.0, abs=1e-7)
    assert masked_ce(s, labels).item() == pytest.approx(math.log(2.0), rel=1e-6)


def test_objective_mixing():
    torch.manual_seed(0)
    s, t, e = (torch.randn(2, 3, 5) for _ in range(3))
    labels = torch.tensor([[1, 2, -100], [0, 4, 3]])
    ce = masked_ce(s, labels)
    kd = masked_kl(t, s, labels, 2.0)
    sk = masked_kl(e, s, labels, 2.0)
    assert asr_loss("ce", s, labels)["total"].item() == pytest.approx(ce.item())
    assert asr_loss("kd", s, labels, t)["total"].item() == pytest.approx(0.8 * ce.item() + kd.item(), rel=1e-6)
    out = asr_loss("askd", s, labels, t, e, alpha=0.25)
    assert out["total"].item() == pytest.approx(0.8 * ce.item() + 0.25 * kd.item() + 0.75 * sk.item(), rel=1e-6)
    assert asr_loss("askd", s, labels, t, e, alpha=1.0)["total"].item() == pytest.approx(
        asr_loss("kd", s, labels, t)["total"].item(), rel=1e-6)
    with pytest.raises(ValueError, match="needs teacher logits"):
        asr_loss("kd", s, labels)
    with pytest.raises(ValueError, match="EMA"):
        asr_loss("askd", s, labels, t)
    with pytest.raises(ValueError, match="unknown ASR objective"):
        asr_loss("mse", s, labels)
