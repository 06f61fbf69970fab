"""Which track a sweep file belongs to, chosen in one place.

A sweep whose base config declares ``track: asr`` is an ASKD study of
:mod:`harness.asr.study` (its trials are ASR runs, through Ray or in-process like any sweep's); every other
sweep is a distillation sweep (:mod:`harness.sweep.run`). The ASR track's entry points are
lazy ``"module:object"`` names, resolved only when such a sweep is run, so that the sweep
package never imports the ASR track (which itself builds on :mod:`harness.sweep.grid`).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Callable

from harness.config import ConfigError, load_yaml

DISTILL = "distill"
# track -> what the sweep commands call for it: load (-> Sweep), run (-> table path), dry_run (-> text);
# each takes the sweep file and the command line's seeds=, overrides=, suffix=, tasks= (run also
# resume=, log=, retry_failed=, address=, local=), honouring them or refusing one with a ConfigError
TRACKS: dict[str, dict[str, str]] = {
    "asr": {
        "load": "harness.asr.study:load_study",
        "run": "harness.asr.study:run_asr_study",
        "dry_run": "harness.asr.study:study_dry_run",
    },
}


def track_of(path: str | Path) -> str:
    """``asr`` when the sweep file's base config declares ``track: asr``, else ``distill``.

    Raises:
        ConfigError: the sweep file itself is missing or malformed (a missing base is left
            for the loader to report).
    """
    path = Path(path)
    base = load_yaml(path).get("base")
    if not isinstance(base, str) or not base:
        return DISTILL
    base_path = path.parent / base if not Path(base).is_absolute() else Path(base)
    try:
        track = load_yaml(base_path).get("track")
    except ConfigError:
        return DISTILL
    return track if track in TRACKS else DISTILL


def entry(track: str, what: str) -> Callable[..., Any]:
    """The track's ``load``, ``run`` or ``dry_run`` function."""
    module, name = TRACKS[track][what].split(":")
    return getattr(importlib.import_module(module), name)
