"""``harness bench stacking``: how much of stacking's theoretical saving turns into time.

Every figure is measured side by side in one process (never against a remembered
number), after the teacher-feature cache is built and warm-up runs have paid the one-time
costs (thread pools, allocator, lazy imports). Each benchmark writes JSON with the machine
(``harness.provenance.hardware()``), versions, settings and every figure, and prints a
short table.

- :func:`bench_stacking`: per-depth training-step costs on in-memory batches and the
  cost model fitted to them, ``cost(depth) = a * depth + b`` (:mod:`harness.bench.stepcost`);
  per stacking variant the FLOP theory (:class:`harness.stacking.CostModel`), the fitted
  theory, the measured end-to-end speedups vs ``none`` (wall-clock and CPU time, paired per
  round, with their spread) and ``ratio_cpu_fitted``; the same theories with a live
  teacher; what every arm reads from the cache per step (:mod:`harness.bench.datacost`);
  time-to-quality.

``harness bench teacher-cache`` is :mod:`harness.bench.teachercache`.
"""

from __future__ import annotations

import dataclasses
import shutil
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Optional

from harness import distill, stacking
import harness.bench.datacost as datacost
import harness.bench.stepcost as stepcost
from harness.bench.common import report_header, scratch
from harness.config import RunConfig, load_run_config, to_dict
from harness.runs import read_metrics, write_json
from harness.stacking import plan_stages
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


def ensure_teacher_cache(cfg: RunConfig, teacher=None) -> tuple[float, Any]:
    """Build (or open) the teacher-feature cache a config needs, outside any timing.

    Returns:
        ``(seconds, cache)``: how long it took and the :class:`~harness.teachers.cache.FeatureCache`.
    """
    import torch

    from harness.distill import manifest_path, teacher_layers
    from harness.teachers.cache import ensure_cache

    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)  # as the runs will (oversubscribed threads thrash)
    t0 = time.perf_counter()
    teacher = teacher if teacher is not None else load_teacher(cfg.teacher.spec, "cpu")
    cache = ensure_cache(teacher, manifest_path(cfg), teacher_layers(cfg, teacher.num_layers),
                         frontend=True, cache_dir=cfg.teacher.cache_dir, limit=cfg.data.max_utterances)
    return time.perf_counter() - t0, cache


def _run(cfg: RunConfig, run_dir: Path) -> dict:
    from harness.distill import run_distill

    if run_dir.exists():
        shutil.rmtree(run_dir)
    summary = run_distill(cfg, run_dir, resume=False)
    if summary["status"] != "ok":
        raise RuntimeError(f"benchmark run {run_dir.name} ended with status {summary['status']!r}")
    return summary


@dataclasses.dataclass
class StackingSettings:
    """What ``harness bench stacking`` measures, and how often.

    Attributes:
        variants: stacking variants (``none``, the baseline, is always added first).
        repeats: rounds: end-to-end runs per variant (each between two ``none`` runs,
            the variants' order reversed every other round), and rounds of the
            per-depth step costs.
        cost_steps: timed steps per depth and round of the per-depth step costs.
        cost_warmup: untimed steps per depth first.
        live: also run every variant end to end with the live teacher.
    """

    variants: tuple[str, ...] = VARIANTS
    repeats: int = 3
    cost_steps: int = 8
    cost_warmup: int = 3
    live: bool = False

    def validate(self) -> None:
        """Raise ``ValueError`` (one line) for an unknown variant or a count below 1."""
        from harness.config import STACKING_VARIANTS
        from harness.registry import did_you_mean

        for v in self.variants:
            if v not in STACKING_VARIANTS:
                raise ValueError(f"unknown stacking variant {v!r}{did_you_mean(v, STACKING_VARIANTS)} "
                                 f"(known: {', '.join(STACKING_VARIANTS)})")
        for name in ("repeats", "cost_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.cost_warmup < 0:
            raise ValueError(f"cost-warmup must be >= 0, got {self.cost_warmup}")


def bench_stacking(
    profile: str,
    out: str | Path,
    settings: Optional[StackingSettings] = None,
    overrides: list[str] | tuple[str, ...] = (),
    work_dir: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Per-depth step costs, the fitted cost model, and every variant end to end.

    1. The teacher cache is built or opened (outside every timing).
    2. A student per depth the schedule visits, warmed up on an in-memory batch of the
       run's shape (:class:`harness.bench.stepcost.DepthCosts`).
    3. One short untimed run per variant (warm-up; it also records which cached arrays
       each arm reads per step: :mod:`harness.bench.datacost`).
    4. ``repeats`` rounds, each a round of per-depth step costs, then every variant end to
       end (``run_distill``, teacher cached) between two ``none`` runs, so that each
       speedup is paired with the baseline runs next to it in time (:func:`_end_to_end`).
    5. The fit ``cost(depth) = a * depth + b`` of the CPU and of the wall-clock time per
       step; the positional conv, the live teacher's forward and each growth timed on
       their own.

    Torch threads: ``train.threads`` when set, else 1 (what a sweep trial gets per CPU).

    Args:
        profile: ``tiny`` or ``embedded`` (``sweeps/base/<profile>.yaml``).
        out: the JSON file to write.
        settings: variants, repeats, step-cost sizes, live (default :class:`StackingSettings`).
        overrides: ``key=value`` changes to the base config (e.g. ``train.steps=200``).
        work_dir: where the run folders go (default: a temporary folder, removed after).

    Returns:
        The JSON content: ``machine``, ``versions``, ``settings``, ``load_average``,
        ``step_cost`` (per depth, ``fit``, ``fit_wall``, ``pos_conv``, ``teacher_forward``),
        ``results`` (one row per variant and teacher mode: ``speedup_wall``,
        ``speedup_cpu`` with ``*_spread`` and ``*_runs``, ``theory_flop``,
        ``theory_fitted``, ``ratio_cpu_fitted``, the live theories, ``data``, ``growth``).

    Raises:
        ValueError: unknown variant, a count below 1 (one line).
    """
    import torch

    settings = settings or StackingSettings()
    settings.validate()
    load_start = stepcost.load_average()
    cfg = base_config(profile, overrides)
    cfg = _with(cfg, teacher={"cache": True}, train={"ckpt_every": 0, "threads": cfg.train.threads or 1})
    variants = tuple(dict.fromkeys(("none",) + tuple(settings.variants)))
    vcfgs = {v: _with(cfg, stacking={"variant": v}) for v in variants}
    stages = {v: plan_stages(c) for v, c in vcfgs.items()}
    modes = ("cached", "live") if settings.live else ("cached",)
    teacher = load_teacher(cfg.teacher.spec, distill.resolve_device(cfg.train.device))
    with scratch(work_dir, "bench-stacking-") as tmp:
        cache_seconds, cache = ensure_teacher_cache(cfg, teacher)
        log(f"teacher cache ready ({cache_seconds:.1f} s); {torch.get_num_threads()} torch thread(s)")
        depth_costs = stepcost.DepthCosts(cfg, teacher, sorted({d for st in stages.values() for d in st.depths}),
                                          settings.cost_steps, settings.cost_warmup)
        growth = {}
        for v, st in stages.items():
            if len(st) > 1:  # each growth timed; the grown student then timed beside the fresh one
                growth[v], grown, batch = stepcost.time_growths(vcfgs[v], teacher, st)
                depth_costs.add(f"grown-{v}", grown, batch)
        data = {v: _probe(vcfgs[v], stages[v], cache, tmp / f"probe-{v}") for v in variants}
        if settings.live:
            _run(_with(cfg, teacher={"cache": False}, train={"steps": max(4, cfg.stacking.stages)}), tmp / "warm-live")
        runs = _end_to_end(vcfgs, modes, settings.repeats, tmp, log, depth_costs)
        cost = step_cost(cfg, teacher, depth_costs, growth, settings, log)
    results = [_compare(mode, v, stages[v], runs, cost, data[v] if mode == "cached" else {})
               for mode in modes for v in variants]
    report = {
        **report_header("stacking"),
        "settings": {
            "profile": profile, "overrides": list(overrides), **dataclasses.asdict(settings),
            "variants": list(variants), "teacher_modes": list(modes), "frontend_cached_with_teacher": True,
            "threads": torch.get_num_threads(), "cpu_clock": stepcost.cpu_clock()[0],
            "cache_build_seconds": cache_seconds, "config": to_dict(cfg),
        },
        "load_average": {"start": load_start, "end": stepcost.load_average()},
        "step_cost": cost,
        "results": results,
    }
    write_json(out, report)
    log(format_stacking(report))
    return report


def step_cost(cfg: RunConfig, teacher, depth_costs: stepcost.DepthCosts, growth: dict, settings: StackingSettings,
              log: Callable[[str], None] = print) -> dict:
    """The ``step_cost`` block: the per-depth costs (:meth:`stepcost.DepthCosts.rows`),
    their fits (CPU and wall-clock), the grown students beside the fresh ones
    (``grown``), the positional conv, the live teacher's forward, each variant's growths
    (``growth``), and the FLOP models (cached and live) of the full-depth student."""
    per_depth = depth_costs.rows()
    depths = [r["depth"] for r in per_depth]
    if len(depths) > 1:
        fit = stepcost.fit_cost(depths, [r["cpu_ms"]["median"] for r in per_depth])
        fit_wall = stepcost.fit_cost(depths, [r["wall_ms"]["median"] for r in per_depth])
    else:  # only `none`: one depth, nothing to fit; the whole cost is per layer
        fit = {"a": per_depth[0]["cpu_ms"]["median"] / depths[0], "b": 0.0, "r2": None, "residuals": [0.0]}
        fit_wall = {"a": per_depth[0]["wall_ms"]["median"] / depths[0], "b": 0.0, "r2": None, "residuals": [0.0]}
    full = depth_costs.runs[depths[-1]]
    pos = stepcost.time_pos_conv(cfg, teacher, full, repeats=settings.repeats)
    if pos:
        pos["share_of_layer"] = pos["channels_last_ms"]["median"] / fit["a"]
        pos["share_of_fixed"] = pos["channels_last_ms"]["median"] / fit["b"] if fit["b"] > 0 else None
    fwd = stepcost.time_teacher_forward(cfg, teacher, repeats=settings.repeats)
    live_extra = fwd["teacher_ms"]["median"] + fwd["frontend_ms"]["median"]
    flop = {mode: dataclasses.asdict(distill.cost_model(_with(cfg, teacher={"cache": mode == "cached"}),
                                                        full.student, teacher)) for mode in ("cached", "live")}
    log(f"  fit: cost(depth) = {fit['a']:.2f} ms x depth + {fit['b']:.2f} ms (CPU, R^2 {fit['r2']}); "
        f"pos conv {pos.get('channels_last_ms', {}).get('median', 0):.2f} ms; live teacher + front-end "
        f"{live_extra:.1f} ms per batch")
    return {"depths": depths, "per_depth": per_depth, "fit": fit, "fit_wall": fit_wall, "unit": "ms per step",
            "batch": {"batch_size": cfg.data.batch_size, "frames": stepcost.frames_per_crop(cfg, teacher.frame_rate),
                      "frontend_dim": int(teacher.frontend.out_dim), "teacher_width": int(teacher.width)},
            "pos_conv": pos, "teacher_forward": fwd, "live_fixed_extra_ms": live_extra,
            "flop_model": flop, "growth": growth, "grown": depth_costs.extra_rows()}


def _probe(cfg: RunConfig, stages, cache, run_dir: Path) -> dict:
    """A short untimed run of one variant (every stage at least one step): warm-up, and
    the record of which cached arrays it reads per step (:mod:`harness.bench.datacost`)."""
    steps = max(4, 2 * len(stages))
    pcfg = _with(cfg, train={"steps": steps}, data={"num_workers": 0})
    records: list = []
    with datacost.observe_reads(records):
        _run(pcfg, run_dir)
    summary = datacost.summarise_reads(records, plan_stages(pcfg).starts)
    if summary:
        max_frames = max(1, int(cfg.data.max_seconds * cache.frame_rate))
        for st in summary["stages"]:
            st["expected_bytes_per_step"] = datacost.expected_bytes_per_step(
                cache, st["arrays"], cfg.data.batch_size, max_frames)
        summary["probe_steps"] = steps
    return summary


def _end_to_end(vcfgs: dict, modes: tuple[str, ...], repeats: int, tmp: Path, log: Callable[[str], None],
                depth_costs: Optional[stepcost.DepthCosts] = None) -> dict:
    """``repeats`` rounds; in each, every variant runs between two ``none`` runs (``none,
    v1, none, v2, ..., none``, the variants' order reversed every other round), so that
    each speedup is taken against the ``none`` runs on either side of it, a minute apart,
    and the host's drift over a round (this VM's speed moves by 10-40 % over minutes to
    hours) cancels. Each round starts with a round of ``depth_costs``, so the per-depth
    costs and the end-to-end runs are spread over the same stretch of time."""
    others = [v for v in vcfgs if v != "none"]
    runs: dict[tuple[str, str], list[dict]] = {(m, v): [] for m in modes for v in vcfgs}

    def one(mode: str, v: str, r: int, k: int) -> dict:
        run_dir = tmp / f"{mode}-{v}-{r}-{k}"
        s = _run(_with(vcfgs[v], teacher={"cache": mode == "cached"}), run_dir)
        s["metrics"] = read_metrics(run_dir)[0]
        runs[mode, v].append(s)
        log(f"  {mode:<6} {v:<12} repeat {r}: {s['train_seconds']:.2f} s ({s['train_cpu_seconds']:.2f} s CPU)")
        return s

    for r in range(repeats):
        if depth_costs is not None:
            depth_costs.round(r, log)
        for mode in modes:
            one(mode, "none", r, 0)
            for k, v in enumerate(others if r % 2 == 0 else others[::-1], 1):
                s = one(mode, v, r, k)
                before = len(runs[mode, "none"]) - 1
                one(mode, "none", r, k)
                s["none_pair"] = [before, before + 1]  # indices into the none runs
    return runs


def _paired(none: list[dict], arm: list[dict], key: str) -> list[float]:
    """Per-run speedups: the mean of the two ``none`` runs beside the arm's run over the
    arm's (``none`` against itself: 1)."""
    if arm is none:
        return [1.0] * len(none)
    return [statistics.mean(none[i][key] for i in a["none_pair"]) / a[key] for a in arm]


def _compare(mode: str, v: str, st, runs: dict, cost: dict, data: dict) -> dict:
    """One variant's row: measured speedups (paired per round) against the theories."""
    none, vr = runs[mode, "none"], runs[mode, v]
    fit, fit_wall = cost["fit"], cost["fit_wall"]
    extra = cost["live_fixed_extra_ms"] if mode == "live" else 0.0
    flop = {m: stacking.theoretical_speedup(st.depths, st.steps, stacking.CostModel(**c))
            for m, c in cost["flop_model"].items()}
    fitted = {m: stepcost.fitted_speedup(st.depths, st.steps, fit["a"], fit["b"] + (cost["live_fixed_extra_ms"]
                                                                                    if m == "live" else 0.0))
              for m in ("cached", "live")}
    theory_wall = stepcost.fitted_speedup(st.depths, st.steps, fit_wall["a"], fit_wall["b"] + extra)
    wall, cpu = _paired(none, vr, "train_seconds"), _paired(none, vr, "train_cpu_seconds")
    growth = cost["growth"].get(v, [])
    predicted = (stepcost.schedule_cost(st.depths, st.steps, fit["a"], fit["b"] + extra)
                 + sum(g["grow_ms"] + g["first_step_ms"] - g["second_step_ms"] for g in growth)) / 1000
    cpu_med = statistics.median(s["train_cpu_seconds"] for s in vr)
    row = {
        "teacher": mode, "variant": v, "stage_depths": list(st.depths), "stage_steps": list(st.steps),
        "theory_flop": flop[mode], "theory_fitted": fitted[mode], "theory_fitted_wall": theory_wall,
        "theory_flop_live": flop["live"], "theory_fitted_live": fitted["live"],
        "speedup_wall": statistics.median(wall), "speedup_wall_spread": [min(wall), max(wall)], "speedup_wall_runs": wall,
        "speedup_cpu": statistics.median(cpu), "speedup_cpu_spread": [min(cpu), max(cpu)], "speedup_cpu_runs": cpu,
        # per run: the two none runs (indices into none's *_runs) on either side of it
        "none_pairs": None if v == "none" else [s["none_pair"] for s in vr],
        "ratio_cpu_fitted": statistics.median(cpu) / fitted[mode],
        "ratio_wall_fitted": statistics.median(wall) / theory_wall,
        "train_seconds": statistics.median(s["train_seconds"] for s in vr),
        "train_seconds_runs": [s["train_seconds"] for s in vr],
        "train_cpu_seconds": cpu_med, "train_cpu_seconds_runs": [s["train_cpu_seconds"] for s in vr],
        "stage_seconds_runs": [[x["seconds"] for x in s["stages"]] for s in vr],
        "stage_cpu_seconds_runs": [[x["cpu_seconds"] for x in s["stages"]] for s in vr],
        # the fitted per-step costs plus each growth and its first step's extra cost
        "predicted_cpu_seconds": predicted,
        "unexplained_cpu_ms_per_step": 1000 * (cpu_med - predicted) / st.total,
        "growth": growth, "data": data,
        # the student grown to the final depth against a fresh one, per round (in memory)
        "grown_over_fresh_cpu": (cost["grown"].get(f"grown-{v}") or {}).get("over_depth"),
    }
    row.update(_quality(none, vr))
    return row


def _quality(none: list[dict], vr: list[dict]) -> dict:
    """Final output-layer loss and time-to-quality against ``none``'s final loss (medians)."""
    key = quality_key(none[0]["metrics"])
    target = statistics.median(s["metrics"][-1][key] for s in none)
    base_seconds = statistics.median(s["train_seconds"] for s in none)
    base_cpu = statistics.median(s["train_cpu_seconds"] for s in none)
    ttq = _median_or_none([time_to_quality(s["metrics"], target, "time", key) for s in vr])
    ttq_cpu = _median_or_none([time_to_quality(s["metrics"], target, "cpu_time", key) for s in vr])
    return {
        "final_loss": statistics.median(s["metrics"][-1]["loss"] for s in vr),
        "final_quality_loss": statistics.median(s["metrics"][-1][key] for s in vr),
        "quality_key": key, "quality_target_loss": target,
        # None (n/a) when a run never reached none's final loss
        "time_to_quality_seconds": ttq,
        "time_to_quality_speedup": base_seconds / ttq if ttq else None,
        "time_to_quality_cpu_seconds": ttq_cpu,
        "time_to_quality_cpu_speedup": base_cpu / ttq_cpu if ttq_cpu else None,
    }


def _median_text(x: Optional[dict]) -> str:
    return f"{x['median']:.3f}" if x else "-"


def _mib(x: Optional[float]) -> str:
    return f"{x / 2**20:.2f}" if x is not None else "n/a"


def format_stacking(report: dict) -> str:
    """The stacking benchmark as short fixed-width tables: per-depth costs and the fit,
    then per variant the theories, the measured speedups with their spread, the ratio
    and the data read per step."""
    s, c = report["settings"], report["step_cost"]
    fit, pos = c["fit"], c.get("pos_conv") or {}
    lines = [
        f"stacking benchmark, profile {s['profile']}, {report['machine'].get('device')}, {s['threads']} thread(s), "
        f"CPU clock {s['cpu_clock']}, {s['repeats']} repeat(s), load {report['load_average']['start']} -> "
        f"{report['load_average']['end']}",
        f"step cost per depth (ms, median [min, max]; batch {c['batch']['batch_size']} x {c['batch']['frames']} frames):",
    ]
    for r in c["per_depth"]:
        w, p = r["wall_ms"], r["cpu_ms"]
        lines.append(f"  depth {r['depth']:>2}: CPU {p['median']:8.2f} [{p['min']:.2f}, {p['max']:.2f}]   "
                     f"wall {w['median']:8.2f} [{w['min']:.2f}, {w['max']:.2f}]")
    r2 = f"{fit['r2']:.4f}" if fit["r2"] is not None else "n/a"
    lines.append(f"fit (CPU): cost(depth) = {fit['a']:.2f} ms x depth + {fit['b']:.2f} ms, R^2 {r2}")
    if pos:
        share = f"{pos['share_of_fixed']:.2f}" if pos["share_of_fixed"] is not None else "n/a"
        lines.append(f"pos conv fwd+bwd: {pos['channels_last_ms']['median']:.2f} ms (conv1d path "
                     f"{pos['conv1d_ms']['median']:.2f} ms) = {pos['share_of_layer']:.2f} of a layer, "
                     f"{share} of the fixed part")
    lines.append(f"live teacher forward {c['teacher_forward']['teacher_ms']['median']:.1f} ms + front-end "
                 f"{c['teacher_forward']['frontend_ms']['median']:.1f} ms per batch")
    lines.append(f"{'teacher':<7} {'variant':<12} {'flop':>6} {'fitted':>6} {'wall x [min, max]':>21} "
                 f"{'cpu x [min, max]':>21} {'cpu/fit':>7} {'wall/fit':>8} {'flop live':>9} {'fit live':>8} "
                 f"{'MiB/step':>8} {'arrays':>6} {'grown/fresh':>11} {'final out':>9}")
    for r in report["results"]:
        sw, sc = r["speedup_wall_spread"], r["speedup_cpu_spread"]
        d = r["data"] or {}
        lines.append(
            f"{r['teacher']:<7} {r['variant']:<12} {r['theory_flop']:>6.3f} {r['theory_fitted']:>6.3f} "
            f"{r['speedup_wall']:>6.3f} [{sw[0]:.3f}, {sw[1]:.3f}] {r['speedup_cpu']:>6.3f} [{sc[0]:.3f}, {sc[1]:.3f}] "
            f"{r['ratio_cpu_fitted']:>7.3f} {r['ratio_wall_fitted']:>8.3f} {r['theory_flop_live']:>9.3f} "
            f"{r['theory_fitted_live']:>8.3f} {_mib(d.get('bytes_per_step')):>8} "
            f"{d.get('arrays_per_step', float('nan')):>6.1f} {_median_text(r['grown_over_fresh_cpu']):>11} "
            f"{r['final_quality_loss']:>9.4f}")
    return "\n".join(lines)
