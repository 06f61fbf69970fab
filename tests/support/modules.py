"""Small torch modules shared by tests: front-ends and an upstream with the harness contracts.

``StridedFrontend``: one Conv1d, the front-end contract (student and stacking tests).
``ConvStack``: the conv front-end contract of ``harness.frontends.ConvFrontend`` (export, student).
``ToyUpstream``: a deterministic upstream with hidden states (SUPERB tests).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

LAYERS = [[16, 10, 5], [16, 3, 2], [16, 3, 2], [16, 3, 2], [16, 3, 2], [16, 2, 2], [16, 2, 2]]


class StridedFrontend(nn.Module):
    """A minimal front-end with the contract: one Conv1d, 400-sample window, 320 hop."""

    def __init__(self, dim: int = 12) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, dim, 400, stride=320)
        self.out_dim = dim
        self.frame_rate = 50.0

    @property
    def spec(self) -> dict:
        return {"type": "strided", "dim": self.out_dim}

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return (torch.div(lengths - 400, 320, rounding_mode="floor") + 1).clamp(min=0)

    def forward(self, wavs, lengths):
        return self.conv(wavs[:, None]).transpose(1, 2), self.frame_lengths(lengths)


class ConvStack(nn.Module):
    """The conv front-end contract of ``harness.frontends.ConvFrontend`` (same
    spec and parameter names), for when that module is not importable."""

    def __init__(self, layers=LAYERS, mode="group_norm", conv_bias=False, normalize_wav=False, wav_norm_eps=1e-5):
        super().__init__()
        self.layers, self.mode = [tuple(x) for x in layers], mode
        self.conv_bias, self.normalize_wav, self.wav_norm_eps = conv_bias, normalize_wav, wav_norm_eps
        self.convs, self.norms = nn.ModuleList(), nn.ModuleList()
        d_in = 1
        for i, (d, k, s) in enumerate(self.layers):
            self.convs.append(nn.Conv1d(d_in, d, k, stride=s, bias=conv_bias))
            if mode == "layer_norm":
                self.norms.append(nn.LayerNorm(d))
            elif mode == "group_norm" and i == 0:
                self.norms.append(nn.GroupNorm(d, d))
            else:
                self.norms.append(nn.Identity())
            d_in = d
        self.out_dim, self.frame_rate = self.layers[-1][0], 16000 / math.prod(s for _, _, s in self.layers)

    @property
    def spec(self):
        return {"type": "conv", "layers": [list(x) for x in self.layers], "mode": self.mode,
                "conv_bias": self.conv_bias, "normalize_wav": self.normalize_wav, "wav_norm_eps": self.wav_norm_eps}

    def frame_lengths(self, lengths):
        n = torch.as_tensor(lengths, dtype=torch.int64)
        for _, k, s in self.layers:
            n = (torch.div(n - k, s, rounding_mode="floor") + 1).clamp(min=0)
        return n

    def forward(self, wavs, lengths):
        x = wavs[:, None]
        for conv, norm in zip(self.convs, self.norms):
            x = conv(x)
            if isinstance(norm, nn.LayerNorm):
                x = norm(x.transpose(1, 2)).transpose(1, 2)
            elif isinstance(norm, nn.GroupNorm):
                x = norm(x)
            x = F.gelu(x)
        return x.transpose(1, 2), self.frame_lengths(lengths).clamp(max=x.shape[-1])


class ToyUpstream(torch.nn.Module):
    """Deterministic upstream: 20 ms frames (320-sample hop), log band energies through
    fixed random maps; ``num_layers = 2`` (3 hidden states of width 16)."""

    num_layers = 2
    width = 16
    frame_rate = 50.0

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.id = f"toy-{seed}"
        self.maps = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.randn(41, 16, generator=g) * 0.3, requires_grad=False)
             for _ in range(3)])

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return torch.div(lengths, 320, rounding_mode="floor")

    def hidden_states(self, wavs, lengths):
        frames = wavs[:, : wavs.shape[1] // 320 * 320].reshape(wavs.shape[0], -1, 320)
        spec = torch.fft.rfft(frames, n=80).abs().pow(2).add(1e-6).log()  # (B, T, 41)
        states, x = [], spec
        for m in self.maps:
            states.append(x @ m if x.shape[-1] == 41 else torch.tanh(x) @ m[:16])
            x = states[-1]
        return states, self.frame_lengths(lengths)
