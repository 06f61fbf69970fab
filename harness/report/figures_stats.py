"""Figures of the held-out evaluation and the statistics: learning curves, time-to-quality,
theory vs measured speedups, paired differences (forest plot), quality-only ablations.

Same conventions as :mod:`harness.report.figures`: each function returns a saved
:class:`~harness.report.figures.Figure`, or the reason it drew nothing.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from harness.report.collect import Results
from harness.report.evidence import metric_label
from harness.report.figures import Figure, _save, _time_unit, colors_for
from harness.report.speed import LABELS as BENCH_LABELS


def _order(groups: pd.Series, keys) -> list[str]:
    return list(dict.fromkeys(groups[groups.index.isin(keys)]))


def heldout_curves(results: Results, groups: pd.Series, folder: Path, fid: str = "heldout_curves") -> Figure | str:
    """Held-out output loss vs step and vs training wall-clock: per arm the mean over seeds
    at each evaluation step, with the min-max band over seeds."""
    h = results.heldout[results.heldout["key"].isin(groups.index)].copy()
    ok = set(results.runs.loc[results.runs["ok"], "key"])
    h = h[h["key"].isin(ok)]
    if h.empty:
        return "no held-out curve (runs written before the held-out evaluation, or none finished)"
    h["group"] = h["key"].map(groups)
    order = _order(groups, h["key"])
    colors = colors_for(order)
    scale, unit = _time_unit(float(h["time"].max()))
    fig, axes = plt.subplots(1, 2, figsize=(11.0, 4.2), sharey=True, layout="constrained")
    for g in order:
        agg = (h[h["group"] == g].groupby("step")
               .agg(y=("output_loss", "mean"), lo=("output_loss", "min"), hi=("output_loss", "max"),
                    t=("time", "mean"), n=("key", "nunique")).reset_index())
        n = int(h.loc[h["group"] == g, "key"].nunique())
        ls = "--" if g == "none_cm" else "-"
        for ax, x in ((axes[0], agg["step"]), (axes[1], agg["t"] / scale)):
            ax.plot(x, agg["y"], color=colors[g], lw=1.6, ls=ls, label=f"{g} (n={n})")
            ax.fill_between(x, agg["lo"], agg["hi"], color=colors[g], alpha=0.15, lw=0)
    axes[0].set_xlabel("training step")
    axes[1].set_xlabel(f"training wall-clock ({unit}; evaluation excluded)")
    axes[0].set_ylabel("held-out output loss (MSE, lower is better)")
    for ax in axes:
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8, title="arm", title_fontsize=8)
    return _save(fig, folder, fid, "Held-out output loss during training",
                 "Mean over seeds at each evaluation step; band = min to max over seeds. Left against steps, "
                 "right against training wall-clock (mean over seeds at that step; trials that ran side by side "
                 "share cores, so the time axis is noisy). Dashed: none_cm, none trained for the stacking "
                 "schedule's compute.")


def _means(records: list[dict], metric: str, sweep: str) -> list[dict]:
    return [r for r in records if r["design"] == "mean" and r["metric"] == metric and r["sweep"] == sweep]


def time_to_quality(records: list[dict], sweep: str, folder: Path, fid: str = "time_to_quality") -> Figure | str:
    """Per arm: mean time (wall-clock and CPU) to reach none_cm's final held-out loss, 95% CI."""
    panels = [(m, _means(records, m, sweep)) for m in ("ttq.time", "ttq.cpu_time")]
    if not any(p for _, p in panels):
        return "no time-to-quality (needs held-out curves and a none_cm arm)"
    arms = list(dict.fromkeys(r["arms"][0] for _, p in panels for r in p))
    colors = colors_for(arms)
    fig, axes = plt.subplots(1, 2, figsize=(10.0, 0.45 * len(arms) + 1.6), sharey=True, layout="constrained")
    for ax, (metric, recs) in zip(axes, panels):
        for i, r in enumerate(recs):
            y = len(arms) - 1 - arms.index(r["arms"][0])
            total = r["n"] + len(r["excluded"])
            if r["estimate"] is None:
                ax.text(0.02, y, f"{r['arms'][0]}: never reached ({total} runs)", va="center",
                        transform=ax.get_yaxis_transform(), fontsize=8, color="0.3")
                continue
            err = r["half_width"] if r["half_width"] is not None else 0.0
            ax.errorbar(r["estimate"], y, xerr=err, fmt="o", color=colors[r["arms"][0]], capsize=3, ms=6)
            ax.annotate(f"{r['n']}/{total} reached", (r["estimate"] + err, y), xytext=(5, 0),
                        textcoords="offset points", va="center", fontsize=8, color="0.25")
        ax.set_xlabel(("wall-clock" if metric == "ttq.time" else "CPU") + " seconds of training")
        ax.grid(True, axis="x", alpha=0.3)
        ax.set_xlim(left=0)
        ax.margins(x=0.25)
    axes[0].set_yticks(range(len(arms)), list(reversed(arms)))
    return _save(fig, folder, fid, f"Time to reach none_cm's held-out loss ({sweep})",
                 "Per arm, the training time at which its held-out output loss first reaches the final held-out "
                 "loss of the same seed's none_cm (linear interpolation between evaluations): mean with its 95% "
                 "t-interval over the seeds that reached it; k/n = seeds that reached it (the others never did "
                 "and have no value).")


def speedups(results: Results, bench: dict | None, folder: Path, fid: str = "speedups") -> Figure | str:
    """Theory vs measured speedup over none per variant: from the bench JSON when given,
    else the schedule's theory beside the sweep's CPU-time ratio (labelled as noisy)."""
    series: dict[str, dict[str, tuple[float, float, float]]] = {}
    if bench:
        for v, e in bench["variants"].items():
            if v == "none":
                continue
            for k in ("theory_flop", "theory_fitted", "speedup_wall", "speedup_cpu"):
                x = e[k]
                if math.isfinite(x["value"]):
                    lo = x["low"] if math.isfinite(x["low"]) else x["value"] - (x["spread"] if math.isfinite(x["spread"]) else 0)
                    hi = x["high"] if math.isfinite(x["high"]) else x["value"] + (x["spread"] if math.isfinite(x["spread"]) else 0)
                    series.setdefault(BENCH_LABELS[k], {})[v] = (x["value"], lo, hi)
        source = f"bench file {Path(bench['path']).name}: measured side by side in one process"
    else:
        runs = results.runs[results.runs["ok"]]
        base = runs.loc[runs["arm"] == "none", "train_cpu_seconds"].dropna()
        for v, grp in runs.groupby("arm", sort=False):
            if v in ("none", "none_cm"):
                continue
            th = grp["theoretical_speedup"].dropna()
            if len(th):
                series.setdefault("theory (FLOPs, summary.json)", {})[v] = (th.mean(), th.min(), th.max())
            cpu = grp["train_cpu_seconds"].dropna()
            if len(base) and len(cpu):
                r = base.mean() / cpu
                series.setdefault("sweep CPU-time ratio (trials two at a time)", {})[v] = (r.mean(), r.min(), r.max())
        source = ("no bench file: the sweep's CPU times, measured with two trials at a time on shared cores "
                  "(min-max over runs); pass --bench for clean ratios")
    if not series:
        return "no speedup to show (no bench file, no theoretical speedup in summary.json)"
    variants = list(dict.fromkeys(v for s in series.values() for v in s))
    fig, ax = plt.subplots(figsize=(1.4 * len(variants) + 3.0, 3.8), layout="constrained")
    width = 0.8 / len(series)
    for i, (name, vals) in enumerate(series.items()):
        xs = [variants.index(v) + (i - (len(series) - 1) / 2) * width for v in vals]
        ys = [vals[v][0] for v in vals]
        err = np.array([[vals[v][0] - vals[v][1] for v in vals], [vals[v][2] - vals[v][0] for v in vals]])
        ax.bar(xs, ys, width=width * 0.95, label=name, alpha=0.85,
               hatch="//" if name.startswith("theory") else None, edgecolor="white")
        ax.errorbar(xs, ys, yerr=np.clip(err, 0, None), fmt="none", color="black", capsize=2, lw=1)
    ax.axhline(1.0, color="0.3", lw=0.9, ls=":")
    ax.set_xticks(range(len(variants)), variants)
    ax.set_ylabel("speedup over none (x)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, folder, fid, "Theory vs measured speedup",
                 f"Per stacking variant, the speedup over none predicted (hatched) and measured ({source}). "
                 "Error bars: the spread the source gives. Dotted line: no speedup.")


def forest(records: list[dict], sweep: str, folder: Path, fid: str = "differences", second: str = "none",
           tasks: pd.DataFrame | None = None) -> Figure | str:
    """Paired differences of each arm to ``second`` with 95% CIs, relative to ``second``'s
    mean (so that metrics of different scales share the axis). Filled = resolved."""
    recs = [r for r in records if r["sweep"] == sweep and r["design"] == "paired" and r["arms"][1] == second
            and r["estimate"] is not None and r["mean_second"] and not r["metric"].startswith("ttq.")]
    if not recs:
        return f"no paired comparison with {second}"
    metrics = list(dict.fromkeys(r["metric"] for r in recs))
    arms = list(dict.fromkeys(r["arms"][0] for r in recs))
    colors = colors_for(arms)
    ncol = min(4, len(metrics))
    nrow = math.ceil(len(metrics) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.3 * ncol + 1.2, (0.24 * len(arms) + 0.9) * nrow),
                             squeeze=False, sharey=True, layout="constrained")
    for ax in axes.flat[len(metrics):]:
        ax.axis("off")
    for ax, m in zip(axes.flat, metrics):
        for a in arms:
            r = next((x for x in recs if x["metric"] == m and x["arms"][0] == a), None)
            if r is None:
                continue
            y = len(arms) - 1 - arms.index(a)
            den = abs(r["mean_second"])
            if r["ci_low"] is not None:
                ax.plot([100 * r["ci_low"] / den, 100 * r["ci_high"] / den], [y, y], color=colors[a], lw=1.6)
            ax.plot(100 * r["estimate"] / den, y, "o", ms=5.5, color=colors[a],
                    mfc=colors[a] if r["resolved"] else "white", mew=1.4)
        arrow = {"higher": "↑ better", "lower": "↓ better"}.get(recs[[x["metric"] for x in recs].index(m)]["direction"], "")
        panel_n = max(x["n"] for x in recs if x["metric"] == m)
        most_n = max(x["n"] for x in recs)
        # the row labels give each arm's most pairs; a panel with fewer (SUPERB on fewer seeds) says so
        ax.set_title(f"{metric_label(m, tasks)} ({arrow}{f', n={panel_n}' if panel_n != most_n else ''})", fontsize=8.5)
        ax.axvline(0, color="0.3", lw=0.9)
        ax.grid(True, axis="x", alpha=0.3)
        ax.tick_params(labelsize=7.5)
        ax.set_ylim(-0.6, len(arms) - 0.4)
    for row in axes:
        row[0].set_yticks(range(len(arms)), [f"{a} (n={max(x['n'] for x in recs if x['arms'][0] == a)})"
                                             for a in reversed(arms)], fontsize=8)
    fig.supxlabel(f"difference to {second}, % of {second}'s mean (first minus second)", fontsize=9)
    return _save(fig, folder, fid, f"Paired differences to {second} ({sweep})",
                 f"Each arm minus {second}, paired by seed: mean difference (dot) with its 95% t-interval (line), "
                 f"as a percentage of {second}'s mean; one panel per metric, each on its own scale. Filled dot = "
                 "resolved (the interval excludes 0); open = not resolved. No line: one pair, no interval. n = "
                 "pairs (the most over the panels; a panel with fewer gives its n in its title).")


def quality_only(records: list[dict], table, folder: Path, fid: str, why: str) -> Figure | str:
    """An ablation's quality per setting with 95% CIs, no time axis and no front."""
    metric = next((m for m in ("heldout.output_loss", "superb_score")
                   if any(r["metric"] == m and r["sweep"] == table.sweep for r in records)), None)
    if metric is None:
        return "no quality metric recorded"
    recs = {r["arms"][0]: r for r in _means(records, metric, table.sweep)}
    order = [g for g in table.index if g in recs]
    if not order:
        return "no finished run"
    colors = colors_for(order)
    fig, ax = plt.subplots(figsize=(6.0, 0.42 * len(order) + 1.4), layout="constrained")
    for i, g in enumerate(order):
        r = recs[g]
        if r["estimate"] is None:
            continue
        y = len(order) - 1 - i
        ax.errorbar(r["estimate"], y, xerr=r["half_width"] or 0, fmt="o", color=colors[g], capsize=3, ms=6)
        ax.annotate(f"n={r['n']}", (r["estimate"], y), xytext=(0, 7), textcoords="offset points", ha="center",
                    fontsize=7.5, color="0.3")
    ax.set_yticks(range(len(order)), list(reversed(order)))
    better = "lower" if recs[order[0]]["direction"] == "lower" else "higher"
    ax.set_xlabel(f"{metric_label(metric)} ({better} is better)")
    ax.grid(True, axis="x", alpha=0.3)
    ax.margins(y=0.2)
    if max(recs[g]["n"] for g in order) <= 1:
        ax.set_title("single-seed indication: no interval, not ranked", fontsize=9, color="0.3")
    return _save(fig, folder, fid, f"Quality by setting: {table.title}",
                 f"Mean per setting with its 95% t-interval over seeds (none with one seed). Quality only, no "
                 f"speed axis and no front: {why}. Settings in the table's order, not ranked.")
