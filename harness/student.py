"""The student: a copied front-end, a narrow transformer encoder, and distillation heads.

The layout mirrors s3prl's ``DistillerModel`` (``s3prl/upstream/distiller/model.py``) so
that exporting a student to s3prl's ``distiller_local`` format is a key rename
(:mod:`harness.export`)::

    wavs (B, S) --frontend--> feats (B, T, C)          copied from the teacher; frozen or trainable
      [--feature_norm-->]                              optional LayerNorm (HuBERT style; off by default)
      --post_extract_proj--> (B, T, width)             padded frames zeroed
      + pos_conv (weight-normed grouped conv, GELU)    HuBERT / DistilHuBERT positional embedding
      [--encoder_layer_norm-->]                        post-LN only (pre-LN applies it at the top)
      = hidden state 0 (the encoder input)
      --layers[0..L-1]--> hidden states 1..L           fairseq-named transformer layers
      --proj[i]--> (B, T, teacher_width)               L2L targets, one projection per layer
      or --heads--> N predictions                      DistilHuBERT prediction heads

A student is an upstream (``harness.teachers.base.Upstream``): ``hidden_states(wavs,
lengths)`` returns its ``L + 1`` states, so SUPERB scoring and layer analysis treat it like
a teacher. Training feeds cached front-end features through :meth:`Student.forward_features`
instead, with ``student.frontend = None``.

Every layer carries a scalar ``mask`` buffer (1 by default): the layer computes
``x + mask * (layer(x) - x)``. It is how a post-LN student grows function-preservingly
(MSG, Yao et al. 2024; see :func:`harness.stacking.grow` and
:func:`harness.stacking.ramp_masks`).

Size: over 500 lines on purpose: the model's modules, its presets and its checkpoint format
are one contract with :mod:`harness.export` (s3prl's ``DistillerModel`` key layout); split up,
a change to a layer's parameters could no longer be checked against the format in one read.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from harness.frontends import build_frontend
from harness import safeload

CKPT_FORMAT = "harness-student/1"

# Preset shapes: (layers, width, heads, ffn, conv_pos kernel, conv_pos groups).
PRESETS: dict[str, dict[str, int]] = {
    # tests and CI: seconds on a CPU
    "student_tiny": {"layers": 4, "width": 64, "heads": 4, "ffn": 256, "conv_pos": 16, "conv_pos_groups": 4},
    # ./run_all.sh on a laptop CPU: minutes
    "student_embedded": {"layers": 8, "width": 128, "heads": 4, "ffn": 512, "conv_pos": 32, "conv_pos_groups": 8},
    # the paper's student for HuBERT Base: 12 x 384, FFN 1536, 12 heads (DistilHuBERT's pos conv)
    "student_paper": {"layers": 12, "width": 384, "heads": 12, "ffn": 1536, "conv_pos": 128, "conv_pos_groups": 16},
}


def proportional_targets(num_layers: int, teacher_layers: int) -> list[int]:
    """The proportional layer map: student layer ``i`` (0-based) of ``L`` -> teacher layer
    ``round((i + 1) * T / L)``, rounding halves up (teacher hidden-state indices, 1-based).

    Example: ``proportional_targets(3, 12) == [4, 8, 12]``;
    ``proportional_targets(8, 12) == [2, 3, 5, 6, 8, 9, 11, 12]``.
    """
    if num_layers < 1 or teacher_layers < 1:
        raise ValueError(f"layer map needs >= 1 student and teacher layers, got {num_layers} and {teacher_layers}")
    # exact integer arithmetic for floor(x + 1/2) with x = (i + 1) * T / L
    return [max(1, (2 * (i + 1) * teacher_layers + num_layers) // (2 * num_layers)) for i in range(num_layers)]


@dataclass
class StudentShape:
    """Everything needed to rebuild a student's architecture (saved in its checkpoint).

    Attributes:
        layers: encoder layers ``L``.
        width: hidden size.
        heads: attention heads (must divide ``width``).
        ffn: feed-forward inner size.
        frontend_dim: channels ``C`` of the front-end features.
        teacher_width: width of the teacher states the projections / heads predict.
        teacher_layers: teacher transformer layers ``T`` (for the layer map).
        frame_rate: frames per second of the front-end (50.0 for a 320-sample hop).
        layer_norm_first: pre-LN (True) or post-LN as HuBERT / DistilHuBERT (False).
        dropout: dropout of the residual branches, attention weights and FFN activations.
        conv_pos: kernel (frames) of the convolutional positional embedding; 0 disables it.
        conv_pos_groups: groups of that convolution (must divide ``width``).
        feature_norm: LayerNorm on the front-end features before the projection (HuBERT
            style). s3prl's DistillerModel has none, so such a student cannot be exported.
        target_mode: ``l2l`` (one projection per layer) or ``pred_heads`` (DistilHuBERT).
        pred_head_layers: teacher layers the prediction heads regress (``pred_heads``).
        frontend_trainable: whether the copied front-end is trained.
    """

    layers: int
    width: int
    heads: int
    ffn: int
    frontend_dim: int
    teacher_width: int
    teacher_layers: int
    frame_rate: float = 50.0
    layer_norm_first: bool = False
    dropout: float = 0.0
    conv_pos: int = 128
    conv_pos_groups: int = 16
    feature_norm: bool = False
    target_mode: str = "l2l"
    pred_head_layers: list[int] = field(default_factory=list)
    frontend_trainable: bool = False

    def validate(self) -> None:
        """Raise ``ValueError`` (one line naming the field) for an impossible shape."""
        for name in ("layers", "width", "heads", "ffn", "frontend_dim", "teacher_width", "teacher_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"student: {name} must be >= 1, got {getattr(self, name)}")
        if self.width % self.heads:
            raise ValueError(f"student: heads ({self.heads}) must divide width ({self.width})")
        if self.conv_pos < 0:
            raise ValueError(f"student: conv_pos must be >= 0 (0 = no positional conv), got {self.conv_pos}")
        if self.conv_pos and (self.conv_pos_groups < 1 or self.width % self.conv_pos_groups):
            raise ValueError(f"student: conv_pos_groups ({self.conv_pos_groups}) must divide width ({self.width})")
        if self.target_mode not in ("l2l", "pred_heads"):
            raise ValueError(f"student: target_mode must be 'l2l' or 'pred_heads', got {self.target_mode!r}")
        if self.target_mode == "pred_heads":
            if not self.pred_head_layers:
                raise ValueError("student: pred_heads mode needs pred_head_layers (teacher layers, 1-based)")
            bad = [k for k in self.pred_head_layers if not 1 <= k <= self.teacher_layers]
            if bad:
                raise ValueError(f"student: pred_head_layers {bad} are outside the teacher's 1..{self.teacher_layers}")


# ----------------------------------------------------------------------------- modules


class SelfAttention(nn.Module):
    """Multi-head self-attention with fairseq's parameter names (``q_proj``, ``k_proj``,
    ``v_proj``, ``out_proj``), computed by ``F.scaled_dot_product_attention``."""

    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.q_proj = nn.Linear(width, width)
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor]) -> torch.Tensor:
        """``x`` (B, T, D); ``attn_mask`` (B, 1, 1, T) bool, True = a key that may be attended."""
        b, t, d = x.shape
        h = self.heads

        def split(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, h, d // h).transpose(1, 2)  # (B, H, T, D/H)

        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )
        return self.out_proj(y.transpose(1, 2).reshape(b, t, d))


class EncoderLayer(nn.Module):
    """A fairseq/wav2vec 2.0 ``TransformerSentenceEncoderLayer`` (GELU FFN), pre- or post-LN.

    The ``mask`` buffer ``m`` blends the layer with the identity: ``x + m * (layer(x) - x)``
    (MSG-style growth; ``m = 1`` is the plain layer and costs nothing).
    """

    def __init__(self, width: int, heads: int, ffn: int, dropout: float, layer_norm_first: bool) -> None:
        super().__init__()
        self.layer_norm_first = layer_norm_first
        self.self_attn = SelfAttention(width, heads, dropout)
        self.self_attn_layer_norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, ffn)
        self.fc2 = nn.Linear(ffn, width)
        self.final_layer_norm = nn.LayerNorm(width)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", torch.ones(()))
        self.mask_value = 1.0  # Python mirror of the buffer: no GPU sync to read it
        self.blend = False
        for lin in (self.self_attn.q_proj, self.self_attn.k_proj, self.self_attn.v_proj,
                    self.self_attn.out_proj, self.fc1, self.fc2):
            # BERT / fairseq init (s3prl's init_bert_params): N(0, 0.02), zero bias
            nn.init.normal_(lin.weight, 0.0, 0.02)
            nn.init.zeros_(lin.bias)

    def _ffn(self, x: torch.Tensor) -> torch.Tensor:
        # GELU in float32 like fairseq's gelu (matters under bf16 autocast)
        return self.fc2(self.dropout(F.gelu(self.fc1(x).float()).type_as(x)))

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor]) -> torch.Tensor:
        """``x`` (B, T, D) -> (B, T, D)."""
        residual = x
        if self.layer_norm_first:
            y = x + self.dropout(self.self_attn(self.self_attn_layer_norm(x), attn_mask))
            y = y + self.dropout(self._ffn(self.final_layer_norm(y)))
        else:
            y = self.self_attn_layer_norm(x + self.dropout(self.self_attn(x, attn_mask)))
            y = self.final_layer_norm(y + self.dropout(self._ffn(y)))
        if self.blend:  # only while a grown layer is masked in (m < 1)
            y = residual + self.mask.to(y.dtype) * (y - residual)
        return y

    def set_mask(self, value: float) -> None:
        """Set the identity-blend mask ``m`` in [0, 1] (1 = the plain layer)."""
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"layer mask must be in [0, 1], got {value}")
        self.mask.fill_(value)
        # Python mirrors, so the common m = 1 case costs nothing and never syncs a GPU
        self.mask_value = float(value)
        self.blend = value < 1.0

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: D401
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.mask_value = float(self.mask.item())  # a resumed run restores its masks
        self.blend = self.mask_value < 1.0


class PosConv(nn.Module):
    """Convolutional positional embedding of wav2vec 2.0 / HuBERT: a grouped Conv1d over
    time with weight normalisation over the kernel axis (fairseq's ``weight_norm(dim=2)``,
    kept as explicit ``weight_g`` / ``weight_v`` so s3prl's keys map one to one), "same"
    padding, then GELU. The caller adds its output to the input."""

    def __init__(self, width: int, kernel: int, groups: int) -> None:
        super().__init__()
        self.kernel, self.groups = kernel, groups
        std = math.sqrt(4.0 / (kernel * width))
        v = torch.randn(width, width // groups, kernel) * std
        self.weight_v = nn.Parameter(v)
        self.weight_g = nn.Parameter(v.norm(dim=(0, 1), keepdim=True))  # (1, 1, K)
        self.bias = nn.Parameter(torch.zeros(width))

    def weight(self) -> torch.Tensor:
        """The effective conv weight ``g * v / ||v||`` (norm over all axes but the kernel's)."""
        # torch's fused weight-norm kernel (what nn.utils.weight_norm runs): same values as
        # g * v / v.norm(dim=(0, 1)), but forward + backward of the paper student's pos conv
        # weight take ~3.5 ms instead of ~20 ms of CPU (harness bench throughput profile)
        return torch._weight_norm(self.weight_v, self.weight_g, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, T, D) -> (B, T, D)."""
        y = pos_conv_channels_last(x, self.weight().to(x.dtype), self.bias.to(x.dtype), self.kernel, self.groups)
        return F.gelu(y.float()).type_as(x)


def pos_conv_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, kernel: int,
                       groups: int) -> torch.Tensor:
    """The positional conv as fairseq writes it: ``F.conv1d`` on ``(B, D, T)``, "same"
    padding ``K // 2`` (an even kernel's extra last frame dropped). ``x`` (B, T, D) ->
    (B, T, D), before the GELU. What :func:`pos_conv_channels_last` is tested against and
    ``harness bench posconv`` times it against."""
    y = F.conv1d(x.transpose(1, 2), weight, bias, padding=kernel // 2, groups=groups)
    if kernel % 2 == 0:
        y = y[:, :, :-1]  # an even kernel with padding K//2 yields one extra frame
    return y.transpose(1, 2)


def pos_conv_channels_last(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, kernel: int,
                           groups: int) -> torch.Tensor:
    """The same convolution as :func:`pos_conv_reference`, as a ``conv2d`` over a
    ``(B, D, 1, T)`` view of ``x`` (B, T, D).

    That view of a contiguous ``(B, T, D)`` tensor is already channels-last, so no copy is
    made and oneDNN runs its channels-last grouped kernel; ``F.conv1d`` on the transposed
    tensor takes a path ~2.4x slower forward + backward on one CPU thread (embedded
    student 128 wide, kernel 32, 8 groups, batch 8 x 150 frames: 12 vs 29 ms; paper
    student 384/128/16: 67 vs 120 ms; ``docs/benchmarks.md``). Same values up to float
    rounding, same gradients (``tests/test_student.py``).
    """
    x4 = x.transpose(1, 2).unsqueeze(2).contiguous(memory_format=torch.channels_last)
    y = F.conv2d(x4, weight.unsqueeze(2), bias, padding=(0, kernel // 2), groups=groups).squeeze(2)
    if kernel % 2 == 0:
        y = y[:, :, :-1]  # an even kernel with padding K//2 yields one extra frame
    return y.transpose(1, 2)


class SplitLinear(nn.Module):
    """``N`` independent linear maps applied to the ``N`` chunks of the last axis (the
    last layer of DistilHuBERT's prediction heads; s3prl's ``SplitLinear`` parameters)."""

    def __init__(self, in_dim: int, splits: int, out_dim: int) -> None:
        super().__init__()
        self.in_dim, self.splits, self.out_dim = in_dim, splits, out_dim
        bound = in_dim ** -0.5
        if splits > 1:
            self.weight = nn.Parameter(torch.empty(splits, in_dim, out_dim).uniform_(-bound, bound))
            self.bias = nn.Parameter(torch.empty(1, 1, splits, out_dim).uniform_(-bound, bound))
        else:
            self.layer = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, T, N * in_dim) -> (B, T, N * out_dim)."""
        if self.splits == 1:
            return self.layer(x)
        b, t, _ = x.shape
        y = torch.einsum("btni,nio->btno", x.view(b, t, self.splits, self.in_dim), self.weight) + self.bias
        return y.reshape(b, t, self.splits * self.out_dim)


# ----------------------------------------------------------------------------- the student


class Student(nn.Module):
    """A distillation student (see the module docstring for the layout).

    Args:
        shape: the architecture.
        frontend: a front-end module (``.out_dim``, ``.frame_lengths``, ``.spec``,
            ``forward(wavs, lengths) -> (feats, frame_lengths)``), or ``None`` when the
            caller feeds cached front-end features to :meth:`forward_features`.
        frontend_spec: the front-end's spec when ``frontend`` is ``None`` (kept for the
            checkpoint).
        targets: teacher hidden-state index per layer (``l2l``) or per head
            (``pred_heads``); default: the proportional map, or the heads' layers.

    Attributes:
        frontend, layers (``nn.ModuleList``), proj (``nn.ModuleList``, one per layer in
        ``l2l`` mode, empty in ``pred_heads`` mode), heads (``pred_heads`` mode), targets,
        shape, layer_norm_first; and the Upstream protocol: id, num_layers, width, frame_rate.
    """

    def __init__(self, shape: StudentShape, frontend: Optional[nn.Module] = None,
                 frontend_spec: Optional[dict] = None, targets: Optional[list[int]] = None) -> None:
        super().__init__()
        shape.validate()
        self.shape = shape
        self.frontend = frontend
        self.frontend_spec = dict(frontend.spec) if frontend is not None and hasattr(frontend, "spec") else frontend_spec
        if frontend is not None:
            out_dim = getattr(frontend, "out_dim", shape.frontend_dim)
            if out_dim != shape.frontend_dim:
                raise ValueError(f"student: front-end out_dim {out_dim} != shape.frontend_dim {shape.frontend_dim}")
            frontend.requires_grad_(shape.frontend_trainable)
        d = shape.width
        self.feature_norm = nn.LayerNorm(shape.frontend_dim) if shape.feature_norm else None
        self.post_extract_proj = nn.Linear(shape.frontend_dim, d)
        self.pos_conv = PosConv(d, shape.conv_pos, shape.conv_pos_groups) if shape.conv_pos else None
        # s3prl's encoder.layer_norm: on the encoder input (post-LN) or the top (pre-LN)
        self.encoder_layer_norm = nn.LayerNorm(d)
        self.dropout = nn.Dropout(shape.dropout)
        self.layers = nn.ModuleList(self.new_layer() for _ in range(shape.layers))
        if shape.target_mode == "l2l":
            self.proj = nn.ModuleList(self.new_proj() for _ in range(shape.layers))
            self.heads = None
            self.targets = list(targets) if targets is not None else proportional_targets(shape.layers, shape.teacher_layers)
        else:
            n = len(shape.pred_head_layers)
            self.proj = nn.ModuleList()
            # DistilHuBERT's output layer: Linear(D, N*D) -> GELU -> SplitLinear(D, N, D_teacher)
            self.heads = nn.Sequential(nn.Linear(d, d * n), nn.GELU(), SplitLinear(d, n, shape.teacher_width))
            self.targets = list(targets) if targets is not None else list(shape.pred_head_layers)
        if shape.target_mode == "l2l" and len(self.targets) != shape.layers:
            raise ValueError(f"student: {len(self.targets)} targets for {shape.layers} layers")
        self._id: Optional[str] = None

    # ------------------------------------------------------------------ building blocks

    def new_layer(self) -> EncoderLayer:
        """A freshly initialised encoder layer of this student's shape."""
        s = self.shape
        return EncoderLayer(s.width, s.heads, s.ffn, s.dropout, s.layer_norm_first)

    def new_proj(self) -> nn.Linear:
        """A freshly initialised per-layer projection to the teacher width."""
        return nn.Linear(self.shape.width, self.shape.teacher_width)

    @property
    def layer_norm_first(self) -> bool:
        return self.shape.layer_norm_first

    # ------------------------------------------------------------------ Upstream protocol

    @property
    def num_layers(self) -> int:
        """Current depth ``L`` (it changes when the student grows)."""
        return len(self.layers)

    @property
    def width(self) -> int:
        return self.shape.width

    @property
    def frame_rate(self) -> float:
        return float(getattr(self.frontend, "frame_rate", self.shape.frame_rate))

    @property
    def id(self) -> str:
        """``student-<sha1 of the architecture and weights>`` (16 hex digits); cached
        after the first call, so call :meth:`reset_id` after changing the weights."""
        if self._id is None:
            h = hashlib.sha1(json.dumps(self.config_dict(), sort_keys=True).encode())
            for name, t in sorted(self.state_dict().items()):
                h.update(name.encode())
                h.update(t.detach().cpu().contiguous().numpy().tobytes())
            self._id = "student-" + h.hexdigest()[:16]
        return self._id

    def reset_id(self) -> None:
        self._id = None

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Valid frames ``(B,)`` for ``(B,)`` valid samples (the front-end's arithmetic)."""
        if self.frontend is None:
            raise RuntimeError("student has no front-end (it is fed cached features); attach one first")
        return self.frontend.frame_lengths(lengths)

    def hidden_states(self, wavs: torch.Tensor, lengths: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Run front-end and encoder.

        Args:
            wavs: ``(B, S)`` float32 16 kHz waveforms, zero-padded.
            lengths: ``(B,)`` valid samples.

        Returns:
            ``(states, frame_lengths)``: ``L + 1`` tensors ``(B, T, width)`` (the encoder
            input, then each layer's output) and ``(B,)`` valid frames.
        """
        if self.frontend is None:
            raise RuntimeError("student has no front-end (it is fed cached features); attach one first")
        if self.shape.frontend_trainable:
            feats, frames = self.frontend(wavs, lengths)
        else:
            with torch.no_grad():
                feats, frames = self.frontend(wavs, lengths)
        return self.forward_features(feats, frames), frames

    def forward_features(self, feats: torch.Tensor, frame_lengths: Optional[torch.Tensor] = None) -> list[torch.Tensor]:
        """Encode front-end features.

        Args:
            feats: ``(B, T, C)`` front-end features (C = ``shape.frontend_dim``).
            frame_lengths: ``(B,)`` valid frames (``None``: all ``T``). Padded frames are
                zeroed before the positional conv and never attended to.

        Returns:
            ``L + 1`` tensors ``(B, T, width)``: state 0 = the encoder input (projected
            features + positional conv, then the encoder LayerNorm when post-LN), then
            the output of each layer.
        """
        b, t, _ = feats.shape
        if self.feature_norm is not None:
            feats = self.feature_norm(feats)
        x = self.post_extract_proj(feats)
        attn_mask = None
        if frame_lengths is not None:
            valid = torch.arange(t, device=x.device)[None, :] < frame_lengths.to(x.device)[:, None]
            # every row keeps >= 1 key so a zero-length item yields finite (unused) values
            valid[:, 0] = True
            x = x * valid[:, :, None].to(x.dtype)
            if not bool(valid.all()):
                attn_mask = valid[:, None, None, :]
        if self.pos_conv is not None:
            x = x + self.pos_conv(x)
        if not self.shape.layer_norm_first:
            x = self.encoder_layer_norm(x)
        x = self.dropout(x)
        states = [x]
        for layer in self.layers:
            x = layer(x, attn_mask)
            states.append(x)
        return states

    def forward(self, feats: torch.Tensor, frame_lengths: Optional[torch.Tensor] = None) -> list[torch.Tensor]:
        """Same as :meth:`forward_features`."""
        return self.forward_features(feats, frame_lengths)

    def project(self, states: list[torch.Tensor]) -> list[torch.Tensor]:
        """Distillation predictions, aligned with :attr:`targets`.

        Args:
            states: the ``L + 1`` states of :meth:`forward_features`.

        Returns:
            ``l2l``: ``L`` tensors ``proj[i](states[i + 1])``; ``pred_heads``: ``N``
            head predictions from the top state. Each ``(B, T, teacher_width)``.
        """
        if self.heads is None:
            if len(states) != len(self.proj) + 1:
                raise ValueError(f"project: {len(states)} states for {len(self.proj)} layers (expected L + 1)")
            return [p(s) for p, s in zip(self.proj, states[1:])]
        top = states[-1]
        if self.shape.layer_norm_first:
            top = self.encoder_layer_norm(top)  # s3prl applies the final LN before the heads
        b, t, _ = top.shape
        n = len(self.targets)
        pred = self.heads(top).view(b, t, n, self.shape.teacher_width)
        return [pred[:, :, i] for i in range(n)]

    # ------------------------------------------------------------------ (de)serialisation

    def config_dict(self) -> dict:
        """Shape (with the current depth), targets and front-end spec as plain data."""
        shape = dataclasses.asdict(self.shape)
        shape["layers"] = len(self.layers)
        return {"shape": shape, "targets": list(self.targets), "frontend_spec": self.frontend_spec}

    def encoder_params(self) -> int:
        """Parameters of the student as an upstream: front-end + encoder, without the
        training-only L2L projections / prediction heads."""
        skip = {id(p) for p in self.proj.parameters()}
        if self.heads is not None:
            skip |= {id(p) for p in self.heads.parameters()}
        return sum(p.numel() for p in self.parameters() if id(p) not in skip)


# ----------------------------------------------------------------------------- building


@dataclass
class TeacherInfo:
    """What a student needs to know about its teacher (any object with these attributes
    works, e.g. an Upstream with a ``.frontend``)."""

    width: int
    num_layers: int
    frame_rate: float = 50.0
    frontend: Any = None  # an nn.Module front-end, or its spec dict


def _teacher_fields(teacher_info: Any) -> tuple[int, int, float, Any]:
    if isinstance(teacher_info, dict):
        teacher_info = TeacherInfo(**teacher_info)
    try:
        return (int(teacher_info.width), int(teacher_info.num_layers),
                float(getattr(teacher_info, "frame_rate", 50.0)), getattr(teacher_info, "frontend", None))
    except AttributeError as err:
        raise ValueError(f"teacher_info needs width, num_layers (and frame_rate, frontend): {err}") from None


def _copy_frontend(frontend: Any) -> tuple[Optional[nn.Module], Optional[dict], int]:
    """(module copy or None, spec, out_dim) from a teacher's front-end module or spec."""
    if frontend is None:
        raise ValueError("teacher_info has no front-end; the student copies the teacher's (module or spec)")
    if isinstance(frontend, dict):
        module = build_frontend(frontend)
        return module, dict(frontend), int(module.out_dim)
    module = copy.deepcopy(frontend)
    return module, dict(getattr(module, "spec", {}) or {}) or None, int(module.out_dim)


def make_student(preset: str, teacher_info: Any, **overrides: Any) -> Student:
    """Build a student from a preset shape, overridden by keyword arguments.

    Args:
        preset: a key of :data:`PRESETS`.
        teacher_info: teacher width, layers, frame rate and front-end (a module, copied
            with its weights, or a spec dict, built with random weights).
        **overrides: any :class:`StudentShape` field (``layers=3``, ``layer_norm_first=True``),
            plus ``targets``.

    Returns:
        The student, in training mode.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown student preset {preset!r}; choose from {', '.join(PRESETS)}")
    t_width, t_layers, rate, frontend = _teacher_fields(teacher_info)
    module, spec, out_dim = _copy_frontend(frontend)
    targets = overrides.pop("targets", None)
    fields = {**PRESETS[preset], **overrides}
    unknown = set(fields) - {f.name for f in dataclasses.fields(StudentShape)}
    if unknown:
        raise ValueError(f"unknown student shape field(s) {sorted(unknown)}")
    shape = StudentShape(frontend_dim=out_dim, teacher_width=t_width, teacher_layers=t_layers,
                         frame_rate=float(getattr(module, "frame_rate", rate)), **fields)
    return Student(shape, module, frontend_spec=spec, targets=targets)


def student_tiny(teacher_info: Any, **overrides: Any) -> Student:
    """4 layers x 64 (4 heads, FFN 256, pos conv 16/4): tests and CI, seconds on a CPU."""
    return make_student("student_tiny", teacher_info, **overrides)


def student_embedded(teacher_info: Any, **overrides: Any) -> Student:
    """8 layers x 128 (4 heads, FFN 512, pos conv 32/8): the embedded profile on a CPU."""
    return make_student("student_embedded", teacher_info, **overrides)


def student_paper(teacher_info: Any, **overrides: Any) -> Student:
    """12 layers x 384 (12 heads, FFN 1536, pos conv 128/16): the paper's student.

    With HuBERT Base's conv front-end (512 channels) this has 26.87M parameters as an
    upstream (front-end 4.20M + projection + positional conv + 12 layers; measured by
    ``tests/test_student.py``), plus 3.55M in the 12 training-only projections to 768.
    """
    return make_student("student_paper", teacher_info, **overrides)


def build_student(cfg: Any, teacher_info: Any) -> Student:
    """Build the student a :class:`harness.config.StudentConfig` describes.

    The preset gives the shape; the config's non-zero ``layers``/``width``/``heads``/
    ``ffn`` (and, when the config has them, ``conv_pos``/``conv_pos_groups``/
    ``feature_norm``) override it; ``layer_norm_first``, ``dropout``,
    ``frontend_trainable``, ``target_mode`` and ``pred_head_layers`` always come from it.
    """
    over: dict[str, Any] = {}
    for name in ("layers", "width", "heads", "ffn"):
        if getattr(cfg, name, 0):
            over[name] = getattr(cfg, name)
    conv_pos = getattr(cfg, "conv_pos", 0)
    if conv_pos:
        over["conv_pos"] = max(conv_pos, 0)  # -1 = no positional conv
    if getattr(cfg, "conv_pos_groups", 0):
        over["conv_pos_groups"] = cfg.conv_pos_groups
    if hasattr(cfg, "feature_norm"):
        over["feature_norm"] = bool(cfg.feature_norm)
    over["layer_norm_first"] = bool(cfg.layer_norm_first)
    over["dropout"] = float(cfg.dropout)
    over["frontend_trainable"] = bool(cfg.frontend_trainable)
    over["target_mode"] = cfg.target_mode
    over["pred_head_layers"] = list(cfg.pred_head_layers)
    if "width" in over and "heads" not in over and over["width"] % PRESETS[cfg.preset]["heads"]:
        raise ValueError(f"student.width {over['width']} is not divisible by the preset's heads; set student.heads")
    return make_student(cfg.preset, teacher_info, **over)


# ----------------------------------------------------------------------------- checkpoints


def save_student(student: Student, path: str | Path, extra: Optional[dict] = None) -> None:
    """Write a self-contained student checkpoint (atomically: tmp file + rename).

    It holds the shape (current depth), targets, front-end spec and weights, and the
    encoder weights: :func:`load_student` rebuilds it without the teacher.

    Args:
        student: the student (its front-end may be ``None``: then only its spec is kept).
        path: output file (``student.ckpt``).
        extra: JSON-able data stored alongside (run id, config).
    """
    path = Path(path)
    state = {k: v for k, v in student.state_dict().items() if not k.startswith("frontend.")}
    fe = student.frontend
    blob = {
        "format": CKPT_FORMAT,
        **student.config_dict(),
        "frontend_spec": dict(fe.spec) if fe is not None and hasattr(fe, "spec") else student.frontend_spec,
        "frontend_state": fe.state_dict() if fe is not None else None,
        "state_dict": state,
        "extra": json.loads(json.dumps(extra or {}, default=str)),  # plain JSON types
    }
    safeload.save(blob, path)


def load_student(path: str | Path, device: str | torch.device = "cpu",
                 frontend_builder: Optional[Callable[[dict], nn.Module]] = None) -> Student:
    """Rebuild a student saved by :func:`save_student` (in eval mode, frozen).

    Args:
        path: the checkpoint.
        device: where to put it.
        frontend_builder: ``spec -> module``; default
            ``harness.frontends.build_frontend``.

    The file is read with ``weights_only=True`` (:func:`harness.safeload.load`): loading
    it runs none of its code.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a harness student checkpoint (a
            :class:`~harness.safeload.CorruptCheckpointError`, or an
            :class:`~harness.safeload.UnsafeCheckpointError` when it needs pickle and
            ``--trust-checkpoint`` was not given).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such student checkpoint")
    blob = safeload.load(path, what="student checkpoint")
    if not isinstance(blob, dict) or blob.get("format") != CKPT_FORMAT:
        raise ValueError(f"{path}: not a harness student checkpoint (format {CKPT_FORMAT})")
    try:
        shape = StudentShape(**blob["shape"])
        frontend = None
        if blob.get("frontend_state") is not None and blob.get("frontend_spec"):
            frontend = (frontend_builder or build_frontend)(blob["frontend_spec"])
            frontend.load_state_dict(blob["frontend_state"])
        student = Student(shape, frontend, frontend_spec=blob.get("frontend_spec"), targets=blob["targets"])
        student.load_state_dict(blob["state_dict"], strict=False)
    except Exception as err:  # a damaged or hand-edited file: one line, no traceback
        text = (str(err).strip().splitlines() or [""])[0][:160]
        raise safeload.CorruptCheckpointError(
            f"{path}: damaged student checkpoint ({type(err).__name__}: {text})") from None
    missing = set(student.state_dict()) - set(blob["state_dict"]) - {
        k for k in student.state_dict() if k.startswith("frontend.")}
    if missing:
        raise ValueError(f"{path}: checkpoint lacks {sorted(missing)[:3]}...")
    student.extra = blob.get("extra", {})
    student.eval().requires_grad_(False)
    return student.to(device)
