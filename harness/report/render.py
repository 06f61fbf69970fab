"""Render a report folder: tables, figures, a self-contained ``index.html`` and ``report.pdf``.

``reports/<name>/``::

    index.html          one file, images embedded as base64, CSS inline, no network
    report.pdf          the same page through WeasyPrint (matplotlib PdfPages if unavailable)
    tables/<id>.{md,tex,csv}     table-askd[-<study>] for each ASKD study folder given
                                 (and <id>.json: the study's askd.json as read)
    figures/<id>.{png,svg}       askd_wer_speed[-<study>] likewise
    run_table.csv       one row per run, failed ones included (runs.csv: a sweep's, per run x task)
    stats.json          the paired comparisons and means with 95% CIs (:mod:`harness.stats`)

The page, top to bottom: about these numbers (data, ER proxy, teacher, student, convergence, the
paper's published figures beside ours), findings (from ``stats.json`` only), provenance, speed from
the bench file (``--bench``), tables (mean ± 95% CI), paired comparisons, figures, the ASKD
section, failed/missing runs, all runs. A committed report folder is refused: :mod:`.output`.
"""

from __future__ import annotations

import base64
import shutil
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd
from jinja2 import Environment, FileSystemLoader, select_autoescape

from harness import stats
from harness.fsio import restore, set_aside
from harness.provenance import git_commit, now_iso
from harness.report import figures as F
from harness.report import figures_stats as FS
from harness.report.about import about_items, paper_rows
from harness.report.collect import Problem, Results, collect, varying_keys
from harness.report.evidence import all_records, metric_label, reference_row, same_compute
from harness.report.findings import _units, findings
from harness.report.output import OWNED, RUN_TABLE, parts_log, refuse_committed
from harness.report.published import PAPER
from harness.report.speed import bench_rows, read_bench
from harness.report.askd_tables import askd_records, askd_sections, loaded_runs
from harness.report.tables import Table, build_tables, groups_of, mark_resolved, runs_frame

TEMPLATES = Path(__file__).parent / "templates"
# The stacking and loss settings a reader needs to interpret a table (layer map included).
SETTING_KEYS = ("stacking.stages", "stacking.add", "stacking.schedule", "stacking.init", "stacking.optim_state",
                "stacking.layer_map", "loss.objective", "loss.per_layer", "loss.w", "train.steps",
                "student.preset", "student.layers")


@dataclass
class Report:
    """What :func:`render_report` wrote."""

    out: Path
    html: Path
    pdf: Path | None
    pdf_engine: str
    pdf_pages: int
    tables: list[Table]
    figures: list[F.Figure]
    skipped_figures: dict[str, str] = field(default_factory=dict)
    findings: str = ""
    problems: list[Problem] = field(default_factory=list)
    stats: Path | None = None
    records: list[dict] = field(default_factory=list)


def _unique(values) -> list[str]:
    kept = (v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v)))
    return [str(v) for v in dict.fromkeys(kept)]


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "n/a"
    h, rem = divmod(int(round(seconds)), 3600)
    m, s = divmod(rem, 60)
    return f"{h} h {m:02d} min" if h else f"{m} min {s:02d} s"


def _compute(runs: pd.DataFrame) -> str:
    train = float(runs["train_seconds"].fillna(0).sum())
    evals = float(runs["eval_seconds"].fillna(0).sum())
    text = f"{_duration(train + evals)}: training {train:.0f} s"
    text += f" + SUPERB scoring {evals:.0f} s" if evals else " (no scoring time recorded)"
    return text + ", summed over all runs, failed ones included"


def _askd_provenance(results: Results) -> list[tuple[str, str]]:
    """Per ASKD study: where it ran (askd.json's machine) and its teacher."""
    out = []
    for st in results.askd:
        d = st.data
        m = d.get("machine") or {}
        where = ", ".join(x for x in (m.get("device") or m.get("cpu"),
                                      f"{m['cpu_count']} CPUs" if m.get("cpu_count") else None,
                                      f"torch {m['torch']}" if m.get("torch") else None,
                                      f"{m['torch_threads']} threads" if m.get("torch_threads") else None) if x)
        wall = d.get("wall_seconds")
        out.append((f"ASKD study ({st.name})",
                    f"{st.path}; machine: {where or 'n/a'}; study wall-clock "
                    f"{_duration(float(wall)) if isinstance(wall, (int, float)) else 'n/a'} (teacher included)"))
        t = d.get("teacher") or {}
        if t:
            parts = [str(t.get("path", "n/a"))]
            if t.get("params"):
                parts.append(f"{t['params'] / 1e6:.3f} M params")
            if t.get("decoder_layers"):
                parts.append(f"{t['decoder_layers']} decoder layers")
            if isinstance(t.get("train_seconds"), (int, float)):
                parts.append(f"trained {t['train_seconds']:.0f} s"
                             + (" by the study" if d.get("teacher_trained_here") else ""))
            elif d.get("teacher_trained_here") is False:
                parts.append("given (not trained by the study)")
        else:
            parts = ["n/a (no finished run recorded the teacher)"]
        out.append((f"ASKD teacher ({st.name})", ", ".join(parts)))
    return out


def provenance(results: Results, command: str) -> list[tuple[str, str]]:
    """(label, value) pairs: where the numbers come from and what they cost."""
    runs = results.runs
    head = [("Command", command), ("Generated", now_iso()), ("Report code commit", git_commit())]
    askd_wall = sum(float(st.data["wall_seconds"]) for st in results.askd
                    if isinstance(st.data.get("wall_seconds"), (int, float)))
    if runs.empty:  # ASKD studies only
        return head + [("Results folders", ", ".join(results.sources)), *_askd_provenance(results),
                       ("Total compute", f"{_duration(askd_wall)}: ASKD studies' wall-clock")]
    ok = runs[runs["ok"]]
    seeds = ok.groupby("sweep")["seed"].nunique()
    settings = []
    for sweep in results.sweeps():
        sr = runs[runs["sweep"] == sweep]
        varying = set(varying_keys(sr))
        parts = []
        for key in SETTING_KEYS:
            vals = _unique(sr.get(f"cfg.{key}", pd.Series(dtype=object)))
            if vals and key not in varying:
                parts.append(f"{key}={'/'.join(vals)}")
        if varying:
            parts.append("varied: " + ", ".join(sorted(varying)))
        settings.append((f"Settings ({sweep})", ", ".join(parts) or "n/a"))
    starts, ends = _unique(runs["start_time"]), _unique(runs["end_time"])
    hw = []
    for _, r in runs.drop_duplicates(subset=["device", "cpu_count", "torch"]).iterrows():
        if r["device"] is not None and not (isinstance(r["device"], float) and math.isnan(r["device"])):
            hw.append(f"{r['device']}, {r['cpu_count']} CPUs, torch {r['torch']}")
    compute = _compute(runs)
    if results.askd:
        compute += f"; plus {_duration(askd_wall)} of ASKD studies' wall-clock"
    return [
        *head,
        ("Run commits", ", ".join(_unique(runs["git_commit"])) or "n/a"),
        ("Runs' time span", f"{min(starts)} to {max(ends)}" if starts and ends else "n/a"),
        ("Results folders", ", ".join(results.sources)),
        ("Profile", ", ".join(_unique(runs["profile"])) or "n/a"),
        ("Teacher", ", ".join(_unique(runs["teacher"])) or "n/a"),
        ("SUPERB score reference", ", ".join(_unique(runs["superb_ref"].map(
            lambda v: v if v is None or isinstance(v, (str, float)) else str(v)))) or "n/a"),
        ("Hardware", "; ".join(hw) or "n/a"),
        ("Seeds", ", ".join(f"{s}: {n}" for s, n in seeds.items()) or "n/a"),
        ("Runs", f"{len(ok)} finished of {len(runs)}"),
        ("Total compute", compute),
        *settings,
        *_askd_provenance(results),
    ]


def _problem_rows(results: Results) -> list[dict]:
    """Failed / incomplete / unreadable runs one per line; missing optional files grouped."""
    rows, grouped = [], {}
    for p in results.problems:
        if p.kind == "missing":
            run = Path(p.path).parent
            grouped.setdefault((Path(p.path).name, p.detail), []).append(f"{run.parent.name}/{run.name}")
        else:
            rows.append({"kind": p.kind, "what": p.path, "detail": p.detail})
    for (name, detail), runs in grouped.items():
        rows.append({"kind": "missing", "what": f"{name} in {len(runs)} run(s): {', '.join(runs)}",
                     "detail": f"{detail}; shown as n/a"})
    return rows


def _css_width(png: Path) -> int:
    """The figure's design width in CSS pixels (96 per inch), from the PNG header, so small
    figures are not blown up to the page width."""
    head = png.read_bytes()[:24]
    width_px = int.from_bytes(head[16:20], "big")
    return round(width_px / F.DPI * 96)


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _fig_view(f: F.Figure) -> dict:
    return {"f": f, "uri": _data_uri(f.png), "width": _css_width(f.png)}


def _front_allowed(records: list[dict], sweep: str) -> tuple[bool, str]:
    """A Pareto front only along axes that differ beyond their noise: some paired train-time
    difference and some paired SUPERB-score difference of the sweep must be resolved."""
    def resolved(metrics) -> bool:
        return any(r["resolved"] for r in records if r["sweep"] == sweep and r["design"] == "paired"
                   and r["metric"] in metrics)

    time_ok, quality_ok = resolved(("train_seconds", "train_cpu_seconds")), resolved(("superb_score",))
    if time_ok and quality_ok:
        return True, ""
    missing = [w for w, ok in (("train time", time_ok), ("SUPERB score", quality_ok)) if not ok]
    return False, f"no resolved paired difference in {' or '.join(missing)} (95% CI over seeds)"


def _figures(results: Results, tables: list[Table], folder: Path, records: list[dict],
             bench: dict | None) -> tuple[list[F.Figure], dict[str, str]]:
    figs, skipped = [], {}

    def add(fid: str, made):
        if isinstance(made, F.Figure):
            figs.append(made)
        else:
            skipped[fid] = made

    base = next((t for t in tables if t.kind == "main"), tables[0] if tables else None)
    if base is not None:
        groups = groups_of(base)
        add("heldout_curves", FS.heldout_curves(results, groups, folder))
        add("time_to_quality", FS.time_to_quality(records, base.sweep, folder))
        add("differences", FS.forest(records, base.sweep, folder, tasks=results.tasks))
        if "none_cm" in base.index:
            add("differences-none_cm", FS.forest(records, base.sweep, folder, "differences-none_cm", "none_cm",
                                                 tasks=results.tasks))
        add("speedups", FS.speedups(results, bench, folder))
        front, why = _front_allowed(records, base.sweep)
        add("frontier", F.frontier(results, groups, folder, front=front, why_no_front=why))
        add("loss_curves", F.loss_curves(results, groups, folder))
        add("cka_teacher", F.cka_heatmaps(results, groups, folder, "cka_teacher", "cka_teacher"))
        add("cka_self", F.cka_heatmaps(results, groups, folder, "cka_self", "cka_self"))
        add("layer_weights", F.layer_weights(results, groups, folder))
    add("teacher_probes", F.probe_profile(results, folder))
    for t in tables:
        if t is base:
            continue
        keys = varying_keys(results.runs[results.runs["sweep"] == t.sweep])
        if same_compute(keys):
            fid = f"quality-{t.id.removeprefix('table-')}"
            add(fid, FS.quality_only(records, t, folder, fid,
                                     f"{', '.join(keys)} change{'s' if len(keys) == 1 else ''} no compute, so "
                                     "time differences are noise"))
            continue
        fid = f"frontier-{t.id.removeprefix('table-')}"
        front, why = _front_allowed(records, t.sweep)
        made = F.frontier(results, groups_of(t), folder, fid=fid, front=front, why_no_front=why)
        if isinstance(made, F.Figure):
            made.title = f"Speed vs quality: {t.title}"
        add(fid, made)
    return figs, skipped


def _comparison_rows(records: list[dict], tables: list[Table], tasks) -> list[dict]:
    """The paired records as table rows for the page (every one, resolved or not)."""
    units = {}
    for t in tables:
        units.update(_units(t))
    rows = []
    for r in records:
        if r["design"] != "paired":
            continue
        scale, unit, dec = units.get(r["metric"], (1.0, "", 3))

        def f(x):
            return "n/a" if x is None else f"{x * scale:.{dec}f}"

        rows.append({"sweep": r["sweep"], "metric": metric_label(r["metric"], tasks) + (unit and f" ({unit.strip()})"),
                     "direction": r["direction"], "arms": f"{r['arms'][0]} − {r['arms'][1]}", "n": r["n"],
                     "estimate": f(r["estimate"]), "ci": f"[{f(r['ci_low'])}, {f(r['ci_high'])}]"
                     if r["ci_low"] is not None else "n/a",
                     "p": "n/a" if r["p"] is None else f"{r['p']:.3g}", "resolved": r["resolved"],
                     "note": r["note"] or ""})
    return rows


def _pdf_weasyprint(html_text: str, base: Path, pdf: Path) -> int:
    from weasyprint import HTML

    doc = HTML(string=html_text, base_url=str(base)).render()
    doc.write_pdf(pdf)
    return len(doc.pages)


def _pdf_matplotlib(report: Report, prov: list[tuple[str, str]], problems: list[dict], pdf: Path) -> int:
    """Fallback without WeasyPrint: a text page (findings, provenance), one page per table
    (a matplotlib table, best cells bold), one per figure, and the failed/missing list."""
    import textwrap

    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    a4 = (11.69, 8.27)  # landscape, inches
    pages = 0

    def text_page(pp, title: str, lines: list[tuple[str, float]]) -> None:
        fig = plt.figure(figsize=a4)
        fig.text(0.04, 0.95, title, fontsize=15, weight="bold", va="top")
        y = 0.90
        for line, size in lines:
            fig.text(0.04, y, line, fontsize=size, va="top", family="DejaVu Sans")
            y -= (line.count("\n") + 1) * size / 72 / a4[1] * 1.45 + 0.006
        pp.savefig(fig)
        plt.close(fig)

    with PdfPages(pdf) as pp:
        lines = [("Findings", 11), (textwrap.fill(report.findings, 150), 9), ("Provenance", 11)]
        lines += [(textwrap.fill(f"{k}: {v}", 170, subsequent_indent="    "), 8) for k, v in prov]
        text_page(pp, f"Distillation report: {report.out.name}", lines)
        pages += 1
        for t in report.tables:
            fig = plt.figure(figsize=a4)
            fig.text(0.04, 0.95, textwrap.fill(f"{t.title}. {t.caption}", 150), fontsize=9, va="top")
            ax = fig.add_axes([0.04, 0.05, 0.92, 0.80])
            ax.axis("off")
            cells = [[name] + [("{} ± {}".format(*c.parts(col)) if c.parts(col)[1] else c.parts(col)[0])
                               for col, c in zip(t.columns, row)] for name, row in zip(t.index, t.cells)]
            height = min(0.8, 0.05 * (len(cells) + 1))
            tab = ax.table(cellText=cells, colLabels=[t.index_name] + [c.label for c in t.columns],
                           cellLoc="right", bbox=[0, 1 - height / 0.8, 1, height / 0.8])
            tab.auto_set_font_size(False)
            tab.set_fontsize(7)
            tab.auto_set_column_width(list(range(len(t.columns) + 1)))
            for (i, j), cell in tab.get_celld().items():
                cell.set_edgecolor("0.8")
                if j == 0:
                    cell.get_text().set_horizontalalignment("left")
                if i == 0:
                    cell.get_text().set_fontweight("bold")
                elif j >= 1 and t.cells[i - 1][j - 1].bold:
                    cell.get_text().set_fontweight("bold")
            pp.savefig(fig)
            plt.close(fig)
            pages += 1
        for f in report.figures:
            fig = plt.figure(figsize=a4)
            ax = fig.add_axes([0.03, 0.10, 0.94, 0.82])
            ax.imshow(mpimg.imread(f.png))
            ax.axis("off")
            fig.suptitle(f.title)
            fig.text(0.04, 0.06, textwrap.fill(f.caption, 170), fontsize=8, va="top")
            pp.savefig(fig)
            plt.close(fig)
            pages += 1
        if problems:
            text_page(pp, "Failed, incomplete and missing",
                      [(textwrap.fill(f"[{p['kind']}] {p['what']}: {p['detail']}", 170,
                                      subsequent_indent="    "), 8) for p in problems])
            pages += 1
    return pages


def _stacking_stats(results: Results, tables: list[Table], out: Path) -> tuple[list[dict], Path | None]:
    """The stats records of the stacking tables, written to ``stats.json``; the tables'
    resolved cells marked (main: against none; ablation: against the reference setting)."""
    askd = [r for st in results.askd for r in askd_records(st)]
    if results.runs.empty:
        return askd, (stats.write_stats(out / "stats.json", askd) if askd else None)
    records = all_records(results, tables)
    for t in tables:
        if t.kind == "main":
            mark_resolved(t, records, "none" if "none" in t.index else None)
        elif t.kind == "ablation" and len(t.index) > 1:
            mark_resolved(t, records, reference_row(t))
    return records + askd, stats.write_stats(out / "stats.json", records + askd)


def _write_pdf(report: Report, page: str, out: Path, prov, problems, pdf_engine: str) -> None:
    pdf_path = out / "report.pdf"
    engine = pdf_engine
    if engine == "auto":
        try:
            import weasyprint  # noqa: F401

            engine = "weasyprint"
        except (ImportError, OSError):  # OSError: missing pango/cairo system libraries
            engine = "matplotlib"
    if engine == "weasyprint":
        report.pdf_pages = _pdf_weasyprint(page, out, pdf_path)
    else:
        report.pdf_pages = _pdf_matplotlib(report, prov, problems, pdf_path)
    report.pdf, report.pdf_engine = pdf_path, engine


def render_report(
    results_dirs: list[str | Path],
    out: str | Path,
    probe: str | Path | None = None,
    command: str = "",
    title: str | None = None,
    pdf: bool = True,
    pdf_engine: str = "auto",
    bench: str | Path | None = None,
    overwrite: bool = False,
    log: Callable[[str], None] | None = None,
) -> Report:
    """Collect results and write the whole report folder.

    Args:
        results_dirs: ``results/<sweep>/`` folders.
        out: the report folder (created).
        probe: optional teacher probe JSON (per-layer phone/speaker accuracy, CKA).
        command: the exact command line, for the provenance block.
        title: page title (default: the report folder's name).
        pdf: write ``report.pdf``.
        pdf_engine: ``auto`` (WeasyPrint, else matplotlib), ``weasyprint`` or ``matplotlib``.
        bench: optional ``harness bench stacking`` JSON: the speed table, figure and findings.
        overwrite: also replace a committed report (:func:`harness.report.output.refuse_committed`).
        log: a line per part done (collect, tables, figures, HTML, PDF) with the ETA; None: silent.

    Raises:
        FileNotFoundError: a results folder (or the probe or bench file) does not exist or is empty.
        ConfigError: the probe or bench file is not what it should be.
        UserError: ``out`` holds a report whose files git tracks, and not ``overwrite``.
    """
    out = Path(out)
    refuse_committed(out, overwrite)
    say = parts_log(5 if pdf else 4, log)

    results = collect(list(results_dirs), probe=probe)
    say(f"collected {len(results.runs)} runs")
    bench_data = read_bench(bench) if bench else None
    out.mkdir(parents=True, exist_ok=True)
    aside = set_aside(out, OWNED, prefix=".previous-report-")  # no older figure left as if current
    try:
        report = _render(results, bench_data, out, probe, command, title, pdf, pdf_engine, say)
    except BaseException:
        restore(aside, out, OWNED)
        raise
    shutil.rmtree(aside, ignore_errors=True)
    return report


def _render(results, bench_data, out: Path, probe, command: str, title, pdf: bool, pdf_engine: str,
            say: Callable[[str], None]) -> Report:
    tables = build_tables(results)
    records, stats_path = _stacking_stats(results, tables, out)
    for t in tables:
        t.write(out / "tables")
    runs_frame(results).to_csv(out / RUN_TABLE, index=False)
    say(f"{len(tables)} tables, {len(records)} statistics")
    if results.runs.empty:  # ASKD studies only: no stacking figure to draw or to list as missing
        figs, skipped = [], {}
        if probe:
            made = F.probe_profile(results, out / "figures")
            figs, skipped = ([made], {}) if isinstance(made, F.Figure) else ([], {"teacher_probes": made})
    else:
        figs, skipped = _figures(results, tables, out / "figures", records, bench_data)
    askd = askd_sections(results, out)
    say(f"{len(figs)} figures")
    items = findings(tables, int(results.runs["ok"].sum()), len(results.runs),
                     askd=[(a["table"], a["latency_ratio"], a["verdicts"]) for a in askd], records=records,
                     bench=bench_data, loaded=loaded_runs(results))
    prov = provenance(results, command or "(called from Python)")
    if bench_data:
        prov.append(("Bench file", bench_data["path"]))

    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"]))
    runs_view = results.runs[["sweep", "run_id", "variant", "arm", "seed", "status", "train_seconds", "superb_score"]]
    page = env.get_template("report.html.j2").render(
        title=title or out.name, css=(TEMPLATES / "report.css").read_text(), findings=items, provenance=prov,
        about=about_items(results) if not results.runs.empty else [],
        paper=PAPER, paper_rows=paper_rows(results, records, bench_data) if not results.runs.empty else [],
        bench=bench_rows(bench_data) if bench_data else [], bench_path=bench_data["path"] if bench_data else "",
        comparisons=_comparison_rows(records, tables, results.tasks),
        tables=tables, skipped=skipped,
        figures=[_fig_view(f) for f in figs],
        askd=[{**a, "figure": _fig_view(a["figure"]) if isinstance(a["figure"], F.Figure) else None}
              for a in askd],
        problems=_problem_rows(results), runs=runs_view.to_dict("records"),
    )
    html_path = out / "index.html"
    html_path.write_text(page)
    say(str(html_path))

    askd_figs = [a["figure"] for a in askd if isinstance(a["figure"], F.Figure)]
    skipped.update({a["fid"]: a["figure"] for a in askd if isinstance(a["figure"], str)})
    report = Report(out=out, html=html_path, pdf=None, pdf_engine="none", pdf_pages=0,
                    tables=tables + [a["table"] for a in askd], figures=figs + askd_figs,
                    skipped_figures=skipped, findings=" ".join(items), problems=results.problems,
                    stats=stats_path, records=records)
    if pdf:
        _write_pdf(report, page, out, prov, _problem_rows(results), pdf_engine)
        say("report.pdf")
    return report
