"""The report's tables: mean and 95% CI over seeds per arm (main) or per setting (ablations).

A sweep whose runs differ only by comparison arm (a stacking variant, or ``none_cm``, the
compute-matched ``none``) and seed gives a *main* table, one row per arm; a sweep where
other config keys vary gives an *ablation* table, one row per combination of those keys.
Columns: runs finished / started, train wall-clock and CPU time, speedup vs ``none`` (per
run: mean ``none`` time / run time), time-to-quality (to ``none_cm``'s held-out loss, when
the sweep has one), student parameters, the held-out output loss and best phone-probe
accuracy, each task's metric with its direction arrow, and the SUPERB score.

Every cell is the mean over the finished seeds with the half-width of its 95% t-interval
(:func:`harness.stats.mean_ci`) beside it: ``0.712 ± 0.004``; a cell averaging fewer
seeds than its row's finished runs says so (``n=2``). No cell is bolded as "best": a
dagger marks a cell whose paired difference to the row it is compared with (``none`` in a
main table, the reference setting in an ablation) is resolved (its 95% CI excludes 0);
see :func:`mark_resolved`. Each table is written as Markdown, LaTeX (booktabs) and CSV
(numeric mean/std/ci_low/ci_high/n columns). The ASKD table is :mod:`harness.report.askd_tables`.
"""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from harness import stats
from harness.report.collect import Results, tasks_in_order, varying_keys
from harness.report.evidence import time_to_quality_runs

ARROW = {"higher": "↑", "lower": "↓"}
LATEX_ARROW = {"higher": r"$\uparrow$", "lower": r"$\downarrow$"}
# Error rates and accuracies stored as fractions are shown in percent.
PERCENT_METRICS = {"accuracy", "acc", "per", "wer", "cer", "eer", "f1", "der"}
METRIC_SHORT = {"accuracy": "acc", "per": "PER", "wer": "WER", "cer": "CER", "eer": "EER"}


@dataclass
class Column:
    """One table column: ``key`` in the stats, a label, a direction and how to print it."""

    key: str
    label: str
    direction: str | None = None  # "higher" | "lower" | None (not ranked)
    decimals: int = 1
    scale: float = 1.0  # shown value = stored value * scale
    show_std: bool = True  # False for values that do not vary by seed (parameter counts)


@dataclass
class Cell:
    """Mean, spread and number of runs behind one table cell (``text`` overrides the numbers).

    ``half`` is the half-width of the 95% t-interval of the mean; cells built from a std
    only (the ASKD table, from ``askd.json``) leave it NaN and show the std.
    """

    mean: float = math.nan
    std: float = math.nan
    n: int = 0
    text: str | None = None
    bold: bool = False
    half: float = math.nan
    note: str = ""  # e.g. "n=2" (fewer seeds than the row), "2/3 reached"
    mark: str = ""  # "†": resolved difference to the compared row

    def parts(self, col: Column) -> tuple[str, str]:
        """(mean, spread) as shown; ``("n/a", "")`` when nothing was measured. The mean
        carries the cell's mark and note: ``0.712† (n=2)``."""
        if self.text is not None:
            return self.text, ""
        if self.n == 0 or not math.isfinite(self.mean):
            return ("n/a" + (f" ({self.note})" if self.note else "")), ""
        spread = self.half if math.isfinite(self.half) else self.std
        m = f"{self.mean * col.scale:.{col.decimals}f}{self.mark}"
        s = (f"{spread * col.scale:.{col.decimals}f}"
             if col.show_std and self.n > 1 and math.isfinite(spread) else "")
        if self.note:
            s = f"{s} ({self.note})" if s else ""
            m = m if s else f"{m} ({self.note})"
        return m, s


@dataclass
class Table:
    """A results table, renderable as Markdown, LaTeX, HTML and CSV."""

    id: str
    title: str
    caption: str
    index_name: str
    columns: list[Column]
    index: list[str]
    cells: list[list[Cell]]
    group_values: list[dict] = field(default_factory=list)  # the config values of each row
    kind: str = "main"
    sweep: str = ""
    members: dict[str, list[str]] = field(default_factory=dict)  # row label -> run keys (all runs)

    def cell(self, row: str, key: str) -> Cell:
        i = self.index.index(row)
        j = [c.key for c in self.columns].index(key)
        return self.cells[i][j]

    def to_markdown(self) -> str:
        def esc(s: str) -> str:
            return s.replace("|", "\\|")

        head = [self.index_name] + [c.label for c in self.columns]
        lines = [f"**{esc(self.title)}.** {esc(self.caption)}", "",
                 "| " + " | ".join(esc(h) for h in head) + " |",
                 "|" + "---|" + "".join("---:|" for _ in self.columns)]
        for name, row in zip(self.index, self.cells):
            out = []
            for c, cell in zip(self.columns, row):
                m, s = cell.parts(c)
                text = f"{m} ± {s}" if s else m
                out.append(f"**{text}**" if cell.bold else text)
            lines.append("| " + " | ".join([esc(name)] + out) + " |")
        return "\n".join(lines) + "\n"

    def to_latex(self) -> str:
        def label(c: Column) -> str:
            text = latex_escape(c.label.replace(" ↑", "").replace(" ↓", ""))
            return text + (" " + LATEX_ARROW[c.direction] if c.direction else "")

        lines = [
            "% generated by `harness report`; needs \\usepackage{booktabs}",
            "\\begin{table}[t]", "\\centering", "\\small",
            f"\\caption{{{latex_escape(self.title)}. {latex_escape(self.caption)}}}",
            f"\\label{{tab:{self.id}}}",
            "\\begin{tabular}{l" + "r" * len(self.columns) + "}", "\\toprule",
            " & ".join([latex_escape(self.index_name)] + [label(c) for c in self.columns]) + " \\\\", "\\midrule",
        ]
        for name, row in zip(self.index, self.cells):
            out = []
            for c, cell in zip(self.columns, row):
                m, s = cell.parts(c)
                text = f"{m} $\\pm$ {s}" if s else latex_escape(m)
                out.append(f"\\textbf{{{text}}}" if cell.bold else text)
            lines.append(" & ".join([latex_escape(name)] + out) + " \\\\")
        lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
        return "\n".join(lines) + "\n"

    def to_html(self) -> str:
        head = "".join(f"<th>{html.escape(c.label)}</th>" for c in self.columns)
        rows = []
        for name, row in zip(self.index, self.cells):
            tds = []
            for c, cell in zip(self.columns, row):
                m, s = cell.parts(c)
                inner = html.escape(m) + (f' <span class="std">± {html.escape(s)}</span>' if s else "")
                cls = ' class="na"' if m == "n/a" else ""
                if cell.bold:
                    inner = f"<strong>{inner}</strong>"
                title = f' title="{cell.n} run(s)"' if cell.text is None else ""
                tds.append(f"<td{cls}{title}>{inner}</td>")
            rows.append(f"<tr><th scope=\"row\">{html.escape(name)}</th>{''.join(tds)}</tr>")
        return (
            f'<table id="{self.id}" class="results">'
            f"<caption><b>{html.escape(self.title)}.</b> {html.escape(self.caption)}</caption>"
            f"<thead><tr><th>{html.escape(self.index_name)}</th>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>"
        )

    def to_frame(self) -> pd.DataFrame:
        """Numeric form for CSV: the row's config values, then mean/std/n per column."""
        recs = []
        for name, vals, row in zip(self.index, self.group_values or [{}] * len(self.index), self.cells):
            rec = {self.index_name: name, **vals}
            for c, cell in zip(self.columns, row):
                if cell.text is not None:
                    rec[c.key] = cell.text
                    continue
                rec[f"{c.key}_mean"] = cell.mean
                rec[f"{c.key}_std"] = cell.std
                rec[f"{c.key}_ci_low"] = cell.mean - cell.half
                rec[f"{c.key}_ci_high"] = cell.mean + cell.half
                rec[f"{c.key}_n"] = cell.n
            recs.append(rec)
        return pd.DataFrame(recs)

    def write(self, folder: Path) -> list[Path]:
        """Write ``<id>.md``, ``<id>.tex`` and ``<id>.csv`` into ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        paths = [folder / f"{self.id}.{ext}" for ext in ("md", "tex", "csv")]
        paths[0].write_text(self.to_markdown())
        paths[1].write_text(self.to_latex())
        self.to_frame().to_csv(paths[2], index=False)
        return paths


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters in plain text."""
    repl = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
            "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
            "±": r"$\pm$", "↑": r"$\uparrow$", "↓": r"$\downarrow$", "×": r"$\times$"}
    return "".join(repl.get(ch, ch) for ch in str(text))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "x"


def _stat(values) -> Cell:
    """Mean, std and 95% t-interval half-width of the finite values."""
    r = stats.mean_ci(x for x in values if x is not None)
    if not r["n"]:
        return Cell()
    nan = math.nan
    return Cell(mean=r["estimate"], std=r["sd"] if r["sd"] is not None else nan, n=r["n"],
                half=r["half_width"] if r["half_width"] is not None else nan)


def _time_column(seconds: pd.Series, key: str = "train_seconds", what: str = "Train time") -> Column:
    med = float(seconds.median()) if seconds.notna().any() else 0.0
    if med >= 2 * 3600:
        return Column(key, f"{what} (h) ↓", "lower", 2, 1 / 3600)
    if med >= 600:
        return Column(key, f"{what} (min) ↓", "lower", 1, 1 / 60)
    return Column(key, f"{what} (s) ↓", "lower", 1)


def task_column(task: str, metric: str, direction: str, values: pd.Series) -> Column:
    """The column of one task: ``KS acc (%) ↑`` (fractions of percent metrics scaled by 100)."""
    short = METRIC_SHORT.get(metric.lower(), metric)
    finite = values[np.isfinite(values)]
    pct = metric.lower() in PERCENT_METRICS and len(finite) > 0 and finite.between(0, 1).all()
    label = f"{task.upper()} {short}{' (%)' if pct else ''} {ARROW.get(direction, '')}".strip()
    return Column(f"task.{task}", label, direction if direction in ARROW else None, 1 if pct else 3,
                  100.0 if pct else 1.0)


def _baseline_seconds(results: Results, runs: pd.DataFrame) -> tuple[float, str]:
    """Mean train seconds of ``none`` comparable to ``runs``, and where it came from."""
    own = runs[runs["ok"] & (runs["arm"] == "none")]["train_seconds"].dropna()
    if len(own):
        return float(own.mean()), "this sweep"
    # An ablation sweep without 'none': borrow the baseline of another sweep with the same
    # profile, teacher, student depth and number of steps (otherwise times do not compare).
    match = ["profile", "teacher", "cfg.train.steps", "cfg.student.layers", "cfg.student.preset"]
    match = [m for m in match if m in runs.columns]
    ref = runs[runs["ok"]]
    if ref.empty:
        return math.nan, ""
    cand = results.runs[results.runs["ok"] & (results.runs["arm"] == "none")]
    for m in match:
        vals = ref[m].dropna().unique()
        if len(vals) != 1:
            return math.nan, ""
        cand = cand[cand[m] == vals[0]]
    cand = cand["train_seconds"].dropna()
    if len(cand):
        sweeps = ", ".join(sorted(results.runs.loc[cand.index, "sweep"].unique()))
        return float(cand.mean()), f"sweep {sweeps}"
    return math.nan, ""


def _fmt_value(v) -> str:
    """Config values as a reader writes them: 0.5, 1 (not 1.0), copy."""
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _columns(results: Results, runs: pd.DataFrame, tasks: pd.DataFrame, base_seconds: float,
             ttq: pd.DataFrame) -> list[Column]:
    """The columns of one sweep's table, those without any value left out."""
    ok = runs[runs["ok"]]
    columns = [Column("runs", "Runs ok")]
    columns.append(_time_column(ok["train_seconds"]))
    if ok["train_cpu_seconds"].notna().any():
        columns.append(_time_column(ok["train_cpu_seconds"], "train_cpu_seconds", "CPU time"))
    if math.isfinite(base_seconds):
        columns.append(Column("speedup", "Speedup vs none ↑", "higher", 2))
    if not ttq.empty and ttq["key"].isin(runs["key"]).any():
        sub = ttq[ttq["key"].isin(runs["key"])]
        col = _time_column(sub["ttq_time"], "ttq.time", "Time to none_cm loss")
        columns.append(col)
    columns.append(Column("student_params", "Params (M)", None, 2, 1e-6, show_std=False))
    if ok["heldout_output_loss"].notna().any():
        columns.append(Column("heldout.output_loss", "Held-out loss ↓", "lower", 3))
    if ok["heldout_probe_best"].notna().any():
        columns.append(Column("heldout.probe_best", "Phone probe (%) ↑", "higher", 1, 100.0))
    for task in [t for t in tasks_in_order(results) if t in set(tasks["task"])]:
        tt = tasks[tasks["task"] == task]
        columns.append(task_column(task, str(tt["metric"].iloc[0]), str(tt["direction"].iloc[0]), tt["value"]))
    if runs["superb_score"].notna().any():
        columns.append(Column("superb_score", "SUPERB ↑", "higher", 1))
    return columns


RUN_COLUMN_OF = {"heldout.output_loss": "heldout_output_loss", "heldout.probe_best": "heldout_probe_best"}


def _row_cells(columns: list[Column], grp: pd.DataFrame, tasks: pd.DataFrame, base_seconds: float,
               ttq: pd.DataFrame) -> list[Cell]:
    """One row's cells: each column's mean and 95% CI over the row's finished runs."""
    ok = grp[grp["ok"]]
    row = []
    for col in columns:
        if col.key == "runs":
            row.append(Cell(text=f"{len(ok)}/{len(grp)}"))
            continue
        if col.key == "speedup":
            cell = _stat((base_seconds / ok["train_seconds"]).tolist())
        elif col.key == "ttq.time":
            sub = ttq[ttq["key"].isin(ok["key"])]
            cell = _stat(sub["ttq_time"].tolist())
            cell.note = f"{cell.n}/{len(sub)} reached" if len(sub) else "no curve"
        elif col.key.startswith("task."):
            cell = _stat(tasks[tasks["key"].isin(ok["key"]) & (tasks["task"] == col.key[5:])]["value"].tolist())
        else:
            cell = _stat(ok[RUN_COLUMN_OF.get(col.key, col.key)].tolist())
        if col.key != "ttq.time" and 0 < cell.n < len(ok):
            cell.note = f"n={cell.n}"
        row.append(cell)
    return row


def _groups(runs: pd.DataFrame, group_cols: list[str], sort: bool) -> list[tuple]:
    """Row groups in run order (runs are sorted by arm order); ablation values sorted."""
    groups: list[tuple] = []
    for _, r in runs.iterrows():
        g = tuple(r[c] if not (isinstance(r[c], float) and math.isnan(r[c])) else None for c in group_cols)
        if g not in groups:
            groups.append(g)
    if sort:
        def sort_key(g):
            return tuple((0, v, "") if isinstance(v, (int, float)) and v is not None else (1, 0, str(v)) for v in g)
        groups.sort(key=sort_key)
    return groups


def build_table(results: Results, sweep: str, table_id: str | None = None,
                ttq: pd.DataFrame | None = None) -> Table:
    """The table of one sweep (main if only the arm varies, else an ablation).

    Args:
        results: collected results.
        sweep: the sweep's name.
        table_id: HTML id / file stem (default ``table-main-<sweep>`` or ``table-ablation-<sweep>``).
        ttq: :func:`harness.report.evidence.time_to_quality_runs` (computed when None).
    """
    runs = results.runs[results.runs["sweep"] == sweep]
    ttq = time_to_quality_runs(results) if ttq is None else ttq
    keys = varying_keys(runs)
    multi_arm = runs["arm"].nunique() > 1
    kind = "main" if multi_arm and not keys else "ablation"
    group_cols = (["arm"] if multi_arm or not keys else []) + [f"cfg.{k}" for k in keys]
    tasks = results.tasks[results.tasks["key"].isin(runs["key"])]
    base_seconds, base_src = _baseline_seconds(results, runs)
    columns = _columns(results, runs, tasks, base_seconds, ttq)

    index, cells, group_values, members = [], [], [], {}
    for g in _groups(runs, group_cols, sort=bool(keys)):
        mask = np.ones(len(runs), dtype=bool)
        for c, v in zip(group_cols, g):
            mask &= (runs[c].isna() if v is None else runs[c] == v).to_numpy()
        grp = runs[mask]
        label_parts = [str(v) if c == "arm" else f"{c[4:].rsplit('.', 1)[-1]}={_fmt_value(v)}"
                       for c, v in zip(group_cols, g)]
        index.append(", ".join(label_parts))
        members[index[-1]] = grp["key"].tolist()
        group_values.append({("variant" if c == "arm" else c[4:]): v for c, v in zip(group_cols, g)})
        cells.append(_row_cells(columns, grp, tasks, base_seconds, ttq))

    ci = ("Mean ± half-width of the 95% t-interval over seeds (n-1 degrees of freedom; none with one "
          "seed); n=k: fewer seeds than the row's finished runs; n/a = no finished run.")
    if kind == "main":
        title = f"Main table ({sweep})"
        caption = (f"{ci} One row per arm; none_cm = none trained for the stacking schedule's compute. "
                   "† = paired difference to none resolved (95% CI over seeds excludes 0); no cell is "
                   "ranked. ↑ higher is better, ↓ lower is better.")
    elif not keys:  # one arm, nothing varied but the seed
        title = f"Results ({sweep})"
        caption = ci
    else:
        title = f"Ablation: {', '.join(keys)} ({sweep})"
        caption = (f"{ci} † = paired difference to the reference setting resolved; no setting is ranked.")
    if any(c.key == "ttq.time" for c in columns):
        caption += (" Time to none_cm loss = training wall-clock until the held-out output loss first reaches "
                    "the final held-out loss of the same seed's none_cm (interpolated between evaluations); "
                    "k/n reached.")
    if math.isfinite(base_seconds):
        caption += (f" Speedup = mean train time of none ({base_src}) / train time of each run; times of "
                    "sweep trials that ran side by side on shared cores are not clean speed ratios.")
    caption += _score_coverage(runs[runs["ok"]])
    index_name = "variant" if kind == "main" else " / ".join(
        (["variant"] if "arm" in group_cols else []) + keys)
    return Table(
        id=table_id or f"table-{kind}-{_slug(sweep)}", title=title, caption=caption, index_name=index_name,
        columns=columns, index=index, cells=cells, group_values=group_values, kind=kind, sweep=sweep,
        members=members,
    )


def mark_resolved(table: Table, records: list[dict], reference: str | None) -> None:
    """Mark with † each cell whose paired difference to ``reference`` (a row label) is
    resolved in ``records`` (:mod:`harness.stats` records of this table's sweep)."""
    if reference is None:
        return
    hits = {(r["arms"][0], r["metric"]) for r in records if r["design"] == "paired" and r["sweep"] == table.sweep
            and r["arms"][1] == reference and r["resolved"]}
    for label, row in zip(table.index, table.cells):
        for col, cell in zip(table.columns, row):
            if (label, col.key) in hits:
                cell.mark = "†"


def _score_coverage(ok: pd.DataFrame) -> str:
    """Caption text naming the tasks the SUPERB score averages and those it left out."""
    def names(col: str) -> list[str]:
        if col not in ok:
            return []
        return sorted({t for v in ok[col].dropna() for t in str(v).split(",") if t})

    scored, skipped = names("superb_tasks"), names("superb_skipped")
    if not scored:
        return ""
    text = f" SUPERB score over {', '.join(t.upper() for t in scored)} (fbank = 0, reference = 1000)"
    if skipped:
        text += (f"; {', '.join(t.upper() for t in skipped)} reported but not scored (the reference is not "
                 "2 standard errors better than fbank there)")
    return text + "."


def _bold_best(columns: list[Column], cells: list[list[Cell]]) -> None:
    """Bold the best mean of each ranked column, compared at the shown precision."""
    for j, col in enumerate(columns):
        if col.direction is None:
            continue
        shown = []
        for row in cells:
            c = row[j]
            shown.append(round(c.mean * col.scale, col.decimals) if c.n and math.isfinite(c.mean) else None)
        vals = [v for v in shown if v is not None]
        if len(vals) < 2 or len(set(vals)) < 2:
            continue  # nothing to rank, or all equal
        best = max(vals) if col.direction == "higher" else min(vals)
        for row, v in zip(cells, shown):
            row[j].bold = v == best


def groups_of(table: Table) -> pd.Series:
    """Run key -> the table row it is averaged into (for figures grouped like the table)."""
    return pd.Series({k: label for label, keys in table.members.items() for k in keys}, dtype=object)


def build_tables(results: Results) -> list[Table]:
    """One table per sweep; the first main-kind table gets the id ``table-main``."""
    ttq = time_to_quality_runs(results)
    tables = [build_table(results, s, ttq=ttq) for s in results.sweeps()]
    mains = [t for t in tables if t.kind == "main"]
    if mains:
        mains[0].id = "table-main"
    tables.sort(key=lambda t: t.kind != "main")  # main tables first, order kept otherwise
    return tables


def runs_frame(results: Results) -> pd.DataFrame:
    """One row per run with each task's value as ``<task>.<metric>``: the report's run_table.csv."""
    cols = ["sweep", "run_id", "variant", "seed", "status", "train_seconds", "student_params", "superb_score",
            "run_dir"]
    extra = ["arm", "train_cpu_seconds", "heldout_output_loss", "heldout_probe_best"]  # after the original columns
    runs = results.runs[["key"] + cols].copy()
    if not results.tasks.empty:
        wide = results.tasks.assign(col=results.tasks["task"] + "." + results.tasks["metric"].astype(str)).pivot_table(
            index="key", columns="col", values="value", aggfunc="first")
        runs = runs.join(wide, on="key")
    for c in extra:
        runs[c] = results.runs[c].to_numpy() if c in results.runs else math.nan
    return runs.drop(columns="key")
