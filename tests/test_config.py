import pytest

from harness import runs
from harness.config import (
    ConfigError,
    RunConfig,
    from_dict,
    load_run_config,
    parse_overrides,
)


def test_defaults_validate():
    cfg = from_dict(RunConfig, None)
    assert cfg.loss.w == 0.5 and cfg.stacking.variant == "interleaved"


def test_unknown_key_names_file_key_and_nearest(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("stacking:\n  varaint: top\n")
    with pytest.raises(ConfigError) as err:
        load_run_config(path)
    msg = str(err.value)
    assert str(path) in msg and "'stacking.varaint'" in msg and "'stacking.variant'" in msg


def test_unknown_top_level_key(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("trian:\n  steps: 3\n")
    with pytest.raises(ConfigError, match=r"unknown key 'trian'; did you mean 'train'"):
        load_run_config(path)


@pytest.mark.parametrize(
    "data, fragment",
    [
        ({"train": {"steps": "many"}}, "train.steps: expected an integer"),
        ({"train": {"steps": 1.5}}, "train.steps: expected an integer"),
        ({"student": {"layer_norm_first": "yes"}}, "expected true/false"),
        ({"stacking": {"init": "copied"}}, "stacking.init: 'copied' is not one of"),
        ({"optim": {"lr": "fast"}}, "optim.lr: expected a number"),
        ({"data": 3}, "data: expected a mapping"),
        ({"stacking": {"schedule": [0.5, 0.6], "stages": 2}}, "sum to 1"),
        ({"stacking": {"schedule": [0.5, 0.5], "stages": 4}}, "lists 2 fractions but stages is 4"),
        ({"optim": {"lr": -1}}, "optim.lr must be > 0"),
    ],
)
def test_wrong_types_and_cross_field_checks(data, fragment):
    with pytest.raises(ConfigError, match=None) as err:
        from_dict(RunConfig, data, source="x.yaml")
    assert fragment in str(err.value) and str(err.value).startswith("x.yaml: ")


def test_int_accepted_as_float_and_schedule_union():
    cfg = from_dict(RunConfig, {"optim": {"lr": 1}, "stacking": {"schedule": [0.25, 0.25, 0.5], "stages": 3}})
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert cfg.stacking.schedule == [0.25, 0.25, 0.5]


def test_overrides_are_yaml_scalars(tmp_path):
    assert parse_overrides(["a.b=3", "a.c=top", "d=[1, 2]"]) == {"a": {"b": 3, "c": "top"}, "d": [1, 2]}
    cfg = load_run_config(None, ["stacking.variant=top", "train.steps=7"])
    assert cfg.stacking.variant == "top" and cfg.train.steps == 7
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["novalue"])


def test_resolved_config_round_trips(tmp_path):
    cfg = load_run_config(None, ["loss.w=0.25"])
    runs.write_config(tmp_path, cfg)  # what a run folder holds (harness.runs owns the format)
    again = load_run_config(tmp_path / "config.yaml")
    assert again == cfg


def test_bad_yaml_is_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_run_config(path)
    with pytest.raises(ConfigError, match="no such file"):
        load_run_config(tmp_path / "missing.yaml")


def test_none_variant_is_one_stage_whatever_stages_says():
    cfg = from_dict(RunConfig, {"stacking": {"variant": "none", "stages": 4, "schedule": [0.5, 0.5]}})
    assert cfg.stacking.num_stages == 1
    assert from_dict(RunConfig, {"stacking": {"variant": "top", "stages": 4}}).stacking.num_stages == 4


def test_name_lists_equal_the_registries():
    """Config validation checks names against lists (it builds nothing); they must be the
    registries' names exactly."""
    from harness import config
    from harness.registries import all_registries

    regs = all_registries()

    def shipped(name):  # entries the harness defines (tests register fakes of their own)
        reg = regs[name]
        return {n for n in reg.names() if getattr(reg.get(n), "__module__", "").startswith("harness.")}

    assert set(config.STACKING_VARIANTS) == shipped("stacking")
    assert set(config.CRITERIA) == shipped("criteria")
    assert set(config.FEATURE_OBJECTIVES) | set(config.LOGIT_OBJECTIVES) == shipped("objectives")
    assert {"dummy", "embedded", "fbank", "hf", "s3prl"} == shipped("teachers")  # checked via TEACHERS itself


@pytest.mark.parametrize("data, fragment", [
    ({"stacking": {"variant": "interlaved"}}, "stacking.variant: unknown stacking variant 'interlaved'; did you mean 'interleaved'?"),
    ({"loss": {"objective": "msee"}}, "loss.objective: unknown objective 'msee'; did you mean 'mse' (a per-layer loss"),
    ({"loss": {"objective": "mse"}}, "loss.objective: 'mse' is a per-layer loss: set loss.per_layer, not an objective"),
    ({"loss": {"objective": "logit_kd"}}, "loss.objective: 'logit_kd' is not a feature-distillation objective"),
    ({"loss": {"per_layer": "l2ll"}}, "loss.per_layer: unknown per-layer loss 'l2ll'; did you mean 'l2l' (an objective"),
    ({"teacher": {"spec": "s3prll:hubert:/x.pt"}}, "teacher.spec 's3prll:hubert:/x.pt': unknown teacher kind 's3prll'; did you mean 's3prl'?"),
    ({"stacking": {"schedule": "equl"}}, "stacking.schedule: expected 'equal' | 'proportional' | list[float], got 'equl'; did you mean 'equal'?"),
    ({"teacher": {"cache": True}, "student": {"frontend_trainable": True}}, "teacher.cache: the cached front-end output is frozen"),
    ({"loss": {"objective": "pred_heads"}}, "loss.objective 'pred_heads' needs student.target_mode: pred_heads"),
])
def test_registry_names_are_checked_at_load(data, fragment):
    with pytest.raises(ConfigError) as err:
        from_dict(RunConfig, data, source="x.yaml")
    assert fragment in str(err.value) and "\n" not in str(err.value), str(err.value)
