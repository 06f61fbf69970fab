"""The ASKD (ASR track) study table: numbers as ``askd.json`` records them, nothing recomputed."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

from harness.report import figures as F
from harness.report.tables import Cell, Column, Table, _bold_best, _slug

ASKD_ORDER = ("teacher", "ce", "kd", "askd")


def _f(x) -> float:
    """A number from askd.json, NaN for None / missing / not a number."""
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def _layers(n) -> str:
    return f"{n} decoder layer{'' if n == 1 else 's'}"


def askd_objectives(study) -> list[str]:
    """The study's objectives in report order: teacher, ce, kd, askd, then any other (sorted);
    an objective appears when any run of it was started, finished or not."""
    names = {str(r.get("objective")) for r in study.rows() if r.get("objective") not in (None, "teacher")}
    names |= set((study.data.get("by_objective") or {}))
    return ["teacher"] + [o for o in ASKD_ORDER[1:] if o in names] + sorted(names - set(ASKD_ORDER))


def build_askd_table(study, table_id: str = "table-askd") -> Table:
    """The ASKD table of one study: one row per model (the teacher, then one per objective).

    Every number is read from ``askd.json`` as :func:`harness.asr.study.write_study_table`
    wrote it: the teacher row from ``teacher``; a student row from ``by_objective[obj]``
    (``wer_mean`` +/- ``wer_std``, ``wer_beam_mean``, ``wer_rel_mean``, ``speedup_mean`` +/-
    ``speedup_std``, ``params``, ``runs``). Nothing is recomputed from the per-run rows,
    whose only use here is counting the runs started per objective (failed ones included).

    Args:
        study: an :class:`harness.report.collect.AskdStudy`.
        table_id: HTML id / file stem.
    """
    data = study.data
    by_obj = data.get("by_objective") or {}
    teacher = data.get("teacher") or {}
    params = [_f(teacher.get("params"))] + [_f(m.get("params")) for m in by_obj.values()]
    small = all(p < 1e6 for p in params if math.isfinite(p))
    columns = [
        Column("objective", "Objective"),
        Column("params", "Params (k)" if small else "Params (M)", None, 0 if small else 2,
               1e-3 if small else 1e-6, show_std=False),
        Column("wer", "WER greedy (%) ↓", "lower", 1, 100.0),
        Column("wer_beam", "WER beam (%) ↓", "lower", 1, 100.0),
        Column("wer_rel", "WER / teacher ↓", "lower", 2),
        Column("speedup", "Speedup vs teacher ↑", "higher", 2),
        Column("seeds", "Seeds ok"),
    ]
    started: dict[str, int] = {}
    for r in study.rows():
        if r.get("objective") not in (None, "teacher"):
            started[str(r["objective"])] = started.get(str(r["objective"]), 0) + 1
    index, cells, values = [], [], []
    for obj in askd_objectives(study):
        if obj == "teacher":
            ok = teacher.get("status", "ok") == "ok" and math.isfinite(_f(teacher.get("wer")))
            n = 1 if ok else 0
            layers = teacher.get("decoder_layers")
            index.append("teacher" + (f" ({_layers(layers)})" if layers else ""))
            row = [Cell(text="teacher"), Cell(_f(teacher.get("params")), n=n), Cell(_f(teacher.get("wer")), n=n),
                   Cell(_f(teacher.get("wer_beam")), n=n), Cell(_f(teacher.get("wer_rel")), n=n),
                   Cell(_f(teacher.get("speedup")), n=n), Cell(text="-")]
        else:
            m = by_obj.get(obj) or {}
            n = int(m.get("runs") or 0)
            layers = {r.get("decoder_layers") for r in study.rows()
                      if r.get("objective") == obj and r.get("decoder_layers") is not None}
            index.append(f"student, {obj}" + (f" ({_layers(layers.pop())})" if len(layers) == 1 else ""))
            ci = ((data.get("stats") or {}).get("wer") or {}).get(obj) or {}
            row = [Cell(text=obj), Cell(_f(m.get("params")), n=n),
                   Cell(_f(m.get("wer_mean")), _f(m.get("wer_std")), n, half=_f(ci.get("half_width"))),
                   Cell(_f(m.get("wer_beam_mean")), n=n), Cell(_f(m.get("wer_rel_mean")), n=n),
                   Cell(_f(m.get("speedup_mean")), _f(m.get("speedup_std")), n),
                   Cell(text=f"{n}/{max(started.get(obj, 0), n)}")]
        cells.append(row)
        values.append({"objective": obj})
    _bold_best(columns, cells)
    utts = teacher.get("n")
    caption = ("Teacher, then each student objective: mean over seeds as askd.json records it (by_objective); "
               "greedy WER ± the half-width of its 95% t-interval over seeds (askd.json stats; the paired "
               "differences are in stats.json and the findings), speedup ± std; WER beam and WER / teacher "
               "are means only. "
               f"Greedy WER on {utts if utts is not None else 'n/a'} test utterances. Speedup = teacher "
               "latency / student latency, measured side by side in one process on the same utterances "
               "(batch 1, greedy)")
    ratio, tok = _f(data.get("latency_ratio")), _f(data.get("token_latency_ratio"))
    if math.isfinite(ratio):
        caption += f"; over all finished students {ratio:.2f}x per utterance"
        caption += f", {tok:.2f}x per decoded token" if math.isfinite(tok) else ""
    caption += ". Best per column in bold (↓ lower is better, ↑ higher is better); n/a = no finished run."
    return Table(id=table_id, title=f"ASKD (ASR track, study {study.name})", caption=caption, index_name="model",
                 columns=columns, index=index, cells=cells, group_values=values, kind="askd", sweep=study.name,
                 members={})


def askd_records(study) -> list[dict]:
    """The study's statistics (``askd.json`` ``stats``, :func:`harness.asr.study.study_stats`)
    as ``stats.json`` records (:mod:`harness.stats`): each objective's greedy WER (design
    ``mean``) and each paired difference (design ``paired``), metric ``asr.wer``. A
    difference against the teacher pairs every student seed with the one teacher."""
    st = study.data.get("stats") or {}
    level = st.get("level", 0.95)
    seeds: dict[str, list[int]] = {}
    for r in study.rows():
        if r.get("status") == "ok" and r.get("objective") not in (None, "teacher") and r.get("seed") is not None:
            seeds.setdefault(str(r["objective"]), []).append(int(r["seed"]))
    base = {"sweep": study.name, "setting": None, "metric": "asr.wer", "direction": "lower", "level": level,
            "p": None, "resolved": False, "mean_second": None, "relative": None, "excluded": [], "note": None}
    out = []
    for obj, m in (st.get("wer") or {}).items():
        out.append({**base, **{k: m.get(k) for k in ("n", "estimate", "ci_low", "ci_high", "half_width", "sd")},
                    "arms": [obj], "design": "mean", "seeds": sorted(seeds.get(obj, [])), "note": m.get("note")})
    for d in st.get("differences") or []:
        rec = {**base, **{k: d.get(k) for k in ("n", "estimate", "ci_low", "ci_high", "half_width", "sd", "p",
                                                 "resolved", "mean_second", "relative", "seeds", "note")}}
        rec.update(arms=[d["first"], d["second"]], design="paired", resolved=bool(d.get("resolved")),
                   seeds=list(d.get("seeds") or []))
        if d["second"] == "teacher":
            rec["note"] = "the teacher is one fixed model: the interval is that of the student's WER, shifted"
        out.append(rec)
    return out


def askd_runs(study) -> list[dict]:
    """Per-run lines of a study for the report: every row of ``askd.json`` (and the missing
    runs) with WERs in percent, n/a where nothing was measured."""
    out = []
    for r in study.rows():
        def pct(k):
            v = _f(r.get(k))
            return f"{100 * v:.1f}" if math.isfinite(v) else "n/a"

        sp = _f(r.get("speedup"))
        secs = _f(r.get("train_seconds"))
        seed = r.get("seed")
        out.append({"model": r.get("model"), "objective": r.get("objective"),
                    "seed": "-" if seed is None or (isinstance(seed, float) and math.isnan(seed)) else seed,
                    "status": r.get("status"), "wer": pct("wer"), "wer_beam": pct("wer_beam"),
                    "speedup": f"{sp:.2f}" if math.isfinite(sp) else "n/a",
                    "train_seconds": f"{secs:.1f}" if math.isfinite(secs) else "n/a"})
    return out


def loaded_runs(results) -> int:
    """Finished stacking runs that ran on an oversubscribed machine (their summary's load)."""
    df = results.runs
    if df.empty or "oversubscribed" not in df:
        return 0
    return int((df["ok"] & df["oversubscribed"].fillna(False).astype(bool)).sum())


def askd_sections(results, out: Path) -> list[dict]:
    """Per ASKD study: its table (written to ``tables/``), its WER-vs-speed figure (or why it
    was not drawn), its per-run lines and ``latency_ratio``."""
    made = []
    many = len(results.askd) > 1
    for st in results.askd:
        slug = _slug(st.name) if many else ""
        table = build_askd_table(st, "table-askd" + (f"-{slug}" if slug else ""))
        table.write(out / "tables")
        if st.data:  # the study's askd.json beside its table: the report folder carries its numbers
            shutil.copyfile(Path(st.path) / "askd.json", out / "tables" / f"{table.id}.json")
        fid = "askd_wer_speed" + (f"-{slug}" if slug else "")
        lr = st.data.get("latency_ratio")
        made.append({"study": st, "table": table, "fid": fid, "figure": F.askd_wer_speed(st.data, out / "figures", fid),
                     "runs": askd_runs(st), "latency_ratio": float(lr) if isinstance(lr, (int, float)) else None,
                     "verdicts": list((st.data.get("stats") or {}).get("verdicts") or [])})
    return made
