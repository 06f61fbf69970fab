"""Fabricated SUPERB material for tests: a tiny corpus of tone FLACs.

Every task's labels are encoded in the audio, so a working pipeline beats chance:
utterance labels are the tone frequency; PR/ASR utterances are sequences of tone
segments, one "phone" per segment, and the transcript spells those phones.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

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
