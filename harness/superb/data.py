"""Reading the SUPERB splits of a corpus folder: manifests, subsets, audio.

A corpus folder holds ``<split>.jsonl`` manifests (the contract of
:mod:`harness.data.manifest`) and the audio. A missing split, a bad line or an unreadable
audio file fails with one line naming the file.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from harness.data.audio import SAMPLE_RATE
from harness.data.manifest import ManifestError, audio_path, read_manifest
from harness.errors import HarnessError


class DataError(ValueError, HarnessError):
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
    """All records of a split, in file order (through :func:`harness.data.manifest.read_manifest`).

    Raises:
        FileNotFoundError: the manifest is missing.
        DataError: a malformed line or record (naming file and line), or an empty split.
    """
    path = split_path(corpus_dir, split)
    if not path.is_file():
        raise FileNotFoundError(f"missing split {split!r}: {path} does not exist")
    try:
        out = read_manifest(path)
    except ManifestError as err:
        raise DataError(str(err)) from None
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


def label_key(label) -> str:
    """A hashable, stable form of a record's ``label`` (str as is, else sorted JSON)."""
    import json

    return label if isinstance(label, str) else json.dumps(label, sort_keys=True)


CLASS_SEED = 0
"""Seed of the class subset of a task with ``max_classes`` (the embedded SID's 128 speakers):
fixed, so every evaluation seed scores the same speakers."""


def keep_classes(splits: dict[str, list[dict]], train: str, limit: int, seed: int = 0
                 ) -> dict[str, list[dict]]:
    """Keep the records of ``limit`` classes (a seeded sample of the training labels).

    Args:
        splits: split name -> records (each with ``label``).
        train: the training split's name (its labels define the classes).
        limit: classes to keep; 0 = all.

    Returns:
        The filtered records per split, order kept.
    """
    classes = sorted({label_key(r["label"]) for r in splits[train]})
    if not limit or limit >= len(classes):
        return splits
    keep = set(random.Random(seed).sample(classes, limit))
    return {name: [r for r in recs if label_key(r["label"]) in keep] for name, recs in splits.items()}


def load_wav(record: dict, root: Path) -> np.ndarray:
    """16 kHz mono float32 ``(S,)`` audio of a record.

    Raises:
        DataError: unreadable, empty, not 16 kHz, or multi-channel (naming the path).
    """
    path = audio_path(record, root)
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
