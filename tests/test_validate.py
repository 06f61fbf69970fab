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


# --------------------------------------------------- many files, overrides, placeholders (issue 20)


def test_every_file_is_checked_and_every_error_printed(tmp_path, capsys):
    (tmp_path / "a_bad.yaml").write_text("loss:\n  ww: 0.5\n")
    (tmp_path / "b_good.yaml").write_text("train:\n  steps: 5\n")
    (tmp_path / "c_bad.yaml").write_text("train:\n  steps: abc\n")
    files = sorted(str(p) for p in tmp_path.glob("*.yaml"))
    assert main(["validate", *files]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("harness: error: ") for line in lines), err
    assert str(tmp_path / "a_bad.yaml") in lines[0] and "unknown key 'loss.ww'; did you mean 'loss.w'" in lines[0]
    assert str(tmp_path / "c_bad.yaml") in lines[1] and "train.steps: expected an integer, got 'abc'" in lines[1]
    assert f"ok     {tmp_path / 'b_good.yaml'}" in out  # checked although the file before it failed
    assert "3 files: 1 ok, 0 valid but needing values (placeholders), 2 with errors" in out


def test_a_quoted_glob_is_expanded_and_the_paper_placeholders_are_needs_not_errors(capsys):
    assert main(["validate", f"{ROOT}/sweeps/**/*.yaml"]) == 0  # the shell did not expand it
    out, err = capsys.readouterr()
    assert err == ""
    shipped = sorted((ROOT / "sweeps").rglob("*.yaml"))
    listed = [line for line in out.splitlines() if line.startswith(("ok ", "needs "))]
    assert len(listed) == len(shipped)
    needs = [line for line in listed if line.startswith("needs ")]
    # the paper base and every paper distillation study (askd's base holds no placeholder)
    assert {line.split()[1] for line in needs} == {
        str(p) for p in shipped if p.parent.name == "paper" and p.stem != "askd" or p.name == "paper.yaml"}
    for line in needs:
        assert ("teacher.spec is a placeholder ('s3prl:hubert:<HUBERT_BASE_CKPT>' in "
                f"{ROOT / 'sweeps/base/paper.yaml'}): set your teacher checkpoint, e.g. "
                "teacher.spec=s3prl:hubert:/data/hubert_base_ls960.pt") in line, line


def test_strict_and_a_filled_placeholder(capsys):
    paper = [str(ROOT / "sweeps/base/paper.yaml"), str(ROOT / "sweeps/paper/main.yaml")]
    assert main(["validate", *paper, "--strict"]) == 3
    assert main(["validate", *paper, "teacher.spec=s3prl:hubert:/data/hubert.pt", "--strict"]) == 0
    out = capsys.readouterr().out.split("validate: 2 files")[-1]
    assert "2 ok, 0 valid but needing values" in out


def test_overrides_apply_to_every_file_and_their_errors_name_the_override(tmp_path, capsys):
    good = tmp_path / "run.yaml"
    good.write_text("train:\n  steps: 5\n")
    sweep = _sweep(tmp_path, "grid:\n  stacking.variant: [top]\n")
    assert main(["validate", str(good), str(sweep), "train.steps=40"]) == 0
    assert main(["validate", str(good), str(sweep), "train.steps=0"]) == 2  # the override reached both files
    err = capsys.readouterr().err.strip()
    assert err == ("harness: error: override 'train.steps=0' (command line): train.steps must be >= 1, got 0 "
                   f"(applied to {good}, {sweep})")  # one line for the one override
    assert main(["validate", str(good), str(sweep), "trian.steps=5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("harness: error: override 'trian.steps=5' (command line): unknown key 'trian'; did you mean "
                   f"'train'? (applied to {good}, {sweep})")


def test_a_pattern_that_matches_nothing_is_an_error_after_the_others(tmp_path, capsys):
    good = tmp_path / "run.yaml"
    good.write_text("{}\n")
    assert main(["validate", str(tmp_path / "nope" / "*.yaml"), str(good)]) == 2
    out, err = capsys.readouterr()
    assert "no file matches this pattern" in err and f"ok     {good}" in out
