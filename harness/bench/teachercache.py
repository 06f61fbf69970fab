"""``harness bench teacher-cache``: distillation step time with the live teacher and with
the cache, in one process, their ratio, and what the cache saves a sweep of K trials."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from harness.bench.common import report_header, scratch
from harness.bench.stacking import _run, _with, base_config, ensure_teacher_cache
from harness.config import to_dict
from harness.runs import write_json


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
        cache_seconds, _ = ensure_teacher_cache(build_cfg)
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


