"""On-disk store of upstream features for SUPERB scoring, extracted once per split.

One folder per (upstream id, split, selected utterances), written to a temporary folder
and renamed into place, so an interrupted extraction is never trusted:

* ``index.json``: ids, frames per utterance, offsets, number of hidden states, width.
* ``pooled.npy``: ``(N, L + 1, D)`` fp16, each hidden state mean-pooled over the valid
  frames (enough for the utterance-level tasks, see :mod:`harness.superb.heads`).
* ``frames.bin`` (sequence tasks only): all frames of all utterances, ``(sum T, L + 1, D)``
  fp16, memory-mapped on read; utterance ``i`` is rows ``offsets[i]:offsets[i+1]``.

A small local store rather than :mod:`harness.teachers.cache`: that cache is keyed for
distillation (chosen teacher layers of the distillation split), this one holds all
hidden states plus pooled vectors of the SUPERB splits, for teachers *and* students.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from harness.data.audio import SAMPLE_RATE
from harness.superb.data import load_wav


@dataclass
class SplitFeatures:
    """Cached features of one split.

    Attributes:
        ids: utterance ids, in manifest order.
        frames_per_utt: ``(N,)`` valid frames.
        pooled: ``(N, L + 1, D)`` fp16 mean-pooled hidden states.
        frames: ``(sum T, L + 1, D)`` fp16 memmap, or None when not stored.
        offsets: ``(N + 1,)`` row offsets into ``frames``.
        path: the store folder.
    """

    ids: list[str]
    frames_per_utt: np.ndarray
    pooled: np.ndarray
    frames: np.ndarray | None
    offsets: np.ndarray
    path: Path

    def utterance(self, i: int) -> np.ndarray:
        """``(T, L + 1, D)`` fp16 frames of utterance ``i``."""
        if self.frames is None:
            raise ValueError(f"{self.path} holds pooled features only")
        return self.frames[self.offsets[i]: self.offsets[i + 1]]


def corpus_tag(root: Path) -> str:
    """The corpus build's identity: ``config_hash`` of ``root/corpus.json`` ("" when absent).

    Cache keys include it: a rebuilt corpus (another format or profile) reuses utterance ids
    and paths, and must not be served features or baselines of the old audio.
    """
    try:
        return str(json.loads((Path(root) / "corpus.json").read_text()).get("config_hash", ""))
    except (OSError, ValueError, AttributeError):
        return ""


def _key(upstream_id: str, records: list[dict], frames: bool, max_samples: int = 0, corpus: str = "") -> str:
    h = hashlib.sha1(f"{upstream_id}|crop={max_samples}".encode())
    if corpus:
        h.update(f"corpus={corpus}\n".encode())
    for r in records:
        h.update(f"{r['id']}|{r.get('path')}|{r.get('num_samples')}\n".encode())
    return h.hexdigest()[:12] + ("-frames" if frames else "")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:80]


def open_store(path: Path) -> SplitFeatures:
    """Open a finished store folder read-only."""
    index = json.loads((path / "index.json").read_text())
    shape = (int(index["total_frames"]), int(index["num_states"]), int(index["width"]))
    frames = None
    if index["frames"]:
        frames = (np.memmap(path / "frames.bin", dtype=np.float16, mode="r", shape=shape)
                  if shape[0] else np.zeros(shape, np.float16))
    return SplitFeatures(
        ids=index["ids"], frames_per_utt=np.asarray(index["frames_per_utt"], np.int64),
        pooled=np.load(path / "pooled.npy", mmap_mode="r"), frames=frames,
        offsets=np.asarray(index["offsets"], np.int64), path=path,
    )


def split_features(upstream, records: list[dict], root: Path, split: str, cache_dir: Path,
                   frames: bool, device: str | torch.device = "cpu", max_batch_seconds: float = 60.0,
                   max_batch: int = 32, max_seconds: float = 0.0, log=None) -> SplitFeatures:
    """Return the cached features of ``records``, extracting them on the first call.

    A store with frames also serves a request for pooled features only.

    Args:
        upstream: an :class:`~harness.teachers.base.Upstream`.
        records: manifest records (``id``, ``path``, ``num_samples``).
        root: corpus folder (relative audio paths are resolved against it).
        split: split name (for the folder name and messages).
        cache_dir: root of the store.
        frames: also store every frame (sequence tasks).
        device: where the upstream runs.
        max_batch_seconds: audio per extraction batch (padding included), seconds.
        max_batch: utterances per extraction batch.
        max_seconds: crop each utterance to its first ``max_seconds`` (0 = no crop).
        log: optional ``print``-like callable for progress.

    Returns:
        The :class:`SplitFeatures`.
    """
    crop = int(round(max_seconds * SAMPLE_RATE))
    base = Path(cache_dir) / _safe(upstream.id)
    tag = corpus_tag(root)
    with_frames = base / f"{split}-{len(records)}-{_key(upstream.id, records, True, crop, tag)}"
    pooled_only = base / f"{split}-{len(records)}-{_key(upstream.id, records, False, crop, tag)}"
    for cand in ([with_frames] if frames else [with_frames, pooled_only]):
        if (cand / "index.json").exists():
            return open_store(cand)
    target = with_frames if frames else pooled_only
    t0 = time.perf_counter()
    _extract(upstream, records, root, target, frames, device, max_batch_seconds, max_batch, crop)
    if log:
        log(f"  features {split}: {len(records)} utterances in {time.perf_counter() - t0:.1f} s")
    return open_store(target)


@torch.inference_mode()
def _extract(upstream, records, root, target: Path, frames: bool, device, max_batch_seconds,
             max_batch, crop: int = 0) -> None:
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    wavs = {}
    def est(i: int) -> int:
        n = int(records[i].get("num_samples") or 0)
        return min(n, crop) if crop else n

    order = sorted(range(len(records)), key=est)
    pooled = [None] * len(records)
    lengths = [0] * len(records)
    chunks: dict[int, np.ndarray] = {}
    num_states = width = None
    budget = int(max_batch_seconds * SAMPLE_RATE)
    batch: list[int] = []

    def run(batch_idx: list[int]) -> None:
        nonlocal num_states, width
        audio = [wavs.pop(i) for i in batch_idx]
        lens = torch.tensor([len(a) for a in audio], dtype=torch.long)
        pad = torch.zeros(len(audio), int(lens.max()))
        for b, a in enumerate(audio):
            pad[b, : len(a)] = torch.from_numpy(a)
        states, flens = upstream.hidden_states(pad.to(device), lens.to(device))
        stack = torch.stack([s.float() for s in states], dim=2).cpu()  # (B, T, L+1, D)
        num_states, width = stack.shape[2], stack.shape[3]
        for b, i in enumerate(batch_idx):
            n = max(1, min(int(flens[b]), stack.shape[1]))
            utt = stack[b, :n]
            pooled[i] = utt.mean(0).numpy().astype(np.float16)
            lengths[i] = n
            if frames:
                chunks[i] = utt.numpy().astype(np.float16)

    for i in order:
        wavs[i] = load_wav(records[i], root)
        if crop:
            wavs[i] = wavs[i][:crop]
        batch.append(i)
        longest = max(len(wavs[j]) for j in batch)
        if len(batch) >= max_batch or longest * len(batch) >= budget:
            run(batch)
            batch = []
    if batch:
        run(batch)
    if frames:
        with open(tmp / "frames.bin", "wb") as f:
            for i in range(len(records)):  # manifest order
                f.write(np.ascontiguousarray(chunks.pop(i)).tobytes())
    np.save(tmp / "pooled.npy", np.stack(pooled) if pooled else np.zeros((0, 1, 1), np.float16))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    index = {
        "upstream": upstream.id, "ids": [r["id"] for r in records], "frames_per_utt": lengths,
        "offsets": offsets.tolist(), "total_frames": int(offsets[-1]), "num_states": num_states,
        "width": width, "frames": frames,
    }
    (tmp / "index.json").write_text(json.dumps(index))
    try:
        os.replace(tmp, target)
    except OSError:  # a concurrent writer finished first (non-empty target): keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "index.json").exists():
            raise
