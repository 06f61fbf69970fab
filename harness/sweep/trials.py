"""One trial of a distillation sweep: distill, score, analyse, in the trial's run folder.

Plain data in, plain data out (a trial payload crosses to Ray workers); the run folder's
bookkeeping (``trial.json``, ``summary.json``, done or not) is :mod:`harness.runs`'.
"""

from __future__ import annotations

import os
import traceback
from pathlib import Path
from typing import Callable, Optional

from harness import runs
from harness.config import RunConfig, from_dict, to_dict
from harness.sweep.grid import Sweep


def tasks_of(sweep: Sweep, seed: int) -> list[str]:
    """The tasks a trial of ``seed`` is scored on (``evaluate``, unless ``evaluate_seeds``
    leaves its seed out)."""
    keep = sweep.config.evaluate_seeds
    return list(sweep.config.evaluate) if not keep or seed in keep else []


def trial_payloads(sweep: Sweep, threads: int) -> list[dict]:
    """Each trial of ``sweep`` as the plain payload :func:`run_trial` takes."""
    return [
        {
            "sweep": sweep.config.name,
            "run_id": t.run_id,
            "run_dir": str(sweep.out_dir / t.run_id),
            "config": to_dict(t.config),
            "overrides": t.overrides,
            "evaluate": tasks_of(sweep, t.config.train.seed),
            "threads": threads,
            "cwd": str(Path.cwd()),
        }
        for t in sweep.trials
    ]


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

    if not runs.trial_done(run_dir, []):
        cfg = from_dict(RunConfig, trial["config"], source=run_dir / "trial.json")
        try:
            from harness.distill import run_distill

            run_distill(cfg, run_dir, resume=True, on_log=on_log, sweep=trial["sweep"])
        except Exception as err:  # recorded, and the sweep goes on
            runs.record_failure(run_dir, trial["run_id"], trial["sweep"], f"failed: {type(err).__name__}: {err}",
                                traceback.format_exc())
    summary = runs.read_summary(run_dir) or {}
    if summary.get("status") == "ok" and tasks and not runs.trial_done(run_dir, tasks):
        try:
            from harness.superb.evaluate import evaluate

            evaluate(str(run_dir), tasks)
        except Exception as err:
            summary = runs.read_summary(run_dir) or summary
            summary["eval_error"] = f"{type(err).__name__}: {err}"
            runs.write_summary(run_dir, summary)
        summary = runs.read_summary(run_dir) or summary
    if summary.get("status") == "ok" and not (run_dir / runs.ANALYSIS).is_file():
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
