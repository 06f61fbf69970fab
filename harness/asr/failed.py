"""A failed ASR run's ``summary.json`` (the study's in-process loop and a Ray trial both write it)."""

from __future__ import annotations

from pathlib import Path

from harness import failures, runs


def record_failure(run_dir: Path, run_id: str, sweep: str, cfg, err: Exception, log) -> None:
    """``summary.json`` of a failed run: ``failed: <reason>`` and its ``failure`` class (a full
    disk: the one line of :func:`harness.failures.no_space_message`)."""
    if failures.is_no_space(err):
        failures.release(err)  # torch's writer still holds its temporary file's blocks
        reason = failures.no_space_message(run_dir)
    else:
        reason = f"{type(err).__name__}: {err}"
    summary = {"run_id": run_id, "sweep": sweep, "track": "asr", "objective": cfg.loss.objective,
               "seed": cfg.train.seed, "status": f"failed: {reason}"[:500], "failure": failures.classify(err)}
    try:
        runs.write_summary(run_dir, summary)
    except OSError as werr:  # its summary stays "running": counted as an environment failure
        if not failures.is_no_space(werr):
            raise
    log(f"[asr] {run_id}: {summary['status']}")
