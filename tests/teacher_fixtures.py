"""Fabricated audio corpora for the teacher tests: tones and noise, written as real FLACs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

PHONES = ["a", "i", "u", "s", "m"]
FREQS = {"a": 300.0, "i": 700.0, "u": 1200.0, "s": 0.0, "m": 150.0}


def fabricate_corpus(root: Path, n_distill: int = 24, n_probe: int = 12, speakers: int = 3, seed: int = 0) -> Path:
    """A corpus folder with ``distill``, ``asr_{train,test}`` (phones) and ``sid_{train,test}``.

    Each utterance is a sequence of 'phones': a tone (speaker-dependent pitch factor and
    level) or noise for ``s``, 0.1-0.2 s each, so phone and speaker are both learnable.
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "wav").mkdir(exist_ok=True)

    def utt(uid: str, spk: int) -> dict:
        segs, phones, pos = [], [], 0
        for _ in range(rng.integers(6, 12)):
            ph = PHONES[rng.integers(len(PHONES))]
            n = int(rng.integers(1600, 3200))
            t = np.arange(n) / 16000
            if FREQS[ph] == 0.0:
                x = 0.1 * rng.standard_normal(n)
            else:
                f = FREQS[ph] * (1.0 + 0.3 * spk)
                x = (0.2 + 0.1 * spk) * np.sin(2 * np.pi * f * t) + 0.01 * rng.standard_normal(n)
            segs.append(x)
            phones.append([ph, pos, pos + n])
            pos += n
        wav = np.concatenate(segs).astype(np.float32)
        sf.write(root / "wav" / f"{uid}.flac", wav, 16000)
        return {"id": uid, "path": f"wav/{uid}.flac", "num_samples": len(wav), "sample_rate": 16000,
                "speaker": f"spk{spk}", "text": "", "phones": phones, "label": f"spk{spk}"}

    splits = {"distill": n_distill, "asr_train": n_probe, "asr_test": n_probe, "sid_train": n_probe, "sid_test": n_probe}
    for split, n in splits.items():
        with open(root / f"{split}.jsonl", "w") as fh:
            for i in range(n):
                fh.write(json.dumps(utt(f"{split}_{i}", i % speakers)) + "\n")
    (root / "corpus.json").write_text(json.dumps({"profile": "fabricated"}))
    return root
