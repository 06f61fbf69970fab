"""Waveform batches from a manifest: dataset, random crops, padding, length bucketing.

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
``i`` in epoch ``e`` depends only on ``(seed, e, i)``. Samplers pass ``(epoch, index)``
keys to the dataset, so crops stay deterministic with worker processes; plain integer
indexing uses epoch 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

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


class _EpochBatchSampler(Sampler):
    """Yields batches of ``(epoch, index)`` keys; the epoch advances on every pass.

    Call :meth:`set_epoch` to pin the epoch explicitly (e.g. when resuming); otherwise
    the first pass is epoch 0, the next 1, and so on.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, shuffle: bool, seed: int, drop_last: bool) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self, epoch: int) -> list[list[int]]:  # pragma: no cover - overridden
        raise NotImplementedError

    def _chunk(self, order: np.ndarray) -> list[list[int]]:
        out = [order[i : i + self.batch_size].tolist() for i in range(0, len(order), self.batch_size)]
        if self.drop_last and out and len(out[-1]) < self.batch_size:
            out.pop()
        return out

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch = self.epoch
        self.epoch += 1
        for batch in self.batches(epoch):
            yield [(epoch, i) for i in batch]

    def __len__(self) -> int:
        n = len(self.lengths)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)


class RandomBatchSampler(_EpochBatchSampler):
    """Batches of consecutive indices of a per-epoch permutation (or in order)."""

    def __init__(self, lengths: Sequence[int], batch_size: int, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False) -> None:
        super().__init__(lengths, batch_size, shuffle, seed, drop_last)

    def batches(self, epoch: int) -> list[list[int]]:
        n = len(self.lengths)
        order = np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)
        return self._chunk(order)


class BucketBatchSampler(_EpochBatchSampler):
    """Length-bucketed batches: little padding, still random.

    Each epoch: shuffle all indices, cut them into pools of ``pool_batches x batch_size``
    items, sort each pool by length, cut pools into batches, shuffle the batch order.
    Similar lengths share a batch (less padding) while batch composition and order
    change every epoch. Deterministic per ``(seed, epoch)``. With ``shuffle=False``:
    one global sort by length, batches in that order.

    Args:
        lengths: item lengths (samples, after cropping).
        batch_size: items per batch.
        shuffle: randomise pools and batch order.
        seed: randomness seed.
        pool_batches: pool size in batches (larger = less padding, less randomness).
        drop_last: drop a final short batch.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, shuffle: bool = True, seed: int = 0,
                 pool_batches: int = 50, drop_last: bool = False) -> None:
        super().__init__(lengths, batch_size, shuffle, seed, drop_last)
        self.pool = max(1, pool_batches) * batch_size

    def batches(self, epoch: int) -> list[list[int]]:
        n = len(self.lengths)
        if not self.shuffle:
            return self._chunk(np.argsort(self.lengths, kind="stable"))
        rng = np.random.default_rng([self.seed, epoch])
        perm = rng.permutation(n)
        out: list[list[int]] = []
        for start in range(0, n, self.pool):
            pool = perm[start : start + self.pool]
            pool = pool[np.argsort(self.lengths[pool], kind="stable")]
            out.extend(self._chunk(pool))
        if self.drop_last:
            out = [b for b in out if len(b) == self.batch_size]
        order = rng.permutation(len(out))
        return [out[i] for i in order]

    def __len__(self) -> int:
        if not self.drop_last:
            return sum(-(-min(self.pool, len(self.lengths) - s) // self.batch_size)
                       for s in range(0, len(self.lengths), self.pool))
        return sum(min(self.pool, len(self.lengths) - s) // self.batch_size
                   for s in range(0, len(self.lengths), self.pool))


def padding_fraction(batches: Sequence[Sequence[int]], lengths: Sequence[int]) -> float:
    """Share of padded samples in ``batches`` (0 = no padding): sum(max*B - sum) / sum(max*B)."""
    lengths = np.asarray(lengths)
    total = pad = 0
    for b in batches:
        ls = lengths[list(b)]
        total += int(ls.max()) * len(ls)
        pad += int(ls.max()) * len(ls) - int(ls.sum())
    return pad / total if total else 0.0


def make_loader(
    manifest_path: str | Path,
    batch_size: int,
    max_seconds: float | None = None,
    bucket: bool = True,
    shuffle: bool = True,
    num_workers: int = 0,
    seed: int = 0,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader of :class:`Batch` over a manifest.

    Args:
        manifest_path: ``<split>.jsonl``.
        batch_size: utterances per batch.
        max_seconds: random crop length in seconds (None = whole utterances).
        bucket: length-bucketed batches (:class:`BucketBatchSampler`) instead of
            :class:`RandomBatchSampler`.
        shuffle: randomise per epoch (False = fixed order, for evaluation).
        num_workers: DataLoader worker processes.
        seed: seed of crops, shuffling and bucketing.
        drop_last: drop a final short batch.

    Returns:
        DataLoader yielding :class:`Batch`; ``loader.batch_sampler.set_epoch(e)`` pins
        the epoch (otherwise each pass advances it).
    """
    ds = AudioDataset(manifest_path, max_seconds=max_seconds, seed=seed)
    cls = BucketBatchSampler if bucket else RandomBatchSampler
    sampler = cls(ds.lengths(), batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last)
    return DataLoader(ds, batch_sampler=sampler, collate_fn=collate, num_workers=num_workers)
