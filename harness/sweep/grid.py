"""The sweep file and its grid: the schema (:class:`SweepConfig`), grid x seeds expansion into
validated trials (:func:`expand_grid`) and trial naming (``variant=interleaved-s0``).

A key the grid (or a point, or ``seeds``: ``train.seed``) sets in every trial it covers
cannot also be changed for every trial: an ``overrides`` entry or a ``--set`` of it would be
silently ignored, so both are errors naming the key (:func:`check_overrides`).

Pure data: no Ray, no training, no track dispatch (the ASR track's study uses it as is).
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

from harness import runs
from harness.config import (
    ConfigError,
    RunConfig,
    check_override_keys,
    deep_merge,
    from_dict,
    load_yaml,
    parse_overrides,
)

# -------------------------------------------------------------------------- the sweep file

# a sweep's name (and its --suffix, and a reused sweep's name) is a folder name under storage:
# one word, no path separator, no leading dot (``..``, a hidden folder)
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")


def check_suffix(suffix: str) -> None:
    """Check a ``--suffix`` (appended to the sweep name, i.e. its results folder's name).

    Raises:
        ConfigError: anything but letters, digits, ``_ . -`` not starting with a dot.
    """
    if suffix and not _NAME.fullmatch(suffix):
        raise ConfigError(f"--suffix {suffix!r}: use letters, digits, _ . - only, no path separator and no "
                          "leading dot (e.g. --suffix -quick)")


@dataclass
class ResourcesConfig:
    """Per-trial resources. ``cpu: auto`` = every core when no GPU is present (one trial at
    a time: concurrent CPU trials would distort each other's wall-clock, which is what a
    stacking study measures), 1 core per trial with GPUs. ``gpu: auto`` = 1 /
    ``trials_per_gpu`` of a GPU when CUDA is present, else 0."""

    cpu: Union[float, Literal["auto"]] = "auto"
    gpu: Union[float, Literal["auto"]] = "auto"
    trials_per_gpu: int = 1
    # data-parallel trials (Ray Train): each trial is a group of `workers` processes, each
    # with `cpu` CPUs (auto: every core over the workers) and `gpus_per_worker` GPUs
    workers: int = 1
    gpus_per_worker: float = 0.0

    def validate(self) -> None:
        if self.cpu != "auto" and self.cpu <= 0:
            raise ConfigError(f"cpu must be > 0 or auto, got {self.cpu}")
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers}")
        if self.gpus_per_worker < 0:
            raise ConfigError(f"gpus_per_worker must be >= 0, got {self.gpus_per_worker}")
        if self.gpus_per_worker and self.workers == 1:
            raise ConfigError("gpus_per_worker is for data-parallel trials (workers > 1): set gpu for one-process "
                              "trials")
        if self.gpu != "auto" and self.gpu < 0:
            raise ConfigError(f"gpu must be >= 0 or auto, got {self.gpu}")
        if self.trials_per_gpu < 1:
            raise ConfigError(f"trials_per_gpu must be >= 1, got {self.trials_per_gpu}")

    def resolve(self) -> dict[str, float]:
        """Concrete ``{"cpu": c, "gpu": g}`` for this machine: per trial, or with
        ``workers > 1`` per worker of a trial's group."""
        import torch

        has_gpu = torch.cuda.is_available()
        if self.workers > 1:
            cpu = float(max(1, (os.cpu_count() or 1) // self.workers)) if self.cpu == "auto" else float(self.cpu)
            return {"cpu": cpu, "gpu": float(self.gpus_per_worker)}
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
    # extra grid points (dotted key -> value each), run with every seed after the grid's:
    # e.g. the compute-matched `none`, {stacking.variant: none, train.compute_matched: true}
    points: list[dict[str, Any]] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    evaluate: list[str] = field(default_factory=list)
    # the seeds whose trials are scored on `evaluate` (empty: every seed); the others get
    # only their run's own held-out evaluation (more seeds for the cheap metric)
    evaluate_seeds: list[int] = field(default_factory=list)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    storage: str = "results"
    backend: Literal["ray", "local"] = "ray"
    reuse: list[str] = field(default_factory=list)

    def validate(self) -> None:
        if not _NAME.fullmatch(self.name or ""):
            raise ConfigError(f"name must be a non-empty word of letters, digits, _ . - not starting with a dot "
                              f"(got {self.name!r})")
        if not self.base:
            raise ConfigError("base must name a run config YAML (relative to the sweep file)")
        if not self.seeds:
            raise ConfigError("seeds must list at least one seed")
        for other in self.reuse:
            if not _NAME.fullmatch(other):
                raise ConfigError(f"reuse: {other!r} must be a sweep name (letters, digits, _ . - not starting "
                                  "with a dot), not a path")
        for key, values in self.grid.items():
            if not values:
                raise ConfigError(f"grid.{key} must list at least one value")
        for i, point in enumerate(self.points):
            if not isinstance(point, dict) or not point:
                raise ConfigError(f"points[{i}] must be a non-empty mapping of dotted keys to values, got {point!r}")
        if self.resources.workers > 1:
            if self.backend == "local":
                raise ConfigError("resources.workers > 1 (data-parallel trials) runs through Ray Train: "
                                  "use backend: ray")
            if self.scheduler.type != "none":
                raise ConfigError("scheduler: a data-parallel trial (resources.workers > 1) reports to Tune only "
                                  "when it ends, so it cannot be stopped early: use scheduler type none")


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


def expand_grid(cfg: SweepConfig, base: dict, path: Path, config_cls: type) -> list[Trial]:
    """Every grid point x seed as a validated ``config_cls`` (the distillation
    :class:`RunConfig`, or the ASR track's config).

    Raises:
        ConfigError: naming the sweep file and the grid point, or duplicate run ids.
    """
    if not _NAME.fullmatch(cfg.name):  # a --suffix the caller appended after validate()
        raise ConfigError(f"{path}: sweep name {cfg.name!r} (with its --suffix) must be letters, digits, _ . - "
                          "only, not starting with a dot")
    check_overrides(cfg, path, runs.flatten(cfg.overrides), "overrides.{key} in the sweep file",
                    "drop it from overrides", points=False)
    keys = list(cfg.grid)
    points = [dict(zip(keys, values)) for values in itertools.product(*(cfg.grid[k] for k in keys))]
    if not keys and cfg.points:
        points = []  # only the listed points (no grid: not the base config as well)
    points += [dict(p) for p in cfg.points]
    trials = []
    for point in points:
        for seed in cfg.seeds:
            overrides = {**point, "train.seed": seed}
            data = copy.deepcopy(base)
            for key, value in overrides.items():
                data = deep_merge(data, _nest(key, value))
            try:
                run_cfg = from_dict(config_cls, data, source=path)
                if config_cls is RunConfig:  # stage sizes and every growth plan, before any run
                    from harness.stacking import plan_stages  # torch: not on `harness --help`'s path

                    plan_stages(run_cfg)
            except ConfigError as err:
                msg = str(err).replace(f"{path}: ", "", 1)
                raise ConfigError(f"{path}: grid point {point}: {msg}") from None
            trials.append(Trial(_run_id(point, seed, list(point)), overrides, run_cfg))
    ids = [t.run_id for t in trials]
    dupes = {i for i in ids if ids.count(i) > 1}
    if dupes:
        raise ConfigError(f"{path}: grid yields duplicate runs {sorted(dupes)} (a repeated value?)")
    return trials


def _nest(dotted: str, value: Any) -> dict:
    out: dict = {}
    node = out
    parts = dotted.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


def _overlap(a: str, b: str) -> bool:
    """Whether dotted keys ``a`` and ``b`` set the same value (equal, or one holds the other)."""
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def check_overrides(cfg: SweepConfig, path: Path, keys: Any, what: str, fix: str, points: bool = True) -> None:
    """Refuse a change of every trial's config that the grid would silently override.

    Args:
        cfg: the sweep.
        path: the sweep file, for the message.
        keys: the dotted keys changed (an iterable of str).
        what: how the change is named in the message, ``{key}`` replaced by the key
            (``"a --set of {key}"``).
        fix: what to do instead of the change (``"drop it"``).
        points: also refuse keys a point sets (a --set of them would be ignored for that
            point); the file's ``overrides`` may give such a key for the other trials.

    Raises:
        ConfigError: ``"<path>: grid sets stacking.variant; a --set of stacking.variant
            would be ignored: drop it or edit the grid"`` and the like.
    """
    for key in keys:
        change = what.format(key=key)
        if _overlap(key, "train.seed"):
            raise ConfigError(f"{path}: the sweep's seeds set train.seed; {change} would be ignored: "
                              f"{fix} and set the seeds (seeds: in the file, or --seeds 0,1)")
        for grid_key in cfg.grid:
            if _overlap(key, grid_key):
                raise ConfigError(f"{path}: grid sets {grid_key}; {change} would be ignored: {fix} or edit the grid")
        for i, point in enumerate(cfg.points if points else ()):
            for point_key in point:
                if _overlap(key, point_key):
                    raise ConfigError(f"{path}: points[{i}] sets {point_key}; {change} would be ignored for that "
                                      f"point: {fix} or edit the points")


def base_data(cfg: SweepConfig, path: Path, overrides: list[str] | tuple[str, ...] = (),
              config_cls: type = RunConfig) -> tuple[dict, Path]:
    """The sweep's base run config as a mapping, with the sweep's ``overrides`` and then
    ``overrides`` (``key=value``, the command line's ``--set``) applied; and the base file's path.

    Raises:
        ConfigError: the base file cannot be read; a ``--set`` names no key of
            ``config_cls`` or has the wrong type (named as the command line's:
            :func:`harness.config.check_override_keys`); or it sets a key the grid, a
            point or the seeds set (it would be ignored: :func:`check_overrides`).
    """
    base_path = (path.parent / cfg.base) if not Path(cfg.base).is_absolute() else Path(cfg.base)
    base = load_yaml(base_path)
    base = deep_merge(base, parse_overrides([f"{k}={json.dumps(v)}" for k, v in runs.flatten(cfg.overrides).items()]))
    if overrides:
        extra = check_override_keys(config_cls, list(overrides), "--set")
        check_overrides(cfg, path, runs.flatten(extra), "a --set of {key}", "drop it")
        base = deep_merge(base, extra)
    return base, base_path
