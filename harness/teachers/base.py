"""The upstream protocol: what a teacher (and any scored model) must provide.

Teachers, students and baselines (``fbank``) are all *upstreams*: frozen modules mapping
a batch of 16 kHz waveforms to a list of hidden states. Distillation, the feature cache,
SUPERB scoring and layer analysis only ever talk to this protocol.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

from harness.registry import Registry

if TYPE_CHECKING:  # torch only in annotations: configs check teacher kinds without importing it
    import torch

# spec prefix -> builder(arg: str, device) -> Upstream. Declared lazily: the adapters import
# this module (and s3prl / transformers when a spec of theirs is loaded), so the registry
# names them here and imports a builder's module on first use.
TEACHERS: Registry = Registry("teacher")
TEACHERS.register_lazy("dummy", "harness.teachers.dummy:build_dummy")
TEACHERS.register_lazy("embedded", "harness.teachers.embedded:_build_embedded")
TEACHERS.register_lazy("fbank", "harness.teachers.fbank:build_fbank")  # the SUPERB baseline
TEACHERS.register_lazy("hf", "harness.teachers.hf_adapter:build_hf")
TEACHERS.register_lazy("s3prl", "harness.teachers.s3prl_adapter:build_s3prl")


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
    kind, arg = parse_spec(spec)
    return TEACHERS.get(kind)(arg, device)
