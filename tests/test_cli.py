import subprocess
import sys

from harness.cli import main


def test_validate_ok_and_error(tmp_path, capsys):
    good = tmp_path / "good.yaml"
    good.write_text("train:\n  steps: 5\n")
    assert main(["validate", str(good)]) == 0
    assert "ok" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("loss:\n  ww: 0.5\n")
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "loss.ww" in err and "loss.w'" in err


def test_ls_runs(capsys):
    assert main(["ls"]) == 0


def test_console_script_help():
    out = subprocess.run(
        [sys.executable, "-m", "harness.cli", "data", "build", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "examples:" in out.stdout
