"""Losses against closed-form values: per-layer losses with frame masks, L2L and
pred-head objectives, logit KD, ASKD's alpha schedules and the EMA teacher."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from harness import losses as L
from harness.registry import RegistryError


def _pair():
    # B=1, T=3, D=2; the last frame is padding and holds a huge error that must not count
    pred = torch.tensor([[[1.0, 2.0], [0.0, 0.0], [100.0, -100.0]]])
    target = torch.tensor([[[0.0, 0.0], [1.0, 1.0], [0.0, 0.0]]])
    mask = torch.tensor([[True, True, False]])
    return pred, target, mask


def test_mse_l1_closed_form_with_mask():
    pred, target, mask = _pair()
    # frame 0: ((1)^2 + (2)^2)/2 = 2.5; frame 1: (1 + 1)/2 = 1 -> mean 1.75
    assert L.mse(pred, target, mask).item() == pytest.approx(1.75)
    # frame 0: (1 + 2)/2 = 1.5; frame 1: 1 -> 1.25
    assert L.l1(pred, target, mask).item() == pytest.approx(1.25)
    # no mask: frame 2 counts: mse (100^2 + 100^2)/2 = 10000 -> (2.5 + 1 + 10000) / 3
    assert L.mse(pred, target).item() == pytest.approx((2.5 + 1 + 10000) / 3)


def test_cos_and_l1_cos_closed_form():
    pred = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [5.0, 5.0]]])
    target = torch.tensor([[[3.0, 0.0], [0.0, -1.0], [1.0, 0.0]]])
    mask = torch.tensor([[True, True, False]])
    # cos sims: 1 and -1 -> (1 - 1) and (1 - (-1)) -> mean 1
    assert L.cos(pred, target, mask).item() == pytest.approx(1.0)
    l1 = ((2 + 0) / 2 + (0 + 3) / 2) / 2  # 1.25
    sig = (-math.log(1 / (1 + math.exp(-1.0))) - math.log(1 / (1 + math.exp(1.0)))) / 2
    assert L.l1_cos(pred, target, mask).item() == pytest.approx(l1 + sig, rel=1e-6)


def test_loss_shape_errors():
    with pytest.raises(ValueError, match="differ"):
        L.mse(torch.zeros(1, 2, 3), torch.zeros(1, 2, 4))
    with pytest.raises(ValueError, match="frame_mask"):
        L.mse(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), torch.ones(1, 3, dtype=torch.bool))


def test_l2l_output_plus_w_mean_intermediate():
    t = {k: torch.zeros(1, 2, 1) for k in range(5)}
    # per-layer mse = c^2 for a constant prediction c
    preds = [torch.full((1, 2, 1), c) for c in (1.0, 2.0, 3.0)]
    total, parts = L.l2l_loss(preds, t, [1, 2, 4], "mse", w=0.5)
    assert parts["out"].item() == pytest.approx(9.0)
    assert parts["inter"].item() == pytest.approx((1 + 4) / 2)
    assert total.item() == pytest.approx(9.0 + 0.5 * 2.5)
    total, _ = L.l2l_loss(preds[:1], t, [1], "l1", w=0.5)
    assert total.item() == pytest.approx(1.0)
    # list-of-states form with None gaps works the same; a missing target is an error
    as_list = [None, t[1], t[2], None, t[4]]
    assert L.l2l_loss(preds, as_list, [1, 2, 4], "mse", 0.5)[0].item() == pytest.approx(10.25)
    with pytest.raises(ValueError, match="hidden state 3"):
        L.l2l_loss(preds, as_list, [1, 2, 3], "mse", 0.5)
    with pytest.raises(RegistryError):
        L.l2l_loss(preds, t, [1, 2, 4], "mae")


def test_pred_head_loss_is_mean_over_heads():
    t = {4: torch.zeros(1, 2, 2), 8: torch.ones(1, 2, 2)}
    preds = [torch.ones(1, 2, 2), torch.ones(1, 2, 2)]
    total, parts = L.pred_head_loss(preds, t, [4, 8], "l1")
    assert parts["head_4"].item() == 1.0 and parts["head_8"].item() == 0.0
    assert total.item() == pytest.approx(0.5)
    assert L.OBJECTIVES.get("pred_heads") is L.pred_head_loss


def test_logit_kd_closed_form():
    s = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    t = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]])
    labels = torch.tensor([0, -100])
    # CE on position 0 only: -log(1/2)
    # KL at T=1 on position 0: p_t = (3/4, 1/4), p_s = (1/2, 1/2)
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    total, parts = L.logit_kd(s, t, labels, temperature=1.0, ce_weight=0.8, kd_weight=1.0)
    assert parts["ce"].item() == pytest.approx(math.log(2))
    assert parts["kl"].item() == pytest.approx(kl, rel=1e-6)
    assert total.item() == pytest.approx(0.8 * math.log(2) + kl, rel=1e-6)
    # temperature 2: logits halved, KL scaled by T^2 = 4
    p_t = torch.softmax(t[0] / 2, -1)
    p_s = torch.softmax(s[0] / 2, -1)
    kl2 = float((p_t * (p_t / p_s).log()).sum())
    total, parts = L.logit_kd(s, t, labels, temperature=2.0, ce_weight=0.0, kd_weight=1.0)
    assert total.item() == pytest.approx(4 * kl2, rel=1e-6)
    # identical distributions: KL 0
    assert L.logit_kd(s, s, None, 2.0, 1.0, 1.0)[1]["kl"].item() == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("decay", ["linear", "cosine", "exp", "step"])
def test_askd_alpha_endpoints_and_monotone(decay):
    assert L.askd_alpha(0.0, decay) == 1.0
    assert L.askd_alpha(1.0, decay) == 0.0
    assert L.askd_alpha(1.0, decay, start=0.9, end=0.2) == 0.2
    assert L.askd_alpha(0.3, decay, start=0.9, end=0.2, start_frac=0.3) == 0.9
    assert L.askd_alpha(1.5, decay) == 0.0 and L.askd_alpha(-1, decay) == 1.0
    values = [L.askd_alpha(p / 20, decay) for p in range(21)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_askd_alpha_midpoints():
    assert L.askd_alpha(0.5, "linear") == pytest.approx(0.5)
    assert L.askd_alpha(0.5, "cosine") == pytest.approx(0.5)
    assert L.askd_alpha(0.25, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert L.askd_alpha(0.6, "linear", start_frac=0.2) == pytest.approx(0.5)
    assert L.askd_alpha(0.49, "step") == 1.0 and L.askd_alpha(0.5, "step") == 0.0
    # a 4-drop staircase: drops at u = 0.2, 0.4, 0.6, 0.8
    assert [L.askd_alpha(u, "step", step_count=4) for u in (0.1, 0.3, 0.5, 0.7, 0.9)] == [1.0, 0.75, 0.5, 0.25, 0.0]
    r = 5.0
    assert L.askd_alpha(0.5, "exp") == pytest.approx((math.exp(-r / 2) - math.exp(-r)) / (1 - math.exp(-r)))
    with pytest.raises(ValueError, match="decay"):
        L.askd_alpha(0.5, "sigmoid")


def test_ema_teacher_update_value():
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0]]))
    ema = L.EmaTeacher(model, decay=0.9)
    assert not any(p.requires_grad for p in ema.module.parameters())
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[3.0, 0.0]]))
    ema.update(model)
    # 0.9 * [1, 2] + 0.1 * [3, 0] = [1.2, 1.8]
    assert torch.allclose(ema.module.weight, torch.tensor([[1.2, 1.8]]))
    ema.update(model)
    assert torch.allclose(ema.module.weight, torch.tensor([[0.9 * 1.2 + 0.3, 0.9 * 1.8]]))
    # an architecture change (growth) re-copies the model
    bigger = nn.Linear(3, 1, bias=False)
    ema.update(bigger)
    assert torch.equal(ema.module.weight, bigger.weight)


def test_self_teacher_follows_the_student_until_the_decay_starts_then_has_a_run_length_memory():
    """The untrained initialisation never enters the self-teacher: until start_frac x total
    it equals the student; then an EMA whose time constant is horizon x total steps."""
    from harness.config import AskdConfig

    model = nn.Linear(1, 1, bias=False)
    total = 100
    st = L.SelfTeacher(model, AskdConfig(start_frac=0.2, horizon=0.1), total)
    assert st.start == 20 and st.ema_decay == pytest.approx(0.9)
    values = []
    for step in range(1, total + 1):
        with torch.no_grad():
            model.weight.fill_(float(step))
        st.update(model)
        values.append(float(st.module.weight))
    assert values[:20] == [float(k) for k in range(1, 21)]  # follows the student exactly
    expect = 20.0
    for step in range(21, total + 1):
        expect = 0.9 * expect + 0.1 * step
    assert values[-1] == pytest.approx(expect)
    assert st.init_weight() == pytest.approx(0.9 ** 80) and st.describe()["init_weight_at_end"] < 1e-3
    # without a horizon: the fixed per-step decay, from step 0 (the feature track's default)
    old = L.SelfTeacher(model, AskdConfig(ema=0.99), total)
    assert old.start == 0 and old.ema_decay == 0.99 and old.init_weight() == pytest.approx(0.99 ** 100)


def test_snapshot_self_teacher_refreshes_every_horizon():
    from harness.config import AskdConfig, ConfigError

    model = nn.Linear(1, 1, bias=False)
    st = L.SelfTeacher(model, AskdConfig(self_teacher="snapshot", start_frac=0.1, horizon=0.25), 40)
    seen = []
    for step in range(1, 41):
        with torch.no_grad():
            model.weight.fill_(float(step))
        st.update(model)
        seen.append(float(st.module.weight))
    assert seen[:4] == [1.0, 2.0, 3.0, 4.0]  # start = 4: follows the student
    assert seen[4:13] == [4.0] * 9 and seen[13] == 14.0 and seen[22] == 14.0 and seen[23] == 24.0  # every 10
    assert st.init_weight() == 0.0
    with pytest.raises(ConfigError, match="snapshot"):
        AskdConfig(self_teacher="snapshot").validate()


def test_askd_l2l_blends_teacher_and_self():
    t = {1: torch.zeros(1, 2, 1), 2: torch.zeros(1, 2, 1)}
    student = [torch.full((1, 2, 1), 1.0), torch.full((1, 2, 1), 2.0)]
    ema = [torch.full((1, 2, 1), 1.0), torch.full((1, 2, 1), 1.0)]
    # teacher term: out 4 + 0.5 * 1 = 4.5; self term: out (2-1)^2 = 1 + 0.5 * 0 = 1
    total, parts = L.askd_l2l(student, t, ema, [1, 2], alpha=0.25, per_layer="mse", w=0.5)
    assert parts["teacher"].item() == pytest.approx(4.5) and parts["self"].item() == pytest.approx(1.0)
    assert total.item() == pytest.approx(0.25 * 4.5 + 0.75 * 1.0)
    assert L.askd_l2l(student, t, ema, [1, 2], alpha=1.0)[0].item() == pytest.approx(4.5)
    assert L.askd_l2l(student, t, ema, [1, 2], alpha=0.0)[0].item() == pytest.approx(1.0)


def test_askd_logit_blends_kl_terms():
    s = torch.tensor([[0.0, 0.0]])
    t = torch.tensor([[math.log(3.0), 0.0]])
    e = torch.tensor([[0.0, 0.0]])
    labels = torch.tensor([0])
    kl_t = L.logit_kd(s, t, None, 1.0, 0.0, 1.0)[0].item()
    total, parts = L.askd_logit(s, t, e, labels, alpha=0.5, temperature=1.0, ce_weight=1.0, kd_weight=1.0)
    assert parts["kl_self"].item() == pytest.approx(0.0, abs=1e-7)
    assert total.item() == pytest.approx(math.log(2) + 0.5 * kl_t, rel=1e-6)


def test_registry_names():
    assert {"mse", "l1", "cos", "l1_cos", "l2l", "pred_heads", "logit_kd", "askd_l2l", "askd_logit"} <= \
        set(L.CRITERIA.names()) | set(L.OBJECTIVES.names())
    # two registries: per-layer criteria and objectives (different call signatures)
    assert set(L.CRITERIA.names()) == {"mse", "l1", "cos", "l1_cos"}
    assert not set(L.CRITERIA.names()) & set(L.OBJECTIVES.names())


def test_per_layer_loss_rejects_objectives_and_unknown_names():
    from harness.registry import RegistryError

    assert L.per_layer_loss("l1") is L.l1
    with pytest.raises(ValueError, match="'l2l' is an objective, not a per-layer loss"):
        L.per_layer_loss("l2l")
    with pytest.raises(RegistryError, match="unknown per-layer loss 'msee'; did you mean 'mse'"):
        L.per_layer_loss("msee")
