"""``harness report``: fabricated result folders -> tables, figures, index.html, report.pdf.

One report is rendered per module (through the CLI) and shared by the assertions; the
browser and PDF checks use Debian's ``chromium`` and ``pdftoppm`` (installed here when
missing and possible, skipped with the reason otherwise).
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pandas as pd
import pytest

from harness.cli import main
from harness.report.collect import collect, varying_keys
from harness.report.figures import pareto_front
from harness.report.collect import AskdStudy
from scipy import stats as st

from harness import stats
from harness.report.findings import askd_findings, stats_findings
from harness.report.render import render_report
from harness.report.askd_tables import build_askd_table
from harness.report.tables import Cell, Column, Table, _bold_best, latex_escape
from tests.support import fabricate

# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """Main sweep (5 variants x 3 seeds, top seed 2 failed, bottom seed 1 without
    analysis.json, one run with a truncated summary.json), a w ablation, a probe file and an
    ASKD study (kd seed 2 failed, askd seed 3 never finished), rendered once through
    ``harness report``."""
    root = tmp_path_factory.mktemp("report")
    main_dir = fabricate.fabricate_main(root / "results", heldout=True)
    broken = fabricate.fabricate_broken(main_dir)
    abl = fabricate.fabricate_ablation(root / "results")  # old format: no held-out block, no arm
    askd = fabricate.fabricate_askd(root / "results")
    probe = fabricate.fabricate_probe(root / "probe.json")
    bench = fabricate.fabricate_bench(root / "bench.json")
    out = root / "reports" / "fab"
    rc = main(["report", str(main_dir), str(abl), str(askd), "--probe", str(probe), "--bench", str(bench),
               "--out", str(out)])
    assert rc == 0
    return {"root": root, "main": main_dir, "abl": abl, "askd": askd, "out": out, "broken": broken, "probe": probe,
            "bench": bench}


def _apt_install(binary: str, package: str) -> str:
    """Path of ``binary``, installing Debian's ``package`` when missing (root + apt only)."""
    found = shutil.which(binary)
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip(f"{binary} is not installed and cannot be installed here (needs root and apt-get: "
                    f"apt-get install -y {package})")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        subprocess.run(["apt-get", "update", "-q"], check=True, capture_output=True, timeout=600, env=env)
        subprocess.run(["apt-get", "install", "-y", "-q", package], check=True, capture_output=True,
                       timeout=900, env=env)
    except (subprocess.SubprocessError, OSError) as err:
        pytest.skip(f"could not install {package} with apt-get ({type(err).__name__}); install it to run this test")
    found = shutil.which(binary)
    if not found:
        pytest.skip(f"apt-get installed {package} but {binary} is still not on PATH")
    return found


@pytest.fixture(scope="module")
def chromium():
    return _apt_install("chromium", "chromium")


@pytest.fixture(scope="module")
def pdftoppm():
    return _apt_install("pdftoppm", "poppler-utils")


def _chromium(binary: str, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    profile.mkdir(parents=True)
    cmd = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


# ----------------------------------------------------------------------------- files


def test_report_files_written(rendered):
    out = rendered["out"]
    assert (out / "index.html").stat().st_size > 10_000
    assert (out / "report.pdf").read_bytes()[:5] == b"%PDF-"
    tables = {p.stem for p in (out / "tables").iterdir()}
    assert {"table-main", "table-ablation-ablation-w"} <= tables
    for stem in tables:
        for ext in ("md", "tex", "csv"):
            assert (out / "tables" / f"{stem}.{ext}").stat().st_size > 0
    figs = {p.stem for p in (out / "figures").glob("*.png")}
    assert {"frontier", "loss_curves", "cka_teacher", "cka_self", "teacher_probes", "layer_weights",
            "heldout_curves", "time_to_quality", "differences", "differences-none_cm", "speedups",
            "quality-ablation-ablation-w"} <= figs
    assert "frontier-ablation-ablation-w" not in figs  # loss.w changes no compute: quality only
    for stem in figs:
        assert (out / "figures" / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        svg = ElementTree.parse(out / "figures" / f"{stem}.svg").getroot()
        assert svg.tag.endswith("svg")


def test_main_table_matches_summaries(rendered):
    """The CSV's means are the means of the summary.json values of the finished runs."""
    df = pd.read_csv(rendered["out"] / "tables" / "table-main.csv").set_index("variant")
    for variant in fabricate.VARIANTS:
        summaries = [json.loads((d / "summary.json").read_text())
                     for d in rendered["main"].glob(f"variant={variant}-s*") if d != rendered["broken"]]
        ok = [s for s in summaries if s["status"] == "ok"]
        assert df.loc[variant, "superb_score_mean"] == pytest.approx(np.mean([s["superb_score"] for s in ok]))
        assert df.loc[variant, "train_seconds_mean"] == pytest.approx(np.mean([s["train_seconds"] for s in ok]))
        ks = [s["tasks"]["ks"]["value"] for s in ok]
        assert df.loc[variant, "task.ks_std"] == pytest.approx(np.std(ks, ddof=1))
        half = st.t.ppf(0.975, len(ks) - 1) * np.std(ks, ddof=1) / math.sqrt(len(ks))
        assert df.loc[variant, "task.ks_ci_high"] == pytest.approx(np.mean(ks) + half)
        ho = [s["heldout"]["output_loss"] for s in ok]
        assert df.loc[variant, "heldout.output_loss_mean"] == pytest.approx(np.mean(ho))
    assert df.loc["top", "runs"] == "2/3"  # the failed run counts as started, not finished
    assert df.loc["middle", "runs"] == "3/4"  # the unreadable run too
    assert df.loc["none_cm", "runs"] == "3/3"  # the compute-matched none: its own row
    assert df.loc["none_cm", "heldout.output_loss_n"] == 3
    none = df.loc["none", "train_seconds_mean"]
    assert df.loc["interleaved", "speedup_mean"] == pytest.approx(
        np.mean([none / json.loads((d / "summary.json").read_text())["train_seconds"]
                 for d in rendered["main"].glob("variant=interleaved-s*")]))


def test_markdown_and_latex_cells_carry_cis_and_no_ranking(rendered):
    md = (rendered["out"] / "tables" / "table-main.md").read_text()
    df = pd.read_csv(rendered["out"] / "tables" / "table-main.csv").set_index("variant")
    header = next(line for line in md.splitlines() if line.startswith("| variant"))
    cols = [c.strip() for c in header.strip("|").split("|")]
    assert "PR PER (%) ↓" in cols and "KS acc (%) ↑" in cols and "SUPERB ↑" in cols
    assert "Held-out loss ↓" in cols and "Phone probe (%) ↑" in cols
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip().strip("|").split("|")]
            for line in md.splitlines() if line.startswith("| ") and not line.startswith("| variant")}
    assert "none_cm" in rows
    cell = rows["interleaved"][cols.index("Held-out loss ↓")]
    m, h = (float(x.rstrip("†")) for x in cell.split(" ± "))
    assert m == pytest.approx(df.loc["interleaved", "heldout.output_loss_mean"], abs=5e-4)
    assert h == pytest.approx(df.loc["interleaved", "heldout.output_loss_ci_high"] - m, abs=1e-3)
    assert not any("**" in c for r in rows.values() for c in r)  # nothing bolded as "best"
    # bottom is clearly worse than none on held-out loss (resolved): marked; interleaved is not.
    assert rows["bottom"][cols.index("Held-out loss ↓")].split(" ")[0].endswith("†")
    assert not rows["interleaved"][cols.index("Held-out loss ↓")].split(" ")[0].endswith("†")
    assert rows["top"][cols.index("Held-out loss ↓")] .count("±") == 1  # 2 seeds: still an interval
    assert "95% t-interval" in md
    tex = (rendered["out"] / "tables" / "table-main.tex").read_text()
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex
    assert "$\\pm$" in tex and "$\\downarrow$" in tex
    abl = pd.read_csv(rendered["out"] / "tables" / "table-ablation-ablation-w.csv")
    assert sorted(abl["loss.w"]) == [0.0, 0.25, 0.5, 1.0]
    assert "heldout.output_loss_mean" not in abl  # old-format runs: no held-out columns


def test_failed_and_broken_runs_listed(rendered):
    html = (rendered["out"] / "index.html").read_text()
    assert "variant=top-s2" in html and "CUDA out of memory (fabricated)" in html
    assert "summary.json" in html and "not valid JSON" in html and str(rendered["broken"]) in html
    assert "analysis.json in" in html and "variant=bottom-s1" in html  # missing optional file, listed
    assert not (rendered["out"] / "runs.csv").exists()  # that name is the sweep folder's (one row per task)
    runs = pd.read_csv(rendered["out"] / "run_table.csv")
    assert len(runs) == 5 * 3 + 3 + 1 + 4 * 2  # every run folder (none_cm included), none dropped
    assert list(runs.columns[:9]) == ["sweep", "run_id", "variant", "seed", "status", "train_seconds",
                                      "student_params", "superb_score", "run_dir"]  # naming unchanged
    failed = runs[runs["run_id"] == "variant=top-s2"].iloc[0]
    assert failed["status"].startswith("failed") and math.isnan(failed["superb_score"])


def test_html_self_contained(rendered):
    html = (rendered["out"] / "index.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "@import" not in html and "url(http" not in html
    imgs = re.findall(r'<img src="data:image/png;base64,([^"]+)"', html)
    assert len(imgs) >= 6
    assert base64.b64decode(imgs[0])[:8] == b"\x89PNG\r\n\x1a\n"
    # Provenance block.
    for label in ("Command", "Report code commit", "Profile", "Hardware", "Teacher", "Seeds", "Total compute"):
        assert f"<dt>{label}" in html
    assert "harness report " in html and "--probe" in html
    assert "SUPERB scoring" in html  # superb.json's seconds count into the total compute


def _findings_text(html: str) -> str:
    return re.search(r'<section id="findings">.*?<ul class="findings">(.*?)</ul>', html, re.S).group(1)


def test_findings_come_from_stats(rendered):
    html = (rendered["out"] / "index.html").read_text()
    text = _findings_text(html).split("In the ASKD study")[0]  # the stacking findings
    assert "25 of 27 runs finished" in text
    recs = stats.read_stats(rendered["out"] / "stats.json")
    bottom = next(r for r in recs if r["metric"] == "heldout.output_loss" and r["arms"] == ["bottom", "none"])
    assert bottom["resolved"]
    assert (f"bottom&#39;s held-out output loss is {bottom['estimate']:.3f} higher than none&#39;s "
            f"(95% CI [{bottom['ci_low']:.3f}, {bottom['ci_high']:.3f}]") in text
    assert "fastest" not in text and "best" not in text.replace("(best layer)", "")
    assert "measured by `harness bench stacking`" in text.replace("&#96;", "`")  # speed from the bench


def test_stats_json_written_and_valid(rendered):
    recs = stats.read_stats(rendered["out"] / "stats.json")
    assert recs and all(stats.check_record(r) == [] for r in recs)
    pairs = {(r["metric"], tuple(r["arms"])) for r in recs if r["design"] == "paired"}
    for m in ("heldout.output_loss", "heldout.probe_best", "superb_score", "task.pr", "train_seconds",
              "train_cpu_seconds", "ttq.time", "ttq.cpu_time"):
        assert (m, ("interleaved", "none")) in pairs and (m, ("interleaved", "none_cm")) in pairs, m
    assert ("heldout.output_loss", ("top", "interleaved")) in pairs
    top = next(r for r in recs if r["metric"] == "heldout.output_loss" and r["arms"] == ["top", "none"])
    assert top["n"] == 2 and {"arm": "top", "seed": 2, "why": "run failed: RuntimeError: CUDA out of memory "
                              "(fabricated)"} in top["excluded"]
    ttq = next(r for r in recs if r["metric"] == "ttq.time" and r["arms"] == ["bottom"])
    assert ttq["estimate"] is None and all(x["why"].startswith("never reached") for x in ttq["excluded"])
    abl = [r for r in recs if r["sweep"] == "ablation_w" and r["design"] == "paired"]
    assert abl and all(r["arms"][1] == "w=0.5" for r in abl)  # against the default setting


def _rec(metric, arms, est, lo, hi, n=3, design="paired", sweep="s"):
    res = lo is not None and (lo > 0 or hi < 0)
    return {"sweep": sweep, "setting": None, "metric": metric, "direction": "lower", "arms": arms, "design": design,
            "level": 0.95, "n": n, "estimate": est, "ci_low": lo, "ci_high": hi,
            "half_width": None if lo is None else (hi - lo) / 2, "p": 0.5, "resolved": res, "mean_second": 1.0,
            "relative": est, "sd": 0.01, "seeds": list(range(n)), "excluded": [], "note": None}


def test_findings_from_a_fabricated_stats_file(tmp_path):
    """An unresolved difference is never stated as a ranking; a resolved one is stated with its CI."""
    recs = [_rec("heldout.output_loss", ["interleaved", "none"], -0.012, -0.020, -0.004),
            _rec("heldout.output_loss", ["top", "none"], -0.030, -0.070, 0.010),
            _rec("superb_score", ["interleaved", "none"], 3.0, -5.0, 11.0),
            _rec("superb_score", ["w=0", "w=0.5"], 12.0, None, None, n=1, sweep="abl"),
            _rec("superb_score", ["w=0"], 512.0, None, None, n=1, design="mean", sweep="abl"),
            _rec("superb_score", ["w=0.5"], 500.0, None, None, n=1, design="mean", sweep="abl")]
    stats.write_stats(tmp_path / "stats.json", recs)
    recs = stats.read_stats(tmp_path / "stats.json")
    cols = [Column("heldout.output_loss", "Held-out loss ↓", "lower", 3), Column("superb_score", "SUPERB ↑", "higher", 1)]
    main_t = Table("t", "T", "", "variant", cols, ["none", "top", "interleaved"], [[Cell()] * 2] * 3, sweep="s")
    abl_t = Table("a", "A", "", "loss.w", cols[1:], ["w=0", "w=0.5"], [[Cell()]] * 2, kind="ablation", sweep="abl")
    items = stats_findings([main_t, abl_t], recs)
    text = " ".join(items)
    assert ("interleaved's held-out output loss is 0.012 lower than none's (95% CI [-0.020, -0.004]"
            in text)
    assert "top vs none, held-out output loss: not resolved: estimate -0.030, 95% CI [-0.070, 0.010]" in text
    assert "interleaved vs none, SUPERB score: not resolved: estimate 3.0, 95% CI [-5.0, 11.0]" in text
    for clause in text.split(";"):
        if "not resolved" in clause:
            assert not re.search(r"\b(lower|higher|better|worse|best|wins?|faster|slower|than)\b",
                                 clause.split("not resolved")[1]), clause
    assert not re.search(r"\b(best|wins?|fastest|worst)\b", text)
    abl = next(i for i in items if "abl" in i)
    assert "single-seed indication, not ranked" in abl and "w=0: 512.0, w=0.5: 500.0" in abl
    assert "higher" not in abl and "lower" not in abl


# ----------------------------------------------------------------------------- browser / pdf


def test_chromium_screenshot_and_dom(rendered, chromium, tmp_path):
    from matplotlib.image import imread

    index = (rendered["out"] / "index.html").resolve()
    shot = tmp_path / "shot.png"
    res = _chromium(chromium, tmp_path, f"--screenshot={shot}", "--window-size=1280,2000", index.as_uri())
    assert shot.is_file(), res.stderr[-2000:]
    img = imread(shot)
    assert img.shape[0] >= 1000 and img.shape[1] >= 1000
    gray = img[..., :3].mean(axis=2)
    assert gray.std() > 0.05, "screenshot is blank"
    assert (gray < 0.5).mean() > 0.01  # some dark ink (text, tables, plots)
    dom = _chromium(chromium, tmp_path, "--dump-dom", index.as_uri()).stdout
    assert 'id="table-main"' in dom and 'id="table-ablation-ablation-w"' in dom and 'id="table-problems"' in dom
    assert "Speedup vs none" in dom and "SUPERB" in dom and "interleaved" in dom


def test_pdf_pages(rendered, pdftoppm, tmp_path):
    from matplotlib.image import imread

    pdf = rendered["out"] / "report.pdf"
    subprocess.run([pdftoppm, "-r", "30", "-png", str(pdf), str(tmp_path / "page")], check=True, timeout=120)
    pages = sorted(tmp_path.glob("page-*.png"))
    assert 4 <= len(pages) <= 30  # the held-out, time-to-quality, speed and difference figures added pages
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True)
    if info.returncode == 0:
        assert int(re.search(r"Pages:\s+(\d+)", info.stdout).group(1)) == len(pages)
    for p in pages:
        assert imread(p)[..., :3].std() > 0.02, f"{p.name} is blank"


# ----------------------------------------------------------------------------- tolerance, errors, units


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nope" in err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no run folders" in err
    fabricate.write_run(tmp_path / "res", "none", 0, sweep="s", analysis=False, superb=False)
    (tmp_path / "bad.json").write_text("{not json")
    assert main(["report", str(tmp_path / "res"), "--probe", str(tmp_path / "bad.json"),
                 "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "bad.json" in err


def test_matplotlib_pdf_fallback_and_missing_optional(tmp_path):
    """One sweep without superb.json/analysis.json/probe: figures that need them are listed
    as not drawn, and the PdfPages fallback writes a PDF."""
    res = tmp_path / "results" / "w"
    for w in (0.0, 1.0):
        fabricate.write_run(res, "interleaved", 0, sweep="w", overrides={"loss": {"w": w}},
                            analysis=False, superb=False)
    rep = render_report([res], tmp_path / "out", pdf_engine="matplotlib")
    assert rep.pdf_engine == "matplotlib" and rep.pdf_pages >= 3
    assert rep.pdf.read_bytes()[:5] == b"%PDF-"
    assert {"cka_teacher", "cka_self", "layer_weights", "teacher_probes"} <= set(rep.skipped_figures)
    html = rep.html.read_text()
    assert "Not drawn (no data)" in html and "no teacher probe file" in html
    assert rep.tables[0].kind == "ablation" and rep.tables[0].index == ["w=0", "w=1"]


def test_collect_storage_root(tmp_path):
    fabricate.write_run(tmp_path / "results" / "a", "none", 0, sweep="a", analysis=False, superb=False)
    fabricate.write_run(tmp_path / "results" / "b", "top", 0, sweep="b", analysis=False, superb=False)
    assert collect([tmp_path / "results"]).sweeps() == ["a", "b"]


def test_collect_tolerates_bad_metrics_lines(tmp_path):
    run = fabricate.write_run(tmp_path / "s", "none", 0, sweep="s")
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write("{truncated\n")
    r = collect([tmp_path / "s"])
    assert any(p.kind == "unreadable" and "1 malformed" in p.detail for p in r.problems)
    assert len(r.curves) > 10


def test_varying_keys_fold_variant_dependents():
    runs = pd.DataFrame({
        "variant": ["none", "top", "none", "top"],
        "cfg.stacking.stages": [1, 4, 1, 4],  # follows the variant: not an ablation key
        "cfg.loss.w": [0.5, 0.5, 0.5, 0.5],
        "cfg.train.seed": [0, 0, 1, 1],
    })
    assert varying_keys(runs) == []
    runs["cfg.loss.w"] = [0.0, 0.0, 1.0, 1.0]
    assert varying_keys(runs) == ["loss.w"]


def test_pareto_front():
    pts = [(10.0, 5.0), (5.0, 4.0), (6.0, 3.0), (12.0, 5.0), (1.0, 1.0)]
    # (6,3) is beaten by (5,4); (12,5) by (10,5).
    assert pareto_front(pts) == [4, 1, 0]


def test_bold_best_ties_and_direction():
    cols = [Column("a", "a ↓", "lower", 1), Column("b", "b", None, 1)]
    cells = [[Cell(1.04, 0.1, 2), Cell(5, 0, 2)], [Cell(0.96, 0.1, 2), Cell(1, 0, 2)], [Cell(2.0, 0.1, 2), Cell()]]
    _bold_best(cols, cells)
    assert [r[0].bold for r in cells] == [True, True, False]  # 1.0 and 1.0 at the shown precision
    assert not any(r[1].bold for r in cells)  # unranked column


def test_latex_escape():
    assert latex_escape("loss_w 50% & #1") == r"loss\_w 50\% \& \#1"


def test_collect_reads_distill_and_superb_layouts(tmp_path):
    """summary.json as distill/evaluate write it: started/ended, embedded config, a failed
    task; superb.json with its {"tasks": ...} wrapper; no config.yaml."""
    run = fabricate.write_run(tmp_path / "s", "top", 0, sweep="s")
    summary = json.loads((run / "summary.json").read_text())
    import yaml

    summary["config"] = yaml.safe_load((run / "config.yaml").read_text())
    (run / "config.yaml").unlink()
    summary["tasks"]["asr"] = {"metric": "wer", "direction": "lower", "value": None, "n": 0,
                               "status": "failed: RuntimeError: boom"}
    (run / "summary.json").write_text(json.dumps(summary))
    superb = json.loads((run / "superb.json").read_text())["tasks"]
    (run / "superb.json").write_text(json.dumps(superb))  # the bare {task: {...}} layout
    r = collect([tmp_path / "s"])
    row = r.runs.iloc[0]
    assert row["ok"] and row["start_time"] == summary["started"] and row["cfg.stacking.variant"] == "top"
    assert any(p.kind == "task_failed" and "asr" in p.detail for p in r.problems)
    assert math.isnan(r.tasks.set_index("task").loc["asr", "value"])
    assert set(r.layer_weights[row["key"]]) == set(fabricate.TASKS)


def test_probe_and_analysis_nested_layouts(tmp_path):
    """Nested spellings of the probe / analysis files are read (keys flattened)."""
    from harness.report.figures import Figure, cka_heatmaps, probe_profile

    run = fabricate.write_run(tmp_path / "s", "none", 0, sweep="s", superb=False)
    a = json.loads((run / "analysis.json").read_text())
    (run / "analysis.json").write_text(json.dumps({"cka": {"student_teacher": a["cka_teacher"]}}))
    (tmp_path / "probe.json").write_text(json.dumps({"probes": {"phone_accuracy": [0.2, 0.5, 0.4]}}))
    r = collect([tmp_path / "s"], probe=tmp_path / "probe.json")
    groups = pd.Series({r.runs["key"][0]: "none"})
    assert isinstance(cka_heatmaps(r, groups, tmp_path / "f", "cka_teacher", "c"), Figure)
    fig = probe_profile(r, tmp_path / "f")
    assert isinstance(fig, Figure) and fig.png.is_file()


# ----------------------------------------------------------------------------- ASKD (ASR track)


def _askd_summaries(study_dir: Path) -> dict[str, list[dict]]:
    """The fabricated runs' summary.json contents per objective (finished runs only)."""
    out: dict[str, list[dict]] = {}
    for p in sorted(study_dir.glob("objective=*/summary.json")):
        s = json.loads(p.read_text())
        if s["status"] == "ok":
            out.setdefault(s["objective"], []).append(s)
    return out


def test_askd_table_matches_runs(rendered):
    """Each ASKD table cell is the mean (std) of the finished runs' summary.json values."""
    df = pd.read_csv(rendered["out"] / "tables" / "table-askd.csv").set_index("objective")
    assert list(df.index) == ["teacher", "ce", "kd", "askd"]
    for obj, runs in _askd_summaries(rendered["askd"]).items():
        wers = [s["wer"]["greedy"]["wer"] for s in runs]
        assert df.loc[obj, "wer_mean"] == pytest.approx(np.mean(wers))
        assert df.loc[obj, "wer_std"] == pytest.approx(np.std(wers, ddof=1))
        assert df.loc[obj, "wer_n"] == len(runs)
        assert df.loc[obj, "wer_beam_mean"] == pytest.approx(np.mean([s["wer"]["beam"]["wer"] for s in runs]))
        assert df.loc[obj, "wer_rel_mean"] == pytest.approx(np.mean(
            [s["wer"]["greedy"]["wer"] / s["teacher_wer"]["greedy"]["wer"] for s in runs]))
        assert df.loc[obj, "speedup_mean"] == pytest.approx(np.mean([s["speedup"] for s in runs]))
        assert df.loc[obj, "params_mean"] == runs[0]["student_params"]["total"]
    assert df.loc["teacher", "wer_mean"] == fabricate.ASKD_TEACHER_WER and df.loc["teacher", "speedup_mean"] == 1.0
    assert df.loc["kd", "seeds"] == "2/3"  # the failed run counts as started
    assert df.loc["askd", "seeds"] == "3/4"  # and so does the run that never finished
    md = (rendered["out"] / "tables" / "table-askd.md").read_text()
    best = df.drop("teacher")["wer_mean"].idxmin()
    # lowest WER: the teacher (fabricated so); best WER / teacher and speedup bold, direction-aware
    teacher_line = next(ln for ln in md.splitlines() if ln.startswith("| teacher"))
    assert "**18.0**" in teacher_line and "**1.00**" in teacher_line
    fastest = df["speedup_mean"].idxmax()
    line = next(ln for ln in md.splitlines() if f"| {fastest} |" in ln)
    assert f"**{df.loc[fastest, 'speedup_mean']:.2f} ± " in line
    assert best == "askd"
    tex = (rendered["out"] / "tables" / "table-askd.tex").read_text()
    assert "\\toprule" in tex and "WER greedy (\\%) $\\downarrow$" in tex


def test_askd_section_figure_and_provenance(rendered):
    out = rendered["out"]
    html = (out / "index.html").read_text()
    assert '<section id="askd">' in html and "ASKD (ASR track)" in html and 'id="table-askd"' in html
    assert 'id="table-main"' in html  # both studies in one report
    fig = re.search(r'<figure id="fig-askd_wer_speed">\s*<img src="data:image/png;base64,([^"]+)"', html)
    assert fig and base64.b64decode(fig.group(1))[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "figures" / "askd_wer_speed.png").stat().st_size > 5000
    assert ElementTree.parse(out / "figures" / "askd_wer_speed.svg").getroot().tag.endswith("svg")
    assert "<dt>ASKD study (askd)</dt>" in html and "<dt>ASKD teacher (askd)</dt>" in html
    where = re.search(r"<dt>ASKD study \(askd\)</dt><dd>(.*?)</dd>", html).group(1)
    assert "machine: " in where and " CPUs" in where and "study wall-clock 15 min 12 s" in where  # askd.json's
    assert "2.050 M params, 4 decoder layers, trained 120 s by the study" in html
    text = _findings_text(html)
    assert "25 of 27 runs finished" in text and "In the ASKD study askd (ASR track), 8 of 10 student runs" in text


def test_askd_failed_and_missing_runs_shown(rendered):
    html = (rendered["out"] / "index.html").read_text()
    assert "objective=kd-s2" in html and "decoder diverged (fabricated)" in html
    assert "objective=askd-s3" in html and "no summary.json (never run, or interrupted)" in html
    runs = re.search(r'<table id="table-askd-runs".*?</table>', html, re.S).group(0)
    row = re.search(r"<tr class=\"bad\"><td class=\"path\">objective=kd-s2</td>.*?</tr>", runs, re.S).group(0)
    assert row.count(">n/a<") == 4  # WER greedy, beam, speedup, train seconds
    assert runs.count("<tr") == 1 + 1 + 10  # header, teacher, every started run


def test_askd_only_report_renders(tmp_path):
    """A report of one ASKD study alone (no stacking runs); an objective whose every run
    failed is a row of n/a."""
    study = fabricate.fabricate_askd(tmp_path / "results", seeds=(0, 1), failed=("ce", 0), missing=("ce", 1))
    rep = render_report([study], tmp_path / "out", command="harness report x")
    html = rep.html.read_text()
    assert [t.id for t in rep.tables] == ["table-askd"] and [f.id for f in rep.figures] == ["askd_wer_speed"]
    assert '<section id="tables">' not in html and '<section id="runs">' not in html
    assert '<section id="askd">' in html and not rep.skipped_figures
    df = pd.read_csv(tmp_path / "out" / "tables" / "table-askd.csv").set_index("objective")
    assert df.loc["ce", "seeds"] == "0/2" and df.loc["ce", "wer_n"] == 0 and math.isnan(df.loc["ce", "wer_mean"])
    md = (tmp_path / "out" / "tables" / "table-askd.md").read_text()
    assert "| ce | n/a | n/a | n/a | n/a | n/a | 0/2 |" in md
    assert "runs finished" not in rep.findings.split("ASKD")[0]  # no stacking sentence
    assert rep.pdf_pages >= 1 and rep.pdf.read_bytes()[:5] == b"%PDF-"


def test_askd_in_storage_root(tmp_path):
    """``results/`` holding a stacking sweep and an ASKD study: both are read."""
    fabricate.write_run(tmp_path / "results" / "a", "none", 0, sweep="a", analysis=False, superb=False)
    fabricate.fabricate_askd(tmp_path / "results", seeds=(0,), failed=None, missing=None)
    r = collect([tmp_path / "results"])
    assert r.sweeps() == ["a"] and [s.name for s in r.askd] == ["askd"]
    assert not any("objective=" in k for k in r.runs["key"])  # ASR runs are not stacking runs


def _study(by_obj: dict, teacher_wer: float = 0.2) -> AskdStudy:
    rows = [{"model": "teacher", "objective": "teacher", "status": "ok"}]
    for obj, m in by_obj.items():
        rows += [{"model": f"{obj}-s{i}", "objective": obj, "status": "ok"} for i in range(m["runs"])]
    data = {"study": "s", "teacher": {"wer": teacher_wer, "wer_rel": 1.0, "speedup": 1.0, "params": 2e6, "n": 50},
            "rows": rows, "by_objective": by_obj, "latency_ratio": 4.0}
    return AskdStudy("s", "/x", data)


def _obj(wer, std, runs=3, speed=4.0):
    return {"runs": runs, "wer_mean": wer, "wer_std": std, "wer_rel_mean": wer / 0.2, "wer_beam_mean": None,
            "speedup_mean": speed, "speedup_std": 0.1, "params": 1e6}


def test_askd_findings_computed():
    """Findings rank nothing by a std rule: they quote the paired verdicts askd.json holds."""
    st = _study({"kd": _obj(0.25, 0.01), "askd": _obj(0.19, 0.01)})
    resolved = "askd - kd: -6.00 WER points, 95% CI [-8.00, -4.00] over 5 seeds: askd's WER is lower (resolved)"
    text = " ".join(askd_findings(build_askd_table(st), 4.0, [resolved]))
    assert "6 of 6 student runs finished" in text
    assert "The lowest mean greedy WER is askd's (19.0 ± 1.0 %), against the teacher's 20.0 %" in text
    assert resolved + "." in text and "one std" not in text
    assert "4.00x the teacher's speed on average" in text
    st = _study({"kd": _obj(0.25, 0.05), "askd": _obj(0.23, 0.01)})
    text = " ".join(askd_findings(build_askd_table(st), 4.0, ["askd - kd: -2.00 WER points, 95% CI [-5.00, +1.00] "
                                                             "over 5 seeds: not resolved"]))
    assert "The teacher has the lowest greedy WER (20.0 %); the lowest student mean is askd's" in text
    assert "not resolved" in text and "beats" not in text


def test_askd_stats_reach_stats_json_and_the_table(tmp_path):
    """A fabricated study's paired statistics become stats.json records (contract keys), and
    the table's WER cells show the 95% half-width."""
    from harness.asr.study import study_stats
    from harness.report.askd_tables import askd_records
    from harness.stats import check_record

    rows = [{"objective": o, "seed": s, "status": "ok", "wer": w + 0.01 * s}
            for o, w in (("ce", 0.30), ("kd", 0.28), ("askd", 0.27)) for s in range(5)]
    rows[-1]["wer"] += 0.004  # askd's seeds are not an exact shift of kd's
    st = _study({"ce": _obj(0.32, 0.016, 5), "kd": _obj(0.30, 0.016, 5), "askd": _obj(0.29, 0.016, 5)})
    st.data["stats"] = study_stats(rows, 0.2)
    st.data["rows"] += [{**r, "model": f"{r['objective']}-{r['seed']}"} for r in rows]
    recs = askd_records(st)
    assert recs and all(not check_record(r) for r in recs)
    pair = {tuple(r["arms"]): r for r in recs if r["design"] == "paired"}
    assert set(pair) >= {("askd", "kd"), ("askd", "ce"), ("kd", "ce"), ("askd", "teacher")}
    assert pair[("kd", "ce")]["resolved"] and pair[("kd", "ce")]["estimate"] == pytest.approx(-0.02)
    table = build_askd_table(st)
    kd = table.cells[table.index.index(next(i for i in table.index if i.startswith("student, kd")))][2]
    assert kd.half == pytest.approx(st.data["stats"]["wer"]["kd"]["half_width"])


def test_probe_figure_from_the_shipped_teacher_probe_file(tmp_path):
    """The real `harness teacher probe` layout (upstream/random_twin -> phone/speaker -> probe)."""
    from harness.report.collect import read_probe
    from harness.report.figures import probe_profile

    probe = read_probe(Path(__file__).parents[2] / "harness" / "assets" / "probe_embedded.json")

    class R:  # probe_profile reads only .probe
        pass

    r = R()
    r.probe = probe
    fig = probe_profile(r, tmp_path)
    assert not isinstance(fig, str), fig
    assert (tmp_path / "teacher_probes.png").stat().st_size > 10_000
    svg = (tmp_path / "teacher_probes.svg").read_text()
    assert "random-init twin" in svg and "upstream_phone_probe" not in svg
    assert "profile correlation" in fig.caption


def test_frontier_labels_do_not_overlap():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from harness.report.figures import separate_labels

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    pts = [(58.8, 520.7), (60.8, 514.3), (60.3, 509.3), (58.1, 466.0), (83.2, 437.9)]  # the crowded reference run
    ax.plot(*zip(*pts), "o")
    ax.set_xlim(54, 91)
    ax.set_ylim(330, 625)  # the axes of that figure (error bars widen them)
    labels = [ax.annotate(f"variant {i} (n=3)", p, xytext=(8, 6), textcoords="offset points", fontsize=9)
              for i, p in enumerate(pts)]
    fig.tight_layout()
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    before = [a.get_window_extent(renderer) for a in labels]
    assert any(before[i].overlaps(before[j]) for i in range(5) for j in range(i))  # the case being fixed
    separate_labels(fig, labels)
    boxes = [a.get_window_extent(renderer) for a in labels]
    assert not any(boxes[i].overlaps(boxes[j]) for i in range(5) for j in range(i))
    assert all(a.xyann[0] == 8 for a in labels)  # moved vertically only
    plt.close(fig)


def test_a_rerender_leaves_no_stale_figure_and_a_failed_one_loses_nothing(tmp_path, monkeypatch):
    """A figure or table that the new render does not make (an older report's) is gone after
    it; a render that fails puts the previous report back whole; user files stay."""
    from harness.report import render as R

    res = tmp_path / "results" / "w"
    for w in (0.0, 1.0):
        fabricate.write_run(res, "interleaved", 0, sweep="w", overrides={"loss": {"w": w}},
                            analysis=False, superb=False)
    out = tmp_path / "out"
    render_report([res], out, pdf=False)
    (out / "figures" / "frontier-ablation-gone.png").write_bytes(b"old")
    (out / "tables" / "table-gone.md").write_text("old")
    (out / "NOTES.md").write_text("mine")
    before = (out / "index.html").read_text()

    def boom(*args, **kwargs):
        raise RuntimeError("render failed")

    monkeypatch.setattr(R, "build_tables", boom)
    with pytest.raises(RuntimeError, match="render failed"):
        render_report([res], out, pdf=False)
    assert (out / "index.html").read_text() == before
    assert (out / "figures" / "frontier-ablation-gone.png").read_bytes() == b"old"
    assert not list(out.glob(".previous-report-*"))

    monkeypatch.undo()
    render_report([res], out, pdf=False)
    assert not (out / "figures" / "frontier-ablation-gone.png").exists()
    assert not (out / "tables" / "table-gone.md").exists()
    assert (out / "NOTES.md").read_text() == "mine" and (out / "index.html").is_file()
    assert not list(out.glob(".previous-report-*"))


def test_superb_json_missing_only_when_the_sweep_asked_for_tasks(tmp_path):
    """evaluate_seeds leaves some seeds unscored: their runs have no superb.json by design
    and are not listed as missing; a run that was asked for tasks and has none is."""
    sweep_dir = tmp_path / "results" / "main"
    fabricate.write_run(sweep_dir, "none", 0, sweep="main", superb=True)
    unscored = fabricate.write_run(sweep_dir, "none", 3, sweep="main", superb=False)
    trial = json.loads((unscored / "trial.json").read_text())
    (unscored / "trial.json").write_text(json.dumps({**trial, "evaluate": []}))
    asked = fabricate.write_run(sweep_dir, "none", 4, sweep="main", superb=False)
    res = collect([sweep_dir])
    missing = [p.path for p in res.problems if p.path.endswith("superb.json")]
    assert missing == [str(asked / "superb.json")]


def test_runs_that_shared_the_cores_are_warned_about(tmp_path):
    """A run whose recorded load average was above the machine's cores (harness.provenance.
    run_load, written by every run) makes the report say its times are not speed evidence."""
    from harness.provenance import oversubscribed, run_load

    rec = run_load(0.1)
    assert rec["threads"] >= 1 and rec["cpu_count"] >= 1 and rec["start"] == 0.1
    assert not oversubscribed({"cpu_count": 2, "start": 1.9, "end": 2.4}) and not oversubscribed(None)
    assert oversubscribed({"cpu_count": 2, "start": 0.3, "end": 4.0})
    res = tmp_path / "results" / "w"
    for v in ("none", "interleaved"):
        fabricate.write_run(res, v, 0, sweep="w", analysis=False, superb=False)
    render_report([res], tmp_path / "a", pdf=False)
    assert "Warning:" not in (tmp_path / "a" / "index.html").read_text()
    path = next(res.glob("*interleaved*")) / "summary.json"
    s = json.loads(path.read_text())
    s["load"] = {"threads": 2, "cpu_count": 2, "start": 3.7, "end": 2.1}
    path.write_text(json.dumps(s))
    rep = render_report([res], tmp_path / "b", pdf=False)
    assert "Warning: 1 of 2 finished runs ran while the machine's load average was above its cores" in rep.findings
