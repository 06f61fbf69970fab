"""Fabricated result folders for report tests (real sweeps come later).

Writes run folders that follow the result contract of ``docs/architecture.md`` ("Result
files"): ``config.yaml`` (a fully resolved :class:`harness.config.RunConfig`),
``summary.json``, ``metrics.jsonl``, ``student.ckpt``, plus the optional ``superb.json``,
``analysis.json`` and the sweep's ``trial.json``. The numbers are made up, but shaped like
real ones: stacking variants train faster in proportion to their theoretical cost, quality
differs per variant with seed noise, losses fall along a power law, CKA matrices peak
along the student-to-teacher layer map.

Nothing here is a result: it exists so the report code can be tested before sweeps run.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np

from harness import runs
from harness.config import RunConfig, from_dict
from harness.fsio import atomic_write

VARIANTS = ("none", "top", "bottom", "middle", "interleaved")
# task -> (metric, direction, value of the 'none' student, spread across seeds)
TASKS = {
    "ks": ("accuracy", "higher", 0.91, 0.006),
    "ic": ("accuracy", "higher", 0.83, 0.010),
    "sid": ("accuracy", "higher", 0.62, 0.012),
    "er": ("accuracy", "higher", 0.58, 0.015),
    "pr": ("per", "lower", 0.21, 0.006),
    "asr": ("wer", "lower", 0.34, 0.010),
}
# Quality lost by each variant relative to 'none' (fraction of the task's headroom).
QUALITY_DROP = {"none": 0.0, "interleaved": 0.004, "middle": 0.03, "top": 0.05, "bottom": 0.09}
TEACHER_LAYERS = 8
STUDENT_LAYERS = 8
# Held-out output loss (MSE) of each arm after the full budget, above the noise floor; the
# compute-matched none (fewer steps) ends higher. Seeds share most of their noise across arms
# (the same data order and initial weights), which is what pairing by seed exploits.
HELDOUT_FINAL = {"none": 0.800, "none_cm": 0.840, "interleaved": 0.802, "middle": 0.830, "top": 0.845,
                 "bottom": 0.880}
HELDOUT_EVERY = 50
# Speedup of the proportional 4-stage schedule of an 8-layer student (cost 2:4:6:8 x 1:2:3:4).
CM_SPEEDUP = 8 / 6


def _stage_plan(variant: str, steps: int, stages: int = 4) -> list[dict]:
    """Per-stage depth and steps of the proportional schedule (1:2:...:B)."""
    if variant == "none":
        return [{"stage": 0, "depth": STUDENT_LAYERS, "steps": steps}]
    add = STUDENT_LAYERS // stages
    weights = np.arange(1, stages + 1, dtype=float)
    counts = np.floor(steps * weights / weights.sum()).astype(int)
    counts[-1] += steps - counts.sum()
    return [
        {"stage": s, "depth": STUDENT_LAYERS - (stages - 1 - s) * add, "steps": int(counts[s])}
        for s in range(stages)
    ]


def _cka_teacher(depth: int, rng: np.random.Generator, sharp: float) -> list[list[float]]:
    """A (depth+1, T+1) CKA matrix peaking where student layer i meets teacher round((i)*T/L)."""
    s = np.arange(depth + 1)[:, None] / depth
    t = np.arange(TEACHER_LAYERS + 1)[None, :] / TEACHER_LAYERS
    m = np.exp(-((s - t) ** 2) / (2 * sharp**2)) * 0.85 + 0.1
    m += rng.normal(0, 0.02, m.shape)
    return np.clip(m, 0, 1).round(4).tolist()


def _cka_self(depth: int, rng: np.random.Generator, width: float) -> list[list[float]]:
    i = np.arange(depth + 1)
    m = np.exp(-np.abs(i[:, None] - i[None, :]) / width)
    m = (m + m.T) / 2 + rng.normal(0, 0.01, m.shape)
    m = (m + m.T) / 2
    np.fill_diagonal(m, 1.0)
    return np.clip(m, 0, 1).round(4).tolist()


def write_run(
    sweep_dir: Path,
    variant: str,
    seed: int,
    *,
    sweep: str,
    overrides: dict | None = None,
    steps: int = 400,
    failed: str | None = None,
    quality_shift: float = 0.0,
    analysis: bool = True,
    superb: bool = True,
    heldout: bool = False,
    arm: str | None = None,
) -> Path:
    """Write one fabricated run folder and return it.

    Args:
        sweep_dir: ``results/<sweep>/``.
        variant: stacking variant.
        seed: the run's seed (drives the noise).
        sweep: sweep name written into ``summary.json``.
        overrides: extra nested config values (e.g. ``{"loss": {"w": 0.25}}``).
        steps: training steps.
        failed: when set, the run failed with this reason (no tasks, partial metrics).
        quality_shift: added fraction of headroom lost (ablations).
        analysis: write ``analysis.json``.
        superb: write ``superb.json``.
        heldout: write the held-out evaluation (``summary.json``'s ``heldout`` block, the
            ``heldout_loss`` / ``heldout_probe`` of ``metrics.jsonl``) and ``arm``.
        arm: ``none_cm`` for the compute-matched none (variant none, ``steps`` / CM_SPEEDUP
            steps, ``compute_matched`` in the summary); default: the variant.
    """
    overrides = overrides or {}
    key = "-".join(f"{k}={v}" for sec in sorted(overrides) for k, v in sorted(overrides[sec].items()))
    of_steps = steps
    if arm == "none_cm":
        variant, steps = "none", int(round(steps / CM_SPEEDUP))
    run_id = (f"arm={arm}" if arm == "none_cm" else f"variant={variant}") + (f"-{key}" if key else "") + f"-s{seed}"
    run_dir = sweep_dir / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(zlib.crc32(f"{arm or variant}|{seed}|{key}".encode()))
    seed_rng = np.random.default_rng(1000 + seed)  # noise every arm of this seed shares
    seed_shift = float(seed_rng.normal(0, 0.02))
    final = HELDOUT_FINAL.get(arm or variant, 0.85) + seed_shift + 0.08 * quality_shift + float(rng.normal(0, 0.002))
    probe_top = 0.55 - 0.8 * (final - 0.8) + float(rng.normal(0, 0.004))
    curve: list[dict] = []

    cfg_data = {
        "profile": "embedded",
        "teacher": {"spec": "embedded"},
        "student": {"preset": "student_embedded", "layers": STUDENT_LAYERS},
        "stacking": {"variant": variant, "stages": 4, "add": 2},
        "train": {"steps": steps, "seed": seed},
    }
    for sec, vals in overrides.items():
        cfg_data.setdefault(sec, {}).update(vals)
    cfg = from_dict(RunConfig, cfg_data, source="fabricate")
    runs.write_config(run_dir, cfg)
    runs.write_trial(run_dir, {
        "sweep": sweep, "run_id": run_id, "evaluate": list(TASKS),
        "overrides": {"stacking.variant": variant, "train.seed": seed,
                      **{f"{s}.{k}": v for s, d in overrides.items() for k, v in d.items()}},
    })

    # Time per step is proportional to the current depth (0.05 s per layer), plus noise.
    plan = _stage_plan(variant, steps)
    sec_per_layer_step = 0.05 * (1 + rng.normal(0, 0.02))
    stages, t, lines, step = [], 0.0, [], 0
    total_w = 0.5 if "loss" not in overrides else overrides["loss"].get("w", 0.5)
    for st in plan:
        dt = st["depth"] * sec_per_layer_step
        for _ in range(st["steps"]):
            step += 1
            t += dt * (1 + rng.normal(0, 0.03))
            if step % 10 == 0 or step == 1:
                base = 2.5 * (step + 5) ** -0.35 + 0.25
                out = base * (1 + rng.normal(0, 0.02))
                inter = base * 1.3 * (1 + rng.normal(0, 0.02))
                lines.append({
                    "step": step, "stage": st["stage"], "depth": st["depth"],
                    "loss": round(out + total_w * inter, 5), "loss_out": round(out, 5),
                    "loss_inter": round(inter, 5), "lr": 2e-4, "time": round(t, 3),
                })
            if heldout and (step % HELDOUT_EVERY == 0 or step == steps):
                # Falls as a power law of the step to ``final`` at ``steps``.
                ho = final + 1.2 * ((step + 20) ** -0.5 - (steps + 20) ** -0.5) * 8
                pb = probe_top - 0.3 * ((step + 20) ** -0.5 - (steps + 20) ** -0.5) * 8
                curve.append({"step": step, "time": round(t, 3), "cpu_time": round(0.97 * t, 3),
                              "output_loss": round(ho, 5), "probe_best": round(pb, 4)})
                if lines and lines[-1]["step"] == step:
                    lines[-1].update(heldout_loss=round(ho, 5), heldout_probe=round(pb, 4), cpu_time=round(0.97 * t, 3))
        stages.append({**st, "seconds": round(dt * st["steps"], 3)})
        if failed and st["stage"] == 1:
            break
    with runs.open_metrics(run_dir) as fh:
        for line in lines:
            runs.append_metrics(fh, line)

    summary = {
        "run_id": run_id, "sweep": sweep, "variant": variant, "schedule": "proportional",
        "seed": seed, "teacher": "embedded", "student_params": 4_180_000,
        "stages": stages, "train_seconds": round(t, 3),
        "flops": float(sum(s["depth"] * s["steps"] for s in stages) * 2.1e9),
        "final_losses": {k: lines[-1][k] for k in ("loss", "loss_out", "loss_inter")},
        "hardware": {"device": "cpu (fabricated)", "cpu_count": 2, "torch": "2.11.0"},
        "git_commit": "0123456789abcdef0123456789abcdef01234567",
        "started": f"2026-11-23T10:{seed:02d}:00+00:00",
        "ended": f"2026-11-23T11:{seed:02d}:00+00:00",
        "status": "ok",
    }
    summary["train_cpu_seconds"] = round(0.97 * t, 3)
    summary["steps"] = steps
    summary["theoretical_speedup"] = (STUDENT_LAYERS * steps) / sum(s["depth"] * s["steps"] for s in plan)
    if heldout:
        summary["arm"] = arm or variant
        summary["compute_matched"] = ({"steps": steps, "of_steps": of_steps, "speedup": CM_SPEEDUP}
                                      if arm == "none_cm" else None)
        if not failed:
            probe = {f"layer_{i}": round(probe_top * (0.6 + 0.4 * i / STUDENT_LAYERS), 4)
                     for i in range(STUDENT_LAYERS + 1)}
            summary["heldout"] = {
                "utterances": 64, "frames": 9600, "criterion": "mse", "teacher_layer": TEACHER_LAYERS,
                "output_loss": curve[-1]["output_loss"],
                "layer_loss": [{"student_layer": i, "teacher_layer": i, "loss": round(final * (0.5 + i / 16), 4)}
                               for i in range(1, STUDENT_LAYERS + 1)],
                "probe": probe, "probe_best": max(probe.values()),
                "probe_best_layer": max(probe, key=probe.get), "eval_seconds": 3.2, "curve": curve,
            }
    if failed:
        summary["status"] = f"failed: {failed}"
        summary["tasks"] = {}
        summary["superb_score"] = None
        runs.write_summary(run_dir, summary)
        return run_dir

    drop = QUALITY_DROP.get(arm or variant, 0.02) + quality_shift
    tasks, superb_data = {}, {}
    for task, (metric, direction, ref, spread) in TASKS.items():
        noise = rng.normal(0, spread)
        if direction == "higher":
            value = ref - drop * (1 - ref) * 3 + noise
        else:
            value = ref + drop * ref * 1.5 + noise
        value = round(float(np.clip(value, 0.01, 0.99)), 4)
        tasks[task] = {"metric": metric, "direction": direction, "value": value, "n": 400}
        w = np.exp(-((np.arange(STUDENT_LAYERS + 1) - (3 if task in ("pr", "asr") else 6)) ** 2) / 6.0)
        w = w * (1 + rng.normal(0, 0.1, w.shape)).clip(0.1)
        superb_data[task] = {**tasks[task], "dev_value": round(value + rng.normal(0, 0.005), 4),
                             "layer_weights": (w / w.sum()).round(4).tolist()}
    # SUPERB score on the fabricated scale: 1000 at the 'none' reference, minus the drop.
    summary["tasks"] = tasks
    summary["superb_score"] = round(float(820 - 2200 * drop + rng.normal(0, 6)), 2)
    summary["superb_ref"] = "embedded"
    runs.write_summary(run_dir, summary)
    if superb:  # the layout harness.superb.evaluate writes
        runs.write_superb(run_dir, {
            "upstream": str(run_dir), "profile": "embedded", "tasks": superb_data,
            "score": {"score": summary["superb_score"], "ref": "embedded"},
            "seconds": round(float(95 + rng.normal(0, 3)), 2),
        })
    if analysis:
        sharp = {"none": 0.12, "interleaved": 0.13, "middle": 0.18, "top": 0.22, "bottom": 0.26}.get(variant, 0.2)
        runs.write_analysis(run_dir, {
            "cka_teacher": _cka_teacher(STUDENT_LAYERS, rng, sharp),
            "cka_self": _cka_self(STUDENT_LAYERS, rng, 3.0 if variant in ("top", "bottom") else 1.8),
            "probes": {
                "phone": np.linspace(0.3, 0.7, STUDENT_LAYERS + 1).round(3).tolist(),
                "speaker": np.linspace(0.8, 0.4, STUDENT_LAYERS + 1).round(3).tolist(),
            },
        })
    # A real checkpoint is a torch file; the report never opens it, a placeholder will do.
    atomic_write(run_dir / runs.STUDENT, b"fabricated checkpoint placeholder\n")
    return run_dir


def fabricate_main(results: Path, sweep: str = "main", seeds=(0, 1, 2), failed=("top", 2),
                   heldout: bool = False) -> Path:
    """The main study: every variant x seeds; ``failed`` = (variant, seed) of a failed run.

    One run also lacks ``analysis.json`` (bottom, seed 1) so the report shows n/a for it.
    With ``heldout``, every run has the held-out evaluation and the sweep has the
    compute-matched none (``none_cm``) for every seed.
    """
    sweep_dir = results / sweep
    for variant in VARIANTS:
        for seed in seeds:
            fail = "RuntimeError: CUDA out of memory (fabricated)" if (variant, seed) == tuple(failed) else None
            write_run(sweep_dir, variant, seed, sweep=sweep, failed=fail,
                      analysis=(variant, seed) != ("bottom", 1), heldout=heldout)
    if heldout:
        for seed in seeds:
            write_run(sweep_dir, "none", seed, sweep=sweep, heldout=True, arm="none_cm")
    return sweep_dir


def fabricate_ablation(results: Path, sweep: str = "ablation_w", values=(0.0, 0.25, 0.5, 1.0), seeds=(0, 1)) -> Path:
    """The intermediate-loss weight ablation on interleaved: ``loss.w`` in ``values``."""
    sweep_dir = results / sweep
    for w in values:
        for seed in seeds:
            write_run(sweep_dir, "interleaved", seed, sweep=sweep, overrides={"loss": {"w": w}},
                      quality_shift=0.06 * abs(w - 0.5), analysis=False, superb=False)
    return sweep_dir


def fabricate_bench(path: Path) -> Path:
    """A ``harness bench stacking`` JSON in the contract's keys (spreads in two spellings)."""
    variants = {"none": {"speedup_wall": 1.0, "speedup_cpu": 1.0, "theory_flop": 1.0, "theory_fitted": 1.0}}
    for i, v in enumerate(VARIANTS[1:]):
        variants[v] = {"speedup_wall": {"mean": 1.21 + 0.01 * i, "min": 1.17, "max": 1.26},
                       "speedup_cpu": 1.25 + 0.01 * i, "speedup_cpu_spread": 0.02,
                       "theory_flop": CM_SPEEDUP, "theory_fitted": 1.29, "ratio_cpu_fitted": (1.25 + 0.01 * i) / 1.29}
    path.write_text(json.dumps({"variants": variants, "machine": {"cpu_count": 2}}))
    return path


def fabricate_probe(path: Path) -> Path:
    """A teacher probe file: per-layer phone/speaker probe accuracy and layer-layer CKA."""
    layers = np.arange(TEACHER_LAYERS + 1)
    phone = 0.35 + 0.45 * np.exp(-((layers - 5.5) ** 2) / 8)
    speaker = 0.85 - 0.05 * layers
    i = layers
    cka = np.exp(-np.abs(i[:, None] - i[None, :]) / 2.5)
    path.write_text(json.dumps({
        "teacher": "embedded", "phone": phone.round(4).tolist(), "speaker": speaker.round(4).tolist(),
        "cka": cka.round(4).tolist(),
    }))
    return path


def fabricate_broken(sweep_dir: Path, sweep: str = "main") -> Path:
    """A run whose summary.json was cut off mid-write (config.yaml intact): must be listed."""
    run_dir = write_run(sweep_dir, "middle", 3, sweep=sweep)
    text = (run_dir / "summary.json").read_text()
    (run_dir / "summary.json").write_text(text[: len(text) // 2])
    return run_dir


# ----------------------------------------------------------------------------- ASKD study (ASR track)

# objective -> (mean greedy WER, seed spread, mean speedup over the teacher); teacher WER 0.18.
ASKD_OBJECTIVES = {"ce": (0.26, 0.012, 3.0), "kd": (0.22, 0.010, 3.0), "askd": (0.19, 0.008, 3.0)}
ASKD_TEACHER_WER = 0.18


def _asr_summary(study: str, run_id: str, objective: str, seed: int, rng: np.random.Generator) -> dict:
    """An ok ``summary.json`` shaped like :func:`harness.asr.train.run_asr_distill`'s."""
    mean, spread, speed = ASKD_OBJECTIVES[objective]
    wer = round(float(mean + rng.normal(0, spread)), 4)
    t_lat = 0.30 * (1 + rng.normal(0, 0.02))  # the teacher timed again beside each student
    s_lat = t_lat / (speed * (1 + rng.normal(0, 0.05)))
    t_tok, s_tok = 40 / t_lat, 38 / s_lat
    ev = lambda w, n, method: {"wer": w, "n": n, "method": method, "beam": 1 if method == "greedy" else 4,
                               "seconds": 1.0, "examples": []}
    return {
        "run_id": run_id, "sweep": study, "track": "asr", "objective": objective, "seed": seed, "status": "ok",
        "started": f"2026-11-23T12:{seed:02d}:00+00:00", "ended": f"2026-11-23T12:{seed:02d}:40+00:00",
        "teacher": "teacher", "train_seconds": round(float(40 + rng.normal(0, 2)), 3), "steps": 200,
        "student_params": {"total": 1_210_000, "encoder": 800_000, "decoder": 410_000},
        "teacher_params": {"total": 2_050_000, "encoder": 800_000, "decoder": 1_250_000},
        "decoder_layers": 2,
        "wer": {"greedy": ev(wer, 120, "greedy"), "beam": ev(round(wer - 0.01, 4), 40, "beam")},
        "teacher_wer": {"greedy": ev(ASKD_TEACHER_WER, 120, "greedy"), "beam": ev(0.17, 40, "beam")},
        "latency": {"teacher": {"latency_s": t_lat, "rtf": t_lat / 2.5, "tokens_per_s": t_tok, "n": 24, "threads": 2},
                    "student": {"latency_s": s_lat, "rtf": s_lat / 2.5, "tokens_per_s": s_tok, "n": 24, "threads": 2}},
        "speedup": t_lat / s_lat,
        "hardware": {"device": "cpu (fabricated)", "cpu_count": 2, "torch": "2.11.0"},
        "git_commit": "0123456789abcdef0123456789abcdef01234567",
    }


def fabricate_askd(results: Path, study: str = "askd", seeds=(0, 1, 2), failed=("kd", 2),
                   missing=("askd", 3)) -> Path:
    """An ASKD study folder as :func:`harness.asr.study.run_asr_study` leaves it: run folders
    (``trial.json`` + ``summary.json``), ``teacher/harness_asr.json``, and ``askd.json`` /
    ``askd.csv`` written by the real :func:`harness.asr.study.write_study_table` (so their
    format cannot drift from the study's).

    Args:
        results: the storage folder; the study goes to ``results/<study>``.
        failed: (objective, seed) of a run that failed (its summary says so).
        missing: (objective, seed) of a run with a ``trial.json`` and nothing else (interrupted);
            it has no row in ``askd.json``.
    """
    from harness.asr.study import write_study_table

    out = results / study
    (out / "teacher").mkdir(parents=True, exist_ok=True)
    (out / "teacher" / "harness_asr.json").write_text(json.dumps(
        {"profile": "embedded", "train_seconds": 120.5, "decoder_layers": 4, "params": 2_050_000}))
    points = [(obj, s) for obj in ASKD_OBJECTIVES for s in seeds] + ([tuple(missing)] if missing else [])
    for obj, seed in points:
        run_id = f"objective={obj}-s{seed}"
        run = out / run_id
        run.mkdir(parents=True, exist_ok=True)
        runs.write_trial(run, {"sweep": study, "run_id": run_id, "evaluate": [],
                               "overrides": {"loss.objective": obj, "train.seed": seed}})
        if (obj, seed) == tuple(missing or ()):
            continue
        if (obj, seed) == tuple(failed or ()):
            summary = {"run_id": run_id, "sweep": study, "track": "asr", "objective": obj, "seed": seed,
                       "status": "failed: RuntimeError: decoder diverged (fabricated)"}
        else:
            summary = _asr_summary(study, run_id, obj, seed, np.random.default_rng(zlib.crc32(run_id.encode())))
        runs.write_summary(run, summary)
    write_study_table(out, str(out / "teacher"), wall_seconds=912.0, trained_here=True)
    return out
