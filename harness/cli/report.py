"""``harness report``: HTML + PDF report from results folders (:mod:`harness.report`).

:mod:`harness.report.render` is imported inside the command: it pulls in matplotlib.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from harness.cli.common import Subparsers, command


def _command_line(args: argparse.Namespace) -> str:
    """The command the report says it was made by: the exact one from a shell, else the
    equivalent one (called as ``main([...])`` from Python)."""
    argv0 = Path(sys.argv[0])
    if (argv0.name == "harness" or argv0.parts[-2:] == ("cli", "__main__.py")) and "report" in sys.argv[1:]:
        words = sys.argv[1:]
    else:
        words = ["report", *args.results, "--out", args.out]
        words += ["--probe", args.probe] if args.probe else []
        words += ["--bench", args.bench] if args.bench else []
        words += ["--title", args.title] if args.title else []
        words += ["--no-pdf"] if args.no_pdf else []
        words += ["--pdf-engine", args.pdf_engine] if args.pdf_engine != "auto" else []
        words += ["--overwrite"] if args.overwrite else []
    return "harness " + " ".join(shlex.quote(w) for w in words)


def cmd_report(args: argparse.Namespace) -> int:
    from harness.report.render import render_report

    rep = render_report(
        args.results, Path(args.out), probe=args.probe, command=_command_line(args), title=args.title,
        pdf=not args.no_pdf, pdf_engine=args.pdf_engine, bench=args.bench, overwrite=args.overwrite,
        log=lambda line: print(line, file=sys.stderr, flush=True),
    )
    failed = sum(p.kind in ("failed", "incomplete", "unreadable") for p in rep.problems)
    print(f"report: {rep.html}")
    if rep.pdf:
        print(f"pdf:    {rep.pdf} ({rep.pdf_pages} pages, {rep.pdf_engine})")
    if rep.stats:
        print(f"stats:  {rep.stats} ({len(rep.records)} records)")
    print(f"tables: {len(rep.tables)}, figures: {len(rep.figures)}"
          + (f" (not drawn: {', '.join(rep.skipped_figures)})" if rep.skipped_figures else ""))
    if failed:
        print(f"note:   {failed} failed / incomplete / unreadable run(s), listed in the report")
    return 0


def add_parser(sub: Subparsers) -> None:
    p = command(sub, "report", cmd_report, "HTML + PDF report (tables, frontier, curves, CKA) from results folders", [
        "harness report results/main --out reports/main",
        "harness report results/main results/ablation_w --probe results/teacher/probe.json "
        "--out reports/embedded-run",
        "harness report results/main results/askd --out reports/embedded-run   # with the ASKD study",
        "harness report results/main --bench results/bench/stacking.json --out reports/main   # clean speed ratios",
        "harness report results/embedded-main --out reports/embedded --overwrite   # refresh the committed reference",
    ])
    p.description = (
        "Write the report folder --out: index.html, report.pdf, stats.json, tables/, figures/ and run_table.csv "
        "(one row per run; a sweep folder's runs.csv is its own table, one row per run x task). A folder whose "
        "report files are tracked by git (`git ls-files` in that folder: the reference report reports/embedded/) "
        "is a committed result and is refused unless --overwrite is given; a folder in no repository, or on a "
        "machine without git, counts as not committed.")
    p.add_argument("results", nargs="+", metavar="RESULTS_DIR",
                   help="results/<sweep>/ folders (one folder per run), ASKD study folders (with askd.json), "
                   "or results/ itself")
    p.add_argument("--out", required=True, help="report folder, e.g. reports/NAME")
    p.add_argument("--probe", help="teacher probe JSON (per-layer phone/speaker accuracy, layer CKA; default: none)")
    p.add_argument("--bench", help="`harness bench stacking` JSON: speed table, theory-vs-measured figure and "
                   "speed findings (sweep trials run two at a time, so their times are not clean ratios; "
                   "default: none)")
    p.add_argument("--title", help="page title (default: the --out folder's name)")
    p.add_argument("--no-pdf", action="store_true", help="skip report.pdf (default: write it)")
    p.add_argument("--pdf-engine", choices=("auto", "weasyprint", "matplotlib"), default="auto",
                   help="how report.pdf is made: auto = WeasyPrint, else matplotlib (default: auto)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a committed report: one whose files in --out git tracks (default: refuse it)")
