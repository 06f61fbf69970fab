"""What a distillation run reads from the teacher-feature cache per step, for every arm.

A run fed by the cache reads, per step, ``B`` crops of some cached arrays (``frontend``
and ``layer_<j>``; :class:`harness.data.loader.CachedBatches`). If arms read different
arrays, their data cost per step differs, and a speedup measured end to end mixes that
into the compute saving (the cause of part of an earlier 1.49x; ``docs/benchmarks.md``).
This module makes the data cost of every arm visible:

- :func:`observe_reads`: while active, records every batch ``CachedBatches`` makes in this
  process (which arrays it delivered, frames, bytes at the cache's float16, read time).
  It wraps ``CachedBatches.__getitem__`` and restores it on exit: observation only, the
  batches are unchanged. Runs observed must use ``data.num_workers=0`` (in-process).
- :func:`summarise_reads`: per stage, the arrays and the bytes per step.
- :func:`expected_bytes_per_step`: the same bytes from the cache's plan (its array widths
  and the expected crop length over its utterances), without running anything.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from typing import Iterator, Sequence

CACHE_ITEM_BYTES = 2  # the feature cache stores float16


@contextlib.contextmanager
def observe_reads(records: list) -> Iterator[list]:
    """Append one dict per batch built by ``CachedBatches`` in this process to ``records``:
    ``step``, ``arrays`` (names, storage order), ``frames`` (valid frames summed over the
    batch), ``bytes`` (``frames x sum of widths x 2``), ``wall_ms``, ``cpu_ms``."""
    from harness.data import loader

    original = loader.CachedBatches.__getitem__

    def observed(self, i: int) -> dict:
        t0, c0 = time.perf_counter(), time.process_time()
        item = original(self, i)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        frames = int(item["frame_lengths"].sum())
        widths = int(item["feats"].shape[2]) + sum(int(t.shape[2]) for t in item["targets"].values())
        records.append({"step": int(self.steps[i]),
                        "arrays": ["frontend"] + [f"layer_{j}" for j in item["targets"]],
                        "frames": frames, "bytes": frames * widths * CACHE_ITEM_BYTES,
                        "wall_ms": 1000 * wall, "cpu_ms": 1000 * cpu})
        return item

    loader.CachedBatches.__getitem__ = observed
    try:
        yield records
    finally:
        loader.CachedBatches.__getitem__ = original


def summarise_reads(records: list[dict], stage_starts: Sequence[int]) -> dict:
    """Per-stage arrays and bytes, and the per-step means over the whole run.

    Args:
        records: from :func:`observe_reads` (one run).
        stage_starts: first global step of each stage.

    Returns:
        ``{"stages": [{"stage", "arrays", "bytes_per_step"}], "arrays_per_step" (mean count),
        "bytes_per_step", "read_wall_ms_per_step", "read_cpu_ms_per_step"}``; ``{}`` when
        nothing was read from a cache (a live teacher).
    """
    if not records:
        return {}
    stages = []
    for s, start in enumerate(stage_starts):
        stop = stage_starts[s + 1] if s + 1 < len(stage_starts) else float("inf")
        rows = [r for r in records if start <= r["step"] < stop]
        if rows:
            stages.append({"stage": s, "arrays": sorted({a for r in rows for a in r["arrays"]}, key=_order),
                           "bytes_per_step": statistics.mean(r["bytes"] for r in rows)})
    return {"stages": stages,
            "arrays_per_step": statistics.mean(len(r["arrays"]) for r in records),
            "bytes_per_step": statistics.mean(r["bytes"] for r in records),
            "read_wall_ms_per_step": statistics.mean(r["wall_ms"] for r in records),
            "read_cpu_ms_per_step": statistics.mean(r["cpu_ms"] for r in records)}


def _order(name: str) -> tuple[int, int]:
    return (0, 0) if name == "frontend" else (1, int(name.split("_", 1)[1]))


def expected_bytes_per_step(cache, arrays: Sequence[str], batch_size: int, max_frames: int) -> float:
    """Expected bytes read per step: ``batch_size x E[min(frames, max_frames)] x sum of
    the arrays' widths x 2``, the expectation over the cache's utterances (drawn
    uniformly, as ``CachedBatches`` draws them)."""
    utts = cache.plan["utts"]  # [id, layer offset, layer frames, front-end offset, front-end frames]
    crop = statistics.mean(min(u[2], u[4], max_frames) for u in utts)
    widths = sum(int(cache.dims[a]) for a in arrays)
    return batch_size * crop * widths * CACHE_ITEM_BYTES
