"""Every fake corpus of the tests: real audio files and manifests in the corpus contract.

Each builder writes under ``root`` (created if needed) and returns ``root``. The data depend
only on the arguments: one seeded generator, drawn in a fixed order, so tests may assert on
what they compute from these corpora. Tests reach them through the ``fake_corpus`` fixture
(tests/conftest.py): ``fake_corpus(kind, root=None, **options)``, ``kind`` one of
:data:`KINDS`:

``tones``      tone-in-noise FLACs and ``distill.jsonl`` (distillation, teacher cache, bench)
``teacher``    phone/speaker tones: ``distill``, ``asr_{train,test}``, ``sid_{train,test}``
``superb``     ``<task>_{train,dev,test}`` for ks, ic, sid, er and asr, labels in the audio
``asr_tones``  ``asr_{train,dev,test}``, one tone per letter, so text is learnable
``ramps``      WAVs whose sample k holds k/32768 (exact crops), ``split.jsonl``
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

from harness.data.manifest import write_manifest

SR = 16000


def _write_jsonl(path: Path, records: list[dict]) -> None:
    """A manifest as ``json.dumps`` writes it (default separators), one record a line."""
    with open(path, "w") as fh:
        for rec in records:
            fh.write(json.dumps(rec) + "\n")


# ----------------------------------------------------------------------------- tones


def tones(root: Path, n: int = 8, seconds: tuple[float, float] = (0.6, 1.6),
          freqs: tuple[float, float] = (100, 800), seed: int = 0) -> Path:
    """``n`` FLACs (``seconds`` long, a tone of a frequency in ``freqs`` plus noise), ``distill.jsonl``."""
    (root / "audio").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        samples = int(SR * rng.uniform(*seconds))
        t = np.arange(samples) / SR
        wav = 0.3 * np.sin(2 * np.pi * rng.uniform(*freqs) * t) + 0.05 * rng.standard_normal(samples)
        sf.write(root / "audio" / f"u{i}.flac", wav.astype(np.float32), SR)
        records.append({"id": f"u{i}", "path": f"audio/u{i}.flac", "num_samples": samples,
                        "sample_rate": SR, "speaker": f"s{i % 2}", "text": ""})
    write_manifest(root / "distill.jsonl", records)
    return root


# ----------------------------------------------------------------------------- teacher

TEACHER_PHONES = ["a", "i", "u", "s", "m"]
TEACHER_FREQS = {"a": 300.0, "i": 700.0, "u": 1200.0, "s": 0.0, "m": 150.0}


def teacher(root: Path, n_distill: int = 24, n_probe: int = 12, speakers: int = 3, seed: int = 0) -> Path:
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
            ph = TEACHER_PHONES[rng.integers(len(TEACHER_PHONES))]
            n = int(rng.integers(1600, 3200))
            t = np.arange(n) / SR
            if TEACHER_FREQS[ph] == 0.0:
                x = 0.1 * rng.standard_normal(n)
            else:
                f = TEACHER_FREQS[ph] * (1.0 + 0.3 * spk)
                x = (0.2 + 0.1 * spk) * np.sin(2 * np.pi * f * t) + 0.01 * rng.standard_normal(n)
            segs.append(x)
            phones.append([ph, pos, pos + n])
            pos += n
        wav = np.concatenate(segs).astype(np.float32)
        sf.write(root / "wav" / f"{uid}.flac", wav, SR)
        return {"id": uid, "path": f"wav/{uid}.flac", "num_samples": len(wav), "sample_rate": SR,
                "speaker": f"spk{spk}", "text": "", "phones": phones, "label": f"spk{spk}"}

    splits = {"distill": n_distill, "asr_train": n_probe, "asr_test": n_probe, "sid_train": n_probe, "sid_test": n_probe}
    for split, n in splits.items():
        _write_jsonl(root / f"{split}.jsonl", [utt(f"{split}_{i}", i % speakers) for i in range(n)])
    (root / "corpus.json").write_text(json.dumps({"profile": "fabricated"}))
    return root


# ----------------------------------------------------------------------------- superb

SUPERB_PHONES = {"a": 300.0, "b": 700.0, "c": 1300.0, "d": 2300.0}


def _tone(freq: float, n: int, rng) -> np.ndarray:
    t = np.arange(n) / SR
    return (0.5 * np.sin(2 * np.pi * freq * t) + 0.02 * rng.standard_normal(n)).astype(np.float32)


def superb(root: Path, n: dict[str, int] | None = None, seed: int = 0,
           tasks=("ks", "ic", "sid", "er", "asr")) -> Path:
    """``<task>_{train,dev,test}.jsonl`` + FLACs under ``root``.

    Every task's labels are encoded in the audio, so a working pipeline beats chance:
    utterance labels are the tone frequency; PR/ASR utterances are sequences of tone
    segments, one "phone" per segment, and the transcript spells those phones.
    """
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
                    syms = [list(SUPERB_PHONES)[k] for k in rng.integers(0, 4, size=3)]
                    seg = 2400
                    wav = np.concatenate([_tone(SUPERB_PHONES[s], seg, rng) for s in syms])
                    phones = [[s, k * seg, (k + 1) * seg] for k, s in enumerate(syms)]
                    rec = {"text": f"{syms[0]}{syms[1]} {syms[2]}", "phones": phones}
                else:
                    label = int(i % 4)
                    wav = _tone(freqs[label], 6400, rng)
                    rec = {"label": f"class{label}", "text": ""}
                sf.write(root / path, wav, SR)
                recs.append({"id": uid, "path": str(path), "num_samples": len(wav),
                             "sample_rate": SR, "speaker": f"spk{i % 3}", **rec})
            _write_jsonl(root / f"{task}_{split}.jsonl", recs)
    (root / "corpus.json").write_text(json.dumps({"profile": "fake"}))
    return root


# ----------------------------------------------------------------------------- asr_tones

WORDS = ["ab", "ba", "cab", "dad", "bead", "ace", "bed", "fade"]


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


def asr_tones(root: Path, n_train: int = 64, n_test: int = 12, seed: int = 0) -> Path:
    """``root/asr_{train,dev,test}.jsonl`` + FLACs (16-bit PCM)."""
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


# ----------------------------------------------------------------------------- ramps


def ramps(root: Path, lengths: list[int]) -> Path:
    """16-bit WAVs whose sample k holds k/32768 (so crops can be located exactly), ``split.jsonl``."""
    recs = []
    for i, n in enumerate(lengths):
        rel = f"audio/u{i}.wav"
        (root / "audio").mkdir(parents=True, exist_ok=True)
        sf.write(root / rel, (np.arange(n) % 32768).astype(np.int16), SR, subtype="PCM_16")
        recs.append({"id": f"u{i}", "path": rel, "num_samples": n, "sample_rate": SR, "speaker": "s", "text": ""})
    write_manifest(root / "split.jsonl", recs)
    return root


KINDS = {"tones": tones, "teacher": teacher, "superb": superb, "asr_tones": asr_tones, "ramps": ramps}
