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


def askd_findings(table: Table, latency_ratio: float | None = None) -> list[str]:
    """Sentences about an ASKD table (:func:`harness.report.tables.build_askd_table`): which
    model has the lowest greedy WER, whether ASKD beats KD by more than one std, and the
    measured inference speedup. Every number is a cell of the table (read from askd.json)
    or askd.json's ``latency_ratio``.
    """
    cols = {c.key: c for c in table.columns}
    rows = {g["objective"]: dict(zip(cols, cells)) for g, cells in zip(table.group_values, table.cells)}
    students = [o for o in rows if o != "teacher"]
    ok = sum(rows[o]["wer"].n for o in students)
    started = sum(int(rows[o]["seeds"].text.split("/")[1]) for o in students)
    head = f"In the ASKD study {table.sweep} (ASR track), {ok} of {started} student runs finished"
    if ok == 0:
        return [head + ", so no student can be compared with the teacher."]
    out = [head + (", the others shown as n/a." if ok < started else ".")]
    wcol = cols["wer"]
    scored = {o: r["wer"] for o, r in rows.items() if r["wer"].n and math.isfinite(r["wer"].mean)}
    best = min(scored, key=lambda o: scored[o].mean)
    teacher = scored.get("teacher")
    if best == "teacher":
        runner = min((o for o in scored if o != "teacher"), key=lambda o: scored[o].mean)
        out.append(f"The teacher has the lowest greedy WER ({_fmt(teacher, wcol)} %); the best student objective "
                   f"is {runner} ({_fmt(scored[runner], wcol)} %, {rows[runner]['wer_rel'].mean:.2f}x the "
                   "teacher's WER on average).")
    else:
        text = f"The lowest mean greedy WER is {best}'s ({_fmt(scored[best], wcol)} %)"
        if teacher is not None:
            text += (f", against the teacher's {_fmt(teacher, wcol)} % ({rows[best]['wer_rel'].mean:.2f}x the "
                     "teacher's WER on average over its runs)")
        out.append(text + ".")
    if "askd" in scored and "kd" in scored:
        a, k = scored["askd"], scored["kd"]
        diff = 100 * (a.mean - k.mean)
        text = (f"ASKD's mean WER ({_fmt(a, wcol)} %) is {abs(diff):.1f} points "
                f"{'below' if diff < 0 else 'above'} KD's ({_fmt(k, wcol)} %)")
        if a.n < 2 or k.n < 2:
            text += "; with fewer than two finished seeds of each, the one-std test is undecidable"
        else:
            spread = 100 * max(a.std, k.std)
            if abs(diff) > spread:
                text += (f", more than one std (the larger of the two, {spread:.1f} points): ASKD "
                         f"{'beats' if diff < 0 else 'is worse than'} KD on this study")
            else:
                text += f", within one std (the larger of the two, {spread:.1f} points): not separated by these seeds"
        out.append(text + ".")
    scol = cols["speedup"]
    sped = [(o, rows[o]["speedup"]) for o in students if rows[o]["speedup"].n]
    if sped:
        parts = ", ".join(f"{o} {_fmt(c, scol)}x" for o, c in sped)
        text = "Measured side by side on the same utterances, the students decode at "
        text += (f"{latency_ratio:.2f}x the teacher's speed on average ({parts})" if latency_ratio is not None
                 and math.isfinite(latency_ratio) else parts + " the teacher's speed")
        out.append(text + ".")
    return out


def findings(tables: list[Table], n_ok: int, n_total: int, askd: list[tuple[Table, float | None]] = ()) -> str:
    """The whole findings paragraph.

    Args:
        tables: the stacking tables (main and ablations).
        n_ok: finished stacking runs; n_total: all stacking runs.
        askd: (ASKD table, askd.json's ``latency_ratio``) per ASKD study.
    """
    sentences = []
    if n_total or not askd:
        bad = n_total - n_ok
        sentences.append(f"{n_ok} of {n_total} runs finished"
                         + (f"; the other {bad} {'is' if bad == 1 else 'are'} listed under failed, incomplete and "
                            "missing, and shown as n/a." if bad else "."))
    for t in tables:
        sentences += main_findings(t) if t.kind == "main" else ablation_findings(t)
    for t, ratio in askd:
        sentences += askd_findings(t, ratio)
    return " ".join(sentences)
