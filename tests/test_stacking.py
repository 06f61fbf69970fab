"""Stacking: plan values, stage schedules, growth surgery (weights, function, Adam state),
the cost model, and a seeded tiny training run with a growth step for every variant."""

from __future__ import annotations

import copy

import pytest
import torch

from harness import stacking
from harness.losses import l2l_loss
from harness.registry import RegistryError
from harness.stacking import CostModel, grow, plan, ramp_masks, stage_depths, stage_steps
from harness.student import TeacherInfo, student_tiny
from tests.support.modules import StridedFrontend


pytestmark = pytest.mark.usefixtures("one_thread")
VARIANTS = ["top", "bottom", "middle", "interleaved"]


def make(depth: int = 3, pre_ln: bool = False, seed: int = 0, **kw):
    torch.manual_seed(seed)
    teacher = TeacherInfo(width=24, num_layers=6, frontend=StridedFrontend())
    return student_tiny(teacher, layers=depth, width=32, heads=4, ffn=64, conv_pos=8, conv_pos_groups=4,
                        layer_norm_first=pre_ln, **kw)


def batch(seed: int = 1, b: int = 3, t: int = 20, c: int = 12):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(b, t, c, generator=g)
    lengths = torch.tensor([t, t - 5, t - 9][:b])
    return feats, lengths


# ----------------------------------------------------------------------------- plan


def test_required_plan_values():
    assert plan("top", 6, 3) == [0, 1, 2, 3, 4, 5, 3, 4, 5]
    assert plan("bottom", 6, 3) == [0, 1, 2, 0, 1, 2, 3, 4, 5]
    assert plan("middle", 6, 3) == [0, 1, 2, 3, 1, 2, 3, 4, 5]
    assert plan("interleaved", 6, 3) == [0, 0, 1, 2, 2, 3, 4, 4, 5]
    assert plan("interleaved", 3, 3) == [0, 0, 1, 1, 2, 2]


def test_paper_schedule_interleaved_and_offset():
    assert plan("interleaved", 9, 3) == [0, 0, 1, 2, 3, 3, 4, 5, 6, 6, 7, 8]
    assert plan("interleaved", 6, 3, offset=1) == [0, 1, 1, 2, 3, 3, 4, 5, 5]
    with pytest.raises(ValueError, match="offset"):
        plan("interleaved", 6, 3, offset=2)
    # progressive stacking = top with add = depth
    assert plan("top", 3, 3) == [0, 1, 2, 0, 1, 2]
    assert plan("middle", 7, 3) == [0, 1, 2, 3, 4, 2, 3, 4, 5, 6]


def test_plan_new_positions_and_random():
    assert plan("bottom", 6, 3).new == (0, 1, 2)
    assert plan("top", 6, 3).new == (6, 7, 8)
    assert plan("middle", 6, 3).new == (4, 5, 6)
    assert plan("interleaved", 6, 3).new == (1, 4, 7)
    assert plan("interleaved", 6, 3, init="random") == [0, -1, 1, 2, -1, 3, 4, -1, 5]
    assert plan("bottom", 6, 3, init="random") == [-1, -1, -1, 0, 1, 2, 3, 4, 5]


def test_plan_errors():
    assert plan("none", 6, 0) == list(range(6))
    with pytest.raises(ValueError, match="never grows"):
        plan("none", 6, 3)
    with pytest.raises(RegistryError, match="interleaved"):
        plan("interleave", 6, 3)
    with pytest.raises(ValueError, match="add must be <= depth"):
        plan("top", 2, 3)
    with pytest.raises(ValueError, match="unknown option"):
        plan("top", 6, 3, ofset=1)
    assert sorted(stacking.STACKING.names()) == ["bottom", "interleaved", "middle", "none", "top"]


def test_every_variant_keeps_every_layer_once_plus_copies():
    for v in VARIANTS:
        for depth, add in [(3, 3), (6, 3), (9, 3), (4, 2), (5, 2), (8, 1)]:
            p = plan(v, depth, add)
            assert len(p) == depth + add
            assert sorted(set(p)) == list(range(depth))
            assert len(p.new) == add


# ----------------------------------------------------------------------------- stages


def test_stage_depths():
    assert stage_depths(12, 4, 3) == [3, 6, 9, 12]
    assert stage_depths(8, 4, 2) == [2, 4, 6, 8]
    assert stage_depths(12, 1, 0) == [12]
    with pytest.raises(ValueError, match="first stage"):
        stage_depths(6, 4, 2)


def test_stage_steps_values():
    assert stage_steps(100, 4, "equal") == [25, 25, 25, 25]
    assert stage_steps(100, 4, "proportional") == [10, 20, 30, 40]
    assert stage_steps(200_000, 4, "proportional") == [20_000, 40_000, 60_000, 80_000]
    assert stage_steps(100, 3, "equal") == [33, 33, 34]
    assert stage_steps(10, 3, [0.5, 0.25, 0.25]) == [5, 2, 3]
    assert stage_steps(7, 1, "equal") == [7]
    with pytest.raises(ValueError):
        stage_steps(3, 4, "equal")
    with pytest.raises(ValueError):
        stage_steps(10, 2, "fast")


@pytest.mark.parametrize("total", [4, 5, 17, 99, 1000, 12345])
@pytest.mark.parametrize("stages", [1, 2, 3, 4])
@pytest.mark.parametrize("schedule", ["equal", "proportional", "fracs"])
def test_stage_steps_sum_exactly(total, stages, schedule):
    sched = [1.0 / stages] * stages if schedule == "fracs" else schedule
    steps = stage_steps(total, stages, sched)
    assert sum(steps) == total and len(steps) == stages and min(steps) >= 1


def test_layer_map():
    assert stacking.layer_map("proportional", 3, 12) == [4, 8, 12]
    assert stacking.layer_map("proportional", 8, 12) == [2, 3, 5, 6, 8, 9, 11, 12]
    p = plan("interleaved", 3, 3)
    assert stacking.layer_map("fixed", 6, 12, previous=[4, 8, 12], plan=p) == [4, 4, 8, 8, 12, 12]


# ----------------------------------------------------------------------------- grow


@pytest.mark.parametrize("variant", VARIANTS)
def test_grow_copy_new_layers_equal_sources(variant):
    s = make(6)
    old_layers = [{k: v.clone() for k, v in m.state_dict().items()} for m in s.layers]
    old_proj = [{k: v.clone() for k, v in m.state_dict().items()} for m in s.proj]
    old_targets = list(s.targets)
    p = plan(variant, 6, 3)
    grow(s, None, p, init="copy")
    assert len(s.layers) == len(s.proj) == len(s.targets) == 9
    assert len({id(m) for m in s.layers}) == 9  # copies are distinct modules
    for i, src in enumerate(p):
        for k, v in s.layers[i].state_dict().items():
            assert torch.equal(v, old_layers[src][k]), (variant, i, k)
        for k, v in s.proj[i].state_dict().items():
            assert torch.equal(v, old_proj[src][k])
        assert s.targets[i] == old_targets[src]  # fixed map: copies inherit


def test_grow_proportional_map_and_random():
    s = make(3)
    grow(s, None, plan("top", 3, 3), init="copy", layer_map="proportional")
    assert s.targets == [1, 2, 3, 4, 5, 6]
    s = make(3)
    before = [m.fc1.weight.clone() for m in s.layers]
    p = plan("interleaved", 3, 3, init="random")
    grow(s, None, p, init="random")
    assert torch.equal(s.layers[0].fc1.weight, before[0])
    assert not torch.equal(s.layers[1].fc1.weight, before[0])  # fresh, not a copy
    assert s.targets == [2, 2, 4, 4, 6, 6]


@pytest.mark.parametrize("pre_ln", [True, False])
@pytest.mark.parametrize("variant", VARIANTS)
def test_grow_zero_preserves_function(variant, pre_ln):
    s = make(6, pre_ln=pre_ln).eval()
    # move every weight off its initialisation so the check is not trivial
    with torch.no_grad():
        for prm in s.parameters():
            prm.add_(0.05 * torch.randn_like(prm))
    feats, lengths = batch()
    before = s.forward_features(feats, lengths)
    p = plan(variant, 6, 3)
    grow(s, None, p, init="zero")
    after = s.forward_features(feats, lengths)
    assert torch.allclose(before[-1], after[-1], atol=1e-5)
    # every old layer's output is still in the stack (at its original's position)
    for old_i in range(6):
        (pos,) = [i for i, src in enumerate(p) if src == old_i and i not in p.new]
        assert torch.allclose(before[old_i + 1], after[pos + 1], atol=1e-5)
    masks = [m.mask_value for m in s.layers]
    if pre_ln:
        assert masks == [1.0] * 9  # zeroed residual outputs suffice
    else:
        assert [i for i, m in enumerate(masks) if m == 0.0] == list(p.new)
        ramp_masks(s, 5, 10)
        assert [s.layers[i].mask_value for i in p.new] == [0.5] * 3
        ramp_masks(s, 3, 10)  # never lowered
        assert [s.layers[i].mask_value for i in p.new] == [0.5] * 3
        ramp_masks(s, 10, 10)
        assert stacking.masks_settled(s)


def _adam_steps(s, opt, n: int = 3):
    feats, lengths = batch()
    teacher = {k: torch.randn(3, 20, 24) for k in range(7)}
    mask = torch.arange(20)[None] < lengths[:, None]
    for _ in range(n):
        loss, _ = l2l_loss(s.project(s.forward_features(feats, lengths)), teacher, s.targets, "mse", 0.5, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return feats, lengths, teacher, mask


@pytest.mark.parametrize("variant", VARIANTS)
def test_grow_copies_adam_moments(variant):
    s = make(6)
    opt = torch.optim.AdamW([q for q in s.parameters() if q.requires_grad], lr=1e-3)
    _adam_steps(s, opt)
    src_state = {name: {k: v.clone() for k, v in opt.state[p].items()}
                 for name, p in s.named_parameters() if name.startswith(("layers.", "proj."))}
    p = plan(variant, 6, 3)
    grow(s, opt, p, init="copy", optim_state="copy")
    params = [q for g in opt.param_groups for q in g["params"]]
    assert {id(q) for q in params} == {id(q) for q in s.parameters() if q.requires_grad}
    assert len(params) == len(set(map(id, params)))
    for i, src in enumerate(p):
        for prefix, mods in (("layers", s.layers), ("proj", s.proj)):
            for name, prm in mods[i].named_parameters():
                expect = src_state[f"{prefix}.{src}.{name}"]
                got = opt.state[prm]
                assert set(got) == set(expect)
                for k in expect:
                    assert torch.equal(got[k], expect[k]), (i, name, k)
    # copies own their state (not shared tensors with the originals)
    a = p.new[0]
    (b,) = [i for i, src in enumerate(p) if src == p[a] and i not in p.new]
    assert opt.state[s.layers[a].fc1.weight]["exp_avg"] is not opt.state[s.layers[b].fc1.weight]["exp_avg"]


def test_grow_reset_and_scheduler_survives():
    s = make(3)
    opt = torch.optim.AdamW([q for q in s.parameters() if q.requires_grad], lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (1 + step))
    _adam_steps(s, opt)
    sched.step()
    grow(s, opt, plan("interleaved", 3, 3), init="copy", optim_state="reset")
    assert len(opt.state) == 0
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3 / 3)
    _adam_steps(s, opt, 1)  # the optimizer steps the new layers
    assert all(len(opt.state[q]) for q in s.layers[1].parameters())


def test_grow_pred_heads_student():
    s = make(3, target_mode="pred_heads", pred_head_layers=[2, 4, 6])
    opt = torch.optim.AdamW([q for q in s.parameters() if q.requires_grad], lr=1e-3)
    grow(s, opt, plan("top", 3, 3), init="copy")
    assert len(s.layers) == 6 and s.targets == [2, 4, 6] and len(s.proj) == 0
    feats, lengths = batch()
    assert len(s.project(s.forward_features(feats, lengths))) == 3


# ----------------------------------------------------------------------------- seeded run


@pytest.mark.parametrize("variant", ["none"] + VARIANTS)
@pytest.mark.parametrize("init", ["copy", "zero"])
def test_tiny_run_with_growth_lowers_loss(variant, init):
    """20 seeded steps (10 at depth 2, growth to 4, 10 more) on fixed random features and
    targets: the loss goes down for every variant."""
    torch.manual_seed(0)
    depth = 4 if variant == "none" else 2
    s = make(depth, seed=0)
    opt = torch.optim.AdamW(s.parameters(), lr=3e-3)
    feats, lengths = batch(seed=3)
    g = torch.Generator().manual_seed(4)
    teacher = {k: torch.randn(3, 20, 24, generator=g) for k in range(7)}
    mask = torch.arange(20)[None] < lengths[:, None]
    losses = []
    for step in range(20):
        if step == 10 and variant != "none":
            grow(s, opt, plan(variant, 2, 2), init=init, optim_state="copy")
        if init == "zero" and step >= 10:
            ramp_masks(s, step - 10, 5)
        loss, _ = l2l_loss(s.project(s.forward_features(feats, lengths)), teacher, s.targets, "mse", 0.5, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert len(s.layers) == 4
    assert losses[-1] < 0.9 * losses[0], losses


# ----------------------------------------------------------------------------- cost


def test_cost_model_closed_form():
    m = CostModel(width=4, ffn=8, seq_frames=10)
    # forward per frame: 8*16 + 4*4*8 + 4*10*4 = 128 + 128 + 160 = 416; training x3
    assert stacking.encoder_layer_flops(4, 8, 10) == 416
    assert m.layer() == 3 * 416
    assert m.fixed() == 0
    assert stacking.theoretical_cost([1, 2], [10, 5], m) == 10 * 1248 + 5 * 2 * 1248
    # with only per-layer costs the speedup is a ratio of layer-steps
    assert stacking.theoretical_speedup([3, 6, 9, 12], stage_steps(400, 4, "equal"), m) == pytest.approx(48 / 30)
    assert stacking.theoretical_speedup([3, 6, 9, 12], stage_steps(400, 4, "proportional"), m) == pytest.approx(120 / 90)
    # uncached teacher and front-end costs shrink the speedup
    slow = CostModel(width=4, ffn=8, seq_frames=10, teacher_flops=10 * 1248.0, frontend_flops=1248.0)
    assert slow.fixed() == 11 * 1248
    assert stacking.theoretical_speedup([3, 6, 9, 12], [100] * 4, slow) == pytest.approx(
        400 * (12 + 11) / (100 * (30 + 44)))


def test_conv_frontend_flops():
    # one layer (C=2, K=3, stride 2), then (C=4, K=2, stride 1): per output frame
    # layer 0 runs once per layer-1 input frame (stride above = 1): 2*1*2*3 = 12; layer 1: 2*2*4*2 = 32
    assert stacking.conv_frontend_flops([(2, 3, 2), (4, 2, 1)]) == 44
    assert stacking.conv_frontend_flops([(2, 3, 2), (4, 2, 2)]) == 2 * 12 + 32


@pytest.mark.parametrize("init", ["copy", "zero"])
def test_resume_by_replaying_growth(init):
    """What a resumed run does: rebuild at the first depth, replay the growth on a fresh
    optimizer, load both state dicts; the next step is then identical."""
    feats, lengths = batch()
    g = torch.Generator().manual_seed(5)
    teacher = {k: torch.randn(3, 20, 24, generator=g) for k in range(7)}
    mask = torch.arange(20)[None] < lengths[:, None]

    def step(s, opt):
        loss, _ = l2l_loss(s.project(s.forward_features(feats, lengths)), teacher, s.targets, "mse", 0.5, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return float(loss.detach())

    def fresh():
        s = make(2, seed=0)
        return s, torch.optim.AdamW([q for q in s.parameters() if q.requires_grad], lr=1e-3)

    a, opt_a = fresh()
    step(a, opt_a)
    grow(a, opt_a, plan("interleaved", 2, 2), init=init)
    ramp_masks(a, 1, 4)
    step(a, opt_a)
    saved = ({k: v.clone() for k, v in a.state_dict().items()}, copy.deepcopy(opt_a.state_dict()))
    b, opt_b = fresh()
    grow(b, opt_b, plan("interleaved", 2, 2), init=init)
    b.load_state_dict(saved[0])
    opt_b.load_state_dict(saved[1])
    assert [m.mask_value for m in b.layers] == [m.mask_value for m in a.layers]
    assert step(a, opt_a) == step(b, opt_b)
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(p, q), n


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bf16_growth_on_cuda():
    dev = torch.device("cuda")
    s = make(2).to(dev)
    opt = torch.optim.AdamW([q for q in s.parameters() if q.requires_grad], lr=3e-3)
    feats, lengths = batch()
    feats, lengths = feats.to(dev), lengths.to(dev)
    teacher = {k: torch.randn(3, 20, 24, device=dev) for k in range(7)}
    mask = torch.arange(20, device=dev)[None] < lengths[:, None]
    losses = []
    for i in range(20):
        if i == 10:
            grow(s, opt, plan("interleaved", 2, 2), init="zero")
        if i >= 10:
            ramp_masks(s, i - 10, 5)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss, _ = l2l_loss(s.project(s.forward_features(feats, lengths)), teacher, s.targets, "mse", 0.5, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert all(p.device.type == "cuda" for p in s.parameters())
    assert losses[-1] < 0.9 * losses[0]


def test_upstream_forward_flops():
    # a 12 x 768 (FFN 3072) teacher on 200-frame sequences, no front-end
    assert stacking.upstream_forward_flops(12, 768, 3072, 200) == 12 * (8 * 768**2 + 4 * 768 * 3072 + 4 * 200 * 768)
    assert stacking.upstream_forward_flops(1, 4, 8, 10, frontend_flops=5.0) == 421.0


@pytest.mark.parametrize("init", ["copy", "random"])
def test_grow_keeps_param_group_membership(init):
    """Weight decay on matrices only (two groups): new parameters join their source's group."""
    s = make(3)
    named = [(n, q) for n, q in s.named_parameters() if q.requires_grad]
    decay = [q for n, q in named if q.dim() >= 2]
    no_decay = [q for n, q in named if q.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}], lr=1e-3)
    _adam_steps(s, opt, 1)
    grow(s, opt, plan("middle", 3, 2, init=init), init=init)
    groups = [{id(q) for q in g["params"]} for g in opt.param_groups]
    for n, q in s.named_parameters():
        if q.requires_grad:
            assert (id(q) in groups[0]) == (q.dim() >= 2) and (id(q) in groups[1]) == (q.dim() < 2), n
    _adam_steps(s, opt, 1)
