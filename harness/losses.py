"""Distillation losses: per-layer criteria (registry :data:`CRITERIA`) and objectives
(registry :data:`OBJECTIVES`).

Criteria compare one student layer with one target, ``fn(pred (B, T, D), target (B, T,
D), frame_mask (B, T) | None) -> scalar``, averaged over the valid frames only (padding
never counts); a run config names one as ``loss.per_layer``:

- ``mse``: mean squared error over valid frames and dimensions;
- ``l1``: mean absolute error over valid frames and dimensions;
- ``cos``: mean over valid frames of ``1 - cos(pred, target)``;
- ``l1_cos``: DistilHuBERT's ``l1 + mean(-log sigmoid(cos))`` (cosine weight 1).

Objectives combine criteria (or logits) into the training loss and return ``(total,
parts)``; a run config names one as ``loss.objective``. They come in three call families:

- feature distillation, ``fn(preds, teacher_states, targets, per_layer, w, frame_mask)``:
  ``l2l`` (output-layer loss + ``w`` x mean of the intermediate-layer losses) and
  ``pred_heads`` (mean over DistilHuBERT's prediction heads);
- feature ASKD, ``fn(preds, teacher_states, ema_preds, targets, alpha, per_layer, w,
  frame_mask)``: ``askd_l2l`` (teacher term weighted by :func:`askd_alpha`, the rest on
  self-distillation against :class:`EmaTeacher`);
- logits, ``fn(student_logits, teacher_logits, [ema_logits,] labels, ...)``: ``logit_kd``
  (``ce_weight * CE + kd_weight * KL(t || s) * T^2``) and ``askd_logit`` (the ASR track).

Losses are computed in float32 whatever the autocast dtype of their inputs.
"""

from __future__ import annotations

import copy
import math
from typing import Mapping, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from harness.registry import Registry

CRITERIA: Registry = Registry("per-layer loss")
OBJECTIVES: Registry = Registry("objective")

# teacher states: a list indexed by hidden-state index (None where not loaded) or a dict
TeacherStates = Union[Sequence[Optional[torch.Tensor]], Mapping[int, torch.Tensor]]


def _masked_mean(values: torch.Tensor, frame_mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Mean of ``values`` (B, T) over the frames where ``frame_mask`` (B, T) is True."""
    if frame_mask is None:
        return values.mean()
    m = frame_mask.to(values.dtype)
    return (values * m).sum() / m.sum().clamp(min=1.0)


def _check(pred: torch.Tensor, target: torch.Tensor, frame_mask: Optional[torch.Tensor]) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"loss: prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    if frame_mask is not None and tuple(frame_mask.shape) != tuple(pred.shape[:2]):
        raise ValueError(f"loss: frame_mask {tuple(frame_mask.shape)} does not match (B, T) = {tuple(pred.shape[:2])}")


@CRITERIA.register("mse")
def mse(pred: torch.Tensor, target: torch.Tensor, frame_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean squared error over valid frames and all dimensions."""
    _check(pred, target, frame_mask)
    return _masked_mean((pred.float() - target.float()).pow(2).mean(-1), frame_mask)


@CRITERIA.register("l1")
def l1(pred: torch.Tensor, target: torch.Tensor, frame_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean absolute error over valid frames and all dimensions."""
    _check(pred, target, frame_mask)
    return _masked_mean((pred.float() - target.float()).abs().mean(-1), frame_mask)


@CRITERIA.register("cos")
def cos(pred: torch.Tensor, target: torch.Tensor, frame_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean over valid frames of ``1 - cos(pred, target)`` (0 when aligned, 2 when opposite)."""
    _check(pred, target, frame_mask)
    return _masked_mean(1.0 - F.cosine_similarity(pred.float(), target.float(), dim=-1), frame_mask)


@CRITERIA.register("l1_cos")
def l1_cos(pred: torch.Tensor, target: torch.Tensor, frame_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """DistilHuBERT: ``l1 + mean over valid frames of -log sigmoid(cos(pred, target))``."""
    _check(pred, target, frame_mask)
    sim = F.cosine_similarity(pred.float(), target.float(), dim=-1)
    return l1(pred, target, frame_mask) + _masked_mean(-F.logsigmoid(sim), frame_mask)


def per_layer_loss(name: str):
    """The per-layer criterion called ``name`` (``mse``, ``l1``, ``cos``, ``l1_cos``).

    Raises:
        ValueError: ``name`` is an objective. RegistryError: unknown name (nearest listed).
    """
    if name in OBJECTIVES:
        raise ValueError(f"{name!r} is an objective, not a per-layer loss; use one of {', '.join(CRITERIA.names())}")
    return CRITERIA.get(name)


def _teacher(teacher_states: TeacherStates, k: int) -> torch.Tensor:
    try:
        t = teacher_states[k]
    except (IndexError, KeyError):
        t = None
    if t is None:
        raise ValueError(f"loss: teacher hidden state {k} is needed as a target but was not provided")
    return t


@OBJECTIVES.register("l2l")
def l2l_loss(student_proj: Sequence[torch.Tensor], teacher_states: TeacherStates, targets: Sequence[int],
             per_layer: str = "mse", w: float = 0.5,
             frame_mask: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Layer-to-layer distillation: loss of the last layer + ``w`` x mean of the others.

    Args:
        student_proj: ``L`` projected student states ``(B, T, D_teacher)``, bottom to top.
        teacher_states: teacher hidden states by index (list with ``None`` gaps, or dict).
        targets: ``L`` teacher indices, ``targets[i]`` for ``student_proj[i]``.
        per_layer: ``mse``, ``l1``, ``cos`` or ``l1_cos``.
        w: weight of the mean intermediate-layer loss (0.5 in the paper).
        frame_mask: ``(B, T)`` True on valid frames.

    Returns:
        ``(total, parts)``; parts (detached): ``out`` (last layer's loss) and ``inter``
        (mean intermediate loss; 0 for a one-layer student).
    """
    if len(student_proj) != len(targets) or not targets:
        raise ValueError(f"l2l_loss: {len(student_proj)} student states for {len(targets)} targets")
    fn = per_layer_loss(per_layer)
    losses = [fn(p, _teacher(teacher_states, k), frame_mask) for p, k in zip(student_proj, targets)]
    out = losses[-1]
    inter = torch.stack(losses[:-1]).mean() if len(losses) > 1 else out.new_zeros(())
    total = out + w * inter
    return total, {"out": out.detach(), "inter": inter.detach()}


@OBJECTIVES.register("pred_heads")
def pred_head_loss(student_preds: Sequence[torch.Tensor], teacher_states: TeacherStates, targets: Sequence[int],
                   per_layer: str = "l1_cos", w: float = 0.0,
                   frame_mask: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DistilHuBERT's objective: the mean over prediction heads of the per-layer loss
    (``l1_cos`` in the paper). ``w`` is unused (same signature as :func:`l2l_loss`).

    Returns:
        ``(total, parts)``; parts: ``head_<k>`` per teacher layer ``k``.
    """
    if len(student_preds) != len(targets) or not targets:
        raise ValueError(f"pred_head_loss: {len(student_preds)} predictions for {len(targets)} targets")
    fn = per_layer_loss(per_layer)
    losses = [fn(p, _teacher(teacher_states, k), frame_mask) for p, k in zip(student_preds, targets)]
    total = torch.stack(losses).mean()
    return total, {f"head_{k}": v.detach() for k, v in zip(targets, losses)}


# ----------------------------------------------------------------------------- logit KD


def _kl_teacher_student(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
                        valid: torch.Tensor) -> torch.Tensor:
    """Mean over valid positions of ``KL(softmax(t / T) || softmax(s / T))``."""
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1)
    return _masked_mean(kl.reshape(1, -1), valid.reshape(1, -1))


def _masked_ce(logits: torch.Tensor, labels: Optional[torch.Tensor], ignore_index: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(valid positions (...) bool, mean CE over them)``; no labels: all valid, CE 0."""
    if labels is None:
        valid = torch.ones(logits.shape[:-1], dtype=torch.bool, device=logits.device)
        return valid, logits.new_zeros((), dtype=torch.float32)
    valid = labels != ignore_index
    if not bool(valid.any()):
        return valid, logits.new_zeros((), dtype=torch.float32)
    ce = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=ignore_index)
    return valid, ce


@OBJECTIVES.register("logit_kd")
def logit_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: Optional[torch.Tensor],
             temperature: float = 2.0, ce_weight: float = 1.0, kd_weight: float = 1.0,
             ignore_index: int = -100) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Logit distillation: ``ce_weight * CE(labels) + kd_weight * KL(teacher || student) * T^2``.

    Args:
        student_logits: ``(..., V)``.
        teacher_logits: ``(..., V)``, same shape.
        labels: ``(...)`` class indices with ``ignore_index`` on padding; ``None`` = no CE
            term (and every position counts for KL).
        temperature: ``T``; both distributions are softened by it, and the KL is scaled
            by ``T^2`` so its gradients keep their size (Hinton et al.).
        ce_weight, kd_weight: term weights (Distil-Whisper: 0.8 and 1.0 with T = 2).
        ignore_index: label of positions excluded from both terms.

    Returns:
        ``(total, parts)`` with parts ``ce`` and ``kl`` (the KL before ``T^2``).
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"logit_kd: student {tuple(student_logits.shape)} and teacher "
                         f"{tuple(teacher_logits.shape)} logits differ")
    if temperature <= 0:
        raise ValueError(f"logit_kd: temperature must be > 0, got {temperature}")
    valid, ce = _masked_ce(student_logits, labels, ignore_index)
    kl = _kl_teacher_student(student_logits, teacher_logits, temperature, valid)
    total = ce_weight * ce + kd_weight * kl * temperature ** 2
    return total, {"ce": ce.detach(), "kl": kl.detach()}


# ----------------------------------------------------------------------------- ASKD


def askd_alpha(progress: float, decay: str = "cosine", start: float = 1.0, end: float = 0.0,
               start_frac: float = 0.0, exp_rate: float = 5.0, step_count: int = 1) -> float:
    """ASKD's teacher weight ``alpha`` at a point of training.

    ``alpha = start`` until ``progress = start_frac``; then, with ``u = (progress -
    start_frac) / (1 - start_frac)``, it moves from ``start`` to ``end`` by

    - ``linear``: ``start + (end - start) * u``;
    - ``cosine``: ``end + (start - end) * (1 + cos(pi u)) / 2``;
    - ``exp``: ``end + (start - end) * (exp(-r u) - exp(-r)) / (1 - exp(-r))`` (rate
      ``r = exp_rate``; an exponential decay rescaled to hit ``end`` at ``u = 1``);
    - ``step``: ``step_count`` equal drops at ``u = k / (step_count + 1)``,
      ``start + (end - start) * min(1, floor(u * (step_count + 1)) / step_count)``; the
      default (one drop) is ``start`` for ``u < 1/2``, then ``end`` (as the ASR track's).

    Every schedule gives exactly ``start`` at ``progress <= start_frac`` and exactly
    ``end`` at ``progress >= 1``.

    Args:
        progress: fraction of training done, clipped to [0, 1].
        decay: ``linear``, ``cosine``, ``exp`` or ``step``.
        start, end: the endpoints (``alpha`` may also rise if ``end > start``).
        start_frac: fraction of training at ``start`` before the decay begins.
    """
    if decay not in ("linear", "cosine", "exp", "step"):
        raise ValueError(f"askd decay must be linear, cosine, exp or step, got {decay!r}")
    if not 0.0 <= start_frac < 1.0:
        raise ValueError(f"askd start_frac must be in [0, 1), got {start_frac}")
    p = min(1.0, max(0.0, float(progress)))
    if p <= start_frac:
        return float(start)
    if p >= 1.0:
        return float(end)
    u = (p - start_frac) / (1.0 - start_frac)
    if decay == "linear":
        frac = u
    elif decay == "cosine":
        frac = 1.0 - 0.5 * (1.0 + math.cos(math.pi * u))
    elif decay == "exp":
        frac = 1.0 - (math.exp(-exp_rate * u) - math.exp(-exp_rate)) / (1.0 - math.exp(-exp_rate))
    else:
        if step_count < 1:
            raise ValueError(f"askd step_count must be >= 1, got {step_count}")
        frac = min(1.0, math.floor(u * (step_count + 1)) / step_count)
    return float(start + (end - start) * frac)


class EmaTeacher:
    """An exponential moving average of a model: ASKD's self-teacher.

    ``ema <- decay * ema + (1 - decay) * model`` for floating-point parameters and
    buffers (other buffers are copied). The copy is frozen and in eval mode. When the
    model's architecture changes (a stacking growth), :meth:`update` re-copies it: the
    EMA of a layer that did not exist is the layer itself.

    Args:
        model: the student.
        decay: EMA decay per update, in [0, 1).

    Attributes:
        module: the frozen EMA copy (call it under ``torch.no_grad()``).

    Example (ASKD feature distillation inside a training loop)::

        ema = EmaTeacher(student, cfg.loss.askd.ema)
        for step in range(total):
            states = student.forward_features(feats, frame_lengths)
            with torch.no_grad():
                ema_proj = ema.module.project(ema.module.forward_features(feats, frame_lengths))
            a = askd_alpha(step / total, askd.decay, askd.alpha_start, askd.alpha_end, askd.start_frac)
            loss, parts = askd_l2l(student.project(states), teacher_states, ema_proj,
                                   student.targets, a, per_layer, w, frame_mask)
            ...; optimizer.step(); ema.update(student)
    """

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EmaTeacher: decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.module = self._copy(model)

    @staticmethod
    def _copy(model: nn.Module) -> nn.Module:
        m = copy.deepcopy(model)
        m.eval().requires_grad_(False)
        return m

    def _shapes(self, model: nn.Module) -> dict[str, tuple]:
        return {k: tuple(v.shape) for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the EMA toward ``model`` by one step (or re-copy it after a growth)."""
        ema_state = self.module.state_dict()
        state = model.state_dict()
        if self._shapes(self.module) != {k: tuple(v.shape) for k, v in state.items()}:
            self.module = self._copy(model)
            return
        for k, v in state.items():
            e = ema_state[k]
            if e.dtype.is_floating_point:
                e.mul_(self.decay).add_(v.detach().to(e.dtype), alpha=1.0 - self.decay)
            else:
                e.copy_(v)

    @property
    def shadow(self) -> nn.Module:
        """Alias of :attr:`module` (the name the ASR track uses)."""
        return self.module

    def state_dict(self) -> dict:
        return {"decay": self.decay, "module": self.module.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.decay = float(state["decay"])
        self.module.load_state_dict(state["module"])


class SelfTeacher(EmaTeacher):
    """ASKD's self-teacher over a run of ``total`` steps, its memory tied to the run length.

    Until ``start`` (the step where the teacher weight alpha starts to fall,
    ``askd.start_frac x total``) the self-teacher follows the student exactly (decay 0), so
    the untrained initialisation never enters it. From then on:

    - ``kind="ema"``: an exponential moving average with decay ``1 - 1 / (horizon x
      total)`` per step (``askd.horizon`` > 0; a time constant of that share of the run),
      or the fixed per-step ``askd.ema`` when ``horizon`` is 0;
    - ``kind="snapshot"``: a frozen copy of the student, re-taken every ``horizon x total``
      steps (``horizon`` must be > 0).

    :meth:`init_weight` is the weight the student of step ``start`` still has in the EMA at
    the end of the run (``decay ** (total - start)``), recorded in the run's summary.
    """

    def __init__(self, model: nn.Module, askd, total: int) -> None:
        kind = getattr(askd, "self_teacher", "ema")
        horizon = float(getattr(askd, "horizon", 0.0))
        self.total, self.kind = int(total), kind
        self.start = int(round(askd.start_frac * total))
        self.every = max(1, int(round(horizon * total))) if horizon > 0 else 0
        if kind == "snapshot" and not self.every:
            raise ValueError("askd.self_teacher 'snapshot' needs askd.horizon > 0 (the refresh interval)")
        decay = (1.0 - 1.0 / self.every) if (kind == "ema" and self.every) else float(askd.ema)
        super().__init__(model, decay if kind == "ema" else 0.0)
        self.ema_decay = decay if kind == "ema" else None
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One step: follow the student until ``start``, then EMA or snapshot."""
        self.updates += 1
        step = self.updates  # the student has taken this many steps
        if step <= self.start:
            self.decay = 0.0
        elif self.kind == "snapshot":
            self.decay = 0.0 if (step - self.start) % self.every == 0 else 1.0
        else:
            self.decay = self.ema_decay
        super().update(model)

    def init_weight(self) -> float:
        """Weight of the step-``start`` student in the self-teacher at the end of the run."""
        if self.kind == "snapshot":
            return 0.0 if self.total - self.start >= self.every else 1.0
        return float(self.ema_decay ** max(0, self.total - self.start))

    def describe(self) -> dict:
        return {"kind": self.kind, "start_step": self.start, "decay": self.ema_decay,
                "refresh_every": self.every if self.kind == "snapshot" else None,
                "init_weight_at_end": self.init_weight()}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.updates = int(state.get("updates", 0))


def askd_combine(teacher_term: torch.Tensor, self_term: torch.Tensor, alpha: float) -> torch.Tensor:
    """``alpha * teacher_term + (1 - alpha) * self_term`` (a term with zero weight is
    skipped, so it may be a placeholder)."""
    if alpha >= 1.0:
        return teacher_term
    if alpha <= 0.0:
        return self_term
    return alpha * teacher_term + (1.0 - alpha) * self_term


@OBJECTIVES.register("askd_l2l")
def askd_l2l(student_proj: Sequence[torch.Tensor], teacher_states: TeacherStates,
             ema_proj: Sequence[torch.Tensor], targets: Sequence[int], alpha: float,
             per_layer: str = "mse", w: float = 0.5,
             frame_mask: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """ASKD for feature (L2L) distillation.

    ``alpha * l2l(student, teacher) + (1 - alpha) * l2l(student, EMA student)``: the
    self term matches each projected student layer to the same projected layer of the
    EMA copy (:class:`EmaTeacher`), with the same output + ``w`` x intermediate weighting.

    Args:
        student_proj: ``L`` projected student states ``(B, T, D_teacher)``.
        teacher_states: teacher hidden states by index.
        ema_proj: ``L`` projected states of the EMA student (computed under no_grad).
        targets: teacher index per layer.
        alpha: teacher weight, from :func:`askd_alpha`.

    Returns:
        ``(total, parts)``: ``alpha``, ``teacher`` and ``self`` (each term's value).
    """
    if len(ema_proj) != len(student_proj):
        raise ValueError(f"askd_l2l: {len(ema_proj)} EMA states for {len(student_proj)} student states")
    zero = student_proj[-1].new_zeros((), dtype=torch.float32)
    t_term = l2l_loss(student_proj, teacher_states, targets, per_layer, w, frame_mask)[0] if alpha > 0 else zero
    if alpha < 1:
        ema = {i: e.detach() for i, e in enumerate(ema_proj)}
        s_term = l2l_loss(student_proj, ema, list(range(len(ema_proj))), per_layer, w, frame_mask)[0]
    else:
        s_term = zero
    total = askd_combine(t_term, s_term, alpha)
    return total, {"alpha": torch.tensor(float(alpha)), "teacher": t_term.detach(), "self": s_term.detach()}


@OBJECTIVES.register("askd_logit")
def askd_logit(student_logits: torch.Tensor, teacher_logits: torch.Tensor, ema_logits: torch.Tensor,
               labels: Optional[torch.Tensor], alpha: float, temperature: float = 2.0, ce_weight: float = 1.0,
               kd_weight: float = 1.0, ignore_index: int = -100) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """ASKD for logit distillation (e.g. a Whisper-style ASR student).

    ``ce_weight * CE(labels) + kd_weight * T^2 * (alpha * KL(teacher || student) +
    (1 - alpha) * KL(EMA || student))``.

    Returns:
        ``(total, parts)``: ``ce``, ``kl_teacher``, ``kl_self``, ``alpha``.
    """
    if ema_logits.shape != student_logits.shape:
        raise ValueError(f"askd_logit: EMA logits {tuple(ema_logits.shape)} vs student {tuple(student_logits.shape)}")
    valid, ce = _masked_ce(student_logits, labels, ignore_index)
    zero = student_logits.new_zeros((), dtype=torch.float32)
    kl_t = _kl_teacher_student(student_logits, teacher_logits, temperature, valid) if alpha > 0 else zero
    kl_s = _kl_teacher_student(student_logits, ema_logits.detach(), temperature, valid) if alpha < 1 else zero
    total = ce_weight * ce + kd_weight * askd_combine(kl_t, kl_s, alpha) * temperature ** 2
    return total, {"ce": ce.detach(), "kl_teacher": kl_t.detach(), "kl_self": kl_s.detach(),
                   "alpha": torch.tensor(float(alpha))}
