"""Reading the held-out evaluation of a run (``docs/architecture.md``, "Held-out quality").

``summary.json``'s ``heldout`` block::

    {"utterances": int, "frames": int, "criterion": "mse", "teacher_layer": int,
     "output_loss": float,           # lower is better: top-layer projection vs teacher top layer
     "layer_loss": [{"student_layer", "teacher_layer", "loss"}, ...],
     "probe": {"layer_0": acc, ...}, "probe_best": float, "probe_best_layer": "layer_k",
     "eval_seconds": float,
     "curve": [{"step", "time", "cpu_time", "output_loss", "probe_best"}, ...]}

and the comparison arm (``arm``: a variant or ``none_cm``) with ``compute_matched``
(``{"steps", "of_steps", "speedup"}`` or null). Runs written before these keys existed
have none of them: every reader here returns NaN / empty for them, never an error.
"""

from __future__ import annotations

import math
from typing import Any

HELDOUT_COLUMNS = ["key", "sweep", "arm", "seed", "step", "time", "cpu_time", "output_loss", "probe_best"]


def _num(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def arm_of(summary: dict, variant: str) -> str:
    """The run's comparison arm: ``summary.json``'s ``arm``, else its variant."""
    arm = summary.get("arm")
    return str(arm) if isinstance(arm, str) and arm else variant


def row_fields(summary: dict) -> dict:
    """The run-table columns read from the held-out block and the compute-matching."""
    h = summary.get("heldout") if isinstance(summary.get("heldout"), dict) else {}
    cm = summary.get("compute_matched") if isinstance(summary.get("compute_matched"), dict) else {}
    return {
        "train_cpu_seconds": _num(summary.get("train_cpu_seconds")),
        "theoretical_speedup": _num(summary.get("theoretical_speedup")),
        "heldout_output_loss": _num(h.get("output_loss")),
        "heldout_probe_best": _num(h.get("probe_best")),
        "heldout_probe_best_layer": h.get("probe_best_layer"),
        "heldout_utterances": _num(h.get("utterances")),
        "heldout_frames": _num(h.get("frames")),
        "compute_matched_steps": _num(cm.get("steps")),
        "compute_matched_of_steps": _num(cm.get("of_steps")),
    }


def curve_rows(summary: dict, metric_lines: list[dict], ident: dict) -> list[dict]:
    """The held-out curve: ``heldout.curve`` when the summary has it, else the metrics lines
    that carry ``heldout_loss`` (an unfinished run's curve so far).

    Args:
        ident: ``key``, ``sweep``, ``arm``, ``seed`` added to every row.
    """
    h = summary.get("heldout") if isinstance(summary.get("heldout"), dict) else {}
    pts = [p for p in h.get("curve") or [] if isinstance(p, dict)]
    if pts:
        rows = [{"step": _num(p.get("step")), "time": _num(p.get("time")), "cpu_time": _num(p.get("cpu_time")),
                 "output_loss": _num(p.get("output_loss")), "probe_best": _num(p.get("probe_best"))} for p in pts]
    else:
        rows = [{"step": _num(ln.get("step")), "time": _num(ln.get("time")), "cpu_time": _num(ln.get("cpu_time")),
                 "output_loss": _num(ln.get("heldout_loss")), "probe_best": _num(ln.get("heldout_probe"))}
                for ln in metric_lines if "heldout_loss" in ln]
    return [{**ident, **r} for r in rows if math.isfinite(r["output_loss"])]
