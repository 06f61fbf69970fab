"""Load and run a distillation sweep: every unfinished trial, in-process or through Ray, then
``runs.csv`` (the module docstring of :mod:`harness.sweep` describes the sweep file)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from harness import runs
from harness.config import ConfigError, RunConfig, from_dict, load_yaml
from harness.sweep import tracks
from harness.sweep.grid import Sweep, SweepConfig, base_data, expand_grid
from harness.sweep.ray_adapter import run_ray
from harness.sweep.trials import run_trial, trial_payloads


def load_sweep(
    path: str | Path,
    seeds: list[int] | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    suffix: str = "",
    tasks: list[str] | None = None,
) -> Sweep:
    """Load a sweep YAML strictly and expand it into trials, validating every trial's config.

    Args:
        path: the sweep YAML.
        seeds: replace the file's seeds (e.g. ``[0]`` for a quick pass).
        overrides: extra ``key=value`` changes applied to every trial (after the file's).
        tasks: replace the file's ``evaluate`` task list (e.g. fewer tasks for a quick pass).
        suffix: appended to the sweep name (its results folder), so a quick pass never
            mixes with the full study.

    Raises:
        ConfigError: one line naming the file and the key (``grid.stacking.varaint``
            -> nearest valid key), or the base file.
    """
    path = Path(path)
    track = tracks.track_of(path)
    if track != tracks.DISTILL:
        return tracks.entry(track, "load")(path)
    cfg: SweepConfig = from_dict(SweepConfig, load_yaml(path), source=path)
    if seeds:
        cfg.seeds = list(seeds)
    if suffix:
        cfg.name += suffix
        cfg.reuse = [r + suffix for r in cfg.reuse]
    if tasks is not None:
        cfg.evaluate = list(tasks)
    base, base_path = base_data(cfg, path, overrides)
    # The base is checked with the sweep's and the command line's changes applied, so a
    # placeholder in it (the paper profile's checkpoint path) can be filled by --set.
    from_dict(RunConfig, base, source=base_path)
    if cfg.evaluate:
        _check_tasks(cfg.evaluate, path)

    return Sweep(cfg, path, expand_grid(cfg, base, path, RunConfig))


def _check_tasks(tasks: list[str], path: Path) -> None:
    try:
        from harness.superb import TASKS
    except ModuleNotFoundError as err:
        if err.name != "harness.superb":
            raise
        return  # scoring not installed: the trial will say so
    for task in tasks:
        if task not in TASKS:
            from harness.registry import did_you_mean

            raise ConfigError(f"{path}: evaluate: unknown task {task!r}{did_you_mean(task, TASKS.names())}")


def run_sweep(
    path: str | Path,
    resume: bool = False,
    address: str | None = None,
    local: bool = False,
    log: Callable[[str], None] = print,
    seeds: list[int] | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    suffix: str = "",
    tasks: list[str] | None = None,
) -> Path:
    """Run every trial of a sweep (Ray Tune, or in-process with ``local``) and write runs.csv.

    Args:
        path: the sweep YAML.
        resume: continue an interrupted sweep (finished trials are kept, not rerun).
        address: an existing Ray cluster (``ray start --head`` on the head node; also
            taken from ``RAY_ADDRESS``); None starts a local Ray instance.
        local: run trials one by one in this process, without Ray.
        seeds, overrides, suffix: as in :func:`load_sweep`.

    Returns:
        The path of ``runs.csv``.

    Raises:
        ConfigError: a bad sweep file; or the sweep folder already holds runs and
            ``resume`` was not given.
    """
    track = tracks.track_of(path)
    if track != tracks.DISTILL:
        return tracks.entry(track, "run")(path, resume=resume, log=log)
    sweep = load_sweep(path, seeds=seeds, overrides=overrides, suffix=suffix, tasks=tasks)
    out = sweep.out_dir
    existing = [p for p in out.glob("*/trial.json")] if out.is_dir() else []
    if existing and not resume:
        raise ConfigError(
            f"{out} already holds {len(existing)} run(s) of sweep {sweep.config.name!r}: "
            "pass --resume to finish it, or remove the folder to start over"
        )
    out.mkdir(parents=True, exist_ok=True)
    res = sweep.config.resources.resolve()
    threads = max(1, int(res["cpu"]))
    payloads = trial_payloads(sweep, threads)
    todo = [p for p in payloads if not runs.trial_done(Path(p["run_dir"]), p["evaluate"])]
    if sweep.config.reuse:
        sources = [out.parent / name for name in sweep.config.reuse]
        todo = [p for p in todo if not runs.reuse_identical_run(p, sources, log)]
    log(f"[sweep] {sweep.config.name}: {len(payloads)} trials, {len(payloads) - len(todo)} already done, "
        f"{len(todo)} to run -> {out}")
    if todo:
        if local or sweep.config.backend == "local":
            for p in todo:
                t0 = time.time()
                result = run_trial(p)
                log(f"[sweep] {p['run_id']}: {result['status']} ({time.time() - t0:.0f} s)")
        else:
            run_ray(sweep, todo, res, address, log)
    csv = runs.write_runs_csv(out)
    log(f"[sweep] wrote {csv}")
    return csv
