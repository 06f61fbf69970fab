"""The findings, generated from the stats records (``stats.json``) only, never pre-written.

Rules (``docs/architecture.md``, "Statistics"):

- a difference is stated ("interleaved's held-out output loss is 0.012 lower than none's,
  95% CI [-0.020, -0.004], 3 paired seeds") only when its record is ``resolved``;
  otherwise it reads "not resolved: estimate x, 95% CI [lo, hi]", with no comparative
  word;
- nothing unresolved is ranked: no "best", "fastest", "wins", no orderings;
- an ablation with one seed per setting is a "single-seed indication": its values are
  listed in the table's order (by setting), never ranked or compared;
- speed comes from the bench JSON when given (measured against theory); otherwise from
  the sweep's CPU times, labelled as measured with trials running two at a time.

The ASKD (ASR track) sentences (:func:`askd_findings`) read the ASKD table, as before.
"""

from __future__ import annotations

import math

from harness.report.evidence import metric_label
from harness.report.speed import bench_sentences
from harness.report.tables import Cell, Column, Table

# The metrics a main table's findings state against none and none_cm, in this order.
HEADLINE = ("heldout.output_loss", "heldout.probe_best", "superb_score")
COMPARED = {"none": HEADLINE, "none_cm": ("heldout.output_loss", "heldout.probe_best", "superb_score")}


def _fmt(cell: Cell, col: Column) -> str:
    m, s = cell.parts(col)
    return f"{m} ± {s}" if s else m


def _units(table: Table | None) -> dict[str, tuple[float, str, int]]:
    """metric -> (scale, unit, decimals) as the table shows it (percent metrics in points)."""
    out: dict[str, tuple[float, str, int]] = {}
    for c in (table.columns if table is not None else []):
        if c.scale == 100.0:
            out[c.key] = (100.0, " points", 2)
        elif "(s)" in c.label or "(min)" in c.label or "(h)" in c.label:
            unit = c.label.split("(")[1].split(")")[0]
            out[c.key] = (c.scale, f" {unit}", 1 if unit == "s" else 2)
        else:
            out[c.key] = (c.scale, "", c.decimals)
    for m in ("train_seconds", "train_cpu_seconds", "ttq.time", "ttq.cpu_time"):
        out.setdefault(m, (1.0, " s", 1))
    return out


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _num(x: float, scale: float, dec: int) -> str:
    return f"{x * scale:.{dec}f}"


def state(rec: dict, units: dict, labels=None) -> str:
    """One paired record as a clause: a stated difference when resolved, else "not resolved"."""
    a, b = rec["arms"]
    label = (labels or {}).get(rec["metric"]) or metric_label(rec["metric"])
    scale, unit, dec = units.get(rec["metric"], (1.0, "", 3))
    n = rec["n"]
    if not n or rec["estimate"] is None:
        return f"{a} vs {b}, {label}: no seed with both (nothing to compare)"
    if rec["ci_low"] is None:
        return (f"{a} vs {b}, {label}: not resolved: estimate {_num(rec['estimate'], scale, dec)}{unit} from "
                f"{n} pair ({rec['note'] or 'no interval'})")
    ci = f"95% CI [{_num(rec['ci_low'], scale, dec)}, {_num(rec['ci_high'], scale, dec)}]"
    pairs = f"{n} paired seed{'s' if n != 1 else ''}"
    if rec["resolved"]:
        way = "lower" if rec["estimate"] < 0 else "higher"
        return (f"{a}'s {label} is {_num(abs(rec['estimate']), scale, dec)}{unit} {way} than {b}'s "
                f"({ci} of the difference, {pairs})")
    return (f"{a} vs {b}, {label}: not resolved: estimate {_num(rec['estimate'], scale, dec)}{unit}, {ci}, "
            f"{pairs}")


def _paired(records: list[dict], sweep: str, metric: str, second: str) -> list[dict]:
    return [r for r in records if r["sweep"] == sweep and r["design"] == "paired" and r["metric"] == metric
            and r["arms"][1] == second]


def _main_sentences(table: Table, records: list[dict], bench: dict | None, speed: bool = True) -> list[str]:
    """Sentences about a main table from its sweep's records."""
    units = _units(table)
    labels = {c.key: c.label.replace(" ↑", "").replace(" ↓", "").replace(" (%)", "")
              for c in table.columns if c.key.startswith("task.")}
    sweep = table.sweep
    mine = [r for r in records if r["sweep"] == sweep]
    if not mine:
        return [f"Sweep {sweep}: no finished run, so nothing can be compared."]
    out = []
    for ref, metrics in COMPARED.items():
        for m in metrics:
            recs = _paired(mine, sweep, m, ref)
            if recs:
                out.append(f"{_cap(metric_label(m))} against {ref} ({sweep}): "
                           + "; ".join(state(r, units, labels) for r in recs) + ".")
    ttq = _paired(mine, sweep, "ttq.time", "none_cm")
    if ttq:
        out.append(f"Time to reach none_cm's final held-out loss ({sweep}): "
                   + "; ".join(state(r, units) for r in ttq) + "." + _unreached(mine, sweep))
    task_recs = [r for r in mine if r["design"] == "paired" and r["metric"].startswith("task.")
                 and r["arms"][1] == "none"]
    if task_recs:
        hit = [r for r in task_recs if r["resolved"]]
        text = (f"SUPERB tasks against none ({sweep}): {len(hit)} of {len(task_recs)} arm x task differences "
                "resolved")
        text += (": " + "; ".join(state(r, units, labels) for r in hit)) if hit else ""
        text += "; the others are not resolved (estimates and CIs in stats.json)"
        chance = 0.05 * len(task_recs)
        if chance >= 0.5:
            text += (f". With {len(task_recs)} comparisons at 95%, about {chance:.0f} would be resolved by chance "
                     "alone (no correction for multiple comparisons)")
        out.append(text + ".")
    inter = [r for r in mine if r["design"] == "paired" and r["arms"][1] == "interleaved"
             and not r["metric"].startswith(("train", "ttq"))]
    if inter:
        hit = [r for r in inter if r["resolved"]]
        out.append(f"Against interleaved ({sweep}): {len(hit)} of {len(inter)} quality differences resolved"
                   + (": " + "; ".join(state(r, units, labels) for r in hit) if hit else "") + ".")
    if not speed:
        return out
    if bench:
        out += bench_sentences(bench)
    else:
        cpu = _paired(mine, sweep, "train_cpu_seconds", "none")
        if cpu:
            out.append(f"Speed, from the sweep's training CPU times (trials ran two at a time on shared cores, "
                       f"one thread each; pass --bench for clean ratios) ({sweep}): "
                       + "; ".join(state(r, units) for r in cpu) + ".")
    return out


def _unreached(records: list[dict], sweep: str) -> str:
    miss = {}
    for r in records:
        if r["sweep"] == sweep and r["design"] == "mean" and r["metric"] == "ttq.time":
            k = sum(1 for x in r["excluded"] if x["why"].startswith("never reached"))
            if k:
                miss[r["arms"][0]] = k
    if not miss:
        return ""
    return (" Runs that never reached it (no value, counted): "
            + ", ".join(f"{a} {k}" for a, k in miss.items()) + ".")


def _ablation_sentences(table: Table, records: list[dict]) -> list[str]:
    """An ablation: single-seed indication (values listed by setting), or its resolved comparisons."""
    units = _units(table)
    mine = [r for r in records if r["sweep"] == table.sweep]
    q = next((m for m in ("heldout.output_loss", "superb_score") if any(r["metric"] == m for r in mine)), None)
    if q is None:
        q = next((r["metric"] for r in mine if r["metric"].startswith("task.")), None)
    if q is None or len(table.index) < 2:
        return []
    means = [r for r in mine if r["design"] == "mean" and r["metric"] == q]
    scale, unit, dec = units.get(q, (1.0, "", 3))
    if max((r["n"] for r in means), default=0) <= 1:
        vals = ", ".join(f"{r['arms'][0]}: {_num(r['estimate'], scale, dec) if r['estimate'] is not None else 'n/a'}"
                         for r in means)
        return [f"Ablation over {table.index_name} ({table.sweep}): single-seed indication, not ranked; "
                f"{metric_label(q)} by setting: {vals}{unit}."]
    recs = [r for r in mine if r["design"] == "paired" and r["metric"] == q]
    if not recs:
        return []
    return [f"Ablation over {table.index_name} ({table.sweep}), {metric_label(q)} against {recs[0]['arms'][1]}: "
            + "; ".join(state(r, units) for r in recs) + "."]


def stats_findings(tables: list[Table], records: list[dict], bench: dict | None = None) -> list[str]:
    """The stacking findings: one item per group of comparisons (see the module docstring)."""
    out = []
    mains = 0
    for t in tables:
        if t.kind == "main":
            # the bench's speed sentences once (not again for a second main-kind table)
            out += _main_sentences(t, records, bench, speed=not (bench and mains))
            mains += 1
        elif t.kind == "ablation":
            out += _ablation_sentences(t, records)
    if bench and not any(t.kind == "main" for t in tables):
        out += bench_sentences(bench)
    return out


def askd_findings(table: Table, latency_ratio: float | None = None, verdicts: list[str] = ()) -> list[str]:
    """Sentences about an ASKD table (:func:`harness.report.askd_tables.build_askd_table`): which
    model has the lowest mean greedy WER, each paired difference as ``verdicts`` states it
    (askd.json's ``stats``: "resolved" only when its 95% interval over seeds excludes zero,
    else "not resolved" with the interval), and the measured inference speedup. Every number
    is a cell of the table (read from askd.json), a verdict, or askd.json's ``latency_ratio``.
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
        out.append(f"The teacher has the lowest greedy WER ({_fmt(teacher, wcol)} %); the lowest student mean "
                   f"is {runner}'s ({_fmt(scored[runner], wcol)} %, {rows[runner]['wer_rel'].mean:.2f}x the "
                   "teacher's WER on average).")
    else:
        text = f"The lowest mean greedy WER is {best}'s ({_fmt(scored[best], wcol)} %)"
        if teacher is not None:
            text += (f", against the teacher's {_fmt(teacher, wcol)} % ({rows[best]['wer_rel'].mean:.2f}x the "
                     "teacher's WER on average over its runs)")
        out.append(text + ".")
    out += [v + "." for v in verdicts]
    scol = cols["speedup"]
    sped = [(o, rows[o]["speedup"]) for o in students if rows[o]["speedup"].n]
    if sped:
        parts = ", ".join(f"{o} {_fmt(c, scol)}x" for o, c in sped)
        text = "Measured side by side on the same utterances, the students decode at "
        text += (f"{latency_ratio:.2f}x the teacher's speed on average ({parts})" if latency_ratio is not None
                 and math.isfinite(latency_ratio) else parts + " the teacher's speed")
        out.append(text + ".")
    return out


def findings(tables: list[Table], n_ok: int, n_total: int, askd: list[tuple] = (),
             records: list[dict] | None = None, bench: dict | None = None, loaded: int = 0) -> list[str]:
    """Every finding, one item each.

    Args:
        tables: the stacking tables (main and ablations).
        n_ok: finished stacking runs; n_total: all stacking runs.
        askd: (ASKD table, askd.json's ``latency_ratio``, its verdicts) per ASKD study.
        records: the stats records of the stacking tables (``stats.json``).
        bench: :func:`harness.report.speed.read_bench`'s result, or None.
        loaded: finished stacking runs whose machine's load average exceeded its cores at
            their start or end (``Results.runs.oversubscribed``): a warning item.
    """
    items = []
    if n_total or not askd:
        bad = n_total - n_ok
        items.append(f"{n_ok} of {n_total} runs finished"
                     + (f"; the other {bad} {'is' if bad == 1 else 'are'} listed under failed, incomplete and "
                        "missing, and shown as n/a." if bad else "."))
    if loaded:
        items.append(f"Warning: {loaded} of {n_ok} finished runs ran while the machine's load average was above its "
                     "cores (at their start or end): they shared cores with other work, so their wall-clock and CPU "
                     "times (time to quality, training seconds) are not clean speed evidence"
                     + ("; the speed ratios here come from the side-by-side benchmark." if bench else
                        "; measure speed with harness bench stacking on an idle machine."))
    items += stats_findings(tables, records or [], bench)
    for t, ratio, *rest in askd:
        items.append(" ".join(askd_findings(t, ratio, *rest)))
    return items
