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
from typing import Optional, Sequence

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


def crop_stack(arrays: Sequence[dict], keys: Sequence[str], rng: np.random.Generator, max_frames: int,
               keep: Optional[range] = None) -> tuple[dict[str, torch.Tensor], list[int], list[int]]:
    """Crop each utterance's arrays at one random frame offset and zero-pad them into a batch.

    The one crop rule of distillation batches, cached and live alike: utterance ``b`` has
    ``t`` frames (the fewest of its arrays: front-end and layer frame counts can differ by
    one), its crop is ``n = min(t, max_frames)`` frames from ``o = rng.integers(0, t - n +
    1)``, drawn in batch order.

    Args:
        arrays: per utterance ``{key: (T, D)}`` (numpy arrays or tensors).
        keys: the arrays to crop (all are cropped at the same offset).
        rng: the step's generator, after the utterances were picked.
        max_frames: crop length in frames.
        keep: only these batch items are read and stacked (a data-parallel rank's slice),
            padded to the whole batch's ``T_max``; every item's offset is still drawn, so
            the slice is exactly what the whole batch holds there.

    Returns:
        ``({key: (B, T_max, D) float32 tensor}, offsets, lengths)`` (frames; offsets and
        lengths of every item, the tensors of the kept ones).
    """
    offsets, lengths = [], []
    for a in arrays:
        t = min(a[k].shape[0] for k in keys)
        n = min(t, max_frames)
        offsets.append(int(rng.integers(0, t - n + 1)))
        lengths.append(n)
    t_max = max(lengths)
    if keep is not None:
        arrays = [arrays[b] for b in keep]
        offsets_k, lengths_k = [offsets[b] for b in keep], [lengths[b] for b in keep]
    else:
        offsets_k, lengths_k = offsets, lengths
    out = {}
    for k in keys:
        first = arrays[0][k]
        if isinstance(first, torch.Tensor):
            x = torch.zeros(len(arrays), t_max, first.shape[1], dtype=torch.float32, device=first.device)
            for b, (a, o, n) in enumerate(zip(arrays, offsets_k, lengths_k)):
                x[b, :n] = a[k][o:o + n]
        else:
            buf = np.zeros((len(arrays), t_max, first.shape[1]), dtype=np.float32)
            for b, (a, o, n) in enumerate(zip(arrays, offsets_k, lengths_k)):
                buf[b, :n] = a[k][o:o + n]
            x = torch.from_numpy(buf)
        out[k] = x
    return out, offsets, lengths


class CachedBatches(Dataset):
    """Step ``k`` -> a batch of cached front-end features and teacher states.

    Each utterance's cached arrays (``frontend`` and ``layer_<j>``, all ``(T, D)`` at the
    front-end's frame rate) are cropped at the same random offset to at most
    ``max_frames`` frames (:func:`crop_stack`), so the features and the targets stay
    aligned; the utterances and offsets of step ``k`` depend only on ``(seed, k)``.

    Args:
        cache: a teacher-feature cache (``harness.teachers.cache``; ``get(id)`` -> arrays).
        ids: utterance ids to draw from.
        layers: teacher hidden-state indices to read (the stage's targets).
        batch_size: utterances per batch.
        max_frames: crop length in frames.
        seed: the run's seed.
        steps: the global steps this dataset serves (item ``i`` is step ``steps[i]``).
        shard: ``(rank, world)``: a data-parallel rank reads only its contiguous
            ``batch_size / world`` slice of each step's batch (``batch_size`` is the global
            batch), and the item adds ``share``: its valid frames over the batch's.

    Items: ``{"feats": (B, T, C) float32, "frame_lengths": (B,) int64,
    "targets": {j: (B, T, D) float32}}`` (``B`` = the slice with ``shard``).
    """

    def __init__(self, cache, ids: list[str], layers: list[int], batch_size: int,
                 max_frames: int, seed: int, steps: range, shard: Optional[tuple[int, int]] = None):
        self.cache, self.ids, self.layers = cache, ids, layers
        self.batch_size, self.max_frames, self.seed, self.steps = batch_size, max_frames, seed, steps
        self.keep = None
        if shard is not None:
            rank, world = shard
            per = batch_size // world
            self.keep = range(rank * per, (rank + 1) * per)

    def __len__(self) -> int:
        return len(self.steps)

    def __getitem__(self, i: int) -> dict:
        rng = np.random.default_rng([self.seed, self.steps[i]])
        keys = ["frontend"] + [f"layer_{j}" for j in self.layers]
        # memory-mapped views: only the kept items' crops are read from disk
        arrays = [self.cache.get(self.ids[idx]) for idx in _pick(rng, len(self.ids), self.batch_size)]
        x, _, lengths = crop_stack(arrays, keys, rng, self.max_frames, keep=self.keep)
        kept = lengths if self.keep is None else [lengths[b] for b in self.keep]
        item = {"feats": x["frontend"], "frame_lengths": torch.tensor(kept, dtype=torch.int64),
                "targets": {j: x[f"layer_{j}"] for j in self.layers}}
        if self.keep is not None:
            item["share"] = torch.tensor(sum(kept) / sum(lengths), dtype=torch.float32)
        return item


class WaveBatches(Dataset):
    """Step ``k`` -> the whole waveforms of the utterances :class:`CachedBatches` would
    pick for step ``k`` (live teacher), and the step's generator right after the pick.

    The crop is not taken here: the live teacher runs on each whole utterance
    (:func:`harness.teachers.features.utterance_features`), then :func:`crop_stack`
    crops its outputs with the generator restored from ``rng_state``, exactly as the
    cache's arrays are cropped (one target semantics; docs/architecture.md, "Targets").

    Args:
        dataset: an uncropped :class:`AudioDataset` (or a ``Subset`` of one).
        batch_size: utterances per batch.
        seed: the run's seed.
        steps: the global steps this dataset serves.

    Items: ``{"wavs": [B x (S_b,) float32 at 16 kHz], "rng_state": dict}``.
    """

    def __init__(self, dataset, batch_size: int, seed: int, steps: range):
        self.dataset, self.batch_size = dataset, batch_size
        self.seed, self.steps = seed, steps

    def __len__(self) -> int:
        return len(self.steps)

    def __getitem__(self, i: int) -> dict:
        rng = np.random.default_rng([self.seed, self.steps[i]])
        wavs = [self.dataset[int(idx)]["wav"] for idx in _pick(rng, len(self.dataset), self.batch_size)]
        return {"wavs": wavs, "rng_state": rng.bit_generator.state}


def restore_rng(state: dict) -> np.random.Generator:
    """The generator a :class:`WaveBatches` item's ``rng_state`` describes."""
    rng = np.random.default_rng()
    rng.bit_generator.state = state
    return rng
