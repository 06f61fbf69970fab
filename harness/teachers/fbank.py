"""The ``fbank`` upstream: log-mel filterbank features, the SUPERB baseline.

SUPERB scores every model against FBANK features fed to the same heads; the SUPERB score
(:mod:`harness.superb.score`) puts fbank at 0. Here: 80 log-mel bands, 25 ms Hann
window, 10 ms hop (100 frames per second), ``log(mel + 1e-6)``. It implements the
:class:`~harness.teachers.base.Upstream` protocol with ``num_layers = 0``: exactly one
hidden state, so the learned weighted sum degenerates to the identity (the featurizer
has no weights for a single state, as s3prl's).

Registered in the ``TEACHERS`` registry as kind ``fbank`` like every other teacher:
``load_teacher("fbank")`` or ``load_teacher("fbank:40")`` (number of mel bands).
"""

from __future__ import annotations

import torch
from torch import nn

from harness.data.audio import SAMPLE_RATE
from harness.teachers.base import TEACHERS

N_FFT = 400  # 25 ms at 16 kHz
HOP = 160  # 10 ms


class FbankUpstream(nn.Module):
    """Log-mel filterbank as a one-state upstream.

    Args:
        n_mels: mel bands (``width``).
    """

    num_layers = 0
    frame_rate = SAMPLE_RATE / HOP

    def __init__(self, n_mels: int = 80) -> None:
        super().__init__()
        import torchaudio

        self.width = n_mels
        self.id = f"fbank-{n_mels}-hop{HOP}-v1"
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=SAMPLE_RATE, n_fft=N_FFT, win_length=N_FFT, hop_length=HOP,
            n_mels=n_mels, center=True, power=2.0,
        )

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """``(B,)`` samples -> ``(B,)`` frames (centred STFT: ``S // hop + 1``)."""
        return torch.div(lengths, HOP, rounding_mode="floor") + 1

    @torch.no_grad()
    def hidden_states(self, wavs: torch.Tensor, lengths: torch.Tensor
                      ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """``(B, S)`` waveforms -> ``([ (B, T, n_mels) ], (B,) frames)``."""
        feats = torch.log(self.mel(wavs.float()) + 1e-6).transpose(1, 2)  # (B, T, n_mels)
        return [feats], self.frame_lengths(lengths).clamp_max(feats.shape[1])


@TEACHERS.register("fbank")
def build_fbank(arg: str, device: str | torch.device = "cpu") -> FbankUpstream:
    """``fbank`` / ``fbank:N`` (N mel bands, default 80)."""
    try:
        n_mels = int(arg) if arg else 80
    except ValueError:
        raise ValueError(f"fbank spec 'fbank:{arg}': the argument must be a number of mel bands") from None
    return FbankUpstream(n_mels).to(device).eval()
