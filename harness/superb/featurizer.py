"""Learned softmax-weighted sum of all hidden states (SUPERB's featurizer).

Same semantics as s3prl's ``s3prl.nn.upstream.Featurizer``: one scalar weight per hidden
state, initialised to zero (so the sum starts as the plain mean), softmax-normalised; an
upstream with a single hidden state (``fbank``) is passed through with no weights at
all. It is a small module of our own rather than s3prl's class because s3prl's needs a
live ``S3PRLUpstream`` at construction and importing ``s3prl.nn`` fails on torchaudio
2.11 without the compat shim, while here the states come from the on-disk feature cache.

Optional per-layer normalisation (``mean``/``std`` buffers, one row per hidden state) is
a fixed affine map set from training statistics; s3prl's ``normalize=True`` is a
per-frame ``layer_norm`` instead. See :class:`harness.superb.tasks.Task.normalize`.
"""

from __future__ import annotations

import torch
from torch import nn


class Featurizer(nn.Module):
    """Weighted sum over the hidden-state axis.

    Args:
        num_states: ``L + 1`` hidden states of the upstream.
        width: ``D``.
        mean: optional ``(L + 1, D)`` per-layer mean subtracted before the sum.
        std: optional ``(L + 1, D)`` per-layer std divided out before the sum.
    """

    def __init__(self, num_states: int, width: int, mean: torch.Tensor | None = None,
                 std: torch.Tensor | None = None) -> None:
        super().__init__()
        if num_states < 1:
            raise ValueError(f"num_states must be >= 1, got {num_states}")
        self.num_states = num_states
        self.width = width
        self.weights = nn.Parameter(torch.zeros(num_states)) if num_states > 1 else None
        zeros = torch.zeros(num_states, width)
        self.register_buffer("mean", zeros if mean is None else mean.float().reshape(num_states, width))
        self.register_buffer("inv_std", torch.ones(num_states, width) if std is None
                             else 1.0 / std.float().reshape(num_states, width).clamp_min(1e-5))

    def layer_weights(self) -> list[float]:
        """The softmax weights, one per hidden state (``[1.0]`` for a single state)."""
        if self.weights is None:
            return [1.0]
        return torch.softmax(self.weights.detach(), dim=0).tolist()

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        """Combine hidden states.

        Args:
            states: ``(..., L + 1, D)`` (the layer axis second to last).

        Returns:
            ``(..., D)`` float32.
        """
        x = (states.float() - self.mean) * self.inv_std
        if self.weights is None:
            return x[..., 0, :]
        w = torch.softmax(self.weights, dim=0)
        return torch.einsum("...ld,l->...d", x, w)
