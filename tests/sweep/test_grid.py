"""The grid and the overrides of every trial (harness.sweep.grid): a change the grid would
silently override is an error naming the key; the sweep's name stays one folder name."""

from pathlib import Path

import pytest

from harness.cli import main
from harness.config import ConfigError
from harness.sweep import load_sweep

TINY = Path(__file__).resolve().parents[2] / "sweeps" / "base" / "tiny.yaml"
SWEEP = """name: demo
base: {base}
grid:
  stacking.variant: [none, interleaved]
points:
  - {{stacking.variant: none, train.compute_matched: true}}
seeds: [0, 1]
storage: {storage}
"""


def _write(tmp_path, extra=""):
    path = tmp_path / "sweep.yaml"
    path.write_text(SWEEP.format(base=TINY, storage=tmp_path / "results") + extra)
    return path


def _one_line(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err.strip()


@pytest.mark.parametrize("item, message", [
    ("stacking.variant=top", "grid sets stacking.variant; a --set of stacking.variant would be ignored: "
                             "drop it or edit the grid"),
    ("stacking={variant: top, stages: 2}", "grid sets stacking.variant; a --set of stacking.variant would be ignored: "
                                           "drop it or edit the grid"),
    ("train.compute_matched=false", "points[0] sets train.compute_matched; a --set of train.compute_matched would "
                                    "be ignored for that point: drop it or edit the points"),
    ("train.seed=3", "the sweep's seeds set train.seed; a --set of train.seed would be ignored: drop it and set "
                     "the seeds (seeds: in the file, or --seeds 0,1)"),
])
def test_set_of_a_key_the_grid_sets_is_an_error(tmp_path, capsys, item, message):
    path = _write(tmp_path)
    err = _one_line(capsys, ["sweep", str(path), "--dry-run", "--set", item])
    assert err == f"harness: error: {path}: {message}"
    with pytest.raises(ConfigError, match="would be ignored"):
        load_sweep(path, overrides=[item])


def test_set_of_other_keys_still_reaches_every_trial(tmp_path):
    sweep = load_sweep(_write(tmp_path), overrides=["train.steps=12", "stacking.stages=2", "optim.lr=1e-3"])
    assert len(sweep.trials) == 6
    assert all((t.config.train.steps, t.config.stacking.stages, t.config.optim.lr) == (12, 2, 0.001)
               for t in sweep.trials)


def test_file_overrides_of_a_grid_key_are_an_error(tmp_path, capsys):
    path = _write(tmp_path, "overrides: {stacking.variant: top}\n")
    err = _one_line(capsys, ["validate", str(path)])
    assert err == (f"harness: error: {path}: grid sets stacking.variant; overrides.stacking.variant in the sweep "
                   "file would be ignored: drop it from overrides or edit the grid")
    path = _write(tmp_path, "overrides: {train: {seed: 4}}\n")
    assert "the sweep's seeds set train.seed; overrides.train.seed in the sweep file" in _one_line(
        capsys, ["validate", str(path)])
    # a key only the points set: the file's default for the grid's trials (not ignored for them)
    path = _write(tmp_path, "overrides: {train.compute_matched: false}\n")
    assert len(load_sweep(path).trials) == 6


@pytest.mark.parametrize("extra, fragment", [
    ("reuse: [../other]\n", "reuse: '../other' must be a sweep name"),
    ("reuse: [.hidden]\n", "reuse: '.hidden' must be a sweep name"),
])
def test_reused_sweep_names_are_folder_names(tmp_path, capsys, extra, fragment):
    path = _write(tmp_path, extra)
    assert fragment in _one_line(capsys, ["validate", str(path)])


@pytest.mark.parametrize("name", ["..", ".x", "a/b", ""])
def test_sweep_name_is_one_folder_name(tmp_path, capsys, name):
    path = _write(tmp_path)
    path.write_text(path.read_text().replace("name: demo", f"name: '{name}'"))
    assert "name must be a non-empty word of letters, digits, _ . - not starting with a dot" in _one_line(
        capsys, ["validate", str(path)])


def test_library_callers_cannot_suffix_a_path(tmp_path):
    """load_sweep(suffix=...) from Python (no CLI check in front): the grid refuses the name."""
    with pytest.raises(ConfigError, match=r"sweep name 'demo/\.\./\.\.' \(with its --suffix\) must be"):
        load_sweep(_write(tmp_path), suffix="/../..")
    assert load_sweep(_write(tmp_path), suffix="-quick").out_dir == tmp_path / "results" / "demo-quick"
