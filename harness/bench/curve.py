"""``harness bench curve``: the held-out learning curve of one long reference run.

What the default study's training budget is chosen from (docs/benchmarks.md, "Sizing the
default study"): a ``none`` run (by default) trained for many more steps than the
profile's default, evaluated on the fixed held-out set every ``eval_every`` steps. The
JSON holds the machine, the settings, the curve (step, training wall-clock and CPU
seconds, held-out output loss, best-layer phone probe) and the profile's default step
count, which the printed table and the figure mark. A longer run decays its learning
rate over more steps, so the curve at step ``k`` is not what a ``k``-step run ends at:
it shows how far from flat the loss still is at the default budget.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional

from harness.bench.common import report_header, scratch
from harness.config import to_dict
from harness.errors import UserError
from harness.runs import write_json


def bench_curve(
    profile: str,
    out: str | Path,
    steps: int,
    eval_every: int,
    variant: str = "none",
    overrides: list[str] | tuple[str, ...] = (),
    work_dir: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Train one ``variant`` run for ``steps`` and write its held-out curve to ``out``.

    Raises:
        UserError: ``steps`` or ``eval_every`` out of range, or a profile without a held-out set.
    """
    from harness.bench.stacking import _run, _with, base_config

    if steps < 1 or eval_every < 1:
        raise UserError(f"bench curve: --steps and --eval-every must be >= 1, got {steps} and {eval_every}")
    cfg = base_config(profile, overrides)
    if cfg.data.heldout < 1:
        raise UserError(f"bench curve: sweeps/base/{profile}.yaml has no held-out set (data.heldout = 0)")
    default_steps = cfg.train.steps
    log_every = cfg.train.log_every if eval_every % cfg.train.log_every == 0 else eval_every
    cfg = _with(cfg, stacking={"variant": variant},
                train={"steps": steps, "eval_every": eval_every, "log_every": log_every, "ckpt_every": 0})
    load_start = os.getloadavg()
    with scratch(work_dir, "bench-curve-") as tmp:
        summary = _run(cfg, tmp / f"curve-{variant}")
    report = {
        **report_header("curve"),
        "settings": {"profile": profile, "variant": variant, "steps": steps, "eval_every": eval_every,
                     "overrides": list(overrides), "default_steps": default_steps,
                     "threads": cfg.train.threads or None, "heldout_utterances": cfg.data.heldout,
                     "config": to_dict(cfg)},
        "load_average": {"start": list(load_start), "end": list(os.getloadavg())},
        "train_seconds": summary["train_seconds"], "train_cpu_seconds": summary["train_cpu_seconds"],
        "eval_seconds": summary["heldout"]["eval_seconds"],
        "curve": summary["heldout"]["curve"],
    }
    write_json(out, report)
    log(format_curve(report))
    figure = plot_curve(report, Path(out).with_suffix(".png"))
    if figure:
        log(f"figure: {figure}")
    return report


def format_curve(report: dict) -> str:
    """The curve as a markdown table, the profile's default step count marked."""
    s = report["settings"]
    lines = [f"held-out curve of `{s['variant']}` ({s['profile']} profile, {s['steps']} steps; "
             f"default budget {s['default_steps']} steps marked)", "",
             "| step | held-out output loss | change per 100 steps | phone probe (best layer) | train wall s | train CPU s |",
             "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    prev = None
    for p in report["curve"]:
        mark = " **(default)**" if p["step"] == s["default_steps"] else ""
        slope = "" if prev is None else f"{100 * (p['output_loss'] - prev['output_loss']) / (p['step'] - prev['step']):+.4f}"
        probe = "" if p.get("probe_best") is None else f"{p['probe_best']:.4f}"
        lines.append(f"| {p['step']}{mark} | {p['output_loss']:.4f} | {slope} | {probe} | {p['time']:.1f} | {p['cpu_time']:.1f} |")
        prev = p
    return "\n".join(lines)


def plot_curve(report: dict, path: Path) -> Optional[Path]:
    """Held-out output loss (and probe) against steps, the default budget marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s, curve = report["settings"], report["curve"]
    if not curve:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    steps = [p["step"] for p in curve]
    ax.plot(steps, [p["output_loss"] for p in curve], "o-", color="C0", label="held-out output loss (MSE)")
    ax.axvline(s["default_steps"], color="0.4", ls="--", lw=1)
    ax.text(s["default_steps"], ax.get_ylim()[1], f" default: {s['default_steps']} steps", va="top", fontsize=8)
    ax.set_xlabel("training step")
    ax.set_ylabel("held-out output loss (lower is better)")
    ax.grid(True, alpha=0.3)
    handles = ax.get_lines()[:1]
    if any(p.get("probe_best") is not None for p in curve):
        ax2 = ax.twinx()
        handles += ax2.plot(steps, [p.get("probe_best") for p in curve], "s:", color="C1",
                            label="phone probe, best layer (right axis)")
        ax2.set_ylabel("phone probe accuracy (higher is better)", color="C1")
        ax2.tick_params(axis="y", colors="C1")
    ax.set_title(f"`{s['variant']}`, {s['profile']} profile: {s['steps']}-step reference run", fontsize=9)
    ax.legend(handles=handles, loc="center right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def format_lr_pilot(report: dict) -> str:
    """The learning-rate pilot (``docs/benchmarks/lr-pilot-embedded.json``) as a markdown
    table: final held-out loss and probe per variant and learning rate."""
    lines = ["| variant | lr | steps | held-out output loss | phone probe (best layer) | status |",
             "| --- | ---: | ---: | ---: | ---: | --- |"]
    for r in sorted(report["runs"], key=lambda r: (r["variant"] != "none", r["variant"], r["lr"])):
        loss = "n/a" if r["heldout_output_loss"] is None else f"{r['heldout_output_loss']:.4f}"
        probe = "n/a" if r["heldout_probe_best"] is None else f"{r['heldout_probe_best']:.4f}"
        lines.append(f"| {r['variant']} | {r['lr']:g} | {r['steps']} | {loss} | {probe} | {r['status']} |")
    return "\n".join(lines)


SIZING_PAIRS = (("interleaved", "none"), ("interleaved", "none_cm"), ("top", "interleaved"), ("middle", "interleaved"))


def format_sizing(report: dict) -> str:
    """The design pilots (``docs/benchmarks/sizing-pilots-embedded.json``) as a markdown
    table: per design and held-out set, the paired 95% half-widths of the main comparisons
    (loss: relative to ``none``'s mean loss; probe: in accuracy points; ``-`` = arm not run)."""
    lines = ["| design (training) | held-out set | none's loss | loss half-width / none's loss: int - none, "
             "int - none_cm, top - int, middle - int | probe half-width, points: the same four |",
             "| --- | --- | ---: | --- | --- |"]
    for d in report["designs"]:
        by = {(c["metric"], tuple(c["arms"])): c for c in d["comparisons"]}
        loss = [f"{100 * by['output_loss', k]['half_width_rel_none_loss']:.2f} %" if ("output_loss", k) in by else "-"
                for k in SIZING_PAIRS]
        probe = [f"{100 * by['probe_best', k]['half_width']:.2f}" if ("probe_best", k) in by else "-"
                 for k in SIZING_PAIRS]
        lines.append(f"| {d['design']} | {d['heldout']} | {d['none_output_loss']:.4f} | {', '.join(loss)} | "
                     f"{', '.join(probe)} |")
    return "\n".join(lines)
