"""``harness validate``: load a YAML file with the config class its content calls for."""

from __future__ import annotations

from pathlib import Path

from harness.config import ConfigError, RunConfig, from_dict, load_yaml


def validate_file(path: Path) -> str:
    """Validate one YAML file strictly and return what kind of config it is.

    A file with a top-level ``grid`` or ``base`` key is a sweep (every trial's config is
    checked as below); anything else is a run config (:class:`harness.config.RunConfig`):
    keys, types, registry names and ranges, then the stage sizes and every growth plan
    (:func:`harness.stacking.plan_stages`), all before anything is built.

    Raises:
        ConfigError: naming the file, the key and the nearest valid key.
    """
    # the sweep, ASR and stacking modules import torch: imported here, so that merely
    # importing this module (``harness --help``) stays fast
    data = load_yaml(path)
    if "grid" in data or "base" in data:
        from harness.sweep import load_sweep

        load_sweep(path)
        return "sweep"
    if data.get("track") == "asr":  # ASR track run config (harness.asr.train)
        from harness.asr.train import AsrRunConfig

        from_dict(AsrRunConfig, data, source=path)
        return "asr run config"
    from harness.stacking import plan_stages

    cfg = from_dict(RunConfig, data, source=path)
    try:
        plan_stages(cfg)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    return "run config"
