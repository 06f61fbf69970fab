"""Reading the SUPERB splits of a corpus folder: manifests, subsets, audio.

A corpus folder holds ``<split>.jsonl`` manifests (one JSON record per line, with at least
``id``, ``path`` (relative to the folder, or absolute) and ``num_samples``) and the audio.
The reader here is deliberately small and strict: a missing split, a bad line or an
unreadable audio file fails with one line naming the file.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000


class DataError(ValueError):
    """Bad or missing SUPERB data (one line naming the file)."""


def split_path(corpus_dir: Path, split: str) -> Path:
    """``<corpus_dir>/<split>.jsonl``."""
    return Path(corpus_dir) / f"{split}.jsonl"


def check_splits(corpus_dir: Path, splits: list[str]) -> None:
    """Fail on the first missing manifest.

    Raises:
        FileNotFoundError: naming the missing ``<split>.jsonl``.
    """
    corpus_dir = Path(corpus_dir)
    if not corpus_dir.is_dir():
        raise FileNotFoundError(f"corpus folder {corpus_dir} does not exist (build it with "
                                "'harness data build' or import one with 'harness data import')")
    for split in splits:
        path = split_path(corpus_dir, split)
        if not path.is_file():
            raise FileNotFoundError(f"missing split {split!r}: {path} does not exist")


def read_split(corpus_dir: Path, split: str) -> list[dict]:
    """All records of a split, in file order.

    Raises:
        FileNotFoundError: the manifest is missing.
        DataError: a line is not a JSON object with ``id`` and ``path``, or the split is empty.
    """
    path = split_path(corpus_dir, split)
    if not path.is_file():
        raise FileNotFoundError(f"missing split {split!r}: {path} does not exist")
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{n}: not JSON ({err.msg})") from None
            if not isinstance(rec, dict) or "id" not in rec or "path" not in rec:
                raise DataError(f"{path}:{n}: a record needs 'id' and 'path'")
            out.append(rec)
    if not out:
        raise DataError(f"split {split!r} ({path}) is empty")
    return out


def subsample(records: list[dict], limit: int, seed: int = 0) -> list[dict]:
    """A seeded random subset of ``limit`` records, kept in file order (0 = all).

    Depends only on the records, ``limit`` and ``seed``, so two tasks reading the same
    split with the same limit get the same utterances (and share cached features).
    """
    if not limit or limit >= len(records):
        return list(records)
    keep = sorted(random.Random(seed).sample(range(len(records)), limit))
    return [records[i] for i in keep]


def load_wav(record: dict, root: Path) -> np.ndarray:
    """16 kHz mono float32 ``(S,)`` audio of a record.

    Raises:
        DataError: unreadable, empty, not 16 kHz, or multi-channel (naming the path).
    """
    path = Path(record["path"])
    if not path.is_absolute():
        path = Path(root) / path
    try:
        import soundfile as sf

        wav, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as err:  # soundfile raises several types for bad files
        raise DataError(f"cannot read audio {path}: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    if sr != SAMPLE_RATE:
        raise DataError(f"audio {path} is {sr} Hz, expected {SAMPLE_RATE}")
    if wav.shape[1] != 1:
        raise DataError(f"audio {path} has {wav.shape[1]} channels, expected mono")
    if wav.shape[0] == 0:
        raise DataError(f"audio {path} is empty")
    return np.ascontiguousarray(wav[:, 0])
