"""Front-ends: the waveform -> frame-feature modules that teachers and students share.

A front-end is an ``nn.Module`` with ``forward(wavs (B, S), lengths (B,)) -> (feats
(B, T, C), frame_lengths (B,))``, ``.out_dim`` (C), ``.frame_rate`` (Hz),
``.frame_lengths(lengths)`` and ``.spec``: a plain dict from which :func:`build_frontend`
rebuilds the same architecture (the weights then come through ``load_state_dict``). That is
how a student copies its teacher's front-end and how a checkpoint stores it.

Types: ``conv`` (:class:`ConvFrontend`, the wav2vec 2.0 / HuBERT / WavLM convolutional
feature extractor) and ``fbank`` (log-mel filterbank + conv subsampling, in
:mod:`harness.teachers.fbank`).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from harness.data.audio import SAMPLE_RATE

# wav2vec 2.0 / HuBERT Base / WavLM: 7 layers, total stride 320 samples (20 ms, 50 Hz),
# receptive field 400 samples (25 ms).
STANDARD_CONV_LAYERS: tuple[tuple[int, int, int], ...] = (
    ((512, 10, 5),) + ((512, 3, 2),) * 4 + ((512, 2, 2),) * 2
)

CONV_MODES = ("group_norm", "layer_norm", "none")


def conv_layers(dim: int = 512) -> list[list[int]]:
    """The standard 7-layer, 320-sample-hop conv stack with ``dim`` channels per layer."""
    return [[dim, k, s] for _, k, s in STANDARD_CONV_LAYERS]


def normalize_waveforms(wavs: torch.Tensor, lengths: torch.Tensor, eps: float) -> torch.Tensor:
    """Zero-mean, unit-variance per utterance over its valid samples; padding set to 0.

    This is ``F.layer_norm(wav[:n], wav[:n].shape)`` (s3prl, eps 1e-5) and the
    ``zero_mean_unit_var_norm`` of the transformers feature extractor (eps 1e-7), batched.

    Args:
        wavs: ``(B, S)`` waveforms, zero-padded.
        lengths: ``(B,)`` valid samples.
        eps: added to the (biased) variance.

    Returns:
        ``(B, S)`` normalised waveforms.
    """
    mask = torch.arange(wavs.shape[1], device=wavs.device)[None, :] < lengths.to(wavs.device)[:, None]
    n = lengths.to(wavs.device, wavs.dtype).clamp(min=1)[:, None]
    x = wavs * mask
    mean = x.sum(1, keepdim=True) / n
    var = ((x - mean) * mask).pow(2).sum(1, keepdim=True) / n
    return ((wavs - mean) / torch.sqrt(var + eps)) * mask


class ConvFrontend(nn.Module):
    """A wav2vec 2.0-style convolutional feature extractor.

    Each layer is ``Conv1d(dim, kernel, stride) -> norm -> GELU``. ``mode`` picks the
    norm: ``group_norm`` = one GroupNorm with a group per channel on the first layer only
    (fairseq's ``default`` extractor mode, HuBERT Base / wav2vec 2.0 Base / WavLM Base);
    ``layer_norm`` = a LayerNorm over channels after every conv (the Large models);
    ``none`` = no norm. Norms run in float32 like fairseq's ``Fp32GroupNorm``.

    Note: the group norm of ``group_norm`` mode normalises over the whole (padded) time
    axis, exactly as the original models do, so a padded utterance's features depend
    slightly on the padding; ``layer_norm`` and ``none`` modes do not.

    Args:
        layers: ``[(dim, kernel, stride), ...]`` bottom to top.
        mode: ``group_norm``, ``layer_norm`` or ``none``.
        conv_bias: whether the convolutions have a bias.
        normalize_wav: normalise each waveform to zero mean and unit variance first (the
            checkpoint's ``normalize`` / ``do_normalize`` setting).
        wav_norm_eps: the variance epsilon of that normalisation.
    """

    def __init__(
        self,
        layers: Sequence[Sequence[int]] = STANDARD_CONV_LAYERS,
        mode: str = "group_norm",
        conv_bias: bool = False,
        normalize_wav: bool = False,
        wav_norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        layers = [tuple(int(v) for v in layer) for layer in layers]
        if not layers or any(len(layer) != 3 or min(layer) < 1 for layer in layers):
            raise ValueError(f"conv front-end: layers must be a non-empty list of positive (dim, kernel, stride), got {layers}")
        if mode not in CONV_MODES:
            raise ValueError(f"conv front-end: mode {mode!r} is not one of {', '.join(CONV_MODES)}")
        self.layers = layers
        self.mode = mode
        self.conv_bias = bool(conv_bias)
        self.normalize_wav = bool(normalize_wav)
        self.wav_norm_eps = float(wav_norm_eps)
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        in_dim = 1
        for i, (dim, kernel, stride) in enumerate(layers):
            self.convs.append(nn.Conv1d(in_dim, dim, kernel, stride=stride, bias=self.conv_bias))
            if mode == "layer_norm":
                self.norms.append(nn.LayerNorm(dim))
            elif mode == "group_norm" and i == 0:
                self.norms.append(nn.GroupNorm(dim, dim, affine=True))
            else:
                self.norms.append(nn.Identity())
            in_dim = dim
        for conv in self.convs:
            nn.init.kaiming_normal_(conv.weight)

    @property
    def out_dim(self) -> int:
        """Channels ``C`` of the output features."""
        return self.layers[-1][0]

    @property
    def hop(self) -> int:
        """Samples between consecutive frames (product of the strides; 320 as standard)."""
        return math.prod(s for _, _, s in self.layers)

    @property
    def receptive_field(self) -> int:
        """Samples one output frame sees (400 for the standard stack)."""
        field = 1
        for _, k, s in reversed(self.layers):
            field = (field - 1) * s + k
        return field

    @property
    def frame_rate(self) -> float:
        """Output frames per second at 16 kHz (50.0 for a 320-sample hop)."""
        return SAMPLE_RATE / self.hop

    @property
    def spec(self) -> dict:
        """The architecture as a plain dict; ``build_frontend(spec)`` rebuilds it."""
        return {
            "type": "conv",
            "layers": [list(layer) for layer in self.layers],
            "mode": self.mode,
            "conv_bias": self.conv_bias,
            "normalize_wav": self.normalize_wav,
            "wav_norm_eps": self.wav_norm_eps,
        }

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Valid output frames ``(B,)`` for ``(B,)`` valid samples.

        Applies each layer's ``floor((n - kernel) / stride) + 1`` (no padding), clamped at
        0: a frame is valid when its whole receptive field lies inside the utterance.
        """
        n = torch.as_tensor(lengths, dtype=torch.int64)
        for _, kernel, stride in self.layers:
            n = torch.div(n - kernel, stride, rounding_mode="floor") + 1
            n = n.clamp(min=0)
        return n

    def forward(self, wavs: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Extract features.

        Args:
            wavs: ``(B, S)`` float waveforms at 16 kHz, zero-padded.
            lengths: ``(B,)`` valid samples (``None``: all ``S``).

        Returns:
            ``(feats, frame_lengths)``: ``(B, T, C)`` features with
            ``T = frame_lengths(S)`` and ``(B,)`` valid frames per utterance.
        """
        if wavs.dim() != 2:
            raise ValueError(f"conv front-end: wavs must be (B, S), got shape {tuple(wavs.shape)}")
        if lengths is None:
            lengths = torch.full((wavs.shape[0],), wavs.shape[1], dtype=torch.int64, device=wavs.device)
        if self.normalize_wav:
            wavs = normalize_waveforms(wavs, lengths, self.wav_norm_eps)
        x = wavs.unsqueeze(1)
        for conv, norm in zip(self.convs, self.norms):
            x = conv(x)
            if isinstance(norm, nn.GroupNorm):
                x = F.group_norm(x.float(), norm.num_groups, norm.weight.float(), norm.bias.float(), norm.eps).type_as(x)
            elif isinstance(norm, nn.LayerNorm):
                y = x.transpose(1, 2).float()
                y = F.layer_norm(y, norm.normalized_shape, norm.weight.float(), norm.bias.float(), norm.eps)
                x = y.type_as(x).transpose(1, 2)
            x = F.gelu(x)
        feats = x.transpose(1, 2)
        frames = self.frame_lengths(lengths.cpu()).clamp(max=feats.shape[1]).to(wavs.device)
        return feats, frames

    # ------------------------------------------------------------------ weight mapping

    def load_fairseq_extractor(self, state: dict[str, torch.Tensor]) -> None:
        """Load the weights of a fairseq/s3prl ``ConvFeatureExtractionModel``.

        Its keys (``feature_extractor.`` prefix stripped): ``conv_layers.{i}.0.weight``
        (conv), ``conv_layers.0.2.weight`` (group norm) or ``conv_layers.{i}.2.1.weight``
        (layer norm), and the matching biases.
        """
        mapped = {}
        for i in range(len(self.layers)):
            mapped[f"convs.{i}.weight"] = state[f"conv_layers.{i}.0.weight"]
            if self.conv_bias:
                mapped[f"convs.{i}.bias"] = state[f"conv_layers.{i}.0.bias"]
            norm = "2.1" if self.mode == "layer_norm" else "2"
            if not isinstance(self.norms[i], nn.Identity):
                mapped[f"norms.{i}.weight"] = state[f"conv_layers.{i}.{norm}.weight"]
                mapped[f"norms.{i}.bias"] = state[f"conv_layers.{i}.{norm}.bias"]
        self.load_state_dict(mapped, strict=True)

    def load_hf_extractor(self, state: dict[str, torch.Tensor]) -> None:
        """Load the weights of a transformers ``*FeatureEncoder`` (Wav2Vec2, Hubert, WavLM).

        Its keys: ``conv_layers.{i}.conv.weight`` and ``conv_layers.{i}.layer_norm.weight``
        (a GroupNorm on layer 0 in ``group`` mode, LayerNorms in ``layer`` mode).
        """
        mapped = {}
        for i in range(len(self.layers)):
            mapped[f"convs.{i}.weight"] = state[f"conv_layers.{i}.conv.weight"]
            if self.conv_bias:
                mapped[f"convs.{i}.bias"] = state[f"conv_layers.{i}.conv.bias"]
            if not isinstance(self.norms[i], nn.Identity):
                mapped[f"norms.{i}.weight"] = state[f"conv_layers.{i}.layer_norm.weight"]
                mapped[f"norms.{i}.bias"] = state[f"conv_layers.{i}.layer_norm.bias"]
        self.load_state_dict(mapped, strict=True)
