"""The report folder (harness.report.output): a committed report is not overwritten unless
asked, the report's run table is not named like a sweep's runs.csv, and ./run_all.sh writes
its report next to the committed reference, not over it (issue 20, item 6)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.cli import main
from harness.report.output import RUN_TABLE, tracked_files
from tests.support import fabricate

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
                   check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path):
    """A git repository holding one fabricated sweep folder (two runs) under results/w."""
    _git(tmp_path, "init", "-q")
    res = tmp_path / "results" / "w"
    for w in (0.0, 1.0):
        fabricate.write_run(res, "interleaved", 0, sweep="w", overrides={"loss": {"w": w}},
                            analysis=False, superb=False)
    return tmp_path


def test_a_committed_report_is_refused_in_one_line_and_replaced_with_overwrite(repo, capsys):
    res, out = repo / "results" / "w", repo / "reports" / "ref"
    assert main(["report", str(res), "--out", str(out), "--no-pdf"]) == 0  # nothing committed yet
    _git(repo, "add", "-f", "reports/ref")
    _git(repo, "commit", "-q", "-m", "the reference report")
    assert tracked_files(out)
    before = (out / "index.html").read_text()
    (out / "index.html").write_text(before + "<!-- committed -->")
    capsys.readouterr()

    assert main(["report", str(res), "--out", str(out), "--no-pdf"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"harness: error: {out} holds a committed report ("), err
    assert "tracked by git" in err and "--overwrite" in err and "--out reports/NAME" in err
    assert (out / "index.html").read_text().endswith("<!-- committed -->")  # untouched

    assert main(["report", str(res), "--out", str(out), "--no-pdf", "--overwrite"]) == 0
    assert not (out / "index.html").read_text().endswith("<!-- committed -->")  # rewritten


def test_untracked_files_or_no_repository_are_not_committed(repo, tmp_path_factory, capsys):
    res, out = repo / "results" / "w", repo / "reports" / "mine"
    out.mkdir(parents=True)
    (out / "NOTES.md").write_text("mine")
    _git(repo, "add", "-f", "reports/mine/NOTES.md")  # tracked, but no file the report writes
    _git(repo, "commit", "-q", "-m", "notes")
    assert main(["report", str(res), "--out", str(out), "--no-pdf"]) == 0
    assert main(["report", str(res), "--out", str(out), "--no-pdf"]) == 0  # its own untracked report: rerendered
    elsewhere = tmp_path_factory.mktemp("no-repo") / "out"
    assert main(["report", str(res), "--out", str(elsewhere), "--no-pdf"]) == 0
    assert tracked_files(elsewhere) == []


def test_the_run_table_is_not_the_sweeps_runs_csv(repo):
    """Rendered into the sweep folder itself, the report leaves the sweep's runs.csv alone."""
    res = repo / "results" / "w"
    (res / "runs.csv").write_text("sweep,run_id,task\nw,x,ks\n")
    assert main(["report", str(res), "--out", str(res), "--no-pdf"]) == 0
    assert (res / "runs.csv").read_text() == "sweep,run_id,task\nw,x,ks\n"
    assert RUN_TABLE == "run_table.csv" and (res / RUN_TABLE).is_file()


def test_the_committed_reference_report_matches_the_code():
    """reports/embedded/ holds the run table under its current name, and no runs.csv."""
    assert (ROOT / "reports" / "embedded" / RUN_TABLE).is_file()
    assert not (ROOT / "reports" / "embedded" / "runs.csv").exists()


def test_run_all_writes_its_reports_outside_the_committed_reference():
    """Every ``harness report --out`` of ./run_all.sh, for each profile and --quick, names a
    folder that holds no committed report file (so a fresh clone's run is never refused)."""
    script = (ROOT / "run_all.sh").read_text()
    outs = re.findall(r'harness report .*--out "([^"]+)"', script)
    assignments = dict(re.findall(r'^(report_dir)="([^"]+)"$', script, flags=re.M))
    assert outs and assignments
    for out in outs:
        out = out.replace("$report_dir", assignments.get("report_dir", ""))
        for profile in ("tiny", "embedded", "paper"):
            for suffix in ("", "-quick"):
                folder = out.replace("$profile", profile).replace("$suffix", suffix)
                assert "$" not in folder, folder
                assert tracked_files(ROOT / folder) == [] and folder != "reports/embedded", folder
