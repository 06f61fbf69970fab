"""The findings paragraph, computed from the tables (never pre-written).

It answers the report's question in words: which variant trains fastest and by how much,
and which variants keep quality within one standard deviation (over seeds) of ``none``,
on the SUPERB score and per task. Every number in it comes from the tables.
"""

from __future__ import annotations

import math

from harness.report.tables import Cell, Column, Table


def _fmt(cell: Cell, col: Column) -> str:
    m, s = cell.parts(col)
    return f"{m} ± {s}" if s else m


def _within(v: Cell, ref: Cell, direction: str) -> bool | None:
    """Is ``v`` at most one std of ``ref`` worse than ``ref``? None if undecidable."""
    if not (v.n and ref.n and math.isfinite(v.mean) and math.isfinite(ref.mean)):
        return None
    if ref.n < 2 or not math.isfinite(ref.std):
        return None  # one seed of the baseline: no spread to compare against
    worse_by = (ref.mean - v.mean) if direction == "higher" else (v.mean - ref.mean)
    return worse_by <= ref.std


def main_findings(table: Table) -> list[str]:
    """Sentences about a main table (one row per variant)."""
    cols = {c.key: c for c in table.columns}
    rows = {name: dict(zip([c.key for c in table.columns], cells)) for name, cells in zip(table.index, table.cells)}
    out = []
    tcol = cols["train_seconds"]
    timed = {v: r["train_seconds"] for v, r in rows.items() if r["train_seconds"].n}
    if timed:
        fastest = min(timed, key=lambda v: timed[v].mean)
        unit = tcol.label.split("(")[1].split(")")[0] if "(" in tcol.label else ""
        text = (f"The fastest variant is {fastest}, with a mean train wall-clock of "
                f"{_fmt(timed[fastest], tcol)} {unit}")
        if "none" in timed and fastest != "none":
            ratio = timed["none"].mean / timed[fastest].mean
            text += f", {ratio:.2f}x faster than none ({_fmt(timed['none'], tcol)} {unit})"
        out.append(text + ".")
    else:
        out.append(f"No run of sweep {table.sweep} finished, so nothing can be compared.")
        return out
    if "none" not in rows:
        out.append("There is no finished none baseline, so no variant can be compared with full-depth training.")
        return out
    ref = rows["none"]
    quality = [k for k in ("superb_score",) if k in cols] or [k for k in cols if k.startswith("task.")][:1]
    if not quality:
        out.append("No SUPERB score or task metric is recorded yet, so quality cannot be compared.")
    if quality:
        q = quality[0]
        qcol = cols[q]
        kept, lost, unknown = [], [], []
        for v, r in rows.items():
            if v == "none":
                continue
            w = _within(r[q], ref[q], qcol.direction or "higher")
            (unknown if w is None else kept if w else lost).append(v)
        name = "SUPERB score" if q == "superb_score" else qcol.label
        if ref[q].n < 2:
            out.append(f"none has fewer than two finished seeds, so the one-std test on the {name} is undecidable.")
        else:
            text = f"Against none's {name} of {_fmt(ref[q], qcol)}, "
            if kept:
                text += ("the variants within one std are " if len(kept) > 1 else "the variant within one std is ")
                text += ", ".join(f"{v} ({_fmt(rows[v][q], qcol)})" for v in kept)
            else:
                text += "no variant stays within one std"
            if lost:
                text += "; below that: " + ", ".join(f"{v} ({_fmt(rows[v][q], qcol)})" for v in lost)
            if unknown:
                text += "; no score for " + ", ".join(unknown)
            out.append(text + ".")
    task_cols = [c for c in table.columns if c.key.startswith("task.")]
    if task_cols and ref and any(ref[c.key].n >= 2 for c in task_cols):
        parts = []
        for v, r in rows.items():
            if v == "none":
                continue
            verdicts = [_within(r[c.key], ref[c.key], c.direction or "higher") for c in task_cols]
            decided = [x for x in verdicts if x is not None]
            if decided:
                parts.append(f"{v} {sum(decided)}/{len(decided)}")
        if parts:
            out.append("Tasks within one std of none, per variant: " + ", ".join(parts) + ".")
    return out


def ablation_findings(table: Table) -> list[str]:
    """One sentence per ablation table: the best setting on the SUPERB score (or first task)."""
    cols = {c.key: c for c in table.columns}
    q = "superb_score" if "superb_score" in cols else next((k for k in cols if k.startswith("task.")), None)
    if q is None:
        return []
    col = cols[q]
    j = [c.key for c in table.columns].index(q)
    scored = [(name, row[j]) for name, row in zip(table.index, table.cells) if row[j].n]
    if len(scored) < 2:
        return []
    pick = max if (col.direction or "higher") == "higher" else min
    best_name, best = pick(scored, key=lambda x: x[1].mean)
    worst_name, worst = (min if pick is max else max)(scored, key=lambda x: x[1].mean)
    label = "SUPERB score" if q == "superb_score" else col.label
    return [f"In the ablation over {table.index_name} ({table.sweep}), the best {label} is at {best_name} "
            f"({_fmt(best, col)}), the worst at {worst_name} ({_fmt(worst, col)})."]


def findings(tables: list[Table], n_ok: int, n_total: int) -> str:
    """The whole findings paragraph."""
    bad = n_total - n_ok
    sentences = [f"{n_ok} of {n_total} runs finished"
                 + (f"; the other {bad} {'is' if bad == 1 else 'are'} listed under failed, incomplete and "
                    "missing, and shown as n/a." if bad else ".")]
    for t in tables:
        sentences += main_findings(t) if t.kind == "main" else ablation_findings(t)
    return " ".join(sentences)
