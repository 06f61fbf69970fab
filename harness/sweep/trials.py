"""One trial of a distillation sweep: distill, score, analyse, in the trial's run folder.

Plain data in, plain data out (a trial payload crosses to Ray workers); the run folder's
bookkeeping (``trial.json``, ``summary.json``, done or not) is :mod:`harness.runs`'.
"""

from __future__ import annotations

import os
import traceback
from pathlib import Path
from typing import Callable, Optional

from harness import failures, locks, runs
from harness.config import RunConfig, from_dict, to_dict
from harness.sweep.grid import Sweep


def tasks_of(sweep: Sweep, seed: int) -> list[str]:
    """The tasks a trial of ``seed`` is scored on (``evaluate``, unless ``evaluate_seeds``
    leaves its seed out)."""
    keep = sweep.config.evaluate_seeds
    return list(sweep.config.evaluate) if not keep or seed in keep else []


def trial_payloads(sweep: Sweep, threads: int, retry: Optional[str] = None) -> list[dict]:
    """Each trial of ``sweep`` as the plain payload :func:`run_trial` takes (``retry``: which
    failed trials are rerun, as in :func:`harness.runs.trial_done`)."""
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
            "retry": retry,
            **_group_of(sweep),
        }
        for t in sweep.trials
    ]


def _group_of(sweep: Sweep) -> dict:
    """``{"group": {"workers", "cpu", "gpu"}}`` for data-parallel trials (``resources.workers
    > 1``: a Ray Train group per trial, :mod:`harness.sweep.group`), else ``{}``."""
    r = sweep.config.resources
    if r.workers <= 1:
        return {}
    res = r.resolve()
    return {"group": {"workers": r.workers, "cpu": res["cpu"], "gpu": res["gpu"]}}


def run_trial(
    trial: dict,
    on_log: Optional[Callable[[dict], None]] = None,
) -> dict:
    """Distill and score one trial, holding its run folder's lock; never raises for a failed run.

    Args:
        trial: ``{"sweep", "run_id", "run_dir", "config" (resolved RunConfig as a dict),
            "overrides", "evaluate" (tasks), "threads", "retry"}`` (plain data: it crosses
            to Ray workers); ``retry`` as in :func:`harness.runs.trial_done`.
        on_log: called with each logged metrics line (Ray reports it for schedulers).

    Returns:
        The run's flat result: ``status``, ``failure`` (None, ``environment`` or
        ``deterministic``), ``train_seconds``, ``superb_score``, ``loss``; and ``summary``
        when the failure could not be written to the run folder (a full disk).
    """
    if trial.get("cwd"):
        # Ray starts each trial in its own folder; relative paths in the run config
        # (data.corpus, teacher.cache_dir) are meant from where the sweep was launched.
        os.chdir(trial["cwd"])
    run_dir = Path(trial["run_dir"])
    try:
        with locks.hold(run_dir, f"sweep {trial['sweep']} trial {trial['run_id']}"):
            summary = _run_locked(trial, run_dir, on_log)
    except Exception as err:  # the folder cannot be written (locked, disk full): reported from memory
        failure = failures.classify(err)
        reason = failures.no_space_message(run_dir) if failures.is_no_space(err) else _oneline(err)
        summary = getattr(err, "summary", None) or {
            "run_id": trial["run_id"], "sweep": trial["sweep"], "status": f"failed: {reason}"[:500], "failure": failure}
        return {"status": summary["status"], "failure": failures.failure_of(summary), "train_seconds": None,
                "superb_score": None, "loss": None, "wer": None, "speedup": None, "summary": summary}
    return {
        "status": summary.get("status", "failed: no summary"),
        "failure": failures.failure_of(summary),
        "train_seconds": summary.get("train_seconds"),
        "superb_score": summary.get("superb_score"),
        "loss": _final_loss(summary),
        # an ASR study's run: its greedy WER and speedup (None for a distillation run)
        "wer": ((summary.get("wer") or {}).get("greedy") or {}).get("wer"),
        "speedup": summary.get("speedup"),
    }


def _final_loss(summary: dict):
    """The last logged loss: ``loss`` for a distillation run, ``total`` for an ASR run."""
    losses = summary.get("final_losses") or {}
    return losses.get("loss", losses.get("total"))


def _oneline(err: BaseException) -> str:
    text = (str(err).strip().splitlines() or [""])[0]
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _run_asr(trial: dict, run_dir: Path, on_log) -> dict:
    """An ASR study's trial (``track: asr``): one student, distilled and scored by
    :func:`harness.asr.train.run_asr_distill`; a failure is recorded, not raised."""
    from harness.asr.failed import record_failure
    from harness.asr.train import AsrRunConfig, run_asr_distill

    if not runs.trial_done(run_dir, [], retry=trial.get("retry")):
        cfg = from_dict(AsrRunConfig, trial["config"], source=run_dir / "trial.json")
        try:
            run_asr_distill(cfg, run_dir, sweep=trial["sweep"], on_log=on_log)
        except Exception as err:
            record_failure(run_dir, trial["run_id"], trial["sweep"], cfg, err, lambda msg: None)
    return runs.read_summary(run_dir) or {}


def _run_locked(trial: dict, run_dir: Path, on_log) -> dict:
    tasks = list(trial.get("evaluate") or [])
    runs.write_trial(run_dir, trial, **({"node": trial["node"]} if trial.get("node") else {}),
                     **({"group": trial["group"]} if trial.get("group") else {}))
    if trial.get("threads"):  # exactly the CPUs the trial was given (Ray's), for torch and OpenMP/MKL
        import torch

        n = int(trial["threads"])
        torch.set_num_threads(n)
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[var] = str(n)
    if trial.get("track") == "asr":
        return _run_asr(trial, run_dir, on_log)

    if not runs.trial_done(run_dir, [], retry=trial.get("retry")):
        cfg = from_dict(RunConfig, trial["config"], source=run_dir / "trial.json")
        try:
            if trial.get("group"):  # data-parallel: a Ray Train group of workers trains it
                from harness.sweep.group import run_group

                run_group(trial, run_dir)
            else:
                from harness.distill import run_distill

                run_distill(cfg, run_dir, resume=True, on_log=on_log, sweep=trial["sweep"],
                            threads=int(trial["threads"]) if trial.get("threads") else None)
        except Exception as err:  # recorded, and the sweep goes on
            reason = str(err) if isinstance(err, failures.NoSpaceError) else (
                failures.no_space_message(run_dir) if failures.is_no_space(err) else _oneline(err))
            runs.record_failure(run_dir, trial["run_id"], trial["sweep"], f"failed: {reason}",
                                traceback.format_exc(), failure=failures.classify(err))
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
    return summary
