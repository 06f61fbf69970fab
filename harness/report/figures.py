"""The report's figures (matplotlib + seaborn), each saved as PNG and SVG.

Every function takes collected :class:`~harness.report.collect.Results` plus a mapping
from run key to the group it belongs to (a stacking variant, or an ablation setting), and
returns a :class:`Figure` or None with the reason it was skipped (no data), so the report
can say what is missing instead of leaving a hole.

Size: over 500 lines on purpose: one function per figure with its skip reason, sharing the
style and the save helper; the figures are independent and short (none over 80 lines).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from harness.report.collect import Results, tasks_in_order  # noqa: E402

# Reproducible SVGs: fixed ids, no creation date.
plt.rcParams["svg.hashsalt"] = "harness-report"
plt.rcParams["svg.fonttype"] = "none"  # text stays text (searchable, smaller)
DPI = 150
_PALETTE = sns.color_palette("colorblind", 10)
VARIANT_COLORS = {v: _PALETTE[i] for i, v in enumerate(("none", "top", "bottom", "middle", "interleaved"))}
VARIANT_COLORS["none_cm"] = (0.2, 0.2, 0.2)  # the compute-matched none: near-black (dashed in curves)


@dataclass
class Figure:
    """A saved figure: ``<id>.png`` and ``<id>.svg`` under the report's figures folder."""

    id: str
    title: str
    caption: str
    png: Path
    svg: Path


def colors_for(groups: list[str]) -> dict[str, tuple]:
    """Stable colours: the five variants keep theirs; other groups (ablation settings, which
    are ordered) take an ordered dark-to-light ramp, never a pale yellow or grey."""
    others = [g for g in groups if g not in VARIANT_COLORS]
    ramp = sns.color_palette("viridis", as_cmap=True)
    out = {}
    for g in groups:
        if g in VARIANT_COLORS:
            out[g] = VARIANT_COLORS[g]
        else:
            i = others.index(g)
            out[g] = ramp(0.05 + 0.75 * (i / max(1, len(others) - 1)))
    return out


def _save(fig: plt.Figure, folder: Path, fid: str, title: str, caption: str) -> Figure:
    folder.mkdir(parents=True, exist_ok=True)
    png, svg = folder / f"{fid}.png", folder / f"{fid}.svg"
    fig.savefig(png, dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    fig.savefig(svg, bbox_inches="tight", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    return Figure(fid, title, caption, png, svg)


def _heat(ax, m: np.ndarray, vmin: float, vmax: float, cmap: str, square: bool = True,
          ylabels: list[str] | None = None, grid: bool = False):
    """A matrix as an image, row 0 at the bottom (layer 0 of a stack), integer ticks.

    ``imshow`` rather than ``seaborn.heatmap``: the same picture at a tenth of the cost,
    which matters when a report draws a dozen panels.
    """
    im = ax.imshow(m, origin="lower" if ylabels is None else "upper", vmin=vmin, vmax=vmax, cmap=cmap,
                   aspect="equal" if square else "auto", interpolation="nearest")
    step_x = 2 if m.shape[1] > 12 else 1
    ax.set_xticks(np.arange(0, m.shape[1], step_x))
    if ylabels is None:
        ax.set_yticks(np.arange(0, m.shape[0], 2 if m.shape[0] > 12 else 1))
    else:
        ax.set_yticks(np.arange(len(ylabels)), ylabels)
    if grid:  # thin white cell borders
        ax.set_xticks(np.arange(-0.5, m.shape[1]), minor=True)
        ax.set_yticks(np.arange(-0.5, m.shape[0]), minor=True)
        ax.grid(which="minor", color="white", lw=0.6)
        ax.tick_params(which="minor", length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    return im


def _time_unit(seconds: float) -> tuple[float, str]:
    if seconds >= 2 * 3600:
        return 3600.0, "h"
    if seconds >= 600:
        return 60.0, "min"
    return 1.0, "s"


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (lower x, higher y), by x.

    Args:
        points: (time, quality) pairs.
    """
    idx = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in idx:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def separate_labels(fig, labels: list, step: float = 4.0, tries: int = 40) -> None:
    """Move point labels (``annotate`` in offset points) apart until no two overlap.

    Labels are placed one by one, highest point first; a label that would overlap one
    already placed is moved down (then up) in ``step``-point steps, keeping its x offset.
    """
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    placed = []
    for ann in sorted(labels, key=lambda a: -a.xy[1]):
        dx, dy = ann.xyann
        for k in range(tries):
            shift = (k + 1) // 2 * step * (-1 if k % 2 else 1) if k else 0.0
            ann.xyann = (dx, dy - shift)
            box = ann.get_window_extent(renderer)
            if not any(box.overlaps(b) for b in placed):
                break
        placed.append(ann.get_window_extent(renderer))


def _t_half(std: float, n: int) -> float:
    """Half-width of the 95% t-interval of a mean (0 when it is undefined)."""
    from scipy import stats as st

    if n < 2 or not math.isfinite(std):
        return 0.0
    return float(st.t.ppf(0.975, n - 1) * std / math.sqrt(n))


def frontier(results: Results, groups: pd.Series, folder: Path, fid: str = "frontier",
             front: bool = True, why_no_front: str = "") -> Figure | str:
    """Train time vs SUPERB score per group: mean with 95% t-interval bars; the Pareto front
    only when ``front`` (both axes differ beyond their noise), else ``why_no_front`` says why."""
    runs = results.runs[results.runs["ok"] & results.runs["key"].isin(groups.index)].copy()
    runs["group"] = runs["key"].map(groups)
    runs = runs.dropna(subset=["train_seconds", "superb_score"])
    if runs.empty:
        return "no finished run has both a train time and a SUPERB score"
    order = list(dict.fromkeys(groups[groups.index.isin(runs["key"])]))
    stats = runs.groupby("group").agg(t=("train_seconds", "mean"), ts=("train_seconds", "std"),
                                      q=("superb_score", "mean"), qs=("superb_score", "std"),
                                      n=("key", "size")).reindex(order)
    stats["th"] = [_t_half(s, int(n)) for s, n in zip(stats["ts"], stats["n"])]
    stats["qh"] = [_t_half(s, int(n)) for s, n in zip(stats["qs"], stats["n"])]
    scale, unit = _time_unit(float(stats["t"].max()))
    colors = colors_for(order)
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    pts = list(zip(stats["t"] / scale, stats["q"]))
    on: set = set()
    if front:
        idx = pareto_front(pts)
        ax.step([pts[i][0] for i in idx], [pts[i][1] for i in idx], where="post", color="0.55", lw=1.2, ls="--",
                zorder=1, label="Pareto front")
        on = {order[i] for i in idx}
        ax.plot([], [], "o", ms=8, mfc="white", mec="black", mew=1.6, label="on the Pareto front")
    for (g, r), (x, y) in zip(stats.iterrows(), pts):
        ax.errorbar(x, y, xerr=r.th / scale, yerr=r.qh, fmt="o", ms=8,
                    color=colors[g], capsize=3, lw=1.4, zorder=3, mec="black" if g in on else colors[g],
                    mew=1.6 if g in on else 1.0)
    labels = [ax.annotate(f"{g} (n={int(r.n)})", (x, y), xytext=(8, 6), textcoords="offset points",
                          fontsize=9, color="0.15") for (g, r), (x, y) in zip(stats.iterrows(), pts)]
    ax.set_xlabel(f"train wall-clock ({unit}), lower is faster")
    ax.set_ylabel("SUPERB score (higher is better)")
    ax.grid(True, alpha=0.3)
    if front:
        ax.legend(fontsize=8, loc="lower right", frameon=True)
    # Leave room for the labels at the extremes.
    ax.margins(x=0.12, y=0.12)
    fig.tight_layout()
    separate_labels(fig, labels)
    if front:
        text = ("Points outlined in black are on the Pareto front (no other setting is both faster and "
                f"better): {', '.join(o for o in order if o in on)}.")
    else:
        text = f"No Pareto front drawn: {why_no_front}."
    return _save(fig, folder, fid, "Speed vs quality",
                 f"Mean over seeds with its 95% t-interval on both axes (none with one seed). {text}")


def loss_curves(results: Results, groups: pd.Series, folder: Path, fid: str = "loss_curves") -> Figure | str:
    """Distillation loss vs wall-clock, one colour per group (every seed drawn), stage
    boundaries of each group's first seed marked by dotted lines."""
    cur = results.curves[results.curves["key"].isin(groups.index)]
    if cur.empty or "loss" not in cur or "time" not in cur:
        return "no metrics.jsonl with loss and time"
    cur = cur.dropna(subset=["loss", "time"]).copy()
    cur["group"] = cur["key"].map(groups)
    order = list(dict.fromkeys(groups[groups.index.isin(cur["key"])]))
    colors = colors_for(order)
    scale, unit = _time_unit(float(cur["time"].max()))
    fig, ax = plt.subplots(figsize=(7.2, 4.4))
    failed = set(results.runs.loc[~results.runs["ok"], "key"])
    boundaries: list[tuple[float, str | None]] = []
    for g in order:
        keys = list(dict.fromkeys(cur.loc[cur["group"] == g, "key"]))
        for i, k in enumerate(keys):
            c = cur[cur["key"] == k].sort_values("time")
            ls = ":" if k in failed else "-"
            ax.plot(c["time"] / scale, c["loss"], color=colors[g], lw=1.3 if i == 0 else 0.8,
                    alpha=0.95 if i == 0 else 0.45, ls=ls, label=g if i == 0 else None)
        first = cur[cur["key"] == keys[0]].sort_values("time")
        if "stage" in first and first["stage"].nunique() > 1:
            st = first["stage"].to_numpy()
            t = first["time"].to_numpy() / scale
            depth = first["depth"].to_numpy() if "depth" in first else None
            for j in np.nonzero(st[1:] != st[:-1])[0]:
                # The growth step: a marker on the curve where the deeper stack takes over.
                ax.plot(t[j + 1], first["loss"].to_numpy()[j + 1], "o", ms=5, mfc="white", mec=colors[g],
                        mew=1.4, zorder=4)
                x = (t[j] + t[j + 1]) / 2
                boundaries.append((x, None if depth is None else f"{depth[j]:.0f}→{depth[j + 1]:.0f}"))
    # Variants on the same schedule grow at (nearly) the same time: one line per cluster.
    span = float(cur["time"].max() / scale) or 1.0
    drawn: list[float] = []
    labelled: list[float] = []
    for x, text in sorted(boundaries):
        if any(abs(x - d) < 0.015 * span for d in drawn):
            continue
        drawn.append(x)
        ax.axvline(x, color="0.45", ls=(0, (2, 3)), lw=0.9, zorder=0)
        if text and any(abs(x - d) < 0.07 * span for d in labelled):
            continue  # a nearby boundary is labelled already: labels would overprint
        labelled.append(x)
        if text:
            ax.text(x, 1.0, f" {text}", transform=ax.get_xaxis_transform(), fontsize=7.5, color="0.3",
                    ha="left", va="bottom")
    ax.set_yscale("log")
    fmt = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(fmt)
    ax.yaxis.set_minor_formatter(fmt)
    ax.tick_params(axis="y", which="minor", labelsize=7)
    ax.set_xlabel(f"wall-clock ({unit})")
    ax.set_ylabel("distillation loss (log scale)")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8, title="variant", title_fontsize=8, loc="upper right")
    fig.tight_layout()
    note = " Dotted curves are failed runs." if failed & set(cur["key"]) else ""
    return _save(fig, folder, fid, "Distillation loss vs wall-clock",
                 "Thick line: first seed, thin lines: other seeds. Dotted vertical lines mark stage boundaries "
                 "(labelled old→new depth); open circles mark where each variant's first seed grew."
                 f"{note}")


# Accepted spellings of the analysis.json matrices (the first one is what the report documents).
FIELD_ALIASES = {
    "cka_teacher": ("cka_teacher", "cka_student_teacher", "cka"),
    "cka_self": ("cka_self", "cka_student", "self_cka", "cka_student_student"),
}


def flat_keys(d: dict, prefix: str = "") -> dict:
    """``{"cka": {"student_teacher": M}}`` -> ``{"cka_student_teacher": M}`` (nesting tolerated)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat_keys(v, f"{prefix}{k}_"))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _mean_matrix(results: Results, keys: list[str], field: str) -> tuple[np.ndarray | None, int]:
    mats = []
    for k in keys:
        a = flat_keys(results.analysis.get(k) or {})
        m = next((a[f] for f in FIELD_ALIASES.get(field, (field,)) if f in a), None)
        if isinstance(m, list) and m and isinstance(m[0], list):
            mats.append(np.asarray(m, dtype=float))
    if not mats:
        return None, 0
    shape = mats[0].shape
    same = [m for m in mats if m.shape == shape]
    return np.mean(same, axis=0), len(same)


ALIKE = 0.15  # CKA differences under 15% of the 0-1 colour scale are hard to see between panels


def cka_heatmaps(results: Results, groups: pd.Series, folder: Path, field: str, fid: str) -> Figure | str:
    """One heatmap per group of an ``analysis.json`` matrix (mean over the seeds that have it).

    When every panel differs from ``none``'s by less than :data:`ALIKE` everywhere (absolute
    panels would look the same), ``none`` is drawn as is and every other group as its
    difference to ``none`` (diverging colours, symmetric scale).

    Args:
        field: ``cka_teacher`` (student hidden state x teacher hidden state) or ``cka_self``.
    """
    order = list(dict.fromkeys(groups))
    panels = []
    for g in order:
        keys = list(groups.index[groups == g])  # all runs: a failed one counts as missing
        m, n = _mean_matrix(results, keys, field)
        panels.append((g, m, n, len(keys)))
    if all(m is None for _, m, _, _ in panels):
        return f"no analysis.json with '{field}'"
    ref = next((m for g, m, _, _ in panels if g == "none" and m is not None), None)
    others = [m for g, m, _, _ in panels if g != "none" and m is not None and ref is not None and m.shape == ref.shape]
    if ref is not None and others and max(float(np.abs(m - ref).max()) for m in others) < ALIKE:
        return _cka_diff(panels, ref, folder, field, fid)
    ncol = min(len(panels), 5)
    nrow = math.ceil(len(panels) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(2.6 * ncol + 1.0, 2.75 * nrow + 0.3), squeeze=False,
                             layout="constrained")
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for i, (ax, (g, m, n, total)) in enumerate(zip(axes.flat, panels)):
        if m is None:
            ax.text(0.5, 0.5, "n/a\n(no analysis.json)", ha="center", va="center", transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(g, fontsize=10)
            continue
        _heat(ax, m, 0, 1, "viridis")
        ax.set_title(f"{g} (n={n} of {total})" if n < total else f"{g} (n={n})", fontsize=10)
        ax.set_xlabel("teacher layer" if field == "cka_teacher" else "student layer", fontsize=9)
        ax.set_ylabel("student layer" if i % ncol == 0 else "", fontsize=9)
        ax.tick_params(labelsize=7, rotation=0)
    fig.colorbar(plt.cm.ScalarMappable(norm=plt.Normalize(0, 1), cmap="viridis"), ax=axes.ravel().tolist(),
                 shrink=0.85, fraction=0.025, pad=0.01, label="linear CKA")
    if field == "cka_teacher":
        title = "CKA: student x teacher layers"
        caption = ("Linear CKA between each student hidden state (rows, 0 = front-end projection) and each "
                   "teacher hidden state (columns), mean over seeds; a bright diagonal band means each "
                   "student layer resembles the teacher layer at the same relative depth.")
    else:
        title = "CKA: student self-similarity"
        caption = ("Linear CKA among each student's own hidden states, mean over seeds; broad bright "
                   "blocks mean neighbouring layers compute nearly the same thing (redundant depth).")
    missing = [f"{g} ({total - n} of {total})" for g, m, n, total in panels if n < total]
    if missing:
        caption += (" Runs without an analysis (failed, or no analysis.json), left out of the mean: "
                    + ", ".join(missing) + ".")
    return _save(fig, folder, fid, title, caption)


def _cka_diff(panels: list, ref: np.ndarray, folder: Path, field: str, fid: str) -> Figure:
    """none's CKA matrix, then every other group's difference to it (see :func:`cka_heatmaps`)."""
    diffs = [(g, None if m is None or m.shape != ref.shape else m - ref, n, total) for g, m, n, total in panels
             if g != "none"]
    lim = max(float(np.abs(d).max()) for _, d, _, _ in diffs if d is not None) or 0.01
    ncol = min(len(diffs) + 1, 5)
    nrow = math.ceil((len(diffs) + 1) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(2.6 * ncol + 1.6, 2.75 * nrow + 0.3), squeeze=False,
                             layout="constrained")
    for ax in axes.flat[len(diffs) + 1:]:
        ax.axis("off")
    xlabel = "teacher layer" if field == "cka_teacher" else "student layer"
    n_none = next((n for g, _, n, _ in panels if g == "none"), 0)
    im0 = _heat(axes.flat[0], ref, 0, 1, "viridis")
    axes.flat[0].set_title(f"none (n={n_none})", fontsize=10)
    fig.colorbar(im0, ax=axes.flat[0], shrink=0.8, fraction=0.05, pad=0.02, label="linear CKA")
    for ax, (g, d, n, total) in zip(list(axes.flat)[1:], diffs):
        if d is None:
            ax.text(0.5, 0.5, "n/a", ha="center", va="center", transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
        else:
            _heat(ax, d, -lim, lim, "RdBu_r")
        ax.set_title(f"{g} − none (n={n})", fontsize=10)
    for i, ax in enumerate(axes.flat[: len(diffs) + 1]):
        ax.set_xlabel(xlabel, fontsize=9)
        ax.set_ylabel("student layer" if i % ncol == 0 else "", fontsize=9)
        ax.tick_params(labelsize=7, rotation=0)
    fig.colorbar(plt.cm.ScalarMappable(norm=plt.Normalize(-lim, lim), cmap="RdBu_r"), ax=axes.ravel().tolist()[1:],
                 shrink=0.85, fraction=0.025, pad=0.01, label="CKA difference to none")
    title = "CKA: student x teacher layers" if field == "cka_teacher" else "CKA: student self-similarity"
    return _save(fig, folder, fid, title + " (differences to none)",
                 f"The groups' mean CKA matrices differ from none's by less than {ALIKE} everywhere, so absolute "
                 f"panels would look alike: none is drawn as is (left), every other group as its difference to "
                 f"none (red = more similar than none, blue = less; symmetric scale ±{lim:.3f}). Means over "
                 "seeds; differences of means, not tested per seed.")


def probe_profile(results: Results, folder: Path, fid: str = "teacher_probes") -> Figure | str:
    """The teacher's layer-wise probe accuracies (and its layer-layer CKA when present)."""
    p = results.probe
    if not p:
        return "no teacher probe file (pass --probe FILE)"
    if isinstance(p.get("upstream"), dict):  # what `harness teacher probe` writes
        return _probe_file_figure(p, folder, fid)
    p = flat_keys(p)
    def name(k: str) -> str:
        return k.removeprefix("probes_").removeprefix("probe_").removesuffix("_accuracy").removesuffix("_acc")

    curves = {name(k): v for k, v in p.items()
              if isinstance(v, list) and v and isinstance(v[0], (int, float)) and not k.endswith("layers")}
    cka = next((v for k, v in p.items() if "cka" in k and isinstance(v, list) and v and isinstance(v[0], list)), None)
    ncol = 2 if cka else 1
    fig, axes = plt.subplots(1, ncol, figsize=(5.2 * ncol, 3.8), squeeze=False, layout="constrained")
    ax = axes[0, 0]
    for i, (name, vals) in enumerate(curves.items()):
        vals = np.asarray(vals, dtype=float)
        layers = np.asarray(p.get("layers", range(len(vals))))[: len(vals)]
        color = _PALETTE[[0, 3, 2, 4, 1][i % 5]]
        best = int(np.nanargmax(vals))
        ax.plot(layers, vals, marker="o", ms=4, lw=1.6, color=color,
                label=f"{name} probe (best: layer {layers[best]})")
        ax.plot(layers[best], vals[best], "*", ms=13, color=color, mec="black", mew=0.6, zorder=4)
    ax.set_xlabel("teacher layer (0 = pre-encoder features)")
    ax.set_ylabel("probe accuracy")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.margins(y=0.12)
    if cka:
        m = np.asarray(cka, dtype=float)
        im = _heat(axes[0, 1], m, 0, 1, "viridis")
        fig.colorbar(im, ax=axes[0, 1], shrink=0.9, label="linear CKA")
        axes[0, 1].set_xlabel("teacher layer")
        axes[0, 1].set_ylabel("teacher layer")
        axes[0, 1].set_title("layer-layer CKA", fontsize=10)
        axes[0, 1].tick_params(rotation=0)
    return _save(fig, folder, fid, "Teacher: layer-wise probes",
                 "Linear probe accuracy per teacher layer: where phonetic and speaker information lives, "
                 "hence which teacher layer each student layer should be matched to.")


def _probe_curves(block: dict) -> tuple[list[str], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """``{"phone": {"probe": {layer: {"mean", "std"}}, "layers"}, "speaker": ...}`` -> curves."""
    layers: list[str] = []
    curves = {}
    for kind in ("phone", "speaker"):
        probe = (block.get(kind) or {}).get("probe") or {}
        names = (block.get(kind) or {}).get("layers") or list(probe)
        if not probe:
            continue
        layers = layers or list(names)
        curves[kind] = (np.array([probe[n]["mean"] if n in probe else np.nan for n in layers], dtype=float),
                        np.array([probe[n].get("std", 0.0) if n in probe else np.nan for n in layers], dtype=float))
    return layers, curves


def _probe_file_figure(p: dict, folder: Path, fid: str) -> Figure | str:
    """The probe file of ``harness teacher probe``: phone and speaker accuracy per layer for the
    teacher (solid) and its random-init twin (dashed), and the teacher's layer-layer CKA."""
    layers, teacher = _probe_curves(p["upstream"])
    _, twin = _probe_curves(p.get("random_twin") or {})
    if not teacher:
        return "the probe file has no phone or speaker probe"
    cka = (p["upstream"].get("phone") or {}).get("cka")
    ncol = 3 if cka else 2
    fig, axes = plt.subplots(1, ncol, figsize=(4.6 * ncol, 3.8), squeeze=False, layout="constrained")
    ticks = ["FE" if n == "frontend" else n.removeprefix("layer_") for n in layers]
    x = np.arange(len(layers))
    for ax, kind in zip(axes[0], ("phone", "speaker")):
        for who, curves, style, color in (("teacher", teacher, "-", _PALETTE[0]), ("random-init twin", twin, "--", "0.5")):
            if kind not in curves:
                continue
            mean, std = curves[kind]
            ax.errorbar(x, mean, yerr=std, fmt="o", ls=style, ms=4, lw=1.5, color=color, capsize=2, label=who)
            if who == "teacher":
                best = int(np.nanargmax(mean))
                ax.plot(x[best], mean[best], "*", ms=13, color=color, mec="black", mew=0.6, zorder=4)
        info = (p["upstream"].get(kind) or {})
        ax.set_title(f"{kind} probe ({info.get('classes', '?')} classes; best layer starred)", fontsize=10)
        ax.set_xticks(x, ticks)
        ax.set_xlabel("teacher layer (FE = front-end output, 0 = encoder input)")
        ax.set_ylabel("test accuracy")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    if cka:
        m = np.asarray(cka, dtype=float)
        im = _heat(axes[0, 2], m, 0, 1, "viridis")
        fig.colorbar(im, ax=axes[0, 2], shrink=0.9, label="linear CKA")
        axes[0, 2].set_xticks(np.arange(len(ticks)), ticks)
        axes[0, 2].set_yticks(np.arange(len(ticks)), ticks)
        axes[0, 2].set_xlabel("teacher layer")
        axes[0, 2].set_ylabel("teacher layer")
        axes[0, 2].set_title("teacher layer-layer CKA", fontsize=10)
    checks = p["upstream"].get("checks") or {}
    extra = ""
    if checks:
        extra = (f" Best phone layer {checks.get('best_phone_layer')}, speaker {checks.get('best_speaker_layer')}; "
                 f"phone/speaker profile correlation {checks.get('phone_speaker_profile_corr', float('nan')):.2f}.")
    return _save(fig, folder, fid, "Teacher: layer-wise probes",
                 "Linear probe accuracy per teacher layer (mean ± std over probe seeds), teacher against a "
                 "random-init twin of the same architecture: where phonetic and speaker information lives, "
                 "hence which teacher layer each student layer should be matched to." + extra)


def layer_weights(results: Results, groups: pd.Series, folder: Path, fid: str = "layer_weights") -> Figure | str:
    """The learned SUPERB weighted-sum weights: one panel per task, one row per group."""
    tasks = [t for t in tasks_in_order(results)
             if any(t in results.layer_weights.get(k, {}) for k in groups.index)]
    extra = sorted({t for k in groups.index for t in results.layer_weights.get(k, {})} - set(tasks))
    tasks += extra
    if not tasks:
        return "no superb.json with layer weights"
    order = list(dict.fromkeys(groups))
    ncol = min(3, len(tasks))
    nrow = math.ceil(len(tasks) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.9 * ncol + 1.4, 0.36 * len(order) * nrow + 1.1 * nrow + 0.3),
                             squeeze=False, layout="constrained")
    for ax in axes.flat[len(tasks):]:
        ax.axis("off")
    vmax = 0.0
    mats = []
    for t in tasks:
        rows, labels = [], []
        for g in order:
            ws = [results.layer_weights[k][t] for k in groups.index[groups == g]
                  if t in results.layer_weights.get(k, {})]
            if not ws:
                continue
            width = max(len(w) for w in ws)
            ws = [w for w in ws if len(w) == width]
            rows.append(np.mean(ws, axis=0))
            labels.append(g)
        width = max(len(r) for r in rows)
        m = np.full((len(rows), width), np.nan)
        for i, r in enumerate(rows):
            m[i, : len(r)] = r
        mats.append((t, m, labels))
        vmax = max(vmax, float(np.nanmax(m)))
    for i, (ax, (t, m, labels)) in enumerate(zip(axes.flat, mats)):
        _heat(ax, m, 0, vmax, "rocket_r", square=False, ylabels=labels, grid=True)
        if i % ncol:
            ax.set_yticklabels([])
            ax.tick_params(axis="y", length=0)
        ax.set_title(t.upper(), fontsize=10)
        ax.set_xlabel("student layer" if i >= len(mats) - ncol else "", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.tick_params(axis="y", rotation=0)
    fig.colorbar(plt.cm.ScalarMappable(norm=plt.Normalize(0, vmax), cmap="rocket_r"), ax=axes.ravel().tolist(),
                 shrink=0.85, fraction=0.03, pad=0.01, label="softmax weight")
    return _save(fig, folder, fid, "Learned SUPERB layer weights",
                 "Softmax weights of the SUPERB weighted sum over the student's hidden states per task "
                 "(mean over seeds): which layers each downstream task draws on.")


# ----------------------------------------------------------------------------- ASKD (ASR track)

ASKD_COLORS = {"ce": _PALETTE[0], "kd": _PALETTE[1], "askd": _PALETTE[2]}


def draw_askd(data: dict) -> plt.Figure | None:
    """WER vs measured inference speedup of one ASKD study (``askd.json``'s content).

    Every finished student run is a small marker; each objective's mean (``by_objective``)
    a large one with ± std bars over seeds; the teacher a star at speedup 1, with dashed
    guides through it (below the horizontal one = better than the teacher, right of the
    vertical one = faster). Legend in report order (teacher, ce, kd, askd) with the number
    of finished runs of each. None when nothing finished.
    """
    rows = [r for r in data.get("rows") or [] if isinstance(r, dict)]
    by_obj = data.get("by_objective") or {}
    teacher = data.get("teacher") or {}
    if not by_obj and "wer" not in teacher:
        return None
    started: dict[str, int] = {}
    for r in rows:
        if r.get("objective") not in (None, "teacher"):
            started[r["objective"]] = started.get(r["objective"], 0) + 1
    order = [o for o in ("ce", "kd", "askd") if o in by_obj] + sorted(o for o in by_obj if o not in ASKD_COLORS)
    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    if "wer" in teacher:
        ax.axhline(100 * teacher["wer"], color="0.45", lw=0.9, ls="--", zorder=1)
        ax.axvline(1.0, color="0.45", lw=0.9, ls=":", zorder=1)
        ax.scatter(1.0, 100 * teacher["wer"], marker="*", s=220, color="black", zorder=5,
                   label=f"teacher ({teacher.get('params', 0) / 1e6:.2f} M params)"
                   if teacher.get("params") else "teacher")
    others = iter(sns.color_palette("dark", 10))
    for obj in order:
        color = ASKD_COLORS.get(obj) or next(others)
        pts = [(r["speedup"], 100 * r["wer"]) for r in rows
               if r.get("objective") == obj and r.get("status") == "ok"
               and r.get("speedup") is not None and r.get("wer") is not None]
        if pts:
            ax.scatter(*zip(*pts), s=22, alpha=0.55, color=color, edgecolor="none", zorder=3)
        m = by_obj[obj]
        n_started = max(started.get(obj, 0), int(m.get("runs") or 0))
        ax.errorbar(m["speedup_mean"], 100 * m["wer_mean"], xerr=m.get("speedup_std") or 0,
                    yerr=100 * (m.get("wer_std") or 0), fmt="o", ms=9, capsize=3, lw=1.4, color=color,
                    mec="black", mew=0.8, zorder=4,
                    label=f"{obj}: {m.get('runs')} of {n_started} runs" + (f", {m['params'] / 1e6:.2f} M params"
                                                                            if m.get("params") else ""))
    ax.set_xlabel("inference speedup over the teacher (×, measured side by side; right is faster)")
    ax.set_ylabel("WER, greedy (%; lower is better)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, frameon=True, loc="best")
    ax.margins(x=0.1, y=0.12)
    ax.set_xlim(left=0)  # speedups read from 0; the right limit keeps its margin
    fig.tight_layout()
    return fig


def askd_wer_speed(data: dict, folder: Path, fid: str = "askd_wer_speed") -> Figure | str:
    """The WER-vs-speed figure of one ASKD study, saved as ``<fid>.{png,svg}`` under ``folder``."""
    fig = draw_askd(data)
    if fig is None:
        return "no finished ASR run and no teacher WER in askd.json"
    return _save(fig, folder, fid, f"ASKD: WER vs inference speed ({data.get('study', '')})",
                 "Greedy WER against the inference speedup over the teacher (teacher latency / student "
                 "latency, measured in one process on the same utterances). Small markers: single runs; "
                 "large: each objective's mean ± std over seeds; star: the teacher. Below the dashed line = "
                 "lower WER than the teacher; right of the dotted line = faster than the teacher.")
