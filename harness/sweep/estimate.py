"""``harness sweep --dry-run``: the trials with an estimate of time and disk, no training.

Time comes from measurement on this machine (:mod:`harness.sweep.calibrate`): a short
calibration of the sweep's trials, run with the sweep's concurrency and each trial's
threads and cached under ``<results>/_calibration/``, prices every trial's stages at their
depths, its held-out evaluations, checkpoints and setup; the SUPERB scoring comes from the
nearest scored runs on disk. The wall-clock is the trials' makespan over the slots that run
at once. Finished trials of the sweep are set against the model (measured over
predicted), so a reader sees how far to trust it. When the calibration cannot run (no
corpus or teacher cache yet) the estimate falls back to a rough per-profile guess and says
so and why.

Disk is the student's parameter count, built from the real student presets
(:data:`harness.student.PRESETS`) and the trial's config, times the bytes of
``student.ckpt`` plus the training checkpoint.
"""

from __future__ import annotations

import datetime as _dt
import statistics
from pathlib import Path
from typing import Any, Callable, Optional

from harness import runs
from harness.config import RunConfig
from harness.progress import eta
from harness.sweep import calibrate as cal_mod
from harness.sweep import tracks
from harness.sweep.run import load_sweep
from harness.sweep.trials import tasks_of

# Rough per-step costs on a 2-core CPU with the teacher cached, used only when the
# calibration cannot run (no corpus or teacher cache yet), and labelled as guesses
# (embedded: the reference run's full-depth students, reports/embedded/run_table.csv,
# trained 900 steps in about 75 s).
_GUESS_SECONDS_PER_STEP = {"tiny": 0.05, "embedded": 0.08, "paper": 0.5}
_GUESS_EVAL_SECONDS = {"tiny": 20.0, "embedded": 120.0, "paper": 3600.0}
# Width of each profile's teacher (the target of the student's per-layer projections): the
# dummy teacher, the shipped embedded SFM, HuBERT Base. The teacher is not loaded for this.
_TEACHER_WIDTH = {"tiny": 64, "embedded": 192, "paper": 768}


def dry_run(path: str | Path, recalibrate: bool = False, local: bool = False,
            log: Callable[[str], None] = print, **kwargs: Any) -> str:
    """List the trials with an estimate of time and disk (no training).

    Args:
        path: the sweep YAML.
        recalibrate: measure the trial costs again, ignoring a cached calibration.
        local: the sweep would run in-process (one trial at a time).
        log: the calibration's progress lines.
        kwargs: as in :func:`harness.sweep.load_sweep`.
    """
    track = tracks.track_of(path)
    if track != tracks.DISTILL:
        return tracks.entry(track, "dry_run")(path, **kwargs)
    est = estimate(path, recalibrate, local, log, **kwargs)
    sweep, rows, slots, threads = est["sweep"], est["rows"], est["slots"], est["threads"]
    lines = [f"sweep {sweep.config.name}: {len(sweep.trials)} trials -> {sweep.out_dir}"]
    total_b = 0
    for r in rows:
        nbytes = estimate_params(r["trial"].config) * 4 * 4  # student.ckpt + training checkpoint (Adam: 3x)
        total_b += nbytes
        lines.append(f"  {r['trial'].run_id:<48} {'done' if r['done'] else 'todo':<5} "
                     f"~{r['parts']['total'] / 60:6.1f} min  ~{nbytes / 2**20:6.1f} MiB")
    lines.append(f"time: ~{eta(est['wall_s'])} of wall-clock for the {est['todo']} trial(s) to run, {slots} at a "
                 f"time ({threads} thread(s) each; {est['trial_s'] / 3600:.2f} h of trial time)")
    for c in est["calibrations"].values():
        lines.append("  " + cal_mod.describe(c, c.get("_cached", False)))
    if est["guessed"]:
        lines.append(f"  rough guess for {est['guessed']['n']} trial(s), not measured: {est['guessed']['reason']}")
    for (tasks, (secs, source)) in est["superb"].items():
        if tasks:
            lines.append(f"  SUPERB scoring ({','.join(tasks)}): "
                         + (f"{secs:.0f} s a scored trial, {source}" if secs is not None else source))
    lines.extend(_check_against_finished(sweep, rows))
    lines.append(f"disk: ~{total_b / 2**20:.0f} MiB of run folders (plus the shared teacher cache)")
    return "\n".join(lines)


def estimate(path: str | Path, recalibrate: bool = False, local: bool = False,
             log: Callable[[str], None] = print, **kwargs: Any) -> dict:
    """The dry run's numbers (a distillation sweep).

    Returns:
        ``{"sweep", "rows" (per trial: "trial", "tasks", "done", "stages", "superb",
        "parts" (seconds by part, :func:`harness.sweep.calibrate.trial_seconds`)),
        "calibrations", "guessed" ({"n", "reason"} or None), "superb", "slots",
        "threads", "todo", "trial_s", "wall_s"}``.
    """
    from harness import stacking

    sweep = load_sweep(path, **kwargs)
    res = sweep.config.resources.resolve()
    threads = max(1, int(res["cpu"]))
    slots = cal_mod.slots_of(res, local or sweep.config.backend == "local")
    rows = []
    for t in sweep.trials:
        tasks = tasks_of(sweep, t.config.train.seed)
        done = runs.trial_done(sweep.out_dir / t.run_id, tasks, retry="environment")
        rows.append({"trial": t, "tasks": tasks, "done": done, "stages": stacking.plan_stages(t.config)})
    workers = sweep.config.resources.workers
    if workers > 1:  # a data-parallel trial is a group: not calibrated here (one process)
        slots = max(1, slots // workers)
        cals, why = {}, {"n": len(rows), "reason": f"data-parallel trials ({workers} workers each) are not "
                         "calibrated: time one with harness bench ddp"}
    else:
        cals, why = _calibrations(sweep, rows, threads, slots, recalibrate, log)
    superb: dict = {}
    for r in rows:
        key = tuple(r["tasks"])
        if key not in superb:
            superb[key] = cal_mod.superb_seconds(r["tasks"], r["trial"].config.profile, sweep.out_dir)
        r["superb"] = superb[key]
        r["parts"] = _price(r, cals.get(cal_mod.key_of(r["trial"].config, threads, slots)))
    todo = [r["parts"]["total"] for r in rows if not r["done"]]
    return {"sweep": sweep, "rows": rows, "calibrations": cals, "guessed": why, "superb": superb, "slots": slots,
            "threads": threads, "todo": len(todo), "trial_s": sum(todo), "wall_s": cal_mod.makespan(todo, slots)}


def _calibrations(sweep, rows: list[dict], threads: int, slots: int, recalibrate: bool,
                  log: Callable[[str], None]) -> tuple[dict[str, dict], Optional[dict]]:
    """One calibration per distinct trial shape (:func:`harness.sweep.calibrate.key_of`),
    with every depth those trials visit; ``(calibrations, {"n", "reason"} or None)``."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(cal_mod.key_of(r["trial"].config, threads, slots), []).append(r)
    out, failed = {}, None
    for key, members in groups.items():
        depths = sorted({d for r in members for d in r["stages"].depths})
        cfg = members[0]["trial"].config
        try:
            cal, cached = cal_mod.cached_or_measure(cfg, depths, threads, slots, sweep.out_dir.parent,
                                                    recalibrate, log)
        except cal_mod.CalibrationUnavailable as err:
            failed = {"n": (failed or {}).get("n", 0) + len(members), "reason": str(err)}
            continue
        cal["_cached"] = cached
        out[key] = cal
    return out, failed


def _price(row: dict, cal: Optional[dict]) -> dict[str, float]:
    """A trial's seconds by part: from its calibration, else the rough guess."""
    cfg: RunConfig = row["trial"].config
    depths, steps = list(row["stages"].depths), list(row["stages"].steps)
    superb_s = row["superb"][0] or 0.0
    if cal is None:
        train = cfg.train.steps * _GUESS_SECONDS_PER_STEP[cfg.profile]
        superb = superb_s or (_GUESS_EVAL_SECONDS[cfg.profile] if row["tasks"] else 0.0)
        return {"train": train, "superb": superb, "total": train + superb}
    if cfg.train.compute_matched:
        depths, steps = [depths[-1]], [max(1, round(cfg.train.steps / cal["cm_speedup"]))]
    return cal_mod.trial_seconds(cal, depths, steps, cfg.train.eval_every, cfg.train.ckpt_every, superb_s)


def _check_against_finished(sweep, rows: list[dict]) -> list[str]:
    """The model against the sweep's finished trials: measured over predicted seconds."""
    ratios = []
    for r in rows:
        if not r["done"]:
            continue
        measured = trial_wall_seconds(sweep.out_dir / r["trial"].run_id)
        if measured and r["parts"]["total"] > 0:
            ratios.append(measured / r["parts"]["total"])
    if not ratios:
        return []
    return [f"  check: {len(ratios)} finished trial(s) took {statistics.median(ratios):.2f}x the model's time "
            f"(median; range {min(ratios):.2f}-{max(ratios):.2f}x)"]


def trial_wall_seconds(run_dir: Path) -> Optional[float]:
    """A finished trial's wall-clock: its run's ``started`` to ``ended`` plus its SUPERB
    scoring's ``seconds`` (None when the summary lacks the times)."""
    s = runs.read_summary(run_dir)
    if not s or s.get("status") != "ok" or not s.get("started") or not s.get("ended"):
        return None
    try:
        secs = (_dt.datetime.fromisoformat(s["ended"]) - _dt.datetime.fromisoformat(s["started"])).total_seconds()
    except (TypeError, ValueError):
        return None
    sup, _ = runs.load_superb(run_dir)
    if isinstance(sup, dict) and isinstance(sup.get("seconds"), (int, float)):
        secs += float(sup["seconds"])
    return secs


def estimate_params(cfg: RunConfig) -> int:
    """Encoder + projection parameters of the trial's final student (weights only, no
    biases or norms): the preset's shape with the config's non-zero overrides."""
    from harness.student import PRESETS  # the real presets (torch is imported with them)

    shape = PRESETS[cfg.student.preset]
    layers = cfg.student.layers or shape["layers"]
    width = cfg.student.width or shape["width"]
    ffn = cfg.student.ffn or shape["ffn"]
    return layers * (4 * width * width + 2 * width * ffn + width * _TEACHER_WIDTH[cfg.profile])
