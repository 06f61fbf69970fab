"""Log-mel filterbank front-end with convolutional subsampling to 50 Hz frames.

A cheaper alternative to the wav2vec2 convolutional feature extractor: the filterbank is a
fixed (non-learned) 10 ms-hop STFT, and one strided convolution halves the frame rate to
50 Hz (20 ms hop), the rate every upstream in the harness uses. On a 2-core CPU it costs a
small fraction of the wav2vec2 conv stack (which runs 7 convolutions at up to 16 kHz).

Frame arithmetic (samples ``S`` -> frames ``T``), no padding anywhere:
``n_fbank = (S - 400) // 160 + 1`` (25 ms window, 10 ms hop), ``T = n_fbank // 2``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torchaudio

from harness.data.audio import SAMPLE_RATE

WIN = 400  # 25 ms analysis window, samples
HOP = 160  # 10 ms hop, samples


class FbankFrontend(nn.Module):
    """Log-mel fbank (batched, torchaudio) + conv subsampling to 50 Hz.

    Args:
        n_mels: mel bins of the filterbank.
        dim: output channels ``C`` of the subsampling convolutions (``out_dim``).
        kernel: kernel size of the first (rate-preserving) convolution.

    The front-end contract: ``forward(wavs (B, S), lengths (B,)) -> (feats (B, T, C),
    frame_lengths (B,))``; ``out_dim``, ``frame_rate`` (50.0), ``frame_lengths``,
    ``spec`` (``{"type": "fbank", **kwargs}``; rebuilds the same architecture).
    """

    def __init__(self, n_mels: int = 80, dim: int = 256, kernel: int = 3) -> None:
        super().__init__()
        if kernel % 2 != 1:
            raise ValueError(f"fbank front-end: kernel must be odd (got {kernel})")
        self.n_mels, self.out_dim, self.kernel = int(n_mels), int(dim), int(kernel)
        self.frame_rate = SAMPLE_RATE / (2 * HOP)
        self.mel = torchaudio.transforms.MelSpectrogram(
            SAMPLE_RATE, n_fft=WIN, win_length=WIN, hop_length=HOP, n_mels=n_mels, center=False
        )
        # Fixed affine standardisation of log-mel values (log-mel of speech at normal levels
        # sits around -5 +/- 4); keeps the first conv's input near unit scale without
        # per-utterance normalisation, which would remove level/channel (speaker) cues.
        self.conv1 = nn.Conv1d(n_mels, dim, kernel, stride=1, padding=kernel // 2)
        self.conv2 = nn.Conv1d(dim, dim, 2, stride=2)
        self.act = nn.GELU()

    @property
    def spec(self) -> dict:
        return {"type": "fbank", "n_mels": self.n_mels, "dim": self.out_dim, "kernel": self.kernel}

    def fbank_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Valid 100 Hz fbank frames ``(B,)`` for ``(B,)`` valid samples."""
        return torch.clamp(torch.div(lengths - WIN, HOP, rounding_mode="floor") + 1, min=0)

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Valid 50 Hz output frames ``(B,)`` for ``(B,)`` valid samples."""
        return torch.div(self.fbank_lengths(lengths), 2, rounding_mode="floor")

    def log_mel(self, wavs: torch.Tensor) -> torch.Tensor:
        """``(B, S)`` waveforms -> ``(B, n_mels, n_fbank)`` standardised log-mel energies."""
        if wavs.shape[-1] < WIN:  # too short for one window: zero frames
            return wavs.new_zeros(wavs.shape[0], self.n_mels, 0)
        with torch.autocast(device_type=wavs.device.type, enabled=False):
            spec = self.mel(wavs.float())
        return (torch.log(spec + 1e-6) + 5.0) / 4.0

    def forward(self, wavs: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Args: ``wavs (B, S)`` 16 kHz, zero-padded; ``lengths (B,)`` valid samples.

        Returns:
            ``(feats (B, T, C), frame_lengths (B,))``, 50 Hz frames.
        """
        if wavs.dim() != 2:
            raise ValueError(f"fbank front-end: expected wavs (B, S), got shape {tuple(wavs.shape)}")
        x = self.log_mel(wavs)
        t = x.shape[-1] // 2
        if t == 0:
            return x.new_zeros(x.shape[0], 0, self.out_dim), torch.zeros_like(lengths)
        # zero the fbank frames past each utterance's end, so a padded batch gives the same
        # valid frames as each utterance alone (conv1's zero padding sees zeros either way)
        n = self.fbank_lengths(lengths)
        x = x * (torch.arange(x.shape[-1], device=x.device)[None, :] < n[:, None])[:, None, :]
        x = self.act(self.conv1(x))
        x = self.act(self.conv2(x[..., : 2 * t]))
        return x.transpose(1, 2), torch.clamp(self.frame_lengths(lengths), max=t)
