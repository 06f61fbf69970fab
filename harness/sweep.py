"""Sweeps: a YAML grid of distillation runs, each trial = distill + evaluate, run through Ray Tune.

A sweep file names a base run config, a grid of dotted keys -> values, seeds and the
SUPERB tasks to score::

    name: main
    base: ../base/embedded.yaml        # relative to this file
    overrides: {train.steps: 400}      # applied to every trial (optional)
    grid:
      stacking.variant: [none, top, bottom, middle, interleaved]
    seeds: [0, 1, 2]
    evaluate: [ks, ic, sid, er, pr, asr]
    resources: {cpu: auto, gpu: auto}
    storage: results

Each trial writes ``<storage>/<name>/<run_id>/`` (the contract files of
``docs/architecture.md`` plus ``trial.json``), and ``<storage>/<name>/runs.csv`` (one
row per run x task) is rebuilt from the run folders after every sweep, so it never
depends on Ray's own bookkeeping. A trial whose run folder already holds a finished,
scored run is not rerun: this, with the distillation run's own mid-stage checkpoints, is
what makes ``--resume`` after Ctrl-C or ``kill -9`` finish only the unfinished trials.

``reuse: [other-sweep, ...]`` lets a study take a finished run of another sweep (same
storage, same suffix) whose resolved run config and scored tasks equal one of its trials:
the run folder is copied and marked ``reused_from`` instead of trained again (an ablation
shares its default point with the main table).

Ray is the adapter that spreads trials over CPUs, GPUs and machines; ``backend: local``
(or ``--local``) runs the same trials in this process, one after another.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import os
import re
import shutil
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Union

from harness import runs
from harness.config import (
    ConfigError,
    RunConfig,
    deep_merge,
    from_dict,
    load_yaml,
    parse_overrides,
    to_dict,
)
from harness.runs import RUN_COLUMNS, collect_rows, reuse_identical_run, trial_done, write_runs_csv  # noqa: F401 (public)

# -------------------------------------------------------------------------- the sweep file


@dataclass
class ResourcesConfig:
    """Per-trial resources. ``cpu: auto`` = every core when no GPU is present (one trial at
    a time: concurrent CPU trials would distort each other's wall-clock, which is what a
    stacking study measures), 1 core per trial with GPUs. ``gpu: auto`` = 1 /
    ``trials_per_gpu`` of a GPU when CUDA is present, else 0."""

    cpu: Union[float, Literal["auto"]] = "auto"
    gpu: Union[float, Literal["auto"]] = "auto"
    trials_per_gpu: int = 1

    def validate(self) -> None:
        if self.cpu != "auto" and self.cpu <= 0:
            raise ConfigError(f"cpu must be > 0 or auto, got {self.cpu}")
        if self.gpu != "auto" and self.gpu < 0:
            raise ConfigError(f"gpu must be >= 0 or auto, got {self.gpu}")
        if self.trials_per_gpu < 1:
            raise ConfigError(f"trials_per_gpu must be >= 1, got {self.trials_per_gpu}")

    def resolve(self) -> dict[str, float]:
        """Concrete ``{"cpu": c, "gpu": g}`` for this machine."""
        import torch

        has_gpu = torch.cuda.is_available()
        gpu = (1.0 / self.trials_per_gpu if has_gpu else 0.0) if self.gpu == "auto" else float(self.gpu)
        cpu = (1.0 if has_gpu else float(os.cpu_count() or 1)) if self.cpu == "auto" else float(self.cpu)
        return {"cpu": cpu, "gpu": gpu}


@dataclass
class SchedulerConfig:
    """Optional Tune trial scheduler for hyperparameter studies (ASHA stops weak trials
    early on ``metric``, reported at every logged step)."""

    type: Literal["none", "asha"] = "none"
    metric: str = "loss"
    mode: Literal["min", "max"] = "min"
    grace_period: int = 1
    reduction_factor: int = 2

    def validate(self) -> None:
        if self.grace_period < 1 or self.reduction_factor < 2:
            raise ConfigError("grace_period must be >= 1 and reduction_factor >= 2")


@dataclass
class SweepConfig:
    """A study: a base run config, a grid over dotted keys, seeds, the tasks to score."""

    name: str = ""
    base: str = ""
    overrides: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0])
    evaluate: list[str] = field(default_factory=list)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    storage: str = "results"
    backend: Literal["ray", "local"] = "ray"
    reuse: list[str] = field(default_factory=list)

    def validate(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.name or ""):
            raise ConfigError(f"name must be a non-empty word of letters, digits, _ . - (got {self.name!r})")
        if not self.base:
            raise ConfigError("base must name a run config YAML (relative to the sweep file)")
        if not self.seeds:
            raise ConfigError("seeds must list at least one seed")
        for key, values in self.grid.items():
            if not values:
                raise ConfigError(f"grid.{key} must list at least one value")


@dataclass
class Trial:
    """One grid point x seed."""

    run_id: str
    overrides: dict[str, Any]  # dotted key -> value (grid point + train.seed)
    config: RunConfig


@dataclass
class Sweep:
    """A loaded sweep: its config, where it came from, and its expanded trials."""

    config: SweepConfig
    path: Path
    trials: list[Trial]

    @property
    def out_dir(self) -> Path:
        storage = Path(self.config.storage)
        if not storage.is_absolute():
            storage = Path.cwd() / storage
        return storage / self.config.name


def _slug(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return re.sub(r"[^A-Za-z0-9.]+", "_", text).strip("_") or "x"


def _run_id(point: dict[str, Any], seed: int, grid_keys: list[str]) -> str:
    """``variant=interleaved-s0``: the last key component, unless two grid keys share it."""
    last = [k.rsplit(".", 1)[-1] for k in grid_keys]
    names = {k: (k.rsplit(".", 1)[-1] if last.count(k.rsplit(".", 1)[-1]) == 1 else k) for k in grid_keys}
    parts = [f"{names[k]}={_slug(point[k])}" for k in grid_keys]
    rid = "-".join(parts + [f"s{seed}"])
    if len(rid) > 120:  # keep paths sane; the full point is in trial.json
        rid = rid[:100] + "-" + hashlib.sha1(rid.encode()).hexdigest()[:8]
    return rid


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
    if _asr_track(path):  # ASR track hook: see _asr_track
        from harness.asr.study import load_study

        return load_study(path)
    cfg: SweepConfig = from_dict(SweepConfig, load_yaml(path), source=path)
    if seeds:
        cfg.seeds = list(seeds)
    if suffix:
        cfg.name += suffix
        cfg.reuse = [r + suffix for r in cfg.reuse]
    if tasks is not None:
        cfg.evaluate = list(tasks)
    base_path = (path.parent / cfg.base) if not Path(cfg.base).is_absolute() else Path(cfg.base)
    base = load_yaml(base_path)
    base = deep_merge(base, parse_overrides([f"{k}={json.dumps(v)}" for k, v in runs.flatten(cfg.overrides).items()]))
    if overrides:
        base = deep_merge(base, parse_overrides(list(overrides)))
    # The base is checked with the sweep's and the command line's changes applied, so a
    # placeholder in it (the paper profile's checkpoint path) can be filled by --set.
    from_dict(RunConfig, base, source=base_path)
    if cfg.evaluate:
        _check_tasks(cfg.evaluate, path)

    return Sweep(cfg, path, expand_grid(cfg, base, path, RunConfig))


def expand_grid(cfg: SweepConfig, base: dict, path: Path, config_cls: type) -> list[Trial]:
    """Every grid point x seed as a validated ``config_cls`` (the distillation
    :class:`RunConfig`, or the ASR track's config).

    Raises:
        ConfigError: naming the sweep file and the grid point, or duplicate run ids.
    """
    keys = list(cfg.grid)
    trials = []
    for values in itertools.product(*(cfg.grid[k] for k in keys)):
        point = dict(zip(keys, values))
        for seed in cfg.seeds:
            overrides = {**point, "train.seed": seed}
            data = copy.deepcopy(base)
            for key, value in overrides.items():
                data = deep_merge(data, _nest(key, value))
            try:
                run_cfg = from_dict(config_cls, data, source=path)
            except ConfigError as err:
                msg = str(err).replace(f"{path}: ", "", 1)
                raise ConfigError(f"{path}: grid point {point}: {msg}") from None
            trials.append(Trial(_run_id(point, seed, keys), overrides, run_cfg))
    ids = [t.run_id for t in trials]
    dupes = {i for i in ids if ids.count(i) > 1}
    if dupes:
        raise ConfigError(f"{path}: grid yields duplicate runs {sorted(dupes)} (a repeated value?)")
    return trials


def _asr_track(path: Path) -> bool:
    """ASR track hook: a sweep whose base config declares ``track: asr`` is an ASKD study
    of :mod:`harness.asr.study` (its trials are ASR runs, run in-process, not Ray)."""
    from harness.asr.study import is_asr_sweep

    return is_asr_sweep(path)


def _nest(dotted: str, value: Any) -> dict:
    out: dict = {}
    node = out
    parts = dotted.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


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


# -------------------------------------------------------------------------- one trial


def run_trial(
    trial: dict,
    on_log: Optional[Callable[[dict], None]] = None,
) -> dict:
    """Distill and score one trial; never raises for a failed run.

    Args:
        trial: ``{"sweep", "run_id", "run_dir", "config" (resolved RunConfig as a dict),
            "overrides", "evaluate" (tasks), "threads"}`` (plain data: it crosses to Ray
            workers).
        on_log: called with each logged metrics line (Ray reports it for schedulers).

    Returns:
        The run's flat result: ``status``, ``train_seconds``, ``superb_score``, ``loss``.
    """
    if trial.get("cwd"):
        # Ray starts each trial in its own folder; relative paths in the run config
        # (data.corpus, teacher.cache_dir) are meant from where the sweep was launched.
        os.chdir(trial["cwd"])
    run_dir = Path(trial["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    tasks = list(trial.get("evaluate") or [])
    runs.write_trial(run_dir, trial)
    if trial.get("threads"):
        import torch

        torch.set_num_threads(int(trial["threads"]))

    if not trial_done(run_dir, []):
        cfg = from_dict(RunConfig, trial["config"], source=run_dir / "trial.json")
        try:
            from harness.distill import run_distill

            run_distill(cfg, run_dir, resume=True, on_log=on_log, sweep=trial["sweep"])
        except Exception as err:  # recorded, and the sweep goes on
            runs.record_failure(run_dir, trial["run_id"], trial["sweep"], f"failed: {type(err).__name__}: {err}",
                                traceback.format_exc())
    summary = runs.read_summary(run_dir) or {}
    if summary.get("status") == "ok" and tasks and not trial_done(run_dir, tasks):
        try:
            from harness.superb.evaluate import evaluate

            evaluate(str(run_dir), tasks)
        except Exception as err:
            summary = runs.read_summary(run_dir) or summary
            summary["eval_error"] = f"{type(err).__name__}: {err}"
            runs.write_summary(run_dir, summary)
        summary = runs.read_summary(run_dir) or summary
    if summary.get("status") == "ok" and not (run_dir / "analysis.json").is_file():
        try:  # student x teacher CKA for the report's heatmaps; a failure is recorded, not fatal
            from harness.analysis import analyse_run

            analyse_run(run_dir)
        except Exception as err:
            summary = runs.read_summary(run_dir) or summary
            summary["analysis_error"] = f"{type(err).__name__}: {err}"
            runs.write_summary(run_dir, summary)
    return {
        "status": summary.get("status", "failed: no summary"),
        "train_seconds": summary.get("train_seconds"),
        "superb_score": summary.get("superb_score"),
        "loss": (summary.get("final_losses") or {}).get("total"),
    }


def _ray_trainable(config: dict) -> None:
    from ray import tune

    def on_log(metrics: dict) -> None:
        tune.report({k: v for k, v in metrics.items() if isinstance(v, (int, float))})

    result = run_trial(config["trial"], on_log=on_log)
    tune.report({"done": 1, **{k: v for k, v in result.items() if v is not None}})


# -------------------------------------------------------------------------- the sweep


def _trial_payloads(sweep: Sweep, threads: int) -> list[dict]:
    return [
        {
            "sweep": sweep.config.name,
            "run_id": t.run_id,
            "run_dir": str(sweep.out_dir / t.run_id),
            "config": to_dict(t.config),
            "overrides": t.overrides,
            "evaluate": list(sweep.config.evaluate),
            "threads": threads,
            "cwd": str(Path.cwd()),
        }
        for t in sweep.trials
    ]


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
    if _asr_track(path):  # ASR track hook: see _asr_track
        from harness.asr.study import run_asr_study

        return run_asr_study(path, resume=resume, log=log)
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
    payloads = _trial_payloads(sweep, threads)
    todo = [p for p in payloads if not trial_done(Path(p["run_dir"]), p["evaluate"])]
    if sweep.config.reuse:
        sources = [out.parent / name for name in sweep.config.reuse]
        todo = [p for p in todo if not reuse_identical_run(p, sources, log)]
    log(f"[sweep] {sweep.config.name}: {len(payloads)} trials, {len(payloads) - len(todo)} already done, "
        f"{len(todo)} to run -> {out}")
    if todo:
        if local or sweep.config.backend == "local":
            for p in todo:
                t0 = time.time()
                result = run_trial(p)
                log(f"[sweep] {p['run_id']}: {result['status']} ({time.time() - t0:.0f} s)")
        else:
            _run_ray(sweep, todo, res, address, log)
    csv = write_runs_csv(out)
    log(f"[sweep] wrote {csv}")
    return csv


_RAY_SOCKET_TAIL = "/session_2026-11-23_16-26-23_309369_4194304/sockets/plasma_store"  # 7-digit pid


def _ray_temp_dir(out: Path) -> str:
    # Ray puts unix sockets under its temp dir, e.g. <temp>/session_2026-11-23_16-26-23_309369_24976/
    # sockets/plasma_store, and a unix socket path must stay under 107 bytes: keep the temp dir
    # under the sweep folder only when the longest such path still fits.
    cand = out / "_ray"
    if len(str(cand)) + len(_RAY_SOCKET_TAIL) <= 107:
        cand.mkdir(parents=True, exist_ok=True)
        return str(cand)
    short = Path(tempfile.gettempdir()) / f"hray-{hashlib.sha1(str(out).encode()).hexdigest()[:8]}"
    short.mkdir(parents=True, exist_ok=True)
    return str(short)


def _run_ray(sweep: Sweep, todo: list[dict], res: dict, address: str | None, log: Callable) -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    import ray
    from ray import tune

    address = address or os.environ.get("RAY_ADDRESS")
    try:
        if address:
            ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
        else:
            ray.init(
                num_cpus=os.cpu_count(), include_dashboard=False, ignore_reinit_error=True,
                _temp_dir=_ray_temp_dir(sweep.out_dir), log_to_driver=False,
            )
    except Exception as err:  # one line for the user; finished trials are on disk already
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        first = (str(err).strip().splitlines() or [""])[0][:300]
        raise ConfigError(
            f"sweep {sweep.config.name!r}: could not start {where} ({type(err).__name__}: {first}); "
            "finished trials are kept: fix the cause and rerun with --resume, or run in-process with --local"
        ) from None
    try:
        trainable = tune.with_resources(_ray_trainable, res)
        tune_dir = sweep.out_dir / "_tune"
        scheduler = None
        if sweep.config.scheduler.type == "asha":
            from ray.tune.schedulers import ASHAScheduler

            s = sweep.config.scheduler
            scheduler = ASHAScheduler(
                metric=s.metric, mode=s.mode, grace_period=s.grace_period,
                reduction_factor=s.reduction_factor, time_attr="training_iteration",
            )
        # Trials that were already finished are filtered out above; a fresh Tuner over the
        # rest is simpler and sturdier after kill -9 than Ray's own experiment state.
        if tune_dir.exists():
            shutil.rmtree(tune_dir, ignore_errors=True)
        tuner = tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search(todo)},
            tune_config=tune.TuneConfig(
                reuse_actors=True, scheduler=scheduler,
                trial_dirname_creator=lambda t: t.config["trial"]["run_id"][:80],
            ),
            run_config=tune.RunConfig(
                name="_tune", storage_path=str(sweep.out_dir), verbose=0,
                failure_config=tune.FailureConfig(max_failures=0),
            ),
        )
        results = tuner.fit()
        for r in results:
            rid = r.config["trial"]["run_id"] if r.config else "?"
            status = (r.metrics or {}).get("status", "error" if r.error else "?")
            log(f"[sweep] {rid}: {status}")
    finally:
        ray.shutdown()


# -------------------------------------------------------------------------- runs.csv


# -------------------------------------------------------------------------- dry run

# Rough per-step costs on a 2-core CPU with the teacher cached, used only when no finished
# run of the same profile exists to learn from. They are estimates, labelled as such.
_GUESS_SECONDS_PER_STEP = {"tiny": 0.05, "embedded": 0.4, "paper": 0.5}
_GUESS_EVAL_SECONDS = {"tiny": 20.0, "embedded": 120.0, "paper": 3600.0}


def dry_run(path: str | Path, **kwargs: Any) -> str:
    """List the trials with an estimate of time and disk (no training); ``kwargs`` as in
    :func:`load_sweep`."""
    if _asr_track(Path(path)):  # ASR track hook: see _asr_track
        from harness.asr.study import study_dry_run

        return study_dry_run(path)
    sweep = load_sweep(path, **kwargs)
    done_runs = [runs.read_summary(p.parent) for p in sweep.out_dir.glob("*/summary.json")] if sweep.out_dir.is_dir() else []
    measured = [s["train_seconds"] / max(1, sum(st.get("steps", 0) for st in s.get("stages", [])))
                for s in done_runs if s and s.get("status") == "ok" and s.get("train_seconds") and s.get("stages")]
    lines = [f"sweep {sweep.config.name}: {len(sweep.trials)} trials -> {sweep.out_dir}"]
    total_s = 0.0
    total_b = 0
    for t in sweep.trials:
        prof = t.config.profile
        sps = (sum(measured) / len(measured)) if measured else _GUESS_SECONDS_PER_STEP[prof]
        secs = t.config.train.steps * sps + (_GUESS_EVAL_SECONDS[prof] if sweep.config.evaluate else 0)
        nbytes = _estimate_params(t.config) * 4 * 4  # student.ckpt + training checkpoint (Adam: 3x)
        total_s += secs
        total_b += nbytes
        state = "done" if trial_done(sweep.out_dir / t.run_id, sweep.config.evaluate) else "todo"
        lines.append(f"  {t.run_id:<48} {state:<5} ~{secs / 60:6.1f} min  ~{nbytes / 2**20:6.1f} MiB")
    basis = "measured from finished runs" if measured else "rough guess; no finished run to learn from"
    lines.append(f"total ~{total_s / 3600:.2f} h ({basis}), ~{total_b / 2**20:.0f} MiB of run folders "
                 "(plus the shared teacher cache)")
    return "\n".join(lines)


_PRESET_SHAPES = {  # layers, width, ffn, teacher width
    "student_tiny": (4, 64, 256, 64),
    "student_embedded": (8, 192, 768, 192),
    "student_paper": (12, 384, 1536, 768),
}


def _estimate_params(cfg: RunConfig) -> int:
    layers, width, ffn, tw = _PRESET_SHAPES[cfg.student.preset]
    layers = cfg.student.layers or layers
    width = cfg.student.width or width
    ffn = cfg.student.ffn or ffn
    return layers * (4 * width * width + 2 * width * ffn + width * tw)
