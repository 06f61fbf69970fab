"""``harness bench estimate``: the dry run's time estimate of a sweep, then the sweep itself.

The estimate (:func:`harness.sweep.estimate.estimate`: a calibration on this machine with
the sweep's concurrency) is written to the JSON before any trial starts, so it cannot
learn from the run it predicts; with ``run`` the sweep then runs and its measured
wall-clock (the sweep's own ``sweep_log.jsonl`` line) is added beside it, with the ratio.
A sweep folder that already holds finished trials is refused: the check needs the whole
sweep to run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

from harness import runs
from harness.bench.common import report_header
from harness.errors import UserError
from harness.provenance import load_average
from harness.sweep.run import SWEEP_LOG

#: the acceptance band of the estimate (issue 20): within 30 % of the measured wall-clock
TOLERANCE = 0.30


def bench_estimate(path: str | Path, out: str | Path, overrides: Sequence[str] = (), suffix: str = "",
                   run: bool = False, log: Callable[[str], None] = print) -> dict:
    """Estimate a sweep (and with ``run``, run it and measure it); write ``out``.

    Returns:
        The JSON: the header, ``sweep``, ``overrides``, ``estimate`` (``wall_s``,
        ``trial_s``, ``slots``, ``threads``, ``trials``, the calibrations without their
        per-copy numbers, the SUPERB source, ``per_trial`` seconds by part), and with
        ``run`` ``measured`` (the sweep's log line), ``ratio`` (estimate / measured) and
        ``within_tolerance``.
    """
    from harness.sweep import run_sweep
    from harness.sweep.estimate import estimate

    load0 = load_average()
    est = estimate(path, overrides=list(overrides), suffix=suffix, log=log)
    if run and any(r["done"] for r in est["rows"]):
        raise UserError(f"bench estimate: {est['sweep'].out_dir} already holds finished trials; the check needs "
                        "the whole sweep to run: pass --suffix for a fresh folder")
    payload = {
        **report_header("estimate"), "sweep": str(path), "overrides": list(overrides), "suffix": suffix,
        "load_before": load0,
        "estimate": {
            "wall_s": est["wall_s"], "trial_s": est["trial_s"], "slots": est["slots"], "threads": est["threads"],
            "trials": est["todo"],
            "calibrations": [{k: v for k, v in c.items() if k not in ("copies", "_cached")}
                             for c in est["calibrations"].values()],
            "guessed": est["guessed"],
            "superb": [{"tasks": list(t), "seconds": s, "source": src} for t, (s, src) in est["superb"].items()],
            "per_trial": {r["trial"].run_id: r["parts"] for r in est["rows"]},
        },
    }
    runs.write_json(out, payload)
    log(f"[bench estimate] ~{est['wall_s'] / 60:.1f} min estimated for {est['todo']} trials -> {out}")
    if not run:
        return payload
    run_sweep(path, overrides=list(overrides), suffix=suffix, log=log)
    lines = (est["sweep"].out_dir / SWEEP_LOG).read_text().splitlines()
    measured = json.loads(lines[-1])  # this run's line: the sweep appends one per invocation
    ratio = est["wall_s"] / measured["seconds"] if measured.get("seconds") else None
    payload.update(measured=measured, ratio=ratio,
                   within_tolerance=ratio is not None and abs(ratio - 1) <= TOLERANCE)
    runs.write_json(out, payload)
    log(f"[bench estimate] estimated {est['wall_s'] / 60:.1f} min, measured {measured['seconds'] / 60:.1f} min: "
        f"ratio {ratio:.2f} -> {out}")
    return payload


def format_estimate(res: dict) -> str:
    """The docs table of a ``bench estimate --run`` JSON: estimate, measured, ratio, and the
    estimate's parts summed over the trials."""
    est = res["estimate"]
    cal = (est.get("calibrations") or [{}])[0]
    parts = {k: sum(p.get(k, 0.0) for p in est["per_trial"].values()) for k in
             ("setup", "train", "eval", "ckpt", "superb")}
    m = res.get("measured") or {}
    rows = [
        "| | value |",
        "| --- | ---: |",
        f"| trials, at once | {est['trials']}, {est['slots']} ({est['threads']} thread each) |",
        f"| calibration | {cal.get('seconds', 0):.0f} s, load {cal.get('load', {}).get('before')} -> "
        f"{cal.get('load', {}).get('after')} |",
        f"| full-depth step (data path) | {cal.get('step_ms', 0):.1f} ms ({cal.get('data_ms', 0):.1f} ms) |",
        "| step by depth | " + ", ".join(f"{d}: {ms:.1f} ms" for d, ms in
                                        sorted((cal.get("depth_ms") or {}).items(), key=lambda x: int(x[0]))) + " |",
        f"| trial time by part (sum) | setup {parts['setup'] / 60:.1f} min, train {parts['train'] / 60:.1f} min, "
        f"held-out {parts['eval'] / 60:.1f} min, checkpoints {parts['ckpt'] / 60:.1f} min, SUPERB "
        f"{parts['superb'] / 60:.1f} min |",
        f"| **estimated wall-clock** | **{est['wall_s'] / 60:.1f} min** |",
    ]
    if m:
        rows += [f"| **measured wall-clock** (`sweep_log.jsonl`) | **{m['seconds'] / 60:.1f} min** "
                 f"(load {m.get('load', {}).get('start')} -> {m.get('load', {}).get('end')}) |",
                 f"| estimate / measured | {res['ratio']:.2f} ({'within' if res['within_tolerance'] else 'outside'} "
                 f"the {TOLERANCE:.0%} band) |"]
    return "\n".join(rows)
