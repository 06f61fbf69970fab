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


# ---------------------------------------------------------------- YAML numbers, ranges, files


@pytest.mark.parametrize("text, value", [
    ("1e-3", 0.001), ("1E5", 1e5), ("-2.5e-4", -2.5e-4), ("2.5e4", 2.5e4), ("+1e3", 1e3), (".5e1", 5.0),
    ("1.0", 1.0), ("3", 3), ("0x10", 16), (".nan", None),
    ("abc", "abc"), ("1e", "1e"), ("e5", "e5"), ("1e-3x", "1e-3x"), ("'1e-3'", "1e-3"), ("09", "09"),
])
def test_yaml_reads_yaml_1_2_floats_and_keeps_strings(text, value):
    from harness.config import yaml_load

    got = yaml_load(text)
    if value is None:
        assert got != got  # nan
    else:
        assert got == value and type(got) is type(value)


def test_yaml_float_resolver_does_not_change_pyyaml_for_others():
    import yaml

    from harness.config import yaml_load

    assert yaml_load("lr: 1e-3") == {"lr": 0.001}
    assert yaml.safe_load("lr: 1e-3") == {"lr": "1e-3"}  # the global SafeLoader is untouched


def test_exponent_floats_in_files_and_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("optim:\n  lr: 1e-3\n  weight_decay: 1E-2\nloss:\n  w: 2.5e-1\n")
    cfg = load_run_config(path, ["optim.grad_clip=1e1"])
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.loss.w, cfg.optim.grad_clip) == (0.001, 0.01, 0.25, 10.0)
    assert load_run_config(None, ["teacher.cache_dir=1e3x"]).teacher.cache_dir == "1e3x"  # not a number: a string


def _float_keys(cls, prefix=""):
    """Every float-typed key of a config dataclass tree, dotted."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from _float_keys(tp, f"{prefix}{f.name}.")
        elif tp is float:
            yield f"{prefix}{f.name}"


@pytest.mark.parametrize("key", sorted(_float_keys(RunConfig)))
@pytest.mark.parametrize("raw", [".nan", ".inf", "-.inf"])
def test_every_float_key_refuses_non_finite(key, raw):
    with pytest.raises(ConfigError) as err:
        load_run_config(None, [f"{key}={raw}"])
    assert f"{key}: expected a finite number" in str(err.value)


@pytest.mark.parametrize("override, fragment", [
    ("data.max_seconds=0", "data.max_seconds must be > 0"),
    ("data.max_seconds=-1.5", "data.max_seconds must be > 0"),
    ("optim.grad_clip=-1", "optim.grad_clip must be >= 0 (0 = no clipping)"),
    ("optim.weight_decay=-1e-2", "optim.weight_decay must be >= 0"),
    ("train.seed=-1", "train.seed: a seed must be in [0, 2**32 - 1], got -1"),
    (f"train.seed={2**32}", "train.seed: a seed must be in"),
    ("train.device=tpu", "train.device: unknown device 'tpu': use auto, cpu, cuda, cuda:N (N = GPU index) or mps"),
    ("train.device=cuda:x", "unknown device 'cuda:x'"),
    ("teacher.spec=fbank", "teacher.spec 'fbank': fbank is the SUPERB baseline"),
    ("teacher.spec=fbank:40", "not a distillation teacher"),
])
def test_out_of_range_values_are_one_line(override, fragment):
    with pytest.raises(ConfigError) as err:
        load_run_config(None, [override])
    assert fragment in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:1", "mps"])
def test_valid_devices_and_seed_bounds_load(device):
    cfg = load_run_config(None, [f"train.device={device}", f"train.seed={2**32 - 1}"])
    assert cfg.train.device == device and cfg.train.seed == 2**32 - 1


def test_seed_range_holds_in_every_config_tree():
    """The seed check is generic (every int key named seed), so the ASR track's config has it too."""
    from harness.asr.train import AsrRunConfig

    with pytest.raises(ConfigError, match=r"train\.seed: a seed must be in"):
        from_dict(AsrRunConfig, {"track": "asr", "train": {"seed": -3}}, source="a.yaml")


def test_override_key_and_value_errors():
    with pytest.raises(ConfigError, match="the key must be dotted names"):
        parse_overrides(["train..seed=1"])
    with pytest.raises(ConfigError, match=r"the value is not valid YAML .*quote it"):
        parse_overrides(["teacher.spec=[oops"])
    with pytest.raises(ConfigError, match=r"'train=5' conflicts with another override of train.seed"):
        parse_overrides(["train.seed=1", "train=5"])
    with pytest.raises(ConfigError, match=r"'train.seed=1' conflicts with another override of 'train'"):
        parse_overrides(["train=5", "train.seed=1"])
    assert parse_overrides(["train={}", "train=5"]) == {"train": 5}  # nothing dropped
    assert parse_overrides(["stacking.variant=top", "stacking={stages: 2}", "train.steps=3", "train.steps=4"]) == {
        "stacking": {"variant": "top", "stages": 2}, "train": {"steps": 4}}


@pytest.mark.parametrize("content, fragment", [
    (b"train:\n  steps: 5\n\xff\xfe\x00\x01", "is not a text file (byte 18 is not UTF-8 text)"),
    (b"train:\n  steps: 5\x00\n", "is not a text file (byte 17 is not UTF-8 text)"),
    (b"", "is empty: write the keys to change, or {} for all defaults"),
    (b"# only a comment\n\n", "is empty"),
])
def test_unreadable_or_empty_files_are_one_line(tmp_path, content, fragment):
    path = tmp_path / "run.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as err:
        load_run_config(path)
    assert str(err.value).startswith(str(path)) and fragment in str(err.value)


def test_explicit_empty_mapping_is_all_defaults(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("{}\n")
    assert load_run_config(path) == from_dict(RunConfig, None)
    with pytest.raises(ConfigError, match="is a folder, not a YAML file"):
        load_run_config(tmp_path)
