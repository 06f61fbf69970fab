"""Typed configs: dataclasses are the source of truth, YAML only overrides them.

Every config the harness reads (a distillation run, a corpus build, a sweep) is a tree of
dataclasses with defaults. :func:`from_dict` builds one from a mapping and is strict: an
unknown key or a value of the wrong type raises :class:`ConfigError` naming the file, the
dotted key, and the nearest valid key. A float must be finite (``.nan`` and ``.inf`` are
refused for every float key) and an int key named ``seed`` must be in [0, 2**32).
Cross-field checks live in each class' ``validate()``, called after construction.
:func:`parse_overrides` takes ``key=value`` strings (``stacking.variant=top``), parsed as
YAML scalars; :func:`from_dict_with_overrides` applies them, and an error an override
causes (``trian.steps=5``) names the override and the command line, not the YAML file.

YAML is read with :func:`yaml_load`: ``yaml.safe_load`` plus YAML 1.2's float syntax, so
``1e-3``, ``1E5`` and ``-2.5e-4`` are numbers (YAML 1.1, which PyYAML implements, reads
them as strings), in files and in ``key=value`` overrides alike.

Size: about 720 lines: the strict-loading machinery (types, files, YAML numbers) and the
run config's dataclasses, whose field lists and range checks are most of it.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from harness.errors import HarnessError
from harness.registry import did_you_mean, nearest
from harness.teachers.base import TEACHERS

PROFILES = ("tiny", "embedded", "paper")

# Registry names a run config may use. These registries live with the code they name
# (harness.stacking, harness.losses), which imports torch and this module; validating a
# config builds nothing, so it checks these lists, and tests/test_config.py checks that
# they equal the registries. Teacher kinds are checked against TEACHERS itself (lazy).
STACKING_VARIANTS = ("bottom", "interleaved", "middle", "none", "top")  # stacking.STACKING
CRITERIA = ("cos", "l1", "l1_cos", "mse")  # losses.CRITERIA: loss.per_layer
FEATURE_OBJECTIVES = ("askd_l2l", "l2l", "pred_heads")  # the losses.OBJECTIVES run_distill trains
LOGIT_OBJECTIVES = ("askd_logit", "logit_kd")  # the other losses.OBJECTIVES (the ASR track's)
# TEACHERS kinds that are upstreams to score but have no transformer layers to distill
NOT_TEACHERS = {"fbank": "fbank is the SUPERB baseline (log-mel features, no layers)"}


class ConfigError(ValueError, HarnessError):
    """A config that cannot be used; the message names the file and dotted key."""


def check_name(value: str, kind: str, choices: tuple[str, ...],
               elsewhere: tuple[tuple[str, tuple[str, ...]], ...] = ()) -> None:
    """Check that ``value`` is one of ``choices`` (a registry's names).

    Args:
        value: the configured name.
        kind: what it names, for the message ("stacking variant").
        choices: the valid names.
        elsewhere: ``(what, names)`` of neighbouring registries a near miss may belong to
            (``("a per-layer loss: set loss.per_layer", CRITERIA)``), so that a name put
            under the wrong key is told where it goes.

    Raises:
        ConfigError: one line with the nearest valid name(s) and the valid names.
    """
    if value in choices:
        return
    listed = f"{kind}{'es' if kind.endswith('s') else 's'}: {', '.join(choices)}"
    for what, names in elsewhere:
        if value in names:
            raise ConfigError(f"{value!r} is {what}, not {'an' if kind[0] in 'aeiou' else 'a'} {kind} ({listed})")
    hint = did_you_mean(str(value), choices)
    for what, names in elsewhere if not hint else ():
        close = nearest(str(value), names, n=1)
        if close:
            hint = f"; did you mean {close[0]!r} ({what})?"
            break
    raise ConfigError(f"unknown {kind} {value!r}{hint} ({listed})")


# ----------------------------------------------------------------------------- machinery


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads YAML 1.2 floats (``1e-3``, ``1E5``, ``2.5e4``).

    PyYAML implements YAML 1.1, whose float needs a dot and a signed exponent, so
    ``lr: 1e-3`` was the string ``'1e-3'``. Only the implicit resolver changes (what a
    plain scalar is read as); quoted scalars stay strings, and so does any plain scalar
    that is not a number.
    """


# added after SafeLoader's own resolvers, so ints and YAML 1.1 floats resolve as before; this
# adds what 1.1 lacks: an exponent without a dot (1e-3, 1E5) or without a sign (2.5e4)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)

SEED_MAX = 2**32 - 1  # numpy's legacy seed range; torch accepts it too
DEVICE_NAMES = r"auto|cpu|cuda(:[0-9]+)?|mps"  # the forms a device name may take (a regex)


def yaml_load(text: str) -> Any:
    """Parse YAML text like ``yaml.safe_load`` (no Python objects), reading ``1e-3`` as a float."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader


def check_device(value: str) -> None:
    """Check a device name's form: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.

    Whether the machine has that device is checked when the run starts
    (:func:`harness.distill.resolve_device`).

    Raises:
        ConfigError: one line listing the valid names.
    """
    if not re.fullmatch(DEVICE_NAMES, value):
        raise ConfigError(f"unknown device {value!r}: use auto, cpu, cuda, cuda:N (N = GPU index) or mps")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        args = typing.get_args(tp)
        return f"list[{_type_name(args[0])}]" if args else "list"
    if origin is dict:
        k, v = typing.get_args(tp)
        return f"mapping of {_type_name(k)} -> {_type_name(v)}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against type ``tp`` and convert it (nested dataclasses, tuples).

    Raises:
        ConfigError: naming ``where`` and the expected type.
    """
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return _build(tp, value, where)
    if origin is Literal:
        if value not in typing.get_args(tp):
            hint = did_you_mean(str(value), [str(a) for a in typing.get_args(tp)])
            raise ConfigError(f"{where}: {value!r} is not one of {_type_name(tp)}{hint}")
        return value
    if origin in (Union, types.UnionType):
        errors = []
        for arg in typing.get_args(tp):
            try:
                return _convert(value, arg, where)
            except ConfigError as err:
                errors.append(str(err))
        hint = ""
        if isinstance(value, str):  # a misspelled name: the nearest of the Literal arms
            names = [str(a) for arg in typing.get_args(tp) if typing.get_origin(arg) is Literal
                     for a in typing.get_args(arg)]
            hint = did_you_mean(value, names)
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}{hint}")
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{where}: expected null, got {value!r}")
        return None
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
        (arg,) = typing.get_args(tp)[:1] or (Any,)
        items = [_convert(v, arg, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
        kt, vt = typing.get_args(tp)
        return {_convert(k, kt, where): _convert(v, vt, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported config type {tp!r}")  # a bug in the schema


def convert(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the type annotation ``tp`` as a config key's value is checked
    (finite numbers, ``Literal`` names, lists, nested dataclasses), for options that are
    not a config dataclass' (``harness evaluate --set ks.lr=...``).

    Returns:
        The value converted (an int given for a float, a list for a tuple).

    Raises:
        ConfigError: ``"<where>: expected a number, got 'abc'"`` and the like.
    """
    return _convert(value, tp, where)


def _build(cls: type, data: dict, where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for key, value in data.items():
        dotted = f"{where}.{key}" if where else str(key)
        if key not in names:
            prefix = f"{where}." if where else ""
            hint = did_you_mean(dotted, [prefix + n for n in names])
            raise ConfigError(f"unknown key '{dotted}'{hint}")
        kwargs[key] = _convert(value, hints[key], dotted)
        if key == "seed" and hints[key] is int and not 0 <= kwargs[key] <= SEED_MAX:
            raise ConfigError(f"{dotted}: a seed must be in [0, 2**32 - 1], got {kwargs[key]}")
    obj = cls(**kwargs)
    return obj


def from_dict(cls: type, data: dict | None, source: str | Path = "<dict>") -> Any:
    """Build and validate a config dataclass from a mapping.

    Args:
        cls: the dataclass type (e.g. :class:`RunConfig`).
        data: the mapping, typically parsed YAML; ``None`` means all defaults.
        source: file name used in error messages.

    Returns:
        An instance of ``cls`` whose ``validate()`` (recursively) passed.

    Raises:
        ConfigError: ``"<source>: unknown key 'stacking.varaint'; did you mean
            'stacking.variant'?"`` and the like.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping, got {type(data).__name__}")
    try:
        obj = _build(cls, data, "")
        validate_tree(obj)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None
    return obj


def validate_tree(obj: Any, where: str = "") -> None:
    """Call ``validate()`` on ``obj`` and every nested config dataclass, innermost first."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            validate_tree(value, f"{where}{f.name}.")
    check = getattr(obj, "validate", None)
    if callable(check):
        try:
            check()
        except ConfigError as err:
            raise ConfigError(f"{where}{err}" if where else str(err)) from None


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping, with a one-line error for a missing, binary, malformed or empty file.

    A file with no content (only whitespace or comments) is refused: it is far more often
    a truncated copy or the wrong file than a wish for all defaults, which ``{}`` says.

    Raises:
        ConfigError: ``"<path>: no such file"``, ``"<path> is not a text file ..."``,
            ``"<path>: line N is not valid YAML (...)"``, ``"<path> is empty: ..."``.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path} is a folder, not a YAML file")
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"{path}: cannot be read ({err.strerror or err})") from None
    try:
        text = raw.decode("utf-8")
        bad = raw.find(b"\x00")  # valid UTF-8, but no text file holds NUL (YAML refuses it, unclearly)
    except UnicodeDecodeError as err:
        bad = err.start
    if bad >= 0:
        raise ConfigError(f"{path} is not a text file (byte {bad} is not UTF-8 text): "
                          "give a YAML config, not a binary file")
    try:
        data = yaml_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{line} is not valid YAML ({getattr(err, 'problem', err)})") from None
    if data is None:
        raise ConfigError(f"{path} is empty: write the keys to change, or {{}} for all defaults")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> dict:
    """Turn ``["a.b=1", "c=[1, 2]"]`` into a nested mapping; values are parsed as YAML
    (:func:`yaml_load`: ``lr=1e-3`` is a float).

    Raises:
        ConfigError: an item that is not ``key=value``, an empty key part, a value that
            is not valid YAML, or two overrides that conflict.
    """
    out: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. stacking.variant=top)")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"override {item!r}: the key must be dotted names (e.g. stacking.variant=top)")
        try:
            value = yaml_load(raw) if raw.strip() else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: the value is not valid YAML "
                              f"({getattr(err, 'problem', err)}); quote it") from None
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with another override of {part!r}")
        last = node.get(parts[-1])
        if last and isinstance(last, dict) and not isinstance(value, dict):  # `a.b=1 a=2`: no silent drop of a.b
            raise ConfigError(f"override {item!r} conflicts with another override of {key.strip()}.{next(iter(last))}")
        node[parts[-1]] = deep_merge(last, value) if isinstance(last, dict) and isinstance(value, dict) else value
    return out


def check_override_keys(cls: type, overrides: list[str] | tuple[str, ...], label: str = "override") -> dict:
    """Parse ``key=value`` overrides and check each one alone against ``cls``' schema.

    Each override is built on top of ``cls``' defaults (no file), so an unknown key, a
    wrong type or an out-of-range seed is reported as the command line's, naming the
    override, not blamed on the YAML file it is applied to. Cross-field checks
    (``validate()``) need the merged config: :func:`from_dict_with_overrides`.

    Args:
        cls: the config dataclass the overrides apply to (e.g. :class:`RunConfig`).
        overrides: ``["train.steps=5", ...]``.
        label: how the message names an override (``"override"``, ``"--set"``).

    Returns:
        The overrides as one nested mapping (:func:`parse_overrides`).

    Raises:
        ConfigError: ``"override 'trian.steps=5' (command line): unknown key 'trian';
            did you mean 'train'?"`` and the like.
    """
    for item in overrides:
        try:
            _build(cls, parse_overrides([item]), "")
        except ConfigError as err:
            msg = str(err)
            if msg.startswith(f"override {item!r}"):  # parse_overrides' own message names it already
                msg = msg[len(f"override {item!r}"):].lstrip(": ")
            raise ConfigError(f"{label} {item!r} (command line): {msg}") from None
    return parse_overrides(overrides)


def blame_override(err: ConfigError, overrides: list[str] | tuple[str, ...], source: str | Path,
                   label: str = "override") -> ConfigError:
    """The error of a merged config, re-attributed to the override that set its key.

    A ``validate()`` message starts with the dotted key it checks (``data.max_seconds must
    be > 0``); when an override set that key (or a key inside it, or one holding it), the
    message names the override instead of ``source``. Any other error is ``err`` as it is.
    """
    msg = str(err)
    prefix = f"{source}: "
    body = msg[len(prefix):] if msg.startswith(prefix) else msg
    match = re.match(r"[A-Za-z_][A-Za-z0-9_.]*", body)
    key = match.group(0).rstrip(".") if match else ""
    for item in overrides:
        dotted = item.split("=", 1)[0].strip()
        if key and (key == dotted or key.startswith(dotted + ".") or dotted.startswith(key + ".")):
            return ConfigError(f"{label} {item!r} (command line): {body}")
    return err


def from_dict_with_overrides(cls: type, data: dict, overrides: list[str] | tuple[str, ...],
                             source: str | Path, label: str = "override") -> Any:
    """:func:`from_dict` of ``data`` with command-line ``overrides`` merged in; an error
    an override caused names the override (:func:`check_override_keys`,
    :func:`blame_override`), any other names ``source``."""
    if overrides:
        data = deep_merge(data, check_override_keys(cls, overrides, label))
    try:
        return from_dict(cls, data, source=source)
    except ConfigError as err:
        raise blame_override(err, overrides, source, label) from None


def deep_merge(base: dict, update: dict) -> dict:
    """Recursively merge ``update`` into a copy of ``base`` (mappings merge, others replace)."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def to_dict(obj: Any) -> dict:
    """A config dataclass as plain YAML-able data (tuples become lists)."""

    def plain(x: Any) -> Any:
        if isinstance(x, (list, tuple)):
            return [plain(v) for v in x]
        if isinstance(x, dict):
            return {k: plain(v) for k, v in x.items()}
        return x

    return plain(dataclasses.asdict(obj))


# ----------------------------------------------------------------------------- run config


@dataclass
class DataConfig:
    """Where the audio comes from and how batches are made.

    ``corpus`` is a folder written by ``harness data build`` or ``harness data import``;
    the distillation split is read from ``<corpus>/<split>.jsonl``.
    """

    corpus: str = "data/tiny"
    split: str = "distill"
    max_seconds: float = 4.0  # random crop length of each training utterance (seconds)
    batch_size: int = 8
    num_workers: int = 0
    max_utterances: int = 0  # 0 = all
    # the first `heldout` utterances of the split (after max_utterances' cut) are the fixed
    # held-out set every run of a profile evaluates on (harness.heldout); never trained on
    heldout: int = 0  # 0 = no held-out evaluation
    # each held-out utterance is cut to its first `heldout_seconds` (0 = max_seconds, the
    # training crop): longer than the crop gives the probe more frames and the loss more context
    heldout_seconds: float = 0.0

    def validate(self) -> None:
        if self.heldout < 0:
            raise ConfigError(f"heldout must be >= 0 (utterances held out of training), got {self.heldout}")
        if self.max_utterances and self.heldout and self.heldout >= self.max_utterances:
            raise ConfigError(f"heldout ({self.heldout}) must be < max_utterances ({self.max_utterances}): "
                              "no utterance would be left to train on")
        if self.max_seconds <= 0:
            raise ConfigError(f"max_seconds must be > 0, got {self.max_seconds}")
        if self.heldout_seconds < 0:
            raise ConfigError(f"heldout_seconds must be >= 0 (0 = max_seconds), got {self.heldout_seconds}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.num_workers < 0 or self.max_utterances < 0:
            raise ConfigError("num_workers and max_utterances must be >= 0")


@dataclass
class TeacherConfig:
    """The frozen teacher: a spec string and whether its features are cached.

    Specs: ``dummy``, ``embedded:PATH``, ``s3prl:hubert:PATH``, ``s3prl:wavlm:PATH``,
    ``hf:DIR``. ``embedded`` alone means the shipped embedded teacher.
    """

    spec: str = "dummy"
    cache: bool = True
    cache_dir: str = "cache/teacher"

    def validate(self) -> None:
        if not self.spec:
            raise ConfigError("spec must name a teacher (e.g. 'embedded' or 'hf:/path/dir')")
        try:
            # the registry itself: its entries are lazy, so this imports no adapter (and no
            # torch), and a kind registered by user code is accepted too
            check_name(self.spec.partition(":")[0], "teacher kind", tuple(TEACHERS.names()))
        except ConfigError as err:
            raise ConfigError(f"spec {self.spec!r}: {err}") from None
        if self.spec.partition(":")[0] in NOT_TEACHERS:
            raise ConfigError(f"spec {self.spec!r}: {NOT_TEACHERS[self.spec.partition(':')[0]]}, not a distillation "
                              "teacher (use dummy, embedded, embedded:PATH, s3prl:hubert:PATH, s3prl:wavlm:PATH "
                              "or hf:DIR)")
        if "<" in self.spec or ">" in self.spec:
            # sweeps/base/paper.yaml ships 's3prl:hubert:<HUBERT_BASE_CKPT>' for the user to set
            raise ConfigError(
                f"spec {self.spec!r} holds a placeholder: set it to your checkpoint, e.g. "
                "teacher.spec=s3prl:hubert:/data/hubert_base_ls960.pt"
            )


@dataclass
class StudentConfig:
    """The student's shape. ``preset`` fills the defaults; explicit keys win."""

    preset: Literal["student_tiny", "student_embedded", "student_paper"] = "student_tiny"
    layers: int = 0  # final depth; 0 = the preset's
    width: int = 0  # 0 = the preset's
    heads: int = 0
    ffn: int = 0
    layer_norm_first: bool = False  # pre-LN (True) or post-LN as in HuBERT (False)
    dropout: float = 0.0
    frontend_trainable: bool = False  # frozen front-end output can be cached
    target_mode: Literal["l2l", "pred_heads"] = "l2l"
    pred_head_layers: list[int] = field(default_factory=list)  # teacher layers (1-based)
    # --- positional conv and feature norm (harness.student; core helper)
    conv_pos: int = 0  # positional-conv kernel in frames; 0 = the preset's, -1 = none
    conv_pos_groups: int = 0  # 0 = the preset's
    feature_norm: bool = False  # LayerNorm on front-end features (HuBERT); not s3prl-exportable

    def validate(self) -> None:
        if self.conv_pos < -1 or self.conv_pos_groups < 0:
            raise ConfigError("conv_pos must be >= -1 (-1 = none) and conv_pos_groups >= 0")
        for name in ("layers", "width", "heads", "ffn"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0 (0 = the preset's), got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.target_mode == "pred_heads" and not self.pred_head_layers:
            raise ConfigError("pred_head_layers must list teacher layers when target_mode is pred_heads")


@dataclass
class StackingConfig:
    """How the student's depth grows (see ``harness.stacking``).

    ``stages`` = B stages; each growth adds ``add`` layers, so the first stage has
    ``layers - (stages - 1) * add`` layers. ``schedule`` is ``equal``, ``proportional``,
    or a list of B step fractions summing to 1. With ``variant: none`` the student has
    full depth from step 0 and ``stages``/``schedule`` are ignored (:attr:`num_stages`).
    """

    variant: str = "interleaved"
    stages: int = 4
    add: int = 0  # 0 = layers // stages
    schedule: Union[Literal["equal", "proportional"], list[float]] = "proportional"
    init: Literal["copy", "zero", "random"] = "copy"
    optim_state: Literal["copy", "reset"] = "copy"
    layer_map: Literal["proportional", "fixed"] = "fixed"
    offset: int = 0  # interleaved: first copied layer

    @property
    def num_stages(self) -> int:
        """Stages actually run: ``none`` trains full depth from step 0 (one stage), so a
        sweep can put ``none`` in the same grid as the growing variants."""
        return 1 if self.variant == "none" else self.stages

    def validate(self) -> None:
        try:
            check_name(self.variant, "stacking variant", STACKING_VARIANTS)
        except ConfigError as err:
            raise ConfigError(f"variant: {err}") from None
        if self.stages < 1:
            raise ConfigError(f"stages must be >= 1, got {self.stages}")
        if self.add < 0 or self.offset < 0:
            raise ConfigError("add and offset must be >= 0")
        if isinstance(self.schedule, list) and self.variant != "none":
            if len(self.schedule) != self.stages:
                raise ConfigError(
                    f"schedule lists {len(self.schedule)} fractions but stages is {self.stages}"
                )
            if any(f <= 0 for f in self.schedule) or abs(sum(self.schedule) - 1.0) > 1e-6:
                raise ConfigError(f"schedule fractions must be > 0 and sum to 1, got {self.schedule}")


@dataclass
class AskdConfig:
    """ASKD: the teacher weight alpha(t) decays from ``alpha_start`` to ``alpha_end``."""

    decay: Literal["linear", "cosine", "exp", "step"] = "cosine"
    alpha_start: float = 1.0
    alpha_end: float = 0.0
    ema: float = 0.999  # EMA decay of the self-teacher per step (when horizon is 0)
    start_frac: float = 0.0  # fraction of training before the decay starts
    # the self-teacher (harness.losses.SelfTeacher): an EMA of the student, or a snapshot of it,
    # following the student until start_frac; horizon > 0 ties its memory to the run length:
    # the EMA's time constant (decay 1 - 1/(horizon x steps)) or the snapshot's refresh interval
    self_teacher: Literal["ema", "snapshot"] = "ema"
    horizon: float = 0.0

    def validate(self) -> None:
        for name in ("alpha_start", "alpha_end", "ema", "start_frac", "horizon"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"askd.{name} must be in [0, 1], got {v}")
        if self.self_teacher == "snapshot" and self.horizon <= 0:
            raise ConfigError("askd.self_teacher: 'snapshot' needs askd.horizon > 0 (its refresh interval "
                              "as a share of the run, e.g. 0.1)")


@dataclass
class LossConfig:
    """The distillation objective and its per-layer criterion (registries ``OBJECTIVES`` and
    ``CRITERIA`` in ``harness.losses``)."""

    objective: str = "l2l"  # l2l | pred_heads | askd_l2l
    per_layer: str = "mse"  # mse | l1 | l1_cos | cos
    w: float = 0.5  # weight of the mean intermediate-layer loss
    askd: AskdConfig = field(default_factory=AskdConfig)

    def validate(self) -> None:
        if self.objective in LOGIT_OBJECTIVES:
            raise ConfigError(f"objective: {self.objective!r} is not a feature-distillation objective "
                              f"(use {', '.join(FEATURE_OBJECTIVES)}; logit objectives are the ASR track's)")
        try:
            check_name(self.objective, "objective", FEATURE_OBJECTIVES,
                       (("a per-layer loss: set loss.per_layer", CRITERIA),))
        except ConfigError as err:
            raise ConfigError(f"objective: {err}") from None
        try:
            check_name(self.per_layer, "per-layer loss", CRITERIA,
                       (("an objective: set loss.objective", FEATURE_OBJECTIVES + LOGIT_OBJECTIVES),))
        except ConfigError as err:
            raise ConfigError(f"per_layer: {err}") from None
        if self.w < 0:
            raise ConfigError(f"w must be >= 0, got {self.w}")


@dataclass
class OptimConfig:
    """AdamW with linear warmup then decay; the schedule continues across growth."""

    lr: float = 2e-4
    warmup_frac: float = 0.05
    decay: Literal["cosine", "linear", "constant"] = "linear"
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    weight_decay: float = 0.0
    grad_clip: float = 10.0  # max gradient norm; 0 = no clipping

    def validate(self) -> None:
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if not 0.0 <= self.warmup_frac < 1.0:
            raise ConfigError(f"warmup_frac must be in [0, 1), got {self.warmup_frac}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"betas must be two numbers in [0, 1), got {self.betas}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.grad_clip < 0:
            raise ConfigError(f"grad_clip must be >= 0 (0 = no clipping), got {self.grad_clip}")


@dataclass
class TrainConfig:
    """Length, seed, device and bookkeeping of one run."""

    steps: int = 200
    seed: int = 0  # 0 .. 2**32 - 1
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto = bf16 on CUDA, fp32 on CPU
    log_every: int = 10
    ckpt_every: int = 0  # 0 = only at growth and at the end
    threads: int = 0  # torch intra-op threads; 0 = torch's default
    # held-out evaluation every N steps (a multiple of log_every) and at the end; 0 = end only
    eval_every: int = 0
    # variant none only: train for the stacking schedule's compute (train.steps divided by
    # the schedule's theoretical speedup, stacking.stages/add/schedule) instead of train.steps
    compute_matched: bool = False
    # also write every metrics.jsonl line as TensorBoard scalars (and growth events) to
    # <run>/tensorboard/ (tensorboardX); `tensorboard --logdir results/` shows every run
    tensorboard: bool = True

    def validate(self) -> None:
        if self.steps < 1:
            raise ConfigError(f"steps must be >= 1, got {self.steps}")
        try:
            check_device(self.device)
        except ConfigError as err:
            raise ConfigError(f"device: {err}") from None
        if self.log_every < 1 or self.ckpt_every < 0 or self.threads < 0:
            raise ConfigError("log_every must be >= 1; ckpt_every and threads >= 0")
        if self.eval_every < 0 or (self.eval_every and self.eval_every % self.log_every):
            raise ConfigError(f"eval_every must be 0 (end only) or a multiple of log_every ({self.log_every}), "
                              f"got {self.eval_every}")


@dataclass
class RunConfig:
    """One distillation run: ``harness distill --config FILE [key=value ...]``."""

    profile: Literal["tiny", "embedded", "paper"] = "tiny"
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    stacking: StackingConfig = field(default_factory=StackingConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> None:
        """Cross-section checks. The stage sizes and every growth plan need the student
        presets and ``harness.stacking``, which this module must not import (they sit above
        it): :func:`harness.stacking.plan_stages` checks those, and ``harness validate``,
        sweeps and ``run_distill`` call it right after this."""
        if self.train.steps < self.stacking.num_stages:
            raise ConfigError(
                f"train.steps ({self.train.steps}) must be >= stacking.stages ({self.stacking.stages})"
            )
        wants = "pred_heads" if self.loss.objective == "pred_heads" else "l2l"
        if self.student.target_mode != wants:
            raise ConfigError(f"loss.objective {self.loss.objective!r} needs student.target_mode: {wants}")
        if self.train.compute_matched and (self.stacking.variant != "none" or self.stacking.stages < 2):
            raise ConfigError("train.compute_matched: only for stacking.variant none with a stacking schedule "
                              f"to match (stacking.stages >= 2); got variant {self.stacking.variant!r}, "
                              f"stages {self.stacking.stages}")
        if self.teacher.cache and self.student.frontend_trainable:
            raise ConfigError("teacher.cache: the cached front-end output is frozen; set "
                              "student.frontend_trainable=false or teacher.cache=false")


def load_run_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Load a run config from YAML (or defaults when ``path`` is None) plus overrides.

    Raises:
        ConfigError: one line naming the file and key.
    """
    data = load_yaml(path) if path is not None else {}
    return from_dict_with_overrides(RunConfig, data, overrides, source=path or "<defaults>")
