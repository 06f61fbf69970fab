"""``harness bench stacking`` / ``teacher-cache``: how much of stacking's theoretical saving turns into wall-clock.

Every figure is measured side by side in one process (never against a remembered
number), after the teacher-feature cache is built and a short untimed warm-up run has
paid the one-time costs (thread pools, allocator, lazy imports). Each benchmark writes
JSON with the machine (``harness.provenance.hardware()``), versions, settings and every
figure, and prints a short table.

- :func:`bench_stacking`: per stacking variant, measured train wall-clock, speedup vs
  ``none``, the theoretical speedup of its schedule (front-end and teacher cost zero:
  both cached), their ratio, and time-to-quality (wall-clock until the distillation
  loss reaches what ``none`` reaches at its end).
- :func:`bench_teacher_cache`: distillation step time with the live teacher and with the
  cache, their ratio, and what the cache saves a sweep of K trials.
"""

from __future__ import annotations

import dataclasses
import shutil
import statistics
import time
from pathlib import Path
from typing import Callable, Optional

from harness.bench.common import report_header, scratch
from harness.config import RunConfig, load_run_config, to_dict
from harness.runs import read_metrics, write_json
from harness.teachers.base import load_teacher

VARIANTS = ("none", "top", "bottom", "middle", "interleaved")
BASE_DIR = Path(__file__).resolve().parents[2] / "sweeps" / "base"


def base_config(profile: str, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """``sweeps/base/<profile>.yaml`` plus overrides (the benchmark's starting point)."""
    path = BASE_DIR / f"{profile}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"--profile {profile}: {path} not found")
    return load_run_config(path, list(overrides))


def _with(cfg: RunConfig, **sections) -> RunConfig:
    """A copy of ``cfg`` with some fields of some sections replaced: ``train={"steps": 5}``."""
    changes = {name: dataclasses.replace(getattr(cfg, name), **fields) for name, fields in sections.items()}
    return dataclasses.replace(cfg, **changes)


def quality_key(metrics: list[dict]) -> str:
    """The loss that time-to-quality compares: the output layer's (``out``) when logged.

    The total L2L loss depends on the layer map (with ``fixed``, a grown student's
    intermediate layers match other teacher layers than ``none``'s), but every variant's
    top layer matches the teacher's top layer, so ``out`` means the same in every run.
    """
    return "out" if metrics and "out" in metrics[-1] else "loss"


def time_to_quality(metrics: list[dict], target: float, clock: str = "time", key: str = "loss") -> Optional[float]:
    """Training seconds until the logged loss first reaches ``target`` (None if never).

    Args:
        metrics: ``metrics.jsonl`` rows (each loss is the mean over its log window;
            ``time`` / ``cpu_time`` the cumulative training wall-clock / CPU seconds).
        target: the loss to reach (``none``'s final logged value).
        clock: ``time`` (wall-clock) or ``cpu_time``.
        key: which logged loss (``loss``, ``out``...).
    """
    for row in metrics:
        if row[key] <= target:
            return float(row[clock])
    return None


def _median_or_none(values: list[Optional[float]]) -> Optional[float]:
    """The median, or None when any value is None (a repeat that never got there)."""
    return statistics.median(values) if values and all(v is not None for v in values) else None


def ensure_teacher_cache(cfg: RunConfig) -> float:
    """Build the teacher-feature cache a config needs (outside any timing); its seconds."""
    import torch

    from harness.distill import manifest_path, teacher_layers
    from harness.teachers.cache import ensure_cache

    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)  # as the runs will (oversubscribed threads thrash)
    t0 = time.perf_counter()
    teacher = load_teacher(cfg.teacher.spec, "cpu")
    ensure_cache(cfg.teacher.spec, manifest_path(cfg), teacher_layers(cfg, teacher.num_layers),
                 frontend=True, cache_dir=cfg.teacher.cache_dir)
    return time.perf_counter() - t0


def _run(cfg: RunConfig, run_dir: Path) -> dict:
    from harness.distill import run_distill

    if run_dir.exists():
        shutil.rmtree(run_dir)
    summary = run_distill(cfg, run_dir, resume=False)
    if summary["status"] != "ok":
        raise RuntimeError(f"benchmark run {run_dir.name} ended with status {summary['status']!r}")
    return summary


def bench_stacking(
    profile: str,
    out: str | Path,
    variants: tuple[str, ...] = VARIANTS,
    overrides: list[str] | tuple[str, ...] = (),
    repeats: int = 1,
    live: bool = False,
    work_dir: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Train every variant side by side in this process, teacher and front-end cached.

    The schedule is the base config's (the paper's 4-stage proportional one in every
    shipped profile). With ``repeats > 1`` the variants run round-robin and each figure
    is the median, which evens out the load of a shared machine. With ``live`` the same
    comparison is also made with the live teacher (its forward pass paid at every step,
    as in the paper's setting).

    Args:
        profile: ``tiny`` or ``embedded`` (``sweeps/base/<profile>.yaml``).
        out: the JSON file to write.
        variants: stacking variants to compare (``none`` is always included: the baseline).
        overrides: ``key=value`` changes to the base config (e.g. ``train.steps=200``).
        repeats: runs per variant.
        live: also compare the variants with the live teacher.
        work_dir: where the run folders go (default: a temporary folder, removed after).

    Returns:
        The JSON content: ``machine``, ``versions``, ``settings``, ``results`` (one row
        per variant and teacher mode).
    """
    cfg = base_config(profile, overrides)
    cfg = _with(cfg, teacher={"cache": True}, train={"ckpt_every": 0})
    variants = tuple(dict.fromkeys(("none",) + tuple(variants)))
    modes = ("cached", "live") if live else ("cached",)
    with scratch(work_dir, "bench-stacking-") as tmp:
        cache_seconds = ensure_teacher_cache(cfg)
        log(f"teacher cache ready ({cache_seconds:.1f} s)")
        # warm-up: one-time costs must not land on whichever variant happens to run first
        for mode in modes:
            warm = _with(cfg, teacher={"cache": mode == "cached"}, train={"steps": max(4, cfg.stacking.stages)})
            _run(warm, tmp / f"warmup-{mode}")
        runs: dict[tuple[str, str], list[dict]] = {(m, v): [] for m in modes for v in variants}
        for r in range(repeats):
            for mode in modes:
                for v in variants:
                    vcfg = _with(cfg, stacking={"variant": v}, teacher={"cache": mode == "cached"})
                    run_dir = tmp / f"{mode}-{v}-{r}"
                    s = _run(vcfg, run_dir)
                    s["metrics"] = read_metrics(run_dir)[0]
                    runs[mode, v].append(s)
                    log(f"  {mode:<6} {v:<12} repeat {r}: {s['train_seconds']:.2f} s "
                        f"({s['train_cpu_seconds']:.2f} s CPU)")
        results = [row for mode in modes for row in _compare(mode, variants, runs)]
    report = {
        **report_header("stacking"),
        "settings": {
            "profile": profile, "overrides": list(overrides), "repeats": repeats,
            "variants": list(variants), "teacher_modes": list(modes), "frontend_cached_with_teacher": True,
            "cache_build_seconds": cache_seconds, "config": to_dict(cfg),
        },
        "results": results,
    }
    write_json(out, report)
    log(format_stacking(report))
    return report


def _compare(mode: str, variants: tuple[str, ...], runs: dict) -> list[dict]:
    """Per-variant figures of one teacher mode against its own ``none`` runs (medians)."""
    none = runs[mode, "none"]
    base_seconds = statistics.median(s["train_seconds"] for s in none)
    base_cpu = statistics.median(s["train_cpu_seconds"] for s in none)
    key = quality_key(none[0]["metrics"])
    target = statistics.median(s["metrics"][-1][key] for s in none)
    rows = []
    for v in variants:
        vr = runs[mode, v]
        seconds = statistics.median(s["train_seconds"] for s in vr)
        cpu = statistics.median(s["train_cpu_seconds"] for s in vr)
        # the run's own cost model: front-end and teacher cost 0 per step when cached
        theory = vr[0]["theoretical_speedup"]
        ttq = _median_or_none([time_to_quality(s["metrics"], target, "time", key) for s in vr])
        ttq_cpu = _median_or_none([time_to_quality(s["metrics"], target, "cpu_time", key) for s in vr])
        rows.append({
            "teacher": mode,
            "variant": v,
            "train_seconds": seconds,
            "train_seconds_runs": [s["train_seconds"] for s in vr],
            "train_cpu_seconds": cpu,
            "train_cpu_seconds_runs": [s["train_cpu_seconds"] for s in vr],
            "stage_seconds": [st["seconds"] for st in vr[0]["stages"]],
            "stage_steps": [st["steps"] for st in vr[0]["stages"]],
            "stage_depths": [st["depth"] for st in vr[0]["stages"]],
            "speedup": base_seconds / seconds,
            "theoretical_speedup": theory,
            "ratio": base_seconds / seconds / theory,
            "cpu_speedup": base_cpu / cpu,
            "cpu_ratio": base_cpu / cpu / theory,
            "final_loss": statistics.median(s["metrics"][-1]["loss"] for s in vr),
            "final_quality_loss": statistics.median(s["metrics"][-1][key] for s in vr),
            "quality_key": key,
            "quality_target_loss": target,
            # None (n/a) when a run never reached none's final loss
            "time_to_quality_seconds": ttq,
            "time_to_quality_speedup": base_seconds / ttq if ttq else None,
            "time_to_quality_cpu_seconds": ttq_cpu,
            "time_to_quality_cpu_speedup": base_cpu / ttq_cpu if ttq_cpu else None,
        })
    return rows


def format_stacking(report: dict) -> str:
    """The stacking benchmark as a short fixed-width table."""
    s = report["settings"]
    lines = [
        f"stacking benchmark, profile {s['profile']}, {report['machine'].get('device')}, "
        f"schedule {s['config']['stacking']['schedule']}, {s['repeats']} repeat(s), medians; "
        f"time-to-quality on the output-layer loss ('final out')",
        f"{'teacher':<7} {'variant':<12} {'train s':>8} {'speedup':>8} {'theory':>7} {'ratio':>6} "
        f"{'cpu x':>6} {'cpu ratio':>9} {'final out':>9} {'ttq s':>7} {'ttq x':>6} {'ttq cpu x':>9}",
    ]
    for r in report["results"]:
        ttq = f"{r['time_to_quality_seconds']:.2f}" if r["time_to_quality_seconds"] is not None else "n/a"
        ttx = f"{r['time_to_quality_speedup']:.2f}" if r["time_to_quality_speedup"] is not None else "n/a"
        ttc = f"{r['time_to_quality_cpu_speedup']:.2f}" if r["time_to_quality_cpu_speedup"] is not None else "n/a"
        lines.append(
            f"{r['teacher']:<7} {r['variant']:<12} {r['train_seconds']:>8.2f} {r['speedup']:>8.3f} "
            f"{r['theoretical_speedup']:>7.3f} {r['ratio']:>6.3f} {r['cpu_speedup']:>6.3f} {r['cpu_ratio']:>9.3f} "
            f"{r['final_quality_loss']:>9.4f} {ttq:>7} {ttx:>6} {ttc:>9}"
        )
    return "\n".join(lines)


def bench_teacher_cache(
    profile: str,
    out: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    trials: tuple[int, ...] = (1, 5, 15),
    work_dir: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Distillation step time with the live teacher vs the cache, in one process.

    Both runs use the same config (the base config's variant and schedule) and differ only
    in ``teacher.cache``. The sweep-level saving of K trials is
    ``K * steps * (live - cached step time) - cache build time``.

    Returns:
        The JSON content (``machine``, ``versions``, ``settings``, ``results``).
    """
    cfg = _with(base_config(profile, overrides), train={"ckpt_every": 0})
    with scratch(work_dir, "bench-cache-") as tmp:
        cached_cfg = _with(cfg, teacher={"cache": True})
        live_cfg = _with(cfg, teacher={"cache": False})
        # the build is timed on its own, from empty, into this benchmark's folder
        build_cfg = _with(cached_cfg, teacher={"cache_dir": str(tmp / "cache")})
        cache_seconds = ensure_teacher_cache(build_cfg)
        cached_cfg = build_cfg
        warm = {"steps": max(4, cfg.stacking.stages)}
        _run(_with(live_cfg, train=warm), tmp / "warmup-live")
        _run(_with(cached_cfg, train=warm), tmp / "warmup-cached")
        live = _run(live_cfg, tmp / "live")
        cached = _run(cached_cfg, tmp / "cached")
    steps = cfg.train.steps
    live_step = live["train_seconds"] / steps
    cached_step = cached["train_seconds"] / steps
    live_cpu, cached_cpu = live["train_cpu_seconds"] / steps, cached["train_cpu_seconds"] / steps
    results = {
        "steps": steps,
        "live_step_seconds": live_step,
        "cached_step_seconds": cached_step,
        "ratio_live_over_cached": live_step / cached_step,
        "live_step_cpu_seconds": live_cpu,
        "cached_step_cpu_seconds": cached_cpu,
        "cpu_ratio_live_over_cached": live_cpu / cached_cpu,
        "cache_build_seconds": cache_seconds,
        "sweep_saving_seconds": {
            str(k): k * steps * (live_step - cached_step) - cache_seconds for k in trials
        },
    }
    report = {
        **report_header("teacher-cache"),
        "settings": {"profile": profile, "overrides": list(overrides), "config": to_dict(cfg)},
        "results": results,
    }
    write_json(out, report)
    log(format_teacher_cache(report))
    return report


def format_teacher_cache(report: dict) -> str:
    """The teacher-cache benchmark as a short table."""
    r = report["results"]
    lines = [
        f"teacher-cache benchmark, profile {report['settings']['profile']}, "
        f"{report['machine'].get('device')}, {r['steps']} steps per run",
        f"{'teacher':<8} {'step ms':>9} {'cpu ms':>9}",
        f"{'live':<8} {1000 * r['live_step_seconds']:>9.2f} {1000 * r['live_step_cpu_seconds']:>9.2f}",
        f"{'cached':<8} {1000 * r['cached_step_seconds']:>9.2f} {1000 * r['cached_step_cpu_seconds']:>9.2f}",
        f"live / cached = {r['ratio_live_over_cached']:.2f}x wall-clock, "
        f"{r['cpu_ratio_live_over_cached']:.2f}x CPU; cache build {r['cache_build_seconds']:.1f} s",
        "sweep saving (s): " + ", ".join(f"K={k}: {v:.1f}" for k, v in r["sweep_saving_seconds"].items()),
    ]
    return "\n".join(lines)


