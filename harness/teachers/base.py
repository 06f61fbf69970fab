"""The upstream protocol: what a teacher (and any scored model) must provide.

Teachers, students and baselines (``fbank``) are all *upstreams*: frozen modules mapping
a batch of 16 kHz waveforms to a list of hidden states. Distillation, the feature cache,
SUPERB scoring and layer analysis only ever talk to this protocol.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from harness.registry import Registry

SAMPLE_RATE = 16000

# spec prefix ("dummy", "embedded", "s3prl", "hf") -> builder(arg: str, device) -> Upstream
TEACHERS: Registry = Registry("teacher")


@runtime_checkable
class Upstream(Protocol):
    """A frozen speech model exposing all its hidden states.

    Attributes:
        id: stable identifier: a hash of the weights and config (used as a cache key).
        num_layers: transformer layers ``L``; :meth:`hidden_states` returns ``L + 1``
            tensors (pre-encoder features first).
        width: hidden size ``D`` of the returned states.
        frame_rate: frames per second of the hidden states (50.0 for a 320-sample hop).
    """

    id: str
    num_layers: int
    width: int
    frame_rate: float

    def hidden_states(
        self, wavs: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Run the model.

        Args:
            wavs: ``(B, S)`` float32 waveforms at 16 kHz, zero-padded.
            lengths: ``(B,)`` valid samples per waveform.

        Returns:
            ``(states, frame_lengths)``: ``L + 1`` tensors of shape ``(B, T, D)``
            (pre-encoder features, then layers 1..L) and ``(B,)`` valid frames.
        """
        ...

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Valid frames ``(B,)`` for ``(B,)`` valid samples (the front-end's arithmetic)."""
        ...


def parse_spec(spec: str) -> tuple[str, str]:
    """Split ``"s3prl:hubert:/p/x.pt"`` into ``("s3prl", "hubert:/p/x.pt")``."""
    kind, _, arg = spec.partition(":")
    return kind, arg


def load_teacher(spec: str, device: str | torch.device = "cpu") -> Upstream:
    """Build the upstream a spec names (``dummy``, ``embedded:PATH``, ``s3prl:hubert:PATH``,
    ``s3prl:wavlm:PATH``, ``hf:DIR``).

    Raises:
        RegistryError: unknown spec kind (with the nearest kinds).
        FileNotFoundError: the checkpoint path does not exist (never downloads).
    """
    import harness.superb.fbank  # noqa: F401  (registers 'fbank', the SUPERB baseline)
    import harness.teachers  # noqa: F401  (registers the built-in kinds)

    kind, arg = parse_spec(spec)
    return TEACHERS.get(kind)(arg, device)
