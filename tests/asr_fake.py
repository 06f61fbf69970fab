"""A fabricated ASR corpus for tests: each character is a short tone, so text is learnable.

Real FLAC files and manifests in the corpus contract (``asr_train``/``asr_dev``/``asr_test``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from harness.data.manifest import write_manifest

WORDS = ["ab", "ba", "cab", "dad", "bead", "ace", "bed", "fade"]
SR = 16000


def tone_wav(text: str, rng: np.random.Generator, char_s: float = 0.05) -> np.ndarray:
    """One tone per letter (frequency by letter), silence for spaces, a little noise."""
    n = int(char_s * SR)
    t = np.arange(n) / SR
    parts = [np.zeros(n // 2, np.float32)]
    for c in text:
        if c == " ":
            parts.append(np.zeros(n, np.float32))
        else:
            f = 250.0 + 180.0 * (ord(c) - ord("a"))
            parts.append((0.3 * np.sin(2 * np.pi * f * t) * np.hanning(n)).astype(np.float32))
    wav = np.concatenate(parts + [np.zeros(n // 2, np.float32)])
    return (wav + 0.005 * rng.standard_normal(len(wav))).astype(np.float32)


def make_tone_corpus(root: Path, n_train: int = 64, n_test: int = 12, seed: int = 0) -> Path:
    """Write ``root/asr_{train,dev,test}.jsonl`` + FLACs; returns ``root``."""
    rng = np.random.default_rng(seed)
    (root / "audio").mkdir(parents=True, exist_ok=True)
    for split, n in (("asr_train", n_train), ("asr_dev", n_test), ("asr_test", n_test)):
        recs = []
        for i in range(n):
            text = " ".join(WORDS[int(j)] for j in rng.integers(len(WORDS), size=int(rng.integers(1, 4))))
            wav = tone_wav(text, rng)
            rel = f"audio/{split}-{i:04d}.flac"
            sf.write(root / rel, wav, SR, subtype="PCM_16")
            recs.append({"id": f"{split}-{i:04d}", "path": rel, "num_samples": len(wav), "sample_rate": SR,
                         "speaker": "tone", "text": text})
        write_manifest(root / f"{split}.jsonl", recs)
    return root
