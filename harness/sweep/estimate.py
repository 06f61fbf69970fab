"""``harness sweep --dry-run``: the trials with an estimate of time and disk, no training.

Seconds per step come from the sweep's finished runs when there are any, else from a rough
per-profile guess (labelled as such). Disk is the student's parameter count, built from the
real student presets (:data:`harness.student.PRESETS`) and the trial's config, times the
bytes of ``student.ckpt`` plus the training checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness import runs
from harness.config import RunConfig
from harness.sweep import tracks
from harness.sweep.run import load_sweep
from harness.sweep.trials import tasks_of

# Rough per-step costs on a 2-core CPU with the teacher cached, used only when no finished
# run of the same profile exists to learn from. They are estimates, labelled as such.
_GUESS_SECONDS_PER_STEP = {"tiny": 0.05, "embedded": 0.4, "paper": 0.5}
_GUESS_EVAL_SECONDS = {"tiny": 20.0, "embedded": 120.0, "paper": 3600.0}
# Width of each profile's teacher (the target of the student's per-layer projections): the
# dummy teacher, the shipped embedded SFM, HuBERT Base. The teacher is not loaded for this.
_TEACHER_WIDTH = {"tiny": 64, "embedded": 192, "paper": 768}


def dry_run(path: str | Path, **kwargs: Any) -> str:
    """List the trials with an estimate of time and disk (no training); ``kwargs`` as in
    :func:`harness.sweep.load_sweep`."""
    track = tracks.track_of(path)
    if track != tracks.DISTILL:
        return tracks.entry(track, "dry_run")(path, **kwargs)
    sweep = load_sweep(path, **kwargs)
    done_runs = [runs.read_summary(p.parent) for p in sweep.out_dir.glob(f"*/{runs.SUMMARY}")] if sweep.out_dir.is_dir() else []
    measured = [s["train_seconds"] / max(1, sum(st.get("steps", 0) for st in s.get("stages", [])))
                for s in done_runs if s and s.get("status") == "ok" and s.get("train_seconds") and s.get("stages")]
    lines = [f"sweep {sweep.config.name}: {len(sweep.trials)} trials -> {sweep.out_dir}"]
    total_s = 0.0
    total_b = 0
    for t in sweep.trials:
        prof = t.config.profile
        sps = (sum(measured) / len(measured)) if measured else _GUESS_SECONDS_PER_STEP[prof]
        tasks = tasks_of(sweep, t.config.train.seed)
        secs = t.config.train.steps * sps + (_GUESS_EVAL_SECONDS[prof] if tasks else 0)
        nbytes = estimate_params(t.config) * 4 * 4  # student.ckpt + training checkpoint (Adam: 3x)
        total_s += secs
        total_b += nbytes
        state = "done" if runs.trial_done(sweep.out_dir / t.run_id, tasks, retry="environment") else "todo"
        lines.append(f"  {t.run_id:<48} {state:<5} ~{secs / 60:6.1f} min  ~{nbytes / 2**20:6.1f} MiB")
    basis = "measured from finished runs" if measured else "rough guess; no finished run to learn from"
    lines.append(f"total ~{total_s / 3600:.2f} h ({basis}), ~{total_b / 2**20:.0f} MiB of run folders "
                 "(plus the shared teacher cache)")
    return "\n".join(lines)


def estimate_params(cfg: RunConfig) -> int:
    """Encoder + projection parameters of the trial's final student (weights only, no
    biases or norms): the preset's shape with the config's non-zero overrides."""
    from harness.student import PRESETS  # the real presets (torch is imported with them)

    shape = PRESETS[cfg.student.preset]
    layers = cfg.student.layers or shape["layers"]
    width = cfg.student.width or shape["width"]
    ffn = cfg.student.ffn or shape["ffn"]
    return layers * (4 * width * width + 2 * width * ffn + width * _TEACHER_WIDTH[cfg.profile])
