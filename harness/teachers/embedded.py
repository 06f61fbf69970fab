"""The embedded SFM: a small HuBERT-style speech model pretrained here on the embedded corpus.

Architecture (HuBERT Base in miniature): front-end (``fbank`` by default, see
:mod:`harness.frontends.fbank`) -> LayerNorm + linear feature projection -> convolutional
positional embedding -> ``L`` transformer layers. ``post_ln=True`` (HuBERT Base's layout)
normalises after each residual sum; a pre-LN stack keeps one residual stream that adjacent
layers only nudge, which measured here as CKA 0.97-0.99 between neighbouring layers, i.e.
little layer-specific knowledge for layer-to-layer distillation to exploit.

Hidden state 0 is the encoder input (projected features + positional embedding, after the
input LayerNorm when post-LN), states 1..L the layer outputs. The pretraining recipe is in
:mod:`harness.teachers.pretrain`; ``embedded`` (no path) loads the shipped asset.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from harness import safeload
from harness.frontends import build_frontend
from harness.teachers.base import TEACHERS
from harness.teachers.ident import CheckpointError, one_line

ASSET = Path(__file__).resolve().parent.parent / "assets" / "teacher_embedded.pt"


@dataclass
class EmbeddedConfig:
    """Architecture of the embedded SFM (everything needed to rebuild it).

    Attributes:
        frontend: front-end spec (``{"type": "fbank", ...}`` or another front-end type).
        layers: transformer layers ``L``.
        width: model width ``D``.
        heads: attention heads.
        ffn: feed-forward inner size.
        pos_kernel: kernel (frames) of the convolutional positional embedding.
        pos_groups: groups of that convolution.
        post_ln: LayerNorm after each residual sum (HuBERT Base) instead of before (pre-LN).
        dropout: dropout on attention weights, residual branches and the projected features.
    """

    frontend: dict[str, Any] = field(default_factory=lambda: {"type": "fbank", "n_mels": 80, "dim": 256, "kernel": 3})
    layers: int = 8
    width: int = 192
    heads: int = 4
    ffn: int = 512
    pos_kernel: int = 32
    pos_groups: int = 16
    post_ln: bool = True
    dropout: float = 0.1


class EncoderLayer(nn.Module):
    """One transformer layer (self-attention + GELU FFN), post-LN or pre-LN."""

    def __init__(self, width: int, heads: int, ffn: int, dropout: float, post_ln: bool) -> None:
        super().__init__()
        self.heads, self.post_ln, self.dropout = heads, post_ln, dropout
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.ln1 = nn.LayerNorm(width)
        self.ff1 = nn.Linear(width, ffn)
        self.ff2 = nn.Linear(ffn, width)
        self.ln2 = nn.LayerNorm(width)

    def _attn(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        # key_mask (B, T) True = valid; broadcast to (B, 1, 1, T) for every head and query
        mask = None if key_mask is None else key_mask[:, None, None, :]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(b, t, d))

    def _ffn(self, x: torch.Tensor) -> torch.Tensor:
        return self.ff2(F.dropout(F.gelu(self.ff1(x)), self.dropout, self.training))

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        drop = lambda y: F.dropout(y, self.dropout, self.training)  # noqa: E731
        if self.post_ln:
            x = self.ln1(x + drop(self._attn(x, key_mask)))
            return self.ln2(x + drop(self._ffn(x)))
        x = x + drop(self._attn(self.ln1(x), key_mask))
        return x + drop(self._ffn(self.ln2(x)))


class EmbeddedSFM(nn.Module):
    """The embedded teacher; implements the Upstream protocol (+ ``.frontend``).

    Args:
        cfg: the architecture.
    """

    # its states of an utterance do not depend on the padding around it in a batch (masked
    # front-end and attention; tests/teachers/test_cache.py measures it): the teacher cache
    # may batch utterances of different lengths
    padding_invariant = True

    def __init__(self, cfg: EmbeddedConfig) -> None:
        super().__init__()
        if cfg.width % cfg.heads or cfg.width % cfg.pos_groups:
            raise ValueError(f"embedded teacher: width {cfg.width} must divide by heads and pos_groups")
        self.cfg = cfg
        self.frontend = build_frontend(dict(cfg.frontend))
        self.feat_ln = nn.LayerNorm(self.frontend.out_dim)
        self.feat_proj = nn.Linear(self.frontend.out_dim, cfg.width)
        self.mask_emb = nn.Parameter(torch.empty(cfg.width).uniform_())
        self.pos_conv = nn.Conv1d(cfg.width, cfg.width, cfg.pos_kernel, padding=cfg.pos_kernel // 2, groups=cfg.pos_groups)
        self.in_ln = nn.LayerNorm(cfg.width)
        self.layers = nn.ModuleList(
            EncoderLayer(cfg.width, cfg.heads, cfg.ffn, cfg.dropout, cfg.post_ln) for _ in range(cfg.layers)
        )
        # pre-LN: the residual stream is normalised once on the way out (as in wav2vec2 large)
        self.out_ln = None if cfg.post_ln else nn.LayerNorm(cfg.width)
        self.num_layers, self.width, self.frame_rate = cfg.layers, cfg.width, float(self.frontend.frame_rate)
        self._id: str | None = None

    # ---------------------------------------------------------------- Upstream protocol
    @property
    def id(self) -> str:
        """``embedded-<sha256[:16]>`` of the config and the weights (computed once, frozen use)."""
        if self._id is None:
            h = hashlib.sha256(json.dumps(asdict(self.cfg), sort_keys=True).encode())
            for name, t in sorted(self.state_dict().items()):
                h.update(name.encode())
                h.update(t.detach().to(torch.float16).cpu().contiguous().numpy().tobytes())
            self._id = "embedded-" + h.hexdigest()[:16]
        return self._id

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return self.frontend.frame_lengths(lengths)

    def encode(
        self, feats: torch.Tensor, frame_lengths: torch.Tensor, mask: torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        """Front-end features -> the ``L + 1`` hidden states.

        Args:
            feats: ``(B, T, C)`` front-end output.
            frame_lengths: ``(B,)`` valid frames.
            mask: optional ``(B, T)`` bool, frames replaced by the mask embedding
                (masked prediction pretraining).

        Returns:
            ``L + 1`` tensors ``(B, T, D)``; padded frames are zeroed.
        """
        t = feats.shape[1]
        valid = torch.arange(t, device=feats.device)[None, :] < frame_lengths[:, None]  # (B, T)
        x = self.feat_proj(self.feat_ln(feats))
        if mask is not None:
            x = torch.where(mask[..., None], self.mask_emb.to(x.dtype), x)
        x = x * valid[..., None]
        pos = self.pos_conv(x.transpose(1, 2))[..., :t]  # even kernel pads one extra frame
        x = x + F.gelu(pos).transpose(1, 2)
        if self.cfg.post_ln:
            x = self.in_ln(x)
        x = F.dropout(x, self.cfg.dropout, self.training)
        key_mask = None if bool(valid.all()) else valid
        states = [x * valid[..., None]]
        for i, layer in enumerate(self.layers):
            x = layer(x, key_mask)
            y = self.out_ln(x) if (self.out_ln is not None and i == len(self.layers) - 1) else x
            states.append(y * valid[..., None])
        return states

    def hidden_states(
        self, wavs: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """``(B, S)`` 16 kHz waveforms + ``(B,)`` lengths -> (``L + 1`` x ``(B, T, D)``, ``(B,)``)."""
        feats, flen = self.frontend(wavs, lengths)
        return self.encode(feats, flen), flen


# ---------------------------------------------------------------- checkpoints


def save_embedded(model: EmbeddedSFM, path: str | Path, extra: dict | None = None, fp16: bool = True) -> Path:
    """Write ``{"format", "config", "state_dict", "extra"}`` atomically (fp16 weights by default).

    ``extra`` is stored as plain JSON types, so the file loads with ``weights_only=True``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: (v.detach().cpu().half() if fp16 and v.is_floating_point() else v.detach().cpu()) for k, v in model.state_dict().items()}
    blob = {"format": "harness-embedded-sfm-1", "config": asdict(model.cfg), "state_dict": sd, "extra": json.loads(json.dumps(extra or {}, default=str))}
    return safeload.save(blob, path)


def load_embedded(path: str | Path, device: str | torch.device = "cpu") -> EmbeddedSFM:
    """Load a checkpoint written by :func:`save_embedded` as a frozen float32 eval model.

    Raises:
        FileNotFoundError: the file does not exist.
        CheckpointError: the file is not an embedded-SFM checkpoint (a ``ValueError``;
            one line naming the file).
        UnsafeCheckpointError: the file needs pickle (it was not written by
            :func:`save_embedded`) and ``--trust-checkpoint`` was not given.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"embedded teacher checkpoint {path} not found (train one with 'harness teacher pretrain --profile embedded --out {path}')"
        )
    try:
        blob = safeload.load(path, what="embedded-teacher checkpoint")  # weights_only=True
    except safeload.CorruptCheckpointError as err:
        raise CheckpointError(str(err)) from None
    if not isinstance(blob, dict) or blob.get("format") != "harness-embedded-sfm-1":
        raise CheckpointError(f"{path}: not an embedded-teacher checkpoint (no 'harness-embedded-sfm-1' format tag)")
    try:
        model = EmbeddedSFM(EmbeddedConfig(**blob["config"]))
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in blob["state_dict"].items()})
    except Exception as err:  # a damaged or hand-edited file
        raise CheckpointError(f"{path}: damaged embedded-teacher checkpoint ({one_line(err)})") from None
    model.extra = blob.get("extra", {})
    return model.eval().requires_grad_(False).to(device)


def random_twin(model: EmbeddedSFM, seed: int = 0) -> EmbeddedSFM:
    """A randomly initialised model with the same architecture (the probes' control)."""
    torch.manual_seed(seed)
    return EmbeddedSFM(EmbeddedConfig(**asdict(model.cfg))).eval().requires_grad_(False)


@TEACHERS.register("embedded")
def _build_embedded(arg: str, device: str | torch.device = "cpu") -> EmbeddedSFM:
    """``embedded`` = the shipped asset; ``embedded:PATH`` = a checkpoint file."""
    return load_embedded(arg if arg else ASSET, device)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def teacher_embedded() -> EmbeddedConfig:
    """Preset of the shipped embedded teacher (8 x 192, post-LN, fbank front-end)."""
    return EmbeddedConfig()


def teacher_tiny() -> EmbeddedConfig:
    """Preset for tests and the tiny profile (4 x 64)."""
    return EmbeddedConfig(
        frontend={"type": "fbank", "n_mels": 40, "dim": 64, "kernel": 3},
        layers=4, width=64, heads=2, ffn=128, pos_kernel=16, pos_groups=8,
    )

