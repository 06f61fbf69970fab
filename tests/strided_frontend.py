"""A minimal front-end with the front-end contract, shared by the student and stacking tests."""

import torch
from torch import nn


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
