"""``harness bench``: measured speed, side by side in one process, written as JSON.

- :mod:`~harness.bench.stacking`: how much of stacking's theoretical saving turns into
  time (per-depth step costs, a fitted cost model, end-to-end runs; with
  :mod:`~harness.bench.stepcost` and :mod:`~harness.bench.datacost`), and what the
  teacher-feature cache saves (``bench stacking``; ``bench teacher-cache``:
  :mod:`~harness.bench.teachercache`);
- :mod:`~harness.bench.throughput` (with :mod:`~harness.bench.models` and
  :mod:`~harness.bench.memory`): our student's training step against s3prl's
  ``DistillerModel`` (``bench throughput``);
- :mod:`~harness.bench.gpu`: model FLOPs utilisation of the paper student (``bench gpu``).

Every report carries the machine and versions (:mod:`harness.provenance`) and is written
atomically (:func:`harness.runs.write_json`).
"""

from __future__ import annotations

from harness.bench.stacking import (
    VARIANTS,
    StackingSettings,
    bench_stacking,
    format_stacking,
    quality_key,
    time_to_quality,
)
from harness.bench.teachercache import bench_teacher_cache, format_teacher_cache

__all__ = ["VARIANTS", "StackingSettings", "bench_stacking", "bench_teacher_cache", "format_stacking", "format_teacher_cache",
           "quality_key", "time_to_quality"]
