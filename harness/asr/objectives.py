"""ASR training objectives: ``ce``, ``kd`` (Distil-Whisper) and ``askd``.

With student logits ``s``, teacher logits ``t`` and EMA-of-student logits ``e`` (all
``(B, U, V)``, teacher-forced on the same decoder input) and temperature ``T``:

* ``ce``:   ``CE(labels, s)``
* ``kd``:   ``w_ce * CE(labels, s) + w_kd * T^2 * KL(softmax(t/T) || softmax(s/T))``
* ``askd``: ``w_ce * CE + w_kd * T^2 * [alpha(p) * KL(t || s) + (1 - alpha(p)) * KL(e || s)]``

where ``p`` in [0, 1] is training progress and ``alpha`` decays from ``alpha_start`` to
``alpha_end`` (:func:`askd_alpha`): the student is gradually released from the teacher's
distribution, and the released weight goes to self-distillation against an exponential
moving average of its own weights (:class:`EmaTeacher`), which acts as a regulariser.
KL terms are averaged over non-padding target positions (``labels != -100``).

``askd_alpha`` and ``EmaTeacher`` follow the names of ``harness.losses`` (the shared
losses registry of the core issue); they are defined here so the ASR track does not
depend on that module's internals.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F

OBJECTIVES = ("ce", "kd", "askd")
DECAYS = ("linear", "cosine", "exp", "step")


def askd_alpha(progress: float, decay: str = "cosine", start: float = 1.0, end: float = 0.0,
               start_frac: float = 0.0) -> float:
    """Teacher weight ``alpha`` at training progress ``progress`` in [0, 1].

    ``alpha = start`` until ``start_frac``; then, with ``s = (progress - start_frac) /
    (1 - start_frac)``:

    * ``linear``: ``start + (end - start) * s``
    * ``cosine``: ``end + (start - end) * (1 + cos(pi * s)) / 2``
    * ``exp``: ``end + (start - end) * (exp(-5 s) - exp(-5)) / (1 - exp(-5))`` (fast
      early release, reaching ``end`` exactly at ``s = 1``)
    * ``step``: ``start`` for ``s < 0.5``, then ``end``.

    Raises:
        ValueError: unknown decay or progress outside [0, 1].
    """
    if decay not in DECAYS:
        raise ValueError(f"unknown ASKD decay {decay!r}; choose from {', '.join(DECAYS)}")
    if not -1e-9 <= progress <= 1 + 1e-9:
        raise ValueError(f"progress must be in [0, 1], got {progress}")
    if progress <= start_frac:
        return float(start)
    s = min(1.0, (progress - start_frac) / max(1e-12, 1.0 - start_frac))
    if decay == "linear":
        return start + (end - start) * s
    if decay == "cosine":
        return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * s))
    if decay == "exp":
        k = 5.0
        return end + (start - end) * (math.exp(-k * s) - math.exp(-k)) / (1.0 - math.exp(-k))
    return float(start if s < 0.5 else end)


class EmaTeacher:
    """An exponential moving average of a model's parameters, used as a frozen self-teacher.

    After each optimiser step, ``update(model)`` sets every shadow parameter
    ``e <- decay * e + (1 - decay) * p`` (buffers are copied). ``shadow`` is a frozen
    deep copy in eval mode: call it like the model.
    """

    def __init__(self, model: torch.nn.Module, decay: float = 0.999):
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        self.decay = float(decay)
        self.shadow = copy.deepcopy(model).eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for e, p in zip(self.shadow.parameters(), model.parameters()):
            e.mul_(self.decay).add_(p.detach(), alpha=1.0 - self.decay)
        for e, b in zip(self.shadow.buffers(), model.buffers()):
            e.copy_(b)


def masked_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean token cross-entropy; ``logits (B, U, V)``, ``labels (B, U)`` with -100 ignored."""
    return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100)


def masked_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor, labels: torch.Tensor,
              temperature: float = 2.0) -> torch.Tensor:
    """``T^2 * KL(softmax(t/T) || softmax(s/T))`` averaged over positions with ``labels != -100``.

    Args:
        teacher_logits, student_logits: ``(B, U, V)``.
        labels: ``(B, U)``; only its mask is used.
        temperature: ``T``; the ``T^2`` factor keeps gradient scale independent of ``T``.
    """
    mask = (labels != -100).float()
    t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    kl = (t.exp() * (t - s)).sum(-1)  # (B, U)
    return (kl * mask).sum() / mask.sum().clamp_min(1.0) * temperature**2


def asr_loss(objective: str, student_logits: torch.Tensor, labels: torch.Tensor,
             teacher_logits: torch.Tensor | None = None, ema_logits: torch.Tensor | None = None,
             alpha: float = 1.0, temperature: float = 2.0, ce_weight: float = 0.8,
             kd_weight: float = 1.0) -> dict[str, torch.Tensor]:
    """The objective's total loss and its parts (see the module docstring).

    Returns:
        ``{"total", "ce"}`` plus ``"kd"`` (teacher KL) for ``kd``/``askd`` and ``"self"``
        (EMA KL) for ``askd``; every value a scalar tensor (``total`` differentiable).

    Raises:
        ValueError: unknown objective or a missing teacher / EMA logits.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown ASR objective {objective!r}; choose from {', '.join(OBJECTIVES)}")
    ce = masked_ce(student_logits, labels)
    if objective == "ce":
        return {"total": ce, "ce": ce}
    if teacher_logits is None:
        raise ValueError(f"objective {objective!r} needs teacher logits")
    kd = masked_kl(teacher_logits, student_logits, labels, temperature)
    if objective == "kd":
        return {"total": ce_weight * ce + kd_weight * kd, "ce": ce, "kd": kd}
    if ema_logits is None:
        raise ValueError("objective 'askd' needs the EMA self-teacher's logits")
    self_kd = masked_kl(ema_logits, student_logits, labels, temperature)
    total = ce_weight * ce + kd_weight * (alpha * kd + (1.0 - alpha) * self_kd)
    return {"total": total, "ce": ce, "kd": kd, "self": self_kd}
