"""Fabricated SUPERB material for tests: a tiny corpus of tone FLACs and a tiny upstream.

Every task's labels are encoded in the audio, so a working pipeline beats chance:
utterance labels are the tone frequency; PR/ASR utterances are sequences of tone
segments, one "phone" per segment, and the transcript spells those phones.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

SR = 16000
PHONES = {"a": 300.0, "b": 700.0, "c": 1300.0, "d": 2300.0}


def _tone(freq: float, n: int, rng) -> np.ndarray:
    t = np.arange(n) / SR
    return (0.5 * np.sin(2 * np.pi * freq * t) + 0.02 * rng.standard_normal(n)).astype(np.float32)


def write_corpus(root: Path, n: dict[str, int] | None = None, seed: int = 0,
                 tasks=("ks", "ic", "sid", "er", "asr")) -> Path:
    """Write ``<task>_{train,dev,test}.jsonl`` + FLACs under ``root``; return ``root``."""
    n = n or {"train": 24, "dev": 8, "test": 8}
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "audio").mkdir(exist_ok=True)
    freqs = [250.0, 600.0, 1200.0, 2500.0]
    for task in tasks:
        for split, count in n.items():
            recs = []
            for i in range(count):
                uid = f"{task}_{split}_{i:03d}"
                path = Path("audio") / f"{uid}.flac"
                if task == "asr":
                    syms = [list(PHONES)[k] for k in rng.integers(0, 4, size=3)]
                    seg = 2400
                    wav = np.concatenate([_tone(PHONES[s], seg, rng) for s in syms])
                    phones = [[s, k * seg, (k + 1) * seg] for k, s in enumerate(syms)]
                    rec = {"text": f"{syms[0]}{syms[1]} {syms[2]}", "phones": phones}
                else:
                    label = int(i % 4)
                    wav = _tone(freqs[label], 6400, rng)
                    rec = {"label": f"class{label}", "text": ""}
                sf.write(root / path, wav, SR)
                recs.append({"id": uid, "path": str(path), "num_samples": len(wav),
                             "sample_rate": SR, "speaker": f"spk{i % 3}", **rec})
            with open(root / f"{task}_{split}.jsonl", "w") as f:
                for r in recs:
                    f.write(json.dumps(r) + "\n")
    (root / "corpus.json").write_text(json.dumps({"profile": "fake"}))
    return root


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
