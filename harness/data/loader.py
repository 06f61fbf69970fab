"""Batches for distillation: a manifest's utterances, random crops, padding, and the
step-indexed batch datasets of a distillation run.

A batch (:class:`Batch`) of ``B`` utterances padded to the longest one, ``S`` samples:

=========== ============ =========================================================
field        shape        meaning
=========== ============ =========================================================
``wavs``     (B, S)       float32 samples at 16 kHz, zero after each utterance's end
``lengths``  (B,)         int64, valid samples per utterance
``mask``     (B, S)       bool, True on valid samples (``s < lengths[b]``)
``ids``      list[str]    utterance ids from the manifest
``offsets``  (B,)         int64, crop start in the original file, samples
=========== ============ =========================================================

Random crops (``max_seconds``) start at a multiple of :data:`FRAME_HOP` = 320 samples,
the 50 Hz frame hop of the conv front-ends, so frame-level features cached for the whole
utterance can be cropped the same way: frames ``offset // 320`` onwards. The crop of item
``i`` in epoch ``e`` depends only on ``(seed, e, i)`` (``dataset[(epoch, i)]``; plain
integer indexing uses epoch 0).

A distillation run reads one batch per optimisation step: :class:`CachedBatches` (cached
front-end features and teacher states) or :class:`WaveBatches` (waveforms for a live
teacher). Step ``k``'s batch is a pure function of ``(seed, k)``, whichever worker makes
it, which is what makes a resumed run identical to an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from harness.data.audio import SAMPLE_RATE, AudioError, load_audio
from harness.data.manifest import audio_path, read_manifest

FRAME_HOP = 320  # samples per 50 Hz frame at 16 kHz: crop starts are multiples of it


class AudioDataset(Dataset):
    """Utterances of a manifest, optionally randomly cropped.

    Args:
        manifest_path: a ``<split>.jsonl``; relative record paths resolve against its
            folder.
        max_seconds: crop utterances longer than this many seconds to
            ``int(max_seconds * 16000)`` samples (None = no crop).
        seed: crop randomness; the crop of item ``i`` in epoch ``e`` is a function of
            ``(seed, e, i)``.

    Items (``dataset[i]`` or ``dataset[(epoch, i)]``) are dicts: ``"id"`` (str),
    ``"wav"`` (float32 tensor ``(S,)``, samples at 16 kHz), ``"num_samples"`` (int,
    ``S``), ``"offset"`` (int, crop start in samples, a multiple of 320; 0 uncropped).

    Raises:
        ManifestError: unreadable manifest. Reading an item raises AudioError (one line
            naming the path) for a corrupt, truncated, empty, stereo or wrong-rate file,
            or one whose length differs from the manifest's ``num_samples``.
    """

    def __init__(self, manifest_path: str | Path, max_seconds: float | None = None, seed: int = 0) -> None:
        self.manifest_path = Path(manifest_path)
        self.root = self.manifest_path.parent
        self.records = read_manifest(self.manifest_path)
        if max_seconds is not None and max_seconds <= 0:
            raise ValueError(f"max_seconds must be positive, got {max_seconds}")
        self.max_samples = None if max_seconds is None else int(round(max_seconds * SAMPLE_RATE))
        self.seed = seed

    def __len__(self) -> int:
        return len(self.records)

    def lengths(self) -> list[int]:
        """Item lengths in samples after cropping (what a batch will hold)."""
        cap = self.max_samples
        return [r["num_samples"] if cap is None else min(r["num_samples"], cap) for r in self.records]

    def crop_offset(self, index: int, epoch: int = 0) -> int:
        """Crop start in samples for item ``index`` in ``epoch`` (multiple of 320)."""
        n = self.records[index]["num_samples"]
        if self.max_samples is None or n <= self.max_samples:
            return 0
        last = (n - self.max_samples) // FRAME_HOP  # highest aligned start that still fits
        rng = np.random.default_rng([self.seed, epoch, index])
        return int(rng.integers(0, last + 1)) * FRAME_HOP

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        rec = self.records[index]
        path = audio_path(rec, self.root)
        offset = self.crop_offset(index, epoch)
        n = rec["num_samples"]
        stop = n if self.max_samples is None else min(n, offset + self.max_samples)
        if rec.get("sample_rate", SAMPLE_RATE) != SAMPLE_RATE:
            raise AudioError(f"{path}: manifest says {rec['sample_rate']} Hz, expected {SAMPLE_RATE} Hz")
        # expected_len: a file replaced after import would silently misalign crops with
        # features cached for the manifest's length
        wav = load_audio(path, SAMPLE_RATE, start=offset, stop=stop, expected_len=n)
        return {"id": rec["id"], "wav": torch.from_numpy(wav), "num_samples": int(wav.shape[0]), "offset": offset}


@dataclass
class Batch:
    """Padded waveforms of ``B`` utterances (see the module docstring for the fields)."""

    wavs: torch.Tensor  # (B, S) float32
    lengths: torch.Tensor  # (B,) int64, samples
    mask: torch.Tensor  # (B, S) bool, True = valid sample
    ids: list[str]
    offsets: torch.Tensor  # (B,) int64, samples

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        """A copy with the tensors on ``device``."""
        return Batch(
            self.wavs.to(device, non_blocking=non_blocking),
            self.lengths.to(device, non_blocking=non_blocking),
            self.mask.to(device, non_blocking=non_blocking),
            list(self.ids),
            self.offsets.to(device, non_blocking=non_blocking),
        )

    def pin_memory(self) -> "Batch":
        """Page-locked copy (DataLoader calls this when ``pin_memory=True``)."""
        return Batch(self.wavs.pin_memory(), self.lengths.pin_memory(), self.mask.pin_memory(),
                     self.ids, self.offsets.pin_memory())

    def __len__(self) -> int:
        return len(self.ids)


def collate(items: Sequence[dict]) -> Batch:
    """Zero-pad items of :class:`AudioDataset` into a :class:`Batch`.

    Args:
        items: dataset items (``"wav"`` float32 ``(S_b,)``).

    Returns:
        Batch with ``wavs (B, max S_b)``, ``lengths (B,)``, ``mask (B, max S_b)``,
        ``ids``, ``offsets (B,)``.
    """
    if not items:
        raise ValueError("collate needs at least one item")
    lengths = torch.tensor([int(it["wav"].shape[0]) for it in items], dtype=torch.int64)
    wavs = torch.zeros(len(items), int(lengths.max()), dtype=torch.float32)
    for b, it in enumerate(items):
        wavs[b, : lengths[b]] = it["wav"]
    mask = torch.arange(wavs.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)
    offsets = torch.tensor([int(it.get("offset", 0)) for it in items], dtype=torch.int64)
    return Batch(wavs=wavs, lengths=lengths, mask=mask, ids=[it["id"] for it in items], offsets=offsets)


def _pick(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    return rng.choice(n, size=k, replace=n < k)


class CachedBatches(Dataset):
    """Step ``k`` -> a batch of cached front-end features and teacher states.

    Each utterance's cached arrays (``frontend`` and ``layer_<j>``, all ``(T, D)`` at the
    front-end's frame rate) are cropped at the same random offset to at most
    ``max_frames`` frames, so the features and the targets stay aligned; the utterances
    and offsets of step ``k`` depend only on ``(seed, k)``.

    Args:
        cache: a teacher-feature cache (``harness.teachers.cache``; ``get(id)`` -> arrays).
        ids: utterance ids to draw from.
        layers: teacher hidden-state indices to read (the stage's targets).
        batch_size: utterances per batch.
        max_frames: crop length in frames.
        seed: the run's seed.
        steps: the global steps this dataset serves (item ``i`` is step ``steps[i]``).

    Items: ``{"feats": (B, T, C) float32, "frame_lengths": (B,) int64,
    "targets": {j: (B, T, D) float32}}``.
    """

    def __init__(self, cache, ids: list[str], layers: list[int], batch_size: int,
                 max_frames: int, seed: int, steps: range):
        self.cache, self.ids, self.layers = cache, ids, layers
        self.batch_size, self.max_frames, self.seed, self.steps = batch_size, max_frames, seed, steps

    def __len__(self) -> int:
        return len(self.steps)

    def __getitem__(self, i: int) -> dict:
        step = self.steps[i]
        rng = np.random.default_rng([self.seed, step])
        keys = ["frontend"] + [f"layer_{j}" for j in self.layers]
        crops = []
        for idx in _pick(rng, len(self.ids), self.batch_size):
            arrays = self.cache.get(self.ids[idx])
            t = min(arrays[k].shape[0] for k in keys)  # guard against off-by-one frame counts
            n = min(t, self.max_frames)
            o = int(rng.integers(0, t - n + 1))
            crops.append({k: arrays[k][o:o + n] for k in keys})
        lengths = [c["frontend"].shape[0] for c in crops]
        t_max = max(lengths)

        def stack(key: str) -> torch.Tensor:
            out = np.zeros((len(crops), t_max, crops[0][key].shape[1]), dtype=np.float32)
            for b, c in enumerate(crops):
                out[b, : c[key].shape[0]] = c[key]
            return torch.from_numpy(out)

        return {
            "feats": stack("frontend"),
            "frame_lengths": torch.tensor(lengths, dtype=torch.int64),
            "targets": {j: stack(f"layer_{j}") for j in self.layers},
        }


class WaveBatches(Dataset):
    """Step ``k`` -> a batch of waveforms (live teacher), each cropped to ``max_samples``
    at an offset drawn from ``(seed, k)``, zero-padded by :func:`collate`.

    Args:
        dataset: an uncropped :class:`AudioDataset` (or a ``Subset`` of one).
        batch_size: utterances per batch.
        max_samples: crop length in samples at 16 kHz.
        seed: the run's seed.
        steps: the global steps this dataset serves.

    Items: ``{"wavs": (B, S) float32 at 16 kHz, "lengths": (B,) int64 samples}``.
    """

    def __init__(self, dataset, batch_size: int, max_samples: int, seed: int, steps: range):
        self.dataset, self.batch_size, self.max_samples = dataset, batch_size, max_samples
        self.seed, self.steps = seed, steps

    def __len__(self) -> int:
        return len(self.steps)

    def __getitem__(self, i: int) -> dict:
        rng = np.random.default_rng([self.seed, self.steps[i]])
        items = []
        for idx in _pick(rng, len(self.dataset), self.batch_size):
            item = self.dataset[int(idx)]
            wav = np.asarray(item["wav"], dtype=np.float32)
            n = min(len(wav), self.max_samples)
            o = int(rng.integers(0, len(wav) - n + 1))
            items.append({"id": item["id"], "wav": torch.from_numpy(wav[o:o + n]), "offset": o})
        batch = collate(items)
        return {"wavs": batch.wavs, "lengths": batch.lengths}
