"""Stacking: growing the student's depth during training, and what that saves.

Four pure pieces and one surgery:

- :func:`plan` (registry :data:`STACKING`): for each layer of the deeper stack, the index
  of the old layer it is copied from (ARCHITECTURE.md, "The methods, precisely").
- :func:`layer_map`: which teacher layer each student layer is matched to.
- :func:`stage_depths` / :func:`stage_steps`: depth and step count of each stage.
- :func:`theoretical_cost` / :func:`theoretical_speedup`: the per-layer cost model.
- :func:`grow`: rebuilds the student's layers, projections and targets from a plan, and
  re-points the optimizer (Adam moments copied with the weights, or reset) in place.

Growth variants, for ``depth = 6``, ``add = 3``::

    top          0 1 2 3 4 5 3' 4' 5'        copy the top block, append
    bottom       0' 1' 2' 0 1 2 3 4 5        copy the bottom block, prepend
    middle       0 1 2 3 1' 2' 3' 4 5        copy the middle block (start (depth-add)//2), insert after it
    interleaved  0 0' 1 2 2' 3 4 4' 5        copy every b = depth // add layers, insert after each

Size: over 500 lines on purpose: the plans, the layer map, the stage sizes with their
load-time checks (:func:`plan_stages`), the cost model and :func:`grow` (the one surgery that
applies a plan) share the plan and stage types; they are read and tested together
(ARCHITECTURE.md keeps them in one module).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import torch
from torch import nn

from harness.config import ConfigError, RunConfig
from harness.registry import Registry

STACKING: Registry = Registry("stacking variant")


class Plan(list):
    """A growth plan: ``list[int]`` of source layers (``-1`` = freshly initialised), plus
    ``new``, the positions that are the new copies (the rest keep the original layers),
    and ``sources``, the source of every position (never ``-1``; a fresh layer's
    target is inherited from it). Compares equal to the plain list."""

    def __init__(self, entries: Sequence[int], new: Sequence[int], sources: Sequence[int]) -> None:
        super().__init__(entries)
        self.new = tuple(new)
        self.sources = tuple(sources)


def _check(variant: str, depth: int, add: int) -> None:
    if depth < 1:
        raise ValueError(f"stacking {variant}: depth must be >= 1, got {depth}")
    if add < 0:
        raise ValueError(f"stacking {variant}: add must be >= 0, got {add}")
    if add > depth:
        raise ValueError(f"stacking {variant}: cannot copy {add} layers out of {depth} (add must be <= depth)")


def _from_blocks(stack: list[tuple[int, bool]]) -> tuple[list[int], list[int]]:
    return [s for s, _ in stack], [i for i, (_, new) in enumerate(stack) if new]


@STACKING.register("none")
def plan_none(depth: int, add: int, offset: int = 0) -> tuple[list[int], list[int]]:
    """No growth: full depth from step 0; any ``add > 0`` is an error."""
    if add:
        raise ValueError(f"stacking none never grows, but add={add} was asked for")
    _check("none", depth, 0)
    return list(range(depth)), []


@STACKING.register("top")
def plan_top(depth: int, add: int, offset: int = 0) -> tuple[list[int], list[int]]:
    """Copy the top ``add`` layers and append them (gradual stacking; ``add = depth`` is
    progressive stacking)."""
    _check("top", depth, add)
    return _from_blocks([(i, False) for i in range(depth)] + [(i, True) for i in range(depth - add, depth)])


@STACKING.register("bottom")
def plan_bottom(depth: int, add: int, offset: int = 0) -> tuple[list[int], list[int]]:
    """Copy the bottom ``add`` layers and prepend them (an ablation)."""
    _check("bottom", depth, add)
    return _from_blocks([(i, True) for i in range(add)] + [(i, False) for i in range(depth)])


@STACKING.register("middle")
def plan_middle(depth: int, add: int, offset: int = 0) -> tuple[list[int], list[int]]:
    """Copy the middle block ``[s, s + add)`` with ``s = (depth - add) // 2`` and insert
    the copy right after it (MIDAS)."""
    _check("middle", depth, add)
    s = (depth - add) // 2
    old = [(i, False) for i in range(depth)]
    return _from_blocks(old[: s + add] + [(i, True) for i in range(s, s + add)] + old[s + add:])


@STACKING.register("interleaved")
def plan_interleaved(depth: int, add: int, offset: int = 0) -> tuple[list[int], list[int]]:
    """Copy the layers ``offset + k * b`` (``k < add``, ``b = depth // add``) and insert
    each copy right after its original (the paper's method)."""
    _check("interleaved", depth, add)
    if add == 0:
        return list(range(depth)), []
    b = depth // add
    chosen = {offset + k * b for k in range(add)}
    if max(chosen) >= depth:
        raise ValueError(
            f"stacking interleaved: offset {offset} puts copy {add} at layer {max(chosen)} of {depth} "
            f"(offset must be < {depth - (add - 1) * b})"
        )
    stack: list[tuple[int, bool]] = []
    for i in range(depth):
        stack.append((i, False))
        if i in chosen:
            stack.append((i, True))
    return _from_blocks(stack)


def plan(variant: str, depth: int, add: int, **opts: Any) -> Plan:
    """The growth plan of ``variant`` from ``depth`` to ``depth + add`` layers.

    Args:
        variant: a name in :data:`STACKING` (``none``, ``top``, ``bottom``, ``middle``,
            ``interleaved``).
        depth: current depth.
        add: layers to add.
        **opts: ``offset`` (interleaved: first copied layer, default 0; ignored by the
            others); ``init`` (``copy``/``zero``/``random``; ``random`` marks the new
            positions ``-1``).

    Returns:
        A :class:`Plan`: for each new layer (bottom to top) the old layer it copies.
        ``plan('interleaved', 6, 3) == [0, 0, 1, 2, 2, 3, 4, 4, 5]``.

    Raises:
        RegistryError: unknown variant. ValueError: impossible sizes, unknown option.
    """
    fn = STACKING.get(variant)
    init = opts.pop("init", "copy")
    offset = opts.pop("offset", 0)
    if opts:
        raise ValueError(f"stacking plan: unknown option(s) {sorted(opts)}; known: offset, init")
    if init not in ("copy", "zero", "random"):
        raise ValueError(f"stacking plan: init must be copy, zero or random, got {init!r}")
    if offset < 0:
        raise ValueError(f"stacking plan: offset must be >= 0, got {offset}")
    sources, new = fn(depth, add, offset=offset)
    entries = [-1 if (init == "random" and i in new) else s for i, s in enumerate(sources)]
    return Plan(entries, new, sources)


def layer_map(kind: str, num_layers: int, teacher_layers: int,
              previous: Optional[Sequence[int]] = None, plan: Optional[Sequence[int]] = None) -> list[int]:
    """Teacher hidden-state index matched by each student layer.

    Args:
        kind: ``proportional`` (layer ``i`` of ``L`` -> ``round((i + 1) * T / L)``,
            halves up) or ``fixed`` (each layer keeps the target it had; copies inherit
            their original's: needs ``previous`` and ``plan``).
        num_layers: student depth ``L`` (after growth).
        teacher_layers: teacher depth ``T``.
        previous: targets before growth (``fixed``).
        plan: the growth plan (``fixed``).

    Returns:
        ``L`` teacher layer indices (1-based hidden-state indices).
    """
    from harness.student import proportional_targets

    if kind == "proportional":
        return proportional_targets(num_layers, teacher_layers)
    if kind != "fixed":
        raise ValueError(f"layer_map must be 'proportional' or 'fixed', got {kind!r}")
    if previous is None or plan is None:
        return proportional_targets(num_layers, teacher_layers)
    sources = getattr(plan, "sources", None) or _fill_fresh(list(plan))
    if len(sources) != num_layers:
        raise ValueError(f"layer_map: plan has {len(sources)} layers but num_layers is {num_layers}")
    return [int(previous[s]) for s in sources]


def _fill_fresh(entries: list[int]) -> list[int]:
    """Sources for a plain plan with ``-1`` entries: a fresh layer takes the source of the
    layer below it (or above, at the bottom)."""
    out = list(entries)
    for i, s in enumerate(out):
        if s < 0 and i > 0:
            out[i] = out[i - 1]
    for i in range(len(out) - 1, -1, -1):
        if out[i] < 0:
            if i + 1 >= len(out) or out[i + 1] < 0:
                raise ValueError(f"plan {entries} has no source layer at all")
            out[i] = out[i + 1]
    return out


def check_growths(variant: str, depths: Sequence[int], **opts: Any) -> list[Plan]:
    """Plan every growth of a stage schedule before training starts.

    An option can suit the first growth and not a later one (the interleaved ``offset``
    must be below ``depth - (add - 1) * (depth // add)`` at *every* depth), so a run
    config is checked against all of them at load time rather than at the failing growth.

    Args:
        variant: a name in :data:`STACKING`.
        depths: depth of each stage (:func:`stage_depths`).
        **opts: as for :func:`plan` (``offset``, ``init``).

    Returns:
        The plan of each growth ``depths[s - 1] -> depths[s]``, in order.

    Raises:
        ValueError: one line naming the failing growth; for an ``offset`` that some growth
            rejects, the largest offset every growth accepts is suggested.
    """
    plans = []
    for s in range(1, len(depths)):
        try:
            plans.append(plan(variant, depths[s - 1], depths[s] - depths[s - 1], **opts))
        except ValueError as err:
            msg = f"growth {s} ({depths[s - 1]} -> {depths[s]} layers): {err}"
            offset = opts.get("offset", 0)
            if offset > 0:
                ok = [o for o in range(offset) if _plans_all(variant, depths, {**opts, "offset": o})]
                if ok:
                    msg += f"; did you mean stacking.offset={max(ok)}?"
            raise ValueError(msg) from None
    return plans


def _plans_all(variant: str, depths: Sequence[int], opts: dict) -> bool:
    try:
        for s in range(1, len(depths)):
            plan(variant, depths[s - 1], depths[s] - depths[s - 1], **opts)
    except ValueError:
        return False
    return True


# ----------------------------------------------------------------------------- stages


def stage_depths(final_layers: int, stages: int, add: int) -> list[int]:
    """Depth of each stage: ``final - (B - 1) * add``, ..., ``final``.

    ``stage_depths(12, 4, 3) == [3, 6, 9, 12]``; one stage is ``[final]``.

    Raises:
        ValueError: the first stage would have fewer than one layer.
    """
    if stages < 1 or final_layers < 1 or add < 0:
        raise ValueError(f"stage_depths: need stages >= 1, layers >= 1, add >= 0 (got {stages}, {final_layers}, {add})")
    if stages == 1:
        return [final_layers]
    if add < 1:
        raise ValueError(f"stage_depths: {stages} stages need add >= 1")
    first = final_layers - (stages - 1) * add
    if first < 1:
        raise ValueError(
            f"stage_depths: {stages} stages adding {add} cannot end at {final_layers} layers "
            f"(the first stage would have {first}); lower stacking.stages or stacking.add"
        )
    return [first + s * add for s in range(stages)]


def stage_steps(total_steps: int, stages: int, schedule: Union[str, Sequence[float]]) -> list[int]:
    """Integer steps per stage, summing exactly to ``total_steps``.

    Args:
        total_steps: steps of the whole run.
        stages: ``B``.
        schedule: ``equal`` (same weight per stage), ``proportional`` (weights 1:2:...:B,
            the paper's "prop-1") or ``B`` fractions.

    Returns:
        ``B`` step counts, each >= 1: floors of the exact shares, the leftover steps going
        one each to the largest remainders (ties to the later, deeper stage).
        ``stage_steps(100, 4, 'proportional') == [10, 20, 30, 40]``.
    """
    if stages < 1:
        raise ValueError(f"stage_steps: stages must be >= 1, got {stages}")
    if total_steps < stages:
        raise ValueError(f"stage_steps: {total_steps} steps cannot fill {stages} stages")
    if schedule == "equal":
        weights = [1.0] * stages
    elif schedule == "proportional":
        weights = [float(s + 1) for s in range(stages)]
    elif isinstance(schedule, str):
        raise ValueError(f"stage_steps: schedule must be 'equal', 'proportional' or fractions, got {schedule!r}")
    else:
        weights = [float(f) for f in schedule]
        if len(weights) != stages or any(w <= 0 for w in weights):
            raise ValueError(f"stage_steps: need {stages} positive fractions, got {list(schedule)}")
    total_w = sum(weights)
    exact = [total_steps * w / total_w for w in weights]
    steps = [int(math.floor(e)) for e in exact]
    left = total_steps - sum(steps)
    order = sorted(range(stages), key=lambda i: (-(exact[i] - steps[i]), -i))
    for i in order[:left]:
        steps[i] += 1
    for i in range(stages):  # every stage runs at least one step
        if steps[i] == 0:
            j = max(range(stages), key=lambda k: steps[k])
            steps[j] -= 1
            steps[i] = 1
    return steps


def stage_boundaries(stage_steps: Sequence[int]) -> list[int]:
    """First global step of each stage: ``[0, s0, s0 + s1, ...]`` (length B)."""
    out, acc = [], 0
    for s in stage_steps:
        out.append(acc)
        acc += s
    return out


@dataclass
class Stages:
    """Depth and steps of each stage of a run (``none``: one full-depth stage)."""

    depths: list[int]
    steps: list[int]

    @property
    def starts(self) -> list[int]:
        """First global step of each stage."""
        return stage_boundaries(self.steps)

    @property
    def total(self) -> int:
        return sum(self.steps)

    def __len__(self) -> int:
        return len(self.depths)


def plan_stages(cfg: RunConfig) -> Stages:
    """A run config's stages, with every growth planned (:func:`check_growths`).

    The checks of a run config that need the student presets and this module, which
    ``harness.config`` sits below: ``harness validate``, sweeps (every trial) and the run
    itself call it, so that an option that fails only at a later growth (the interleaved
    ``offset``) fails at load time.

    Raises:
        ConfigError: one line naming the key, with a suggestion where one is known.
    """
    from harness.student import PRESETS

    sc = cfg.stacking
    final_depth = cfg.student.layers or PRESETS[cfg.student.preset]["layers"]
    n_stages = sc.num_stages
    add = sc.add or (final_depth // n_stages if n_stages > 1 else 0)
    try:
        depths = stage_depths(final_depth, n_stages, add)
        steps = stage_steps(cfg.train.steps, n_stages, sc.schedule)
    except ValueError as err:
        raise ConfigError(f"stacking: {err}") from None
    try:
        check_growths(sc.variant, depths, offset=sc.offset, init=sc.init)
    except ValueError as err:
        key = "stacking.offset" if "offset" in str(err) else "stacking"
        raise ConfigError(f"{key}: {err}") from None
    return Stages(depths, steps)


# ----------------------------------------------------------------------------- cost model


def encoder_layer_flops(width: int, ffn: int, seq_frames: int) -> float:
    """Forward FLOPs per frame of one transformer layer (a multiply-add = 2 FLOPs).

    Q, K, V and output projections ``4 * 2 d^2``; feed-forward ``2 * 2 d f``; attention
    scores and the weighted sum ``2 * 2 T d`` (every frame attends to the ``T`` frames of
    its sequence). LayerNorms, softmax and activations are O(d) and left out.
    """
    return 8.0 * width * width + 4.0 * width * ffn + 4.0 * seq_frames * width


def conv_frontend_flops(layers: Sequence[Sequence[int]]) -> float:
    """Forward FLOPs per *output* frame of a wav2vec 2.0-style conv stack ``[(dim, kernel,
    stride), ...]``: layer ``i`` runs ``prod(strides above it)`` times per output frame."""
    total, in_dim = 0.0, 1
    strides = [int(s) for _, _, s in layers]
    for i, (dim, kernel, _) in enumerate(layers):
        per_output = math.prod(strides[i + 1:])
        total += 2.0 * in_dim * dim * kernel * per_output
        in_dim = dim
    return total


def upstream_forward_flops(num_layers: int, width: int, ffn: int, seq_frames: int,
                           frontend_flops: float = 0.0) -> float:
    """Forward FLOPs per frame of a transformer upstream (a teacher): its layers plus its
    front-end (e.g. :func:`conv_frontend_flops` of its conv stack). Feed it to
    :class:`CostModel` ``teacher_flops`` when the teacher runs live (0 when cached)."""
    return num_layers * encoder_layer_flops(width, ffn, seq_frames) + frontend_flops


@dataclass
class CostModel:
    """Per-frame training cost of a student at a given depth (FLOPs).

    ``cost(depth) = depth * layer + fixed`` per frame, where

    - ``layer`` = 3 x (encoder layer forward + its projection to the teacher width):
      training = forward + backward, and backward costs about twice the forward
      (gradients for the activations and for the weights);
    - ``fixed`` = 3 x (input projection + positional conv) + front-end + teacher, the
      front-end counting 1x when frozen and 3x when trainable, and front-end and teacher
      0 when their outputs come from the feature cache.

    A run's cost is ``frames_per_step * sum_s steps_s * cost(depth_s)``; the frame count
    cancels in a speedup, so it defaults to 1.

    Attributes:
        width, ffn: student layer shape.
        seq_frames: frames per sequence (attention cost; 200 = 4 s at 50 Hz).
        teacher_width: width of the per-layer projection targets (0 = no projections).
        frontend_dim: front-end channels (the input projection).
        conv_pos, conv_pos_groups: positional conv (0 = none).
        frontend_flops: front-end forward FLOPs per frame (0 = cached).
        frontend_trainable: the front-end is trained (3x) rather than frozen (1x).
        teacher_flops: teacher forward FLOPs per frame (0 = cached).
        frames_per_step: frames per optimisation step (batch x frames).
    """

    width: int
    ffn: int
    seq_frames: int = 200
    teacher_width: int = 0
    frontend_dim: int = 0
    conv_pos: int = 0
    conv_pos_groups: int = 1
    frontend_flops: float = 0.0
    frontend_trainable: bool = False
    teacher_flops: float = 0.0
    frames_per_step: int = 1

    def layer(self) -> float:
        """Training FLOPs per frame of one student layer (with its projection)."""
        return 3.0 * (encoder_layer_flops(self.width, self.ffn, self.seq_frames) + 2.0 * self.width * self.teacher_width)

    def fixed(self) -> float:
        """Training FLOPs per frame that do not depend on the depth."""
        pos = 2.0 * self.width * (self.width // max(1, self.conv_pos_groups)) * self.conv_pos if self.conv_pos else 0.0
        trained = 3.0 * (2.0 * self.frontend_dim * self.width + pos)
        fe = self.frontend_flops * (3.0 if self.frontend_trainable else 1.0)
        return trained + fe + self.teacher_flops

    def per_step(self, depth: int) -> float:
        """Training FLOPs of one step at ``depth``."""
        return self.frames_per_step * (depth * self.layer() + self.fixed())

    @classmethod
    def for_student(cls, student: Any, seq_frames: int = 200, frames_per_step: int = 1,
                    frontend_flops: float = 0.0, teacher_flops: float = 0.0) -> "CostModel":
        """The cost model of a :class:`harness.student.Student` (its shape)."""
        s = student.shape
        return cls(width=s.width, ffn=s.ffn, seq_frames=seq_frames,
                   teacher_width=s.teacher_width if s.target_mode == "l2l" else 0,
                   frontend_dim=s.frontend_dim, conv_pos=s.conv_pos, conv_pos_groups=s.conv_pos_groups,
                   frontend_flops=frontend_flops, frontend_trainable=s.frontend_trainable,
                   teacher_flops=teacher_flops, frames_per_step=frames_per_step)


def theoretical_cost(depths: Sequence[int], steps: Sequence[int], model: CostModel) -> float:
    """Training FLOPs of a schedule: ``sum_s steps[s] * model.per_step(depths[s])``."""
    if len(depths) != len(steps):
        raise ValueError(f"theoretical_cost: {len(depths)} depths but {len(steps)} step counts")
    return float(sum(n * model.per_step(d) for d, n in zip(depths, steps)))


def theoretical_speedup(depths: Sequence[int], steps: Sequence[int], model: CostModel) -> float:
    """cost(final depth for all steps) / cost(schedule): the training-time speedup that
    stacking would give if time were proportional to FLOPs."""
    full = theoretical_cost([depths[-1]], [sum(steps)], model)
    return full / theoretical_cost(depths, steps, model)


# ----------------------------------------------------------------------------- growth


def _zero_residual_outputs(layer: nn.Module) -> None:
    """Zero the outputs of both residual branches (attention ``out_proj`` and ``fc2``)."""
    with torch.no_grad():
        for lin in (layer.self_attn.out_proj, layer.fc2):
            lin.weight.zero_()
            lin.bias.zero_()


def _clone_state(state: dict) -> dict:
    return {k: (v.clone() if torch.is_tensor(v) else copy.deepcopy(v)) for k, v in state.items()}


def grow(model: nn.Module, optimizer: Optional[torch.optim.Optimizer], plan: Sequence[int],
         init: str = "copy", optim_state: str = "copy", layer_map: str = "fixed",
         teacher_layers: Optional[int] = None) -> None:
    """Grow ``model`` (a :class:`harness.student.Student`) by ``plan``, in place.

    Layers and L2L projections: positions that keep an original layer keep the very
    module (and its parameters and optimizer state); the new positions (``plan.new``; for
    a plain list, every repeated source after its first use and every ``-1``) get

    - ``copy``: a deep copy of the source layer and projection;
    - ``zero``: a copy whose residual-branch outputs (attention ``out_proj`` and ``fc2``,
      weight and bias) are zero. Exact identity for a pre-LN layer; for a post-LN layer the
      LayerNorms sit on the residual path, so the layer's mask ``m`` is also set to 0
      (MSG): ``x + m * (layer(x) - x) = x``; raise it with :func:`ramp_masks`;
    - ``random``: a freshly initialised layer and projection.

    Targets: ``fixed`` (copies inherit their source's) or ``proportional`` (recomputed).

    Optimizer (Adam/AdamW, one or more param groups): the old layer parameters in each
    group are replaced by the new stack's, in order; with ``optim_state='copy'`` each new
    parameter gets a clone of its source parameter's state (``exp_avg``, ``exp_avg_sq``,
    ``step``) — for ``random`` layers there is nothing to copy; with ``reset`` every
    parameter's state is dropped (a fresh Adam, as G_stack). The optimizer object, its
    param groups (lr, betas...) and so any attached LR scheduler stay the same.

    Args:
        model: the student; must have ``layers``, ``proj``, ``targets``, ``new_layer()``,
            ``new_proj()``, ``shape``.
        optimizer: its optimizer, or ``None``.
        plan: from :func:`plan`.
        init: ``copy``, ``zero`` or ``random``.
        optim_state: ``copy`` or ``reset``.
        layer_map: ``fixed`` or ``proportional``.
        teacher_layers: teacher depth for ``proportional`` (default ``model.shape.teacher_layers``).
    """
    if init not in ("copy", "zero", "random"):
        raise ValueError(f"grow: init must be copy, zero or random, got {init!r}")
    if optim_state not in ("copy", "reset"):
        raise ValueError(f"grow: optim_state must be copy or reset, got {optim_state!r}")
    old_layers = list(model.layers)
    old_proj = list(model.proj)
    l2l = len(old_proj) > 0
    entries = list(plan)
    sources = list(getattr(plan, "sources", None) or _fill_fresh(entries))
    if any(not 0 <= s < len(old_layers) for s in sources):
        raise ValueError(f"grow: plan {entries} refers to layers outside 0..{len(old_layers) - 1}")
    new_pos = set(getattr(plan, "new", ()))
    if not hasattr(plan, "new"):
        seen: set[int] = set()
        for i, s in enumerate(entries):
            if s < 0 or s in seen:
                new_pos.add(i)
            else:
                seen.add(s)
    device = next(model.parameters()).device

    layers, projs, pairs = [], [], []  # pairs: (new module, source module) for copies
    for i, s in enumerate(sources):
        if i not in new_pos:
            layers.append(old_layers[s])
            if l2l:
                projs.append(old_proj[s])
            continue
        if init == "random":
            layer = model.new_layer().to(device)
            proj = model.new_proj().to(device) if l2l else None
        else:
            layer = copy.deepcopy(old_layers[s])
            proj = copy.deepcopy(old_proj[s]) if l2l else None
            pairs.append((layer, old_layers[s]))
            if l2l:
                pairs.append((proj, old_proj[s]))
            if init == "zero":
                _zero_residual_outputs(layer)
                if not model.shape.layer_norm_first:
                    layer.set_mask(0.0)
        layers.append(layer)
        if l2l:
            projs.append(proj)

    old_targets = list(model.targets)
    model.layers = nn.ModuleList(layers)
    if l2l:
        model.proj = nn.ModuleList(projs)
        if layer_map == "fixed":
            model.targets = [int(old_targets[s]) for s in sources]
        elif layer_map == "proportional":
            from harness.student import proportional_targets

            model.targets = proportional_targets(len(layers), teacher_layers or model.shape.teacher_layers)
        else:
            raise ValueError(f"grow: layer_map must be fixed or proportional, got {layer_map!r}")
    if hasattr(model, "reset_id"):
        model.reset_id()
    if optimizer is not None:
        _repoint_optimizer(optimizer, old_layers + old_proj, layers + projs, pairs, optim_state)


def _repoint_optimizer(opt: torch.optim.Optimizer, old_modules: list[nn.Module], new_modules: list[nn.Module],
                       pairs: list[tuple[nn.Module, nn.Module]], optim_state: str) -> None:
    """Swap the old stack's parameters for the new stack's in ``opt``'s groups, in place."""
    old_params = {id(p): p for m in old_modules for p in m.parameters()}
    group_of = {id(p): gi for gi, g in enumerate(opt.param_groups) for p in g["params"]}
    # each new parameter -> the source parameter it was copied from (same module path)
    source_of: dict[int, torch.Tensor] = {}
    for new, src in pairs:
        for (_, pn), (_, ps) in zip(new.named_parameters(), src.named_parameters()):
            source_of[id(pn)] = ps
    # fresh (random) parameters join the group of the first layer's parameter of the same name
    by_name: dict[str, int] = {}
    for m in old_modules:
        for name, p in m.named_parameters():
            if id(p) in group_of:
                by_name.setdefault(name, group_of[id(p)])

    kept_groups = [[p for p in g["params"] if id(p) not in old_params] for g in opt.param_groups]
    new_state: dict[torch.Tensor, dict] = {}
    seen: set[int] = set()
    for m in new_modules:
        for name, p in m.named_parameters():
            if id(p) in seen:
                continue
            seen.add(id(p))
            src = source_of.get(id(p), p)
            gi = group_of.get(id(src), by_name.get(name))
            if gi is None or not p.requires_grad:
                continue  # its source was not being optimised (frozen)
            kept_groups[gi].append(p)
            if optim_state == "copy" and src in opt.state and opt.state[src]:
                new_state[p] = opt.state[src] if src is p else _clone_state(opt.state[src])
    for g, params in zip(opt.param_groups, kept_groups):
        g["params"] = params
    if optim_state == "reset":
        opt.state.clear()
    else:
        for p in list(opt.state):
            if id(p) in old_params:
                del opt.state[p]
        for p, st in new_state.items():
            opt.state[p] = st


def ramp_masks(model: nn.Module, steps_since_growth: int, ramp_steps: int) -> None:
    """Raise the masks of layers being blended in (``m < 1``) linearly to 1.

    ``m = min(1, steps_since_growth / ramp_steps)`` (never lowered: a layer still ramping
    from an earlier growth keeps its progress). The training loop calls this every step
    after a ``zero`` growth of a post-LN student; ``ramp_steps <= 0`` sets every mask to 1.

    Args:
        model: the student (its ``layers`` have ``mask`` buffers and ``set_mask``).
        steps_since_growth: optimizer steps taken since the growth (0 right after it).
        ramp_steps: steps from 0 to 1.
    """
    target = 1.0 if ramp_steps <= 0 else min(1.0, max(0.0, steps_since_growth / ramp_steps))
    for layer in model.layers:
        m = layer.mask_value
        if m < 1.0 and target > m:
            layer.set_mask(target)


def masks_settled(model: nn.Module) -> bool:
    """True when no layer is being blended in (every mask is 1)."""
    return all(layer.mask_value == 1.0 for layer in model.layers)
