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

The pieces are the shared ones of :mod:`harness.losses` (registry ``OBJECTIVES``):
:func:`~harness.losses.askd_alpha` (the schedule: ``linear``, ``cosine``, ``exp``,
``step``), :class:`~harness.losses.EmaTeacher` (the self-teacher), and the ``logit_kd``
and ``askd_logit`` objectives; this module only fixes how the ASR track calls them and
names the parts it logs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from harness.losses import EmaTeacher, askd_alpha, askd_logit, logit_kd  # noqa: F401 (re-exported)

OBJECTIVES = ("ce", "kd", "askd")


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
        ``{"total", "ce"}`` plus ``"kd"`` (``T^2`` x teacher KL) for ``kd``/``askd`` and
        ``"self"`` (``T^2`` x EMA KL) for ``askd``; scalars (``total`` differentiable).

    Raises:
        ValueError: unknown objective or missing teacher / EMA logits.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown ASR objective {objective!r}; choose from {', '.join(OBJECTIVES)}")
    if objective == "ce":
        ce = masked_ce(student_logits, labels)
        return {"total": ce, "ce": ce}
    if teacher_logits is None:
        raise ValueError(f"objective {objective!r} needs teacher logits")
    t2 = temperature**2
    if objective == "kd":
        total, parts = logit_kd(student_logits, teacher_logits, labels, temperature, ce_weight, kd_weight)
        return {"total": total, "ce": parts["ce"], "kd": parts["kl"] * t2}
    if ema_logits is None:
        raise ValueError("objective 'askd' needs the EMA self-teacher's logits")
    # Both KL terms are always computed (for logging); askd_logit skips a zero-weight one.
    total, parts = askd_logit(student_logits, teacher_logits, ema_logits, labels, alpha, temperature,
                              ce_weight, kd_weight)
    kd = parts["kl_teacher"] if alpha > 0 else masked_kl(teacher_logits, student_logits, labels, temperature) / t2
    sk = parts["kl_self"] if alpha < 1 else masked_kl(ema_logits, student_logits, labels, temperature) / t2
    return {"total": total, "ce": parts["ce"], "kd": kd * t2, "self": sk * t2}


def student_loss(model, ema, s_enc, dec, labels, t_logits, alpha: float, loss_cfg) -> dict:
    """The objective's loss parts for the student's decoder on encoder states ``s_enc``
    (``askd`` adds the EMA self-teacher's logits, without gradients); ``loss_cfg`` is the
    run's :class:`~harness.asr.train.AsrLossConfig`."""
    from transformers.modeling_outputs import BaseModelOutput

    logits = model(encoder_outputs=BaseModelOutput(last_hidden_state=s_enc), decoder_input_ids=dec).logits
    e_logits = None
    if ema is not None:
        with torch.no_grad():
            e_logits = ema.module(encoder_outputs=BaseModelOutput(last_hidden_state=s_enc.detach()),
                                  decoder_input_ids=dec).logits
    return asr_loss(loss_cfg.objective, logits, labels, t_logits, e_logits, alpha=alpha,
                    temperature=loss_cfg.temperature, ce_weight=loss_cfg.ce_weight, kd_weight=loss_cfg.kd_weight)
