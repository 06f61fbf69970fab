"""The two models of ``harness bench throughput`` at one shape, and their training steps:
our student (:mod:`harness.student`) and s3prl's ``DistillerModel``, same objective, same
optimizer, same batch (see :mod:`harness.bench.throughput` for the protocol)."""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

MODELS = ("ours", "s3prl")
# the student as the harness trains it with teacher.cache=true: fed the cached output of its
# frozen front-end (informational; the ratio compares the same computation, MODELS)
CACHED = "ours_cached"
TARGETS = ("pred_heads", "l2l")
FRONTENDS = ("frozen", "trainable")
ADAMW_IMPLS = ("default", "foreach", "fused")


def make_adamw(params: list, lr: float, impl: str) -> torch.optim.Optimizer:
    """torch's AdamW with the implementation ``impl`` (``default``, ``foreach``, ``fused``)."""
    kw = {"foreach": True} if impl == "foreach" else {"fused": True} if impl == "fused" else {}
    return torch.optim.AdamW(params, lr=lr, **kw)


@dataclass
class ThroughputSettings:
    """The shape and protocol of a throughput comparison (defaults: the paper student).

    Attributes:
        layers, width, heads, ffn: encoder shape.
        batch: utterances per step.
        seconds: audio per utterance (all full length), seconds at 16 kHz.
        steps: timed training steps per repeat.
        repeats: timed repeats per model (interleaved).
        warmup: untimed steps per model first (allocator, thread pools, lazy init).
        device: ``cpu`` or ``cuda`` (CUDA: bf16 autocast; attention by SDPA in both).
        frontend: ``frozen`` (no gradient through the conv front-end) or ``trainable``.
        target: ``pred_heads`` (DistilHuBERT) or ``l2l`` (one projection per layer).
        conv_dim: channels of the conv front-end (512 = HuBERT Base's).
        conv_pos, conv_pos_groups: positional conv kernel and groups.
        teacher_width: width of the teacher targets.
        teacher_layers: teacher depth (for the proportional ``l2l`` map).
        pred_layers: teacher layers the prediction heads predict (``pred_heads``).
        dropout: dropout of both models (residual, attention, activation).
        lr: AdamW learning rate.
        adamw: implementation of torch's AdamW for our student (``default``: torch's
            choice, a per-tensor loop on CPU; ``foreach``; ``fused``: one kernel, the
            fastest on CPU and CUDA). Same algorithm and values in every case.
        s3prl_adamw: the same for s3prl's model.
        memory: measure CPU peak memory in a subprocess per model.
        cached_row: also time ``ours_cached`` (frozen front-end only): the student fed
            its front-end's output precomputed, as with the teacher-feature cache.
        threads: torch intra-op threads (0 = leave torch's default).
        seed: seed of the weights, batch and targets.
    """

    layers: int = 12
    width: int = 384
    heads: int = 12
    ffn: int = 1536
    batch: int = 2
    seconds: float = 4.0
    steps: int = 2
    repeats: int = 5
    warmup: int = 1
    device: str = "cpu"
    frontend: str = "frozen"
    target: str = "pred_heads"
    conv_dim: int = 512
    conv_pos: int = 128
    conv_pos_groups: int = 16
    teacher_width: int = 768
    teacher_layers: int = 12
    pred_layers: list[int] = field(default_factory=lambda: [4, 8, 12])
    dropout: float = 0.0
    lr: float = 2e-4
    adamw: str = "default"
    s3prl_adamw: str = "default"
    memory: bool = True
    cached_row: bool = True
    threads: int = 0
    seed: int = 0

    def validate(self) -> None:
        """Raise ``ValueError`` (one line naming the option) for an impossible setting."""
        for name in ("layers", "width", "heads", "ffn", "batch", "steps", "repeats", "conv_dim",
                     "teacher_width", "teacher_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise ValueError(f"--warmup must be >= 0, got {self.warmup}")
        if self.width % self.heads:
            raise ValueError(f"--heads {self.heads} must divide --width {self.width}")
        if self.conv_pos < 1 or self.conv_pos_groups < 1 or self.width % self.conv_pos_groups:
            raise ValueError(f"--conv-pos {self.conv_pos} must be >= 1 and --conv-pos-groups "
                             f"{self.conv_pos_groups} must divide --width {self.width}")
        for name in ("adamw", "s3prl_adamw"):
            if getattr(self, name) not in ADAMW_IMPLS:
                raise ValueError(f"--{name.replace('_', '-')} must be one of {', '.join(ADAMW_IMPLS)}, "
                                 f"got {getattr(self, name)!r}")
        if self.frontend not in FRONTENDS:
            raise ValueError(f"--frontend must be one of {', '.join(FRONTENDS)}, got {self.frontend!r}")
        if self.target not in TARGETS:
            raise ValueError(f"--target must be one of {', '.join(TARGETS)}, got {self.target!r}")
        if self.target == "pred_heads":
            bad = [k for k in self.pred_layers if not 1 <= k <= self.teacher_layers]
            if not self.pred_layers or bad:
                raise ValueError(f"--pred-layers {self.pred_layers}: need teacher layers in 1..{self.teacher_layers}")
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"--device must be cpu or cuda, got {self.device!r}")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"--device {self.device}: CUDA is not available on this machine")
        if self.frames < 1:
            raise ValueError(f"--seconds {self.seconds}: too short for one 25 ms frame")

    @property
    def samples(self) -> int:
        """Waveform samples per utterance."""
        return int(round(self.seconds * 16000))

    @property
    def frames(self) -> int:
        """Front-end frames per utterance (the standard conv stack's arithmetic)."""
        n = self.samples
        for k, s in [(10, 5)] + [(3, 2)] * 4 + [(2, 2)] * 2:
            n = (n - k) // s + 1
        return n


# ----------------------------------------------------------------------------- the two models


def build_ours(s: ThroughputSettings) -> nn.Module:
    """Our student at the settings' shape (post-LN, HuBERT-style conv front-end)."""
    from harness.student import Student, StudentShape
    from harness.frontends import ConvFrontend, conv_layers

    frontend = ConvFrontend(conv_layers(s.conv_dim), mode="group_norm", conv_bias=False)
    shape = StudentShape(
        layers=s.layers, width=s.width, heads=s.heads, ffn=s.ffn, frontend_dim=s.conv_dim,
        teacher_width=s.teacher_width, teacher_layers=s.teacher_layers, layer_norm_first=False,
        dropout=s.dropout, conv_pos=s.conv_pos, conv_pos_groups=s.conv_pos_groups,
        target_mode=s.target, pred_head_layers=list(s.pred_layers) if s.target == "pred_heads" else [],
        frontend_trainable=s.frontend == "trainable",
    )
    return Student(shape, frontend)


class S3prlL2L(nn.Module):
    """s3prl's ``DistillerModel`` (no prediction heads) with per-layer projections beside
    it: the L2L objective on the reference model."""

    def __init__(self, model: nn.Module, layers: int, width: int, teacher_width: int) -> None:
        super().__init__()
        self.model = model
        self.proj = nn.ModuleList(nn.Linear(width, teacher_width) for _ in range(layers))


def build_s3prl(s: ThroughputSettings) -> nn.Module:
    """s3prl's ``DistillerModel`` at the settings' shape (wrapped in :class:`S3prlL2L`
    for the ``l2l`` target)."""
    from harness.compat import apply_s3prl_shim

    apply_s3prl_shim()  # s3prl 0.4.18 needs it with torchaudio >= 2.9
    from s3prl.upstream.distiller.model import DistillerConfig, DistillerModel

    c = s.conv_dim
    heads = s.target == "pred_heads"
    cfg = DistillerConfig({
        "extractor_mode": "default",  # GroupNorm on the first conv, as HuBERT Base
        "extractor_conv_feature_layers": f"[({c},10,5)] + [({c},3,2)] * 4 + [({c},2,2)] * 2",
        "feature_grad_mult": 1.0 if s.frontend == "trainable" else 0.0,
        "conv_pos": s.conv_pos, "conv_pos_groups": s.conv_pos_groups,
        "encoder_layers": s.layers, "encoder_embed_dim": s.width, "encoder_ffn_embed_dim": s.ffn,
        "encoder_attention_heads": s.heads, "activation_fn": "gelu", "layer_norm_first": False,
        "dropout": s.dropout, "attention_dropout": s.dropout, "activation_dropout": s.dropout,
        "encoder_layerdrop": 0.0, "final_dim": s.teacher_width,
        "task_emb_type": "expand-last" if heads else "none",
        "out_layer_type": "expand-last" if heads else "none",
        "n_tasks": len(s.pred_layers) if heads else 1,
        "pred_layer_id": list(s.pred_layers) if heads else [1],
    })
    # it prints its configuration, and uses the deprecated torch.nn.utils.weight_norm
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model = DistillerModel(cfg)
    if s.frontend == "frozen":
        model.feature_extractor.requires_grad_(False)
    if not heads:
        return S3prlL2L(model, s.layers, s.width, s.teacher_width)
    return model


def param_counts(model: nn.Module) -> dict:
    """``{"total": n, "trainable": n}`` parameters."""
    return {"total": sum(p.numel() for p in model.parameters()),
            "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)}


def make_batch(s: ThroughputSettings, device: torch.device) -> dict:
    """The fixed batch: waveforms, lengths, pad mask and the teacher targets.

    Returns:
        ``wavs`` (B, S) float32, ``lengths`` (B,), ``pad_mask`` (B, S) (1 = valid, s3prl's
        convention), ``targets`` {teacher layer: (B, T, D_teacher)} and ``stacked``
        (B, N, T, D_teacher) for s3prl's loss (a cache hands either layout for free).
    """
    g = torch.Generator().manual_seed(s.seed + 1)
    b, n, t = s.batch, s.samples, s.frames
    wavs = 0.1 * torch.randn(b, n, generator=g)
    layers = (list(s.pred_layers) if s.target == "pred_heads"
              else _proportional(s.layers, s.teacher_layers))
    targets = {k: torch.randn(b, t, s.teacher_width, generator=g) for k in sorted(set(layers))}
    stacked = torch.stack([targets[k] for k in layers], dim=1)
    return {
        "wavs": wavs.to(device), "lengths": torch.full((b,), n, dtype=torch.int64).to(device),
        "pad_mask": torch.ones(b, n, dtype=torch.long).to(device),
        "targets": {k: v.to(device) for k, v in targets.items()}, "stacked": stacked.to(device),
        "layers": layers,
    }


def _proportional(layers: int, teacher_layers: int) -> list[int]:
    from harness.student import proportional_targets

    return proportional_targets(layers, teacher_layers)


def _l1_cos_sum(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """s3prl DistilHuBERT expert's loss on (B, N, T, D): per-head mean L1 plus per-head
    mean ``-log sigmoid(cos)``, summed over heads (float32)."""
    pred, target = pred.float(), target.float()
    rec = F.l1_loss(pred, target, reduction="none").mean((0, 2, 3))
    sim = -F.logsigmoid(F.cosine_similarity(pred, target, dim=-1)).mean((0, 2))
    return rec.sum() + sim.sum()



def _student_step(model, opt, autocast, target: str, targets, forward) -> torch.Tensor:
    """One training step of our student (live front-end or cached features): ``forward()``
    returns ``(hidden states, frame lengths)``; L1+cos on pred heads or L2L projections."""
    from harness.losses import l2l_loss, pred_head_loss

    with autocast():
        states, frames = forward()
        preds = model.project(states)
        mask = torch.arange(preds[0].shape[1], device=preds[0].device)[None, :] < frames[:, None]
        if target == "pred_heads":
            loss, _ = pred_head_loss(preds, targets, model.targets, "l1_cos", frame_mask=mask)
        else:
            loss, _ = l2l_loss(preds, targets, model.targets, "l1_cos", 0.5, frame_mask=mask)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()

def make_step(name: str, model: nn.Module, s: ThroughputSettings, batch: dict,
              device: torch.device) -> Callable[[], torch.Tensor]:
    """A closure running one training step (forward, loss, backward, AdamW) of ``model``.

    Args:
        name: ``ours`` or ``s3prl``.
        model: from :func:`build_ours` / :func:`build_s3prl`, on ``device``, in train mode.
        s: the settings.
        batch: from :func:`make_batch`.
        device: where the model lives (CUDA: the forward runs under bf16 autocast).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_adamw(params, s.lr, s.s3prl_adamw if name == "s3prl" else s.adamw)
    cuda = device.type == "cuda"
    wavs, lengths, pad_mask = batch["wavs"], batch["lengths"], batch["pad_mask"]
    targets, stacked = batch["targets"], batch["stacked"]

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()

    if name == CACHED:
        with torch.no_grad():  # what the feature cache hands the step (fp32 here, fp16 on disk)
            feats, feat_frames = model.frontend(wavs, lengths)
        model.frontend = None

        def step() -> torch.Tensor:
            return _student_step(model, opt, autocast, s.target, targets,
                                 lambda: (model.forward_features(feats, feat_frames), feat_frames))
    elif name == "ours":
        def step() -> torch.Tensor:
            return _student_step(model, opt, autocast, s.target, targets,
                                 lambda: model.hidden_states(wavs, lengths))
    elif name == "s3prl":
        def step() -> torch.Tensor:
            with autocast():
                if s.target == "pred_heads":
                    _, _, pred, _ = model(wavs, pad_mask)  # pred (B, N, T, D_teacher)
                    loss = _l1_cos_sum(pred, stacked)
                else:
                    out = model.model(wavs, pad_mask, get_hidden=True, no_pred=True)
                    hiddens = out[4]
                    losses = [_l1_cos_sum(p(h).unsqueeze(1), stacked[:, i:i + 1])
                              for i, (p, h) in enumerate(zip(model.proj, hiddens))]
                    inter = torch.stack(losses[:-1]).mean() if len(losses) > 1 else losses[-1] * 0
                    loss = losses[-1] + 0.5 * inter
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return loss.detach()
    else:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS + (CACHED,))}")
    step.optimizer = opt  # type: ignore[attr-defined]
    return step


def _build(name: str, s: ThroughputSettings, device: torch.device) -> nn.Module:
    torch.manual_seed(s.seed)
    model = build_s3prl(s) if name == "s3prl" else build_ours(s)
    return model.to(device).train()
