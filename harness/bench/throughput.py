"""``harness bench throughput``: our student's training step against s3prl's
``DistillerModel`` (models and steps: :mod:`harness.bench.models`; CPU memory:
:mod:`harness.bench.memory`; GPU efficiency: :mod:`harness.bench.gpu`).

**Throughput** (:func:`bench_throughput`). Both models are built at the same shape (conv
front-end, layers, width, heads, FFN, positional conv, prediction heads or per-layer
projections) and trained with the same objective and optimizer (AdamW) on the same
batch (``batch`` random waveforms of ``seconds`` seconds, all full length) against the
same fixed teacher targets (a cached teacher: no teacher forward in the step). They run in
one process, after a warm-up, in interleaved repeats (A B C, C B A, A B C ...:
counterbalanced, so a drift of the machine's load hits all alike); each repeat times
``steps`` steps.
Figures: step time (wall-clock and process CPU time) and samples per second per model
(median, min, max over repeats), the ratio ``s3prl step / our step`` (> 1 = ours is
faster) from the medians and per repeat pair, and peak memory: on CPU the peak resident
set size above the built model (``VmHWM``, reset after building) of a fresh subprocess per model
(tracemalloc does not see torch's allocator); on CUDA ``torch.cuda.max_memory_allocated``
above the block's start plus the model's parameters and optimizer state.

Objectives (``target``):

- ``pred_heads`` (default; DistilHuBERT's): ours = ``Student.project`` +
  :func:`harness.losses.pred_head_loss` (``l1_cos``); s3prl = ``DistillerModel`` in
  ``expand-last`` mode (its own prediction heads) + L1 + ``-log sigmoid(cos)`` on the
  stacked ``(B, N, T, D)`` predictions, per-head means summed over heads, the form of
  s3prl's DistilHuBERT pre-training expert (``s3prl/pretrain/distiller``, which the
  0.4.18 wheel does not ship, so it is written here);
- ``l2l``: ours = per-layer projections + :func:`harness.losses.l2l_loss` (``l1_cos``,
  ``w = 0.5``); s3prl = ``DistillerModel`` with ``get_hidden=True, no_pred=True`` and the
  same per-layer ``nn.Linear`` projections held beside it, same loss.

Documented architecture difference: s3prl drops ``post_extract_proj`` when the front-end
channels equal the width; the student always has it (``width * (C + 1)`` more parameters
in that case only). Otherwise the parameter counts are equal (checked by the tests).

**GPU** (:func:`bench_gpu`): model FLOPs utilisation of the ``student_paper`` training
step fed by a teacher-feature cache (FLOPs from :class:`harness.stacking.CostModel`, the
same per-layer model as ``theoretical_cost``), and the data loader's share of step time.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import time
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from harness.bench.memory import cpu_peak_memory
from harness.bench.models import CACHED, MODELS, ThroughputSettings, _build, make_batch, make_step, param_counts
from harness.bench.common import report_header
from harness.runs import write_json

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _state_bytes(model: nn.Module, opt: torch.optim.Optimizer) -> int:
    n = sum(p.numel() * p.element_size() for p in model.parameters())
    for st in opt.state.values():
        n += sum(v.numel() * v.element_size() for v in st.values() if torch.is_tensor(v))
    return n


def _summary(values: list[float]) -> dict:
    med = statistics.median(values)
    return {"median": med, "min": min(values), "max": max(values),
            "spread": (max(values) - min(values)) / med if med else 0.0, "runs": values}


def load_average() -> Optional[list[float]]:
    """The 1, 5 and 15 minute load averages (None where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def bench_throughput(s: ThroughputSettings, out: Optional[str | Path] = None,
                     log: Callable[[str], None] = print) -> dict:
    """Time our student's training step against s3prl's ``DistillerModel``, side by side.

    Args:
        s: shape and protocol.
        out: JSON file to write (None: do not write).
        log: progress and the final table.

    Returns:
        The JSON content: ``benchmark``, ``date``, ``machine``, ``versions``,
        ``settings``, ``load_average`` (before, after), ``models`` (per model: params,
        step seconds, CPU seconds per step, samples/s, memory), ``ratio`` (s3prl step /
        our step: median of medians, per repeat pair).
    """
    s.validate()
    if s.threads:
        torch.set_num_threads(s.threads)
    device = torch.device(s.device)
    load_before = load_average()
    names = MODELS + ((CACHED,) if s.frontend == "frozen" and s.cached_row else ())
    models = {name: _build(name, s, device) for name in names}
    batch = make_batch(s, device)
    steps = {name: make_step(name, models[name], s, batch, device) for name in names}
    for name in names:  # warm-up, untimed
        for _ in range(s.warmup):
            steps[name]()
        _sync(device)
    wall: dict[str, list[float]] = {m: [] for m in names}
    cpu: dict[str, list[float]] = {m: [] for m in names}
    cuda_peak: dict[str, int] = {m: 0 for m in names}
    losses: dict[str, float] = {}
    for r in range(s.repeats):
        # A B B A ...: each model runs first in half the repeats, so a load drift or an
        # order effect (caches warmed by the other model) does not favour one side
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                start_alloc = torch.cuda.memory_allocated(device)
            _sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(s.steps):
                loss = steps[name]()
            _sync(device)
            wall[name].append((time.perf_counter() - t0) / s.steps)
            cpu[name].append((time.process_time() - c0) / s.steps)
            losses[name] = float(loss)
            if device.type == "cuda":
                cuda_peak[name] = max(cuda_peak[name], torch.cuda.max_memory_allocated(device) - start_alloc)
        log(f"  repeat {r + 1}/{s.repeats}: " + ", ".join(
            f"{m} {1000 * wall[m][-1]:.1f} ms" for m in names))
    load_after = load_average()

    results: dict[str, dict] = {}
    for name in names:
        step_s = _summary(wall[name])
        results[name] = {
            "params": param_counts(models[name]),
            "step_seconds": step_s,
            "step_cpu_seconds": _summary(cpu[name]),
            "samples_per_second": {"median": s.batch / step_s["median"], "min": s.batch / step_s["max"],
                                   "max": s.batch / step_s["min"]},
            "audio_seconds_per_second": s.batch * s.seconds / step_s["median"],
            "last_loss": losses[name],
        }
        if device.type == "cuda":
            results[name]["memory"] = {
                "kind": "cuda max_memory_allocated above the block start + params and optimizer state",
                "peak_bytes": int(cuda_peak[name] + _state_bytes(models[name], steps[name].optimizer)),
                "step_peak_bytes": int(cuda_peak[name]),
            }
    del models, steps
    if device.type == "cpu" and s.memory:
        for name in names:
            mem = cpu_peak_memory(name, s)
            results[name]["memory"] = {"kind": "peak RSS of a fresh subprocess above the built model (bytes)", **mem}
    pair = [b / a for a, b in zip(wall["ours"], wall["s3prl"])]
    pair_cpu = [b / a for a, b in zip(cpu["ours"], cpu["s3prl"])]
    report = {
        **report_header("throughput", ("s3prl",)),
        "settings": {**dataclasses.asdict(s), "frames": s.frames, "samples": s.samples,
                     "precision": "bf16 autocast" if device.type == "cuda" else "float32",
                     "attention": "F.scaled_dot_product_attention (ours); F.multi_head_attention_forward "
                                  "-> SDPA (s3prl)",
                     "optimizer": f"AdamW (ours: {s.adamw}, s3prl: {s.s3prl_adamw} implementation)",
                     "loss": "l1_cos (pred heads)" if s.target == "pred_heads" else "l1_cos L2L, w=0.5",
                     "order": "counterbalanced interleaved repeats (A B C, C B A, ...) after warm-up",
                     "torch_threads": torch.get_num_threads()},
        "load_average": {"before": load_before, "after": load_after},
        "models": results,
        "ratio": {
            "s3prl_over_ours_step": (results["s3prl"]["step_seconds"]["median"]
                                     / results["ours"]["step_seconds"]["median"]),
            "per_repeat": _summary(pair),
            "cpu_time": (results["s3prl"]["step_cpu_seconds"]["median"]
                         / results["ours"]["step_cpu_seconds"]["median"]),
            "cpu_time_per_repeat": _summary(pair_cpu),
        },
    }
    if CACHED in results:
        report["ratio"]["s3prl_over_ours_cached_step"] = (
            results["s3prl"]["step_seconds"]["median"] / results[CACHED]["step_seconds"]["median"])
    if out is not None:
        write_json(out, report)
    log(format_throughput(report))
    return report


def format_throughput(report: dict) -> str:
    """The throughput comparison as a short fixed-width table."""
    s = report["settings"]
    lines = [
        f"throughput: {s['layers']} x {s['width']} (heads {s['heads']}, FFN {s['ffn']}), batch {s['batch']} x "
        f"{s['seconds']:g} s, {s['target']}, front-end {s['frontend']}, {s['device']} {s['precision']}, "
        f"{s['steps']} steps x {s['repeats']} repeats, AdamW impl ours {s.get('adamw', 'default')} / "
        f"s3prl {s.get('s3prl_adamw', 'default')}",
        f"machine: {report['machine'].get('device')}, {report['machine'].get('cpu_count')} CPUs, "
        f"torch threads {s['torch_threads']}; load average before {report['load_average']['before']}, "
        f"after {report['load_average']['after']}",
        f"{'model':<11} {'params':>11} {'step ms (median [min, max])':>30} {'cpu ms':>9} {'samples/s':>10} "
        f"{'peak mem MiB':>13}",
    ]
    for name, r in report["models"].items():
        st = r["step_seconds"]
        mem = r.get("memory")
        mib = "n/a"
        if mem:
            mib = f"{(mem.get('delta_rss', mem.get('peak_bytes', 0))) / 2**20:.1f}"
        span = f"{1000 * st['median']:.1f} [{1000 * st['min']:.1f}, {1000 * st['max']:.1f}]"
        lines.append(
            f"{name:<11} {r['params']['total']:>11,} {span:>30} "
            f"{1000 * r['step_cpu_seconds']['median']:>9.1f} {r['samples_per_second']['median']:>10.2f} {mib:>13}"
        )
    ra = report["ratio"]
    pr = ra["per_repeat"]
    lines.append(f"s3prl / ours step time = {ra['s3prl_over_ours_step']:.3f} (per repeat pair: median "
                 f"{pr['median']:.3f}, [{pr['min']:.3f}, {pr['max']:.3f}]); CPU time {ra['cpu_time']:.3f}; "
                 f"> 1 = ours faster")
    if "s3prl_over_ours_cached_step" in ra:
        lines.append(f"s3prl / ours_cached step time = {ra['s3prl_over_ours_cached_step']:.3f} (ours fed its "
                     f"front-end's output precomputed, as with the teacher-feature cache; not the same computation)")
    return "\n".join(lines)


def throughput_markdown(report: dict) -> str:
    """The throughput comparison as a Markdown table (for ``docs/benchmarks.md``)."""
    s = report["settings"]
    rows = ["| model | params | step s, median [min, max] | CPU s / step | samples/s | peak RSS above model, MiB |",
            "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in report["models"].items():
        st, mem = r["step_seconds"], r.get("memory") or {}
        peak = mem.get("delta_rss", mem.get("peak_bytes"))
        peak_s = f"{peak / 2**20:.0f}" if peak is not None else "n/a"
        rows.append(f"| {name} | {r['params']['total']:,} | {st['median']:.3f} [{st['min']:.3f}, {st['max']:.3f}] | "
                    f"{r['step_cpu_seconds']['median']:.3f} | {r['samples_per_second']['median']:.2f} | {peak_s} |")
    ra, pr = report["ratio"], report["ratio"]["per_repeat"]
    rows.append("")
    rows.append(f"s3prl / ours step time: **{ra['s3prl_over_ours_step']:.3f}** (median of medians; per "
                f"repeat pair median {pr['median']:.3f}, range [{pr['min']:.3f}, {pr['max']:.3f}]); "
                f"CPU time ratio {ra['cpu_time']:.3f}. Load average before / after: "
                f"{report['load_average']['before']} / {report['load_average']['after']}; "
                f"torch threads {s['torch_threads']}.")
    return "\n".join(rows)
