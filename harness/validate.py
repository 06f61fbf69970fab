"""``harness validate``: load a YAML file with the config class its content calls for.

A value written ``<NAME>`` (``teacher.spec: s3prl:hubert:<HUBERT_BASE_CKPT>`` in
``sweeps/base/paper.yaml``) is a placeholder the user must fill: :func:`check_file` lists
it as a value the file still needs and checks everything else with the placeholder's
brackets removed, so a paper config is reported as "valid, needs a checkpoint" rather
than as an error. :func:`validate_file` is the strict form: a placeholder is an error.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.config import ConfigError, RunConfig, deep_merge, from_dict_with_overrides, load_yaml, parse_overrides

# ``<HUBERT_BASE_CKPT>``: what a shipped config writes where the user's own value goes
PLACEHOLDER = re.compile(r"<([A-Za-z][A-Za-z0-9_]*)>")
# what each placeholder key needs, for the message (any other key: "a value")
NEEDS = {
    "teacher.spec": "your teacher checkpoint, e.g. teacher.spec=s3prl:hubert:/data/hubert_base_ls960.pt",
}


@dataclass
class Need:
    """A placeholder a config still needs filled: its dotted key, value and file."""

    key: str
    value: str
    file: Path

    def __str__(self) -> str:
        what = NEEDS.get(self.key, f"a value, e.g. {self.key}=VALUE")
        return f"{self.key} is a placeholder ({self.value!r} in {self.file}): set {what}"


@dataclass
class Checked:
    """What :func:`check_file` found: the config's kind and the values it still needs."""

    kind: str
    needs: list[Need] = field(default_factory=list)


def _placeholders(data: Any, prefix: str = "") -> dict[str, str]:
    """Every dotted key of ``data`` whose string value holds a ``<NAME>`` placeholder."""
    found: dict[str, str] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            found.update(_placeholders(value, f"{prefix}{key}."))
    elif isinstance(data, str) and PLACEHOLDER.search(data):
        found[prefix.rstrip(".")] = data
    return found


def _stand_ins(found: dict[str, str]) -> list[str]:
    """``key=value`` overrides that replace each placeholder by its bare name (the brackets
    removed), so that the rest of the config is checked as if it were filled."""
    return ["{}={}".format(key, json.dumps(PLACEHOLDER.sub(r"\1", value))) for key, value in found.items()]


def check_file(path: Path, overrides: list[str] | tuple[str, ...] = ()) -> Checked:
    """Validate one YAML file strictly, with ``overrides`` applied; list its placeholders.

    A file with a top-level ``grid`` or ``base`` key is a sweep (its base config, with the
    sweep's ``overrides`` and then ``overrides`` as ``--set``, and every trial's config are
    checked); a file with ``track: asr`` is an ASR run config; anything else is a run
    config (:class:`harness.config.RunConfig`): keys, types, registry names and ranges,
    then the stage sizes and every growth plan (:func:`harness.stacking.plan_stages`), all
    before anything is built. A ``<NAME>`` placeholder left after the overrides is not an
    error: it is returned as a :class:`Need`, and the rest is checked without it.

    Raises:
        ConfigError: naming the file, the key and the nearest valid key; or naming the
            override (``override 'trian.steps=5' (command line): ...``).
    """
    # the sweep, ASR and stacking modules import torch: imported here, so that merely
    # importing this module (``harness --help``) stays fast
    data = load_yaml(path)
    if "grid" in data or "base" in data:
        return _check_sweep(path, data, overrides)
    cls: type = RunConfig
    kind = "run config"
    if data.get("track") == "asr":  # ASR track run config (harness.asr.train)
        from harness.asr.train import AsrRunConfig

        cls, kind = AsrRunConfig, "asr run config"
    merged = deep_merge(data, parse_overrides(overrides)) if overrides else data
    found = _placeholders(merged)
    cfg = from_dict_with_overrides(cls, data, [*overrides, *_stand_ins(found)], source=path)
    if cls is RunConfig:
        from harness.stacking import plan_stages

        try:
            plan_stages(cfg)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None
    return Checked(kind, [Need(k, v, path) for k, v in found.items()])


def _check_sweep(path: Path, data: dict, overrides: list[str] | tuple[str, ...]) -> Checked:
    from harness import runs
    from harness.sweep import load_sweep

    # the placeholders of the base file as the trials would see it: the sweep file's
    # overrides and the command line's applied; a key the grid sets is the grid's
    base_path = Path(str(data.get("base", "")))
    base_path = base_path if base_path.is_absolute() else path.parent / base_path
    found: dict[str, str] = {}
    if isinstance(data.get("base"), str) and data["base"] and base_path.is_file():
        base = load_yaml(base_path)
        sweep_overrides = data.get("overrides") if isinstance(data.get("overrides"), dict) else {}
        for key, value in runs.flatten(sweep_overrides).items():
            base = deep_merge(base, parse_overrides([f"{key}={json.dumps(value)}"]))
        if overrides:
            base = deep_merge(base, parse_overrides(overrides))
        grid = data.get("grid") if isinstance(data.get("grid"), dict) else {}
        found = {k: v for k, v in _placeholders(base).items()
                 if not any(k == g or k.startswith(g + ".") or g.startswith(k + ".") for g in grid)}
    try:
        load_sweep(path, overrides=[*overrides, *_stand_ins(found)])
    except ConfigError as err:
        # the command line's overrides reach a sweep as --set; here they were given bare
        msg = re.sub(r"^--set '", "override '", str(err)).replace("a --set of ", "the override of ")
        raise ConfigError(msg) from None
    shown = Path(os.path.normpath(base_path))
    return Checked("sweep", [Need(k, v, shown) for k, v in found.items()])


def validate_file(path: Path, overrides: list[str] | tuple[str, ...] = ()) -> str:
    """:func:`check_file`, strictly: a placeholder left unfilled is an error too.

    Returns:
        What kind of config the file is (``"run config"``, ``"asr run config"``, ``"sweep"``).

    Raises:
        ConfigError: as :func:`check_file`, or ``"<path>: teacher.spec = '...' in ... is a
            placeholder: replace ..."``.
    """
    checked = check_file(path, overrides)
    if checked.needs:
        raise ConfigError(f"{path}: {checked.needs[0]}")
    return checked.kind
