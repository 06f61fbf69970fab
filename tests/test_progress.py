"""harness.progress: plain lines with rate and ETA on a pipe; a resumed run's first update
anchors the rate (the skipped steps are not counted as done in this process)."""

import io
import time

from harness.progress import Progress, eta


def test_plain_lines_have_rate_and_eta():
    out = io.StringIO()
    p = Progress(10, "distill", stream=out, tty=False)
    time.sleep(0.02)
    p.update(5, depth=2, loss=0.123456)
    p.update(10)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("[distill] step 5/10 (50%), depth 2, loss 0.1235, ")
    assert "steps/s" in lines[0] and "ETA 00:0" in lines[0]
    assert lines[1].startswith("[distill] step 10/10 (100%)") and lines[1].endswith("ETA 00:00")


def test_a_resumed_run_anchors_at_its_first_update():
    out = io.StringIO()
    p = Progress(100, "distill", stream=out, tty=False, start=None)
    first = p.update(60)  # resumed at step 60: no rate yet
    assert "ETA ?" in first and "/s" not in first
    time.sleep(0.02)
    second = p.update(70)
    assert p.start == 60 and "ETA " in second and "ETA ?" not in second


def test_eta_format_and_the_bar_on_a_terminal():
    assert eta(None) == "?" and eta(float("nan")) == "?" and eta(3725) == "1:02:05"
    out = io.StringIO()
    p = Progress(4, "corpus", unit="utterance", stream=out, tty=True)
    p.update(2)
    p.update(4)
    p.close()
    assert "corpus" in out.getvalue() and "4/4" in out.getvalue()


def test_tick_returns_the_line_for_a_caller_s_own_log(capsys):
    p = Progress(4, "report", unit="part", tty=False)
    first = p.tick(1)
    assert first.startswith("[report] part 1/4 (25%)") and "ETA" in first
    time.sleep(0.02)
    assert "ETA ?" not in p.tick(2) and capsys.readouterr() == ("", "")  # nothing printed
