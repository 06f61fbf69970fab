"""The "about these numbers" box at the top of a report, and the paper's figures beside ours.

Everything is read from the run folders (profile, teacher id, steps, curves, tasks) and
from :mod:`harness.report.published` (the paper's figures, labelled as read in secondary
summaries; what the shipped embedded teacher is).
"""

from __future__ import annotations

import math

import pandas as pd

from harness.report.collect import Results
from harness.report.published import EMBEDDED_DATA, ER_PROXY, KNOWN_TEACHERS, PAPER


def _unique(series: pd.Series) -> list[str]:
    return [str(v) for v in dict.fromkeys(series.dropna()) if str(v) not in ("", "nan", "None")]


def convergence(results: Results) -> str | None:
    """How far the students still fell at the end of training: the median, over finished
    runs, of the drop of the held-out output loss (else the logged output / total training
    loss) over the last fifth of training, relative to its final value."""
    drops = []
    ok = set(results.runs.loc[results.runs["ok"], "key"])
    source = "held-out output loss"
    curves = results.heldout.rename(columns={"output_loss": "y"})
    if curves.empty:
        cur = results.curves
        col = "out" if "out" in cur else "loss_out" if "loss_out" in cur else "loss" if "loss" in cur else None
        if col is None:
            return None
        curves = cur.rename(columns={col: "y"})
        source = "training output loss" if col != "loss" else "training loss"
    for key, c in curves[curves["key"].isin(ok)].groupby("key"):
        c = c.dropna(subset=["step", "y"]).sort_values("step")
        if len(c) < 3:
            continue
        last = float(c["step"].iloc[-1])
        before = c[c["step"] <= 0.8 * last]
        if before.empty or not c["y"].iloc[-1]:
            continue
        drops.append((float(before["y"].iloc[-1]) - float(c["y"].iloc[-1])) / abs(float(c["y"].iloc[-1])))
    if not drops:
        return None
    med = float(pd.Series(drops).median())
    steps = _unique(results.runs.get("cfg.train.steps", pd.Series(dtype=object)))
    budget = f"{'/'.join(steps)} steps" if steps else "the budget"
    if med > 0.01:
        return (f"not converged: over the last fifth of training the {source} still fell by {100 * med:.1f}% "
                f"(median over {len(drops)} finished runs) at {budget}; differences between arms may change "
                "with a longer budget")
    return f"near a plateau at {budget}: the {source} fell by {100 * med:.1f}% over the last fifth of training"


def about_items(results: Results) -> list[tuple[str, str]]:
    """(label, sentence) pairs: data, tasks, teacher, student, convergence."""
    runs = results.runs
    out = []
    profiles = _unique(runs["profile"]) if "profile" in runs else []
    if "embedded" in profiles or "tiny" in profiles:
        out.append(("Data", f"profile {'/'.join(profiles)}: {EMBEDDED_DATA}."))
    elif profiles:
        out.append(("Data", f"profile {'/'.join(profiles)} (see the corpus paths in the run configs)."))
    tasks = set(results.tasks["task"]) if not results.tasks.empty else set()
    if "er" in tasks and ("embedded" in profiles or "tiny" in profiles):
        out.append(("ER", ER_PROXY + "."))
    teachers = _unique(runs["teacher"]) if "teacher" in runs else []
    for t in teachers:
        desc = next((d for prefix, d in KNOWN_TEACHERS.items() if t.startswith(prefix)), None)
        out.append(("Teacher", f"{t}: {desc}." if desc else f"{t} (no description known to the report)."))
    # the final depth each run reached (student.layers = 0 means the preset's depth)
    st = results.stages
    layers = [] if st.empty else _unique(st.sort_values("stage").groupby("key")["depth"].last().astype(int))
    params = runs.loc[runs["ok"], "student_params"].dropna()
    if layers or len(params):
        out.append(("Student", ", ".join(x for x in (
            f"{'/'.join(layers)} layers" if layers else "",
            f"{params.median() / 1e6:.2f} M parameters" if len(params) else "",
            f"preset {'/'.join(_unique(runs.get('cfg.student.preset', pd.Series(dtype=object))))}"
            if "cfg.student.preset" in runs else "") if x) + "."))
    conv = convergence(results)
    if conv:
        out.append(("Convergence", conv + "."))
    if not results.heldout.empty:
        u = _unique(runs.get("heldout_utterances", pd.Series(dtype=object)).map(
            lambda v: f"{v:.0f}" if isinstance(v, float) and math.isfinite(v) else None))
        out.append(("Held-out set", f"{'/'.join(u) or 'n/a'} fixed held-out distillation utterances, the same "
                    "for every run: output loss = MSE of the student's top-layer projection against the "
                    "teacher's top layer; probe = closed-form ridge frame-phone probe per student layer."))
    return out


def _ours(records: list[dict], metric: str, scale: float = 100.0, unit: str = "") -> str:
    rec = next((r for r in records if r["design"] == "mean" and r["metric"] == metric
                and r["arms"] == ["interleaved"]), None)
    if rec is None or rec["estimate"] is None:
        return "n/a (not measured here)"
    text = f"{rec['estimate'] * scale:.2f}"
    if rec["half_width"] is not None:
        text += f" ± {rec['half_width'] * scale:.2f}"
    return f"{text}{unit} (n={rec['n']})"


def paper_rows(results: Results, records: list[dict], bench: dict | None = None) -> list[dict]:
    """The paper's interleaved figures beside this report's interleaved ones (same metric)."""
    rows = []
    ours_speed = results.runs.loc[results.runs["ok"] & (results.runs["arm"] == "interleaved"),
                                  "theoretical_speedup"].dropna()
    for metric, (label, value, unit, note) in PAPER["interleaved"].items():
        if metric == "speedup":
            ours = f"theory {ours_speed.median():.2f}x" if len(ours_speed) else "n/a"
            b = (bench or {}).get("variants", {}).get("interleaved")
            if b and math.isfinite(b["speedup_wall"]["value"]):
                ours += f"; measured wall-clock {b['speedup_wall']['value']:.2f}x (bench)"
            rows.append({"quantity": label, "paper": f"x{value:.2f}", "ours": ours, "note": note})
            continue
        rows.append({"quantity": label, "paper": f"{value:.2f} {unit}", "ours": _ours(records, metric, 100.0, f" {unit}"),
                     "note": note})
    setup = PAPER["setup"]
    rows.append({"quantity": "teacher", "paper": setup["teacher"],
                 "ours": ", ".join(_unique(results.runs["teacher"])) or "n/a", "note": ""})
    rows.append({"quantity": "student", "paper": setup["student"], "ours": next(
        (v for k, v in about_items(results) if k == "Student"), "n/a"), "note": ""})
    rows.append({"quantity": "data", "paper": setup["data"], "ours": "/".join(_unique(results.runs["profile"]))
                 + " profile (synthetic)" if "profile" in results.runs else "n/a", "note": ""})
    return rows
