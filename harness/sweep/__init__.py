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

A sweep holds its results folder's lock and each trial its run folder's
(:mod:`harness.locks`): a second sweep into the same folder is refused, naming the
first. A failed trial's ``failure`` (:mod:`harness.failures`) decides whether
``--resume`` reruns it (``environment``) or only ``--retry-failed`` does
(``deterministic``); ``--resume`` with other settings than the folder's runs is refused,
naming them; the CLI exits 1 after a summary line when any trial failed.

Ray is the adapter that spreads trials over CPUs, GPUs and machines; ``backend: local``
(or ``--local``) runs the same trials in this process, one after another.

Modules: :mod:`~harness.sweep.grid` (the sweep file, grid expansion, trial naming),
:mod:`~harness.sweep.tracks` (distillation or ASR track, chosen in one place),
:mod:`~harness.sweep.trials` (one trial), :mod:`~harness.sweep.ray_adapter` (Ray Tune),
:mod:`~harness.sweep.run` (load and run a sweep), :mod:`~harness.sweep.estimate`
(``--dry-run``). The run folders' bookkeeping (done, reuse, ``runs.csv``) is
:mod:`harness.runs`'.
"""

from __future__ import annotations

from harness.runs import RUN_COLUMNS, collect_rows, reuse_identical_run, trial_done, write_runs_csv
from harness.sweep.estimate import dry_run, estimate_params
from harness.sweep.grid import (
    ResourcesConfig,
    SchedulerConfig,
    Sweep,
    SweepConfig,
    Trial,
    expand_grid,
)
from harness.sweep.ray_adapter import _RAY_SOCKET_TAIL, _ray_temp_dir
from harness.sweep.run import load_sweep, run_sweep
from harness.sweep.trials import run_trial
from harness.sweep.tracks import track_of

__all__ = [
    "RUN_COLUMNS", "ResourcesConfig", "SchedulerConfig", "Sweep", "SweepConfig", "Trial", "collect_rows",
    "dry_run", "estimate_params", "expand_grid", "load_sweep", "reuse_identical_run", "run_sweep", "run_trial",
    "track_of", "trial_done", "write_runs_csv", "_RAY_SOCKET_TAIL", "_ray_temp_dir",
]
