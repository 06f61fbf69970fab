"""The ``dummy`` teacher: random but deterministic weights, small and fast, for tests.

Same shape of computation as a HuBERT-style model (conv front-end with a 320-sample hop,
feature projection, post-LN transformer layers), so every code path that talks to a
teacher runs in well under a second on a CPU. Its weights come from a fixed seed, so its
id, and therefore its feature cache, are the same in every process.
"""

from __future__ import annotations

import torch
from torch import nn

from harness.config import ConfigError
from harness.teachers.base import TEACHERS
from harness.frontends import ConvFrontend, conv_layers
from harness.teachers.ident import weights_id

SEED = 1234


class DummyTeacher(nn.Module):
    """A frozen, randomly initialised HuBERT-shaped upstream (Upstream protocol).

    Args:
        num_layers: transformer layers ``L``.
        width: hidden size ``D``.
        heads: attention heads.
        conv_dim: channels of the conv front-end (its ``out_dim``).
        seed: weight seed (the global RNG is left untouched).
    """

    # its states of an utterance do not depend on the padding around it in a batch (masked
    # front-end and attention; tests/teachers/test_cache.py measures it): the teacher cache
    # may batch utterances of different lengths
    padding_invariant = True

    def __init__(self, num_layers: int = 4, width: int = 64, heads: int = 4, conv_dim: int = 32,
                 seed: int = SEED) -> None:
        super().__init__()
        self.config = {"num_layers": num_layers, "width": width, "heads": heads, "conv_dim": conv_dim, "seed": seed}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.frontend = ConvFrontend(conv_layers(conv_dim), mode="layer_norm")
            self.feature_norm = nn.LayerNorm(conv_dim)
            self.proj = nn.Linear(conv_dim, width)
            self.layers = nn.ModuleList(
                nn.TransformerEncoderLayer(width, heads, dim_feedforward=2 * width, dropout=0.0,
                                           activation="gelu", batch_first=True)
                for _ in range(num_layers)
            )
        self.num_layers = num_layers
        self.width = width
        self.frame_rate = self.frontend.frame_rate
        self.eval()
        self.requires_grad_(False)
        self.id = weights_id("dummy", self.config, self.state_dict())

    def train(self, mode: bool = True) -> "nn.Module":
        """A frozen teacher stays in eval mode (no dropout, no layerdrop) whatever is asked."""
        return super().train(False)

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Valid frames ``(B,)`` for ``(B,)`` valid samples (conv arithmetic)."""
        return self.frontend.frame_lengths(lengths)

    def hidden_states(self, wavs: torch.Tensor, lengths: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """``L + 1`` states ``(B, T, width)`` (projected features, then each layer) and
        ``(B,)`` valid frames, for ``(B, S)`` 16 kHz waveforms with ``(B,)`` valid samples."""
        with torch.no_grad():
            feats, frames = self.frontend(wavs, lengths)
            x = self.proj(self.feature_norm(feats))
            pad = torch.arange(x.shape[1], device=x.device)[None, :] >= frames[:, None]
            states = [x]
            for layer in self.layers:
                x = layer(x, src_key_padding_mask=pad)
                states.append(x)
        return states, frames


@TEACHERS.register("dummy")
def build_dummy(arg: str = "", device: str | torch.device = "cpu") -> DummyTeacher:
    """``dummy`` (4 layers x 64) or ``dummy:L`` / ``dummy:LxD`` for other sizes."""
    kwargs = {}
    if arg:
        try:
            parts = [int(p) for p in arg.lower().split("x")]
        except ValueError:
            raise ConfigError(f"teacher spec 'dummy:{arg}': expected 'dummy', 'dummy:L' or 'dummy:LxD'") from None
        kwargs["num_layers"] = parts[0]
        if len(parts) > 1:
            kwargs["width"] = parts[1]
    return DummyTeacher(**kwargs).to(device)
