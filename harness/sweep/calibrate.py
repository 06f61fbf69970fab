"""Measured trial costs for ``harness sweep --dry-run`` (a short calibration, cached).

A trial of a distillation sweep spends its wall-clock on: setting up (teacher, cache,
held-out set, student), the training steps (the student's compute at each stage's depth
plus the data path), the held-out evaluations (the last one with the phone probe), the
checkpoints, and the SUPERB scoring when its seed is scored. :func:`calibrate` measures
each of these on this machine, as the sweep will run them:

- ``slots`` copies at once (the trials Ray runs side by side: this machine's cores over a
  trial's CPUs), each in its own process with the trial's threads (torch and OpenMP), so
  the contention between concurrent trials is in the numbers;
- each copy sets up a real run of the sweep's first trial (the real teacher cache and
  held-out set), times ``steps`` real steps at full depth (the real loader: disk reads
  included), one held-out evaluation with and one without the probe, one checkpoint, and
  the per-depth step cost on an in-memory batch (:class:`harness.bench.stepcost.DepthCosts`);
  the data path per step is the real step's time less the in-memory one at full depth.

The result is cached under ``<results>/_calibration/`` keyed by everything it depends on
(the shapes, the threads, the slots, the CPU, torch), so the next dry run reads it;
``recalibrate`` measures again. Nothing is built: a missing teacher cache or corpus is
reported (the estimate then says what it lacks), never made here.

SUPERB scoring is not calibrated (a head takes minutes): :func:`superb_seconds` reads the
nearest measurement on disk, the sweep's own scored runs first.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

from harness import provenance, runs

CALIBRATION_DIR = "_calibration"
#: calibration steps per copy (real steps at full depth, after 3 warm-up steps)
STEPS = 20


class CalibrationUnavailable(RuntimeError):
    """What the calibration would need is missing (a corpus, a built teacher cache)."""


def key_of(cfg, threads: int, slots: int) -> str:
    """The calibration's cache key: what its numbers depend on."""
    hw = provenance.hardware()
    parts = {"profile": cfg.profile, "student": dataclasses.asdict(cfg.student),
             "data": {k: getattr(cfg.data, k) for k in ("corpus", "split", "max_seconds", "batch_size",
                                                         "max_utterances", "heldout", "heldout_seconds",
                                                         "num_workers")},
             "teacher": dataclasses.asdict(cfg.teacher),
             "loss": {"objective": cfg.loss.objective, "per_layer": cfg.loss.per_layer},
             "stacking": {"layer_map": cfg.stacking.layer_map},
             "train": {k: getattr(cfg.train, k) for k in ("device", "precision", "tensorboard")},
             "threads": threads, "slots": slots, "cpu": hw.get("cpu"), "device": hw.get("device"),
             "torch": hw.get("torch"), "version": 2}
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cached_or_measure(cfg, depths: Sequence[int], threads: int, slots: int, root: Path,
                      recalibrate: bool = False, log: Callable[[str], None] = print) -> tuple[dict, bool]:
    """The calibration of ``cfg`` (from ``root/_calibration/`` unless ``recalibrate``).

    Returns:
        ``(calibration, from_cache)``.

    Raises:
        CalibrationUnavailable: the corpus or the teacher cache is not there yet.
    """
    path = Path(root) / CALIBRATION_DIR / f"stepcost-{key_of(cfg, threads, slots)}.json"
    if not recalibrate:
        data, _ = runs.load_json(path)
        if isinstance(data, dict) and set(map(int, data.get("depth_ms", {}))) >= set(depths):
            data["path"] = str(path)
            return data, True
    cal = calibrate(cfg, depths, threads, slots, log)
    try:
        runs.write_json(path, cal)
        cal["path"] = str(path)
    except OSError as err:  # a read-only or full results folder: the numbers are still good
        log(f"[dry-run] calibration not cached ({err.strerror or err})")
    return cal, False


def calibrate(cfg, depths: Sequence[int], threads: int, slots: int, log: Callable[[str], None] = print) -> dict:
    """Measure the trial costs of ``cfg`` with ``slots`` copies at once (see the module).

    Returns:
        ``{"setup_s", "step_ms" (real, full depth), "depth_ms" {depth: ms}, "data_ms",
        "eval_s", "eval_probe_s", "ckpt_s", "cm_speedup", "copies" (each copy's numbers),
        "threads", "slots", "load" (before, after), "measured", "seconds", "hardware"}``;
        every figure the median over the copies.
    """
    import multiprocessing as mp

    from harness.config import to_dict

    log(f"[dry-run] calibrating on this machine: {slots} cop{'y' if slots == 1 else 'ies'} at once "
        f"(the sweep's concurrency), {threads} thread(s) each, {STEPS} real steps + held-out evaluation ...")
    load0, t0 = provenance.load_average(), time.perf_counter()
    args = [(to_dict(cfg), list(depths), threads) for _ in range(slots)]
    ctx = mp.get_context("spawn")
    env = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    os.environ.update({k: str(threads) for k in env})  # the children's OpenMP pools, set before torch loads
    try:
        with ctx.Pool(slots) as pool:
            copies = pool.map(_probe, args)
    finally:
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    errors = [c["error"] for c in copies if "error" in c]
    if errors:
        raise CalibrationUnavailable(errors[0])

    def med(key: str) -> float:
        return statistics.median(c[key] for c in copies)

    out = {k: med(k) for k in ("setup_s", "step_ms", "data_ms", "eval_s", "eval_probe_s", "ckpt_s", "cm_speedup")}
    out["depth_ms"] = {str(d): statistics.median(c["depth_ms"][str(d)] for c in copies) for d in depths}
    out.update(copies=copies, threads=threads, slots=slots, steps=STEPS,
               load={"before": load0, "after": provenance.load_average()}, measured=provenance.now_iso(),
               seconds=round(time.perf_counter() - t0, 1), hardware=provenance.hardware())
    log(f"[dry-run] calibrated in {out['seconds']:.0f} s: full-depth step {out['step_ms']:.0f} ms "
        f"(data path {out['data_ms']:.0f} ms), setup {out['setup_s']:.1f} s, held-out evaluation "
        f"{out['eval_s']:.1f} s ({out['eval_probe_s']:.1f} s with the probe)")
    return out


def _probe(args: tuple[dict, list[int], int]) -> dict:
    """One calibration copy (in its own process): see the module."""
    cfg_dict, depths, threads = args
    try:
        return _measure(cfg_dict, depths, threads)
    except CalibrationUnavailable as err:
        return {"error": str(err)}
    except (OSError, ValueError, RuntimeError) as err:  # a corpus or cache problem: one line
        return {"error": f"{type(err).__name__}: {(str(err).splitlines() or [''])[0]}"}


def _measure(cfg_dict: dict, depths: list[int], threads: int) -> dict:
    import torch

    from harness import distill, heldout, stacking
    from harness.bench.stepcost import DepthCosts
    from harness.config import RunConfig, from_dict

    torch.set_num_threads(threads)
    cfg = from_dict(RunConfig, cfg_dict)
    full = max(depths)
    cfg = dataclasses.replace(
        cfg, stacking=dataclasses.replace(cfg.stacking, variant="none"),
        train=dataclasses.replace(cfg.train, steps=STEPS + 3, compute_matched=False, eval_every=0, ckpt_every=0),
        student=dataclasses.replace(cfg.student, layers=full))
    if cfg.teacher.cache:
        _check_cache_built(cfg)
    with tempfile.TemporaryDirectory(prefix="harness-calibrate-") as tmp:
        t0 = time.perf_counter()
        run = distill.setup(cfg, Path(tmp), None, provenance.now_iso(), threads)
        setup_s = time.perf_counter() - t0
        matched = sorted(set(run.student.targets))
        walls = []
        for i, batch in enumerate(distill.stage_batches(run, range(0, STEPS + 3))):
            distill.sync(run.device)
            t1 = time.perf_counter()
            if distill.train_step(run, batch, matched, cfg.optim.lr) is None:
                raise CalibrationUnavailable("calibration: a step gave a non-finite loss")
            distill.sync(run.device)
            if i >= 3:
                walls.append(time.perf_counter() - t1)
        evals = {}
        for probe in (False, True):
            if run.holdout is None:
                evals[probe] = 0.0
                continue
            t1 = time.perf_counter()
            heldout.evaluate(run.student, run.teacher, run.holdout, run.device, probe=probe)
            evals[probe] = time.perf_counter() - t1
        t1 = time.perf_counter()
        distill.save_checkpoint(run)
        ckpt_s = time.perf_counter() - t1
        costs = DepthCosts(cfg, run.teacher, depths, steps=4, warmup=2)
        for r in range(2):
            costs.round(r, log=lambda s: None)
        depth_ms = {str(row["depth"]): row["wall_ms"]["median"] for row in costs.rows()}
        grown = dataclasses.replace(cfg, stacking=dataclasses.replace(cfg.stacking, variant="interleaved"),
                                    train=dataclasses.replace(cfg.train, steps=cfg_dict["train"]["steps"]))
        sched = stacking.plan_stages(grown)
        cm = stacking.theoretical_speedup(sched.depths, sched.steps,
                                          distill.cost_model(cfg, run.student, run.teacher, distill.live_frames(run)))
    step_ms = 1000 * statistics.median(walls)
    return {"setup_s": setup_s, "step_ms": step_ms, "depth_ms": depth_ms,
            "data_ms": max(0.0, step_ms - depth_ms[str(full)]), "eval_s": evals[False], "eval_probe_s": evals[True],
            "ckpt_s": ckpt_s, "cm_speedup": cm, "load_end": provenance.load_average()}


def _check_cache_built(cfg) -> None:
    """Refuse (CalibrationUnavailable) when the run's teacher cache is not built: a dry run
    never builds one (it takes minutes; ``harness teacher cache`` or the first trial does)."""
    from harness import distill
    from harness.teachers import load_teacher
    from harness.teachers.cache import CacheMissing, ensure_cache

    manifest = distill.manifest_path(cfg)
    if not manifest.is_file():
        raise CalibrationUnavailable(f"no corpus manifest {manifest} (build the corpus first: harness data build)")
    teacher = load_teacher(cfg.teacher.spec, distill.resolve_device(cfg.train.device))
    try:
        ensure_cache(teacher, manifest, distill.teacher_layers(cfg, teacher.num_layers), frontend=True,
                     cache_dir=cfg.teacher.cache_dir, limit=cfg.data.max_utterances, build=False, log=None)
    except CacheMissing as err:
        raise CalibrationUnavailable(f"{err} (build it with harness teacher cache, as ./run_all.sh does, "
                                     "or the sweep's first trial builds it)") from None


# ----------------------------------------------------------------------------- SUPERB


def superb_seconds(tasks: Sequence[str], profile: str, sweep_dir: Path, cache_dir: Optional[Path] = None
                   ) -> tuple[Optional[float], str]:
    """Seconds one trial spends scoring ``tasks``, from the nearest measurement on disk.

    In order: the sweep's own scored runs; other sweeps' scored runs of the same profile
    (``<results>/*/*/superb.json``); the memoised SUPERB baseline of a teacher
    (``<cache>/superb/results/``: scoring the larger teacher, an upper bound). Each is the
    median per task of the runs' ``task_seconds``, summed over ``tasks``.

    Returns:
        ``(seconds, where it came from)``; ``(None, why)`` when nothing was measured.
    """
    if not tasks:
        return 0.0, "no task scored"
    want = set(tasks)

    def from_files(files: list[Path], teacher_only: bool = False) -> tuple[Optional[float], int]:
        per: dict[str, list[float]] = {t: [] for t in tasks}
        n = 0
        for f in files:
            data, _ = runs.load_json(f)
            if not isinstance(data, dict) or data.get("profile") != profile or not isinstance(data.get("tasks"), dict):
                continue
            if teacher_only and str(data.get("upstream_id", "")).startswith("fbank"):
                continue
            got = {t: r.get("task_seconds") for t, r in data["tasks"].items()
                   if isinstance(r, dict) and r.get("status") == "ok" and isinstance(r.get("task_seconds"), (int, float))}
            if want <= set(got):
                n += 1
                for t in tasks:
                    per[t].append(float(got[t]))
        if not n:
            return None, 0
        return sum(statistics.median(v) for v in per.values()), n

    sweep_dir = Path(sweep_dir)
    secs, n = from_files(sorted(sweep_dir.glob("*/superb.json")))
    if secs is not None:
        return secs, f"measured: the median of this sweep's {n} scored run(s)"
    others = [p for p in sorted(sweep_dir.parent.glob("*/*/superb.json")) if p.parent.parent != sweep_dir]
    secs, n = from_files(others)
    if secs is not None:
        return secs, f"measured: the median of {n} scored run(s) of other {profile} sweeps"
    if cache_dir is None:
        from harness.superb.evaluate import DEFAULT_CACHE

        cache_dir = DEFAULT_CACHE
    secs, n = from_files(sorted(Path(cache_dir).glob("results/*.json")), teacher_only=True)
    if secs is not None:
        return secs, f"measured: the teacher's SUPERB baseline scoring in {cache_dir}/results (an upper bound)"
    return None, ("not measured yet (no scored run or baseline of this profile on disk: "
                  "score the baselines first, as ./run_all.sh does, to include it)")


# ----------------------------------------------------------------------------- the model


def trial_seconds(cal: dict, depths: Sequence[int], steps: Sequence[int], eval_every: int, ckpt_every: int,
                  superb_s: float) -> dict[str, float]:
    """A trial's seconds by part, priced by a calibration: ``setup``, ``train`` (each
    stage's steps at its depth's in-memory cost plus the data path), ``eval`` (one held-out
    evaluation every ``eval_every`` steps and at the end, the last with the probe),
    ``ckpt``, ``superb`` and ``total``."""
    total = int(sum(steps))
    train = sum(n * (cal["depth_ms"][str(d)] + cal["data_ms"]) for d, n in zip(depths, steps)) / 1000
    evals = len({s for s in range(eval_every, total, eval_every)}) if eval_every else 0
    ckpts = len(range(ckpt_every, total, ckpt_every)) + max(0, len(depths) - 1) if ckpt_every else 0
    parts = {"setup": cal["setup_s"], "train": train, "eval": evals * cal["eval_s"] + cal["eval_probe_s"],
             "ckpt": ckpts * cal["ckpt_s"], "superb": superb_s}
    parts["total"] = sum(parts.values())
    return parts


def makespan(durations: Sequence[float], slots: int) -> float:
    """Wall-clock of running ``durations`` in order on ``slots`` parallel slots, each next
    trial starting on the first slot to free up (how Ray's grid search runs them)."""
    free = [0.0] * max(1, slots)
    for d in durations:
        i = min(range(len(free)), key=free.__getitem__)
        free[i] += d
    return max(free) if durations else 0.0


def slots_of(res: dict, local: bool) -> int:
    """Trials that run at once on this machine: 1 in-process, else the cores (or GPUs) over
    a trial's share."""
    if local:
        return 1
    cores = os.cpu_count() or 1
    n = max(1, math.floor(cores / max(res.get("cpu", 1.0), 1e-9)))
    if res.get("gpu"):
        try:
            import torch

            n = min(n, max(1, math.floor(torch.cuda.device_count() / res["gpu"])))
        except ImportError:
            pass
    return n


def describe(cal: dict, cached: bool) -> str:
    """One line: where the calibration came from."""
    load = cal.get("load") or {}
    how = f"cached in {cal.get('path')}" if cached else f"measured now in {cal.get('seconds', 0):.0f} s"
    return (f"calibrated {cal.get('measured')} ({how}; {cal.get('slots')} at once, {cal.get('threads')} thread(s); "
            f"load {load.get('before')} -> {load.get('after')}): step at full depth {cal['step_ms']:.0f} ms of which "
            f"data path {cal['data_ms']:.0f} ms; per depth "
            + ", ".join(f"{d}: {ms:.0f}" for d, ms in sorted(cal["depth_ms"].items(), key=lambda x: int(x[0])))
            + " ms")
