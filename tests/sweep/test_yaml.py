"""Every YAML under sweeps/ loads and validates strictly (the shipped studies and bases)."""

from pathlib import Path

import pytest

from harness.config import ConfigError, load_run_config
from harness.sweep import load_sweep
from harness.validate import PLACEHOLDER, check_file, validate_file

ROOT = Path(__file__).resolve().parents[2]
YAMLS = sorted((ROOT / "sweeps").rglob("*.yaml"))
# The paper profile points at checkpoints on the user's disk: its base holds a placeholder
# that validate lists as a value it needs (and the strict form refuses) until it is set
# (here to a path that need not exist).
PAPER_SET = ["teacher.spec=s3prl:hubert:/ckpt/hubert_base_ls960.pt"]


def test_there_are_studies():
    names = {p.relative_to(ROOT / "sweeps").as_posix() for p in YAMLS}
    for study in ("main", "schedule", "loss_weight", "layer_map_init"):
        assert f"embedded/{study}.yaml" in names and f"paper/{study}.yaml" in names


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: p.relative_to(ROOT / "sweeps").as_posix())
def test_yaml_validates(path):
    checked = check_file(path)
    # only the paper profile's checkpoint placeholder may be left, listed as a value it needs
    assert [n.key for n in checked.needs] == (["teacher.spec"] if _has_placeholder(path) else [])
    if checked.needs:
        with pytest.raises(ConfigError, match="teacher.spec is a placeholder"):
            validate_file(path)  # the strict form refuses it
        if path.parent.name == "base":
            load_run_config(path, PAPER_SET)
        else:
            assert load_sweep(path, overrides=PAPER_SET).trials


def _has_placeholder(path: Path) -> bool:
    """Whether the file, or a sweep's base file, holds a ``<NAME>`` value (comments aside)."""
    text = path.read_text()
    base = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("base:")), None)
    text = (path.parent / base).read_text() if base else text
    return any(PLACEHOLDER.search(line.split("#")[0]) for line in text.splitlines())


def test_main_study_has_its_arms_and_paired_seeds():
    """none, none_cm (compute-matched), top, middle, interleaved over >= 3 seeds; bottom and
    l1_cos in the extra arms; the MSE loss of the paper in the base."""
    for profile in ("embedded", "paper"):
        sweep = load_sweep(ROOT / f"sweeps/{profile}/main.yaml", overrides=PAPER_SET)
        arms = {("none_cm" if t.config.train.compute_matched else t.config.stacking.variant) for t in sweep.trials}
        assert arms == {"none", "none_cm", "top", "middle", "interleaved"}
        assert len(sweep.config.seeds) >= 3 and len(sweep.trials) == 5 * len(sweep.config.seeds)
        assert {t.config.loss.per_layer for t in sweep.trials} == {"mse"}
        assert all(t.config.data.heldout > 0 for t in sweep.trials)
        extra = load_sweep(ROOT / f"sweeps/{profile}/extra_arms.yaml", overrides=PAPER_SET)
        assert {(t.config.stacking.variant, t.config.loss.per_layer) for t in extra.trials} == {
            ("bottom", "mse"), ("interleaved", "l1_cos")}
