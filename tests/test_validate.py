"""``harness validate``: every registry name and every range knowable before training is
a one-line error with a suggestion (exit code 2), for run configs and sweeps alike."""

from pathlib import Path

import pytest

from harness.cli import main

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "sweeps" / "base" / "tiny.yaml"


@pytest.mark.parametrize("yaml_text, fragments", [
    ("stacking:\n  variant: interlaved\n",
     ["stacking.variant", "unknown stacking variant 'interlaved'", "did you mean 'interleaved'"]),
    ("loss:\n  objective: msee\n",
     ["loss.objective", "unknown objective 'msee'", "did you mean 'mse' (a per-layer loss: set loss.per_layer)"]),
    ("loss:\n  per_layer: l2ll\n",
     ["loss.per_layer", "unknown per-layer loss 'l2ll'", "did you mean 'l2l' (an objective: set loss.objective)",
      "(per-layer losses: cos, l1, l1_cos, mse)"]),
    ("loss:\n  per_layer: l2l\n", ["loss.per_layer", "'l2l' is an objective", "mse"]),
    ("teacher:\n  spec: dumy\n", ["teacher.spec", "unknown teacher kind 'dumy'", "did you mean 'dummy'"]),
    ("stacking:\n  schedule: proportionl\n", ["stacking.schedule", "did you mean 'proportional'"]),
    ("stacking:\n  init: zer\n", ["stacking.init", "did you mean 'zero'"]),
    ("stacking:\n  layer_map: fix\n", ["stacking.layer_map", "did you mean 'fixed'"]),
    # the tiny profile grows 1 -> 2 -> 3 -> 4 layers: offset 1 fits no growth from depth 1
    ("profile: tiny\nstacking:\n  offset: 1\n",
     ["stacking.offset", "growth 1 (1 -> 2 layers)", "did you mean stacking.offset=0?"]),
    ("student:\n  layers: 4\nstacking:\n  stages: 3\n  add: 2\n", ["stacking", "the first stage would have 0"]),
])
def test_run_config_errors_are_one_line_with_a_suggestion(tmp_path, capsys, yaml_text, fragments):
    path = tmp_path / "run.yaml"
    path.write_text(yaml_text)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(path) in err, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


def test_a_good_offset_validates(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text("student:\n  layers: 8\nstacking:\n  stages: 3\n  offset: 1\n")
    assert main(["validate", str(path)]) == 0
    assert "ok" in capsys.readouterr().out


def _sweep(tmp_path, body: str) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(f"name: t\nbase: {TINY}\nseeds: [0]\n{body}")
    return path


def test_sweep_with_a_misspelled_task(tmp_path, capsys):
    path = _sweep(tmp_path, "grid:\n  stacking.variant: [top]\nevaluate: [ks, asrr]\n")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown task 'asrr'" in err and "did you mean 'asr'" in err, err


def test_sweep_grid_points_get_the_same_checks(tmp_path, capsys):
    path = _sweep(tmp_path, "grid:\n  stacking.variant: [top, interlaved]\n")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "grid point" in err and "did you mean 'interleaved'" in err, err
    path = _sweep(tmp_path, "grid:\n  stacking.offset: [0, 1]\n")  # offset 1: fails growth 1 of tiny
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "stacking.offset=0" in err and "'stacking.offset': 1" in err, err


def test_every_shipped_config_still_validates(capsys):
    files = sorted(str(p) for p in (ROOT / "sweeps").rglob("*.yaml") if "paper" not in str(p))  # paper: placeholders
    assert main(["validate", *files]) == 0
