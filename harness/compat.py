"""Compatibility shims for third-party packages, applied explicitly before their import.

s3prl 0.4.18 predates torchaudio 2.9, which removed two APIs that s3prl touches at import
time (``import s3prl.hub`` / ``import s3prl.nn`` fail without them):

- ``torchaudio.set_audio_backend`` (called at module level, e.g. by
  ``s3prl/upstream/byol_s/byol_a/common.py``): AttributeError.
- ``torchaudio.sox_effects`` (``from torchaudio.sox_effects import apply_effects_tensor``
  in ``s3prl/upstream/mos_prediction/expert.py``, and downstream datasets):
  ModuleNotFoundError.

The harness never uses either: it reads audio with soundfile and only runs s3prl's model
code. The shim makes the backend setter a no-op and provides a ``torchaudio.sox_effects``
module whose functions raise a clear error if something does call them. It touches
nothing when torchaudio still has the real APIs.
"""

from __future__ import annotations

import sys
import types

_SOX_MODULE = "torchaudio.sox_effects"


def _sox_unavailable(*args, **kwargs):
    raise RuntimeError(
        "torchaudio.sox_effects was removed in torchaudio 2.9; harness.compat provides only "
        "a placeholder so s3prl can be imported (read audio with soundfile instead)"
    )


def apply_s3prl_shim() -> list[str]:
    """Restore the torchaudio names s3prl 0.4.18 needs at import time. Idempotent.

    Returns:
        The names provided by this call (empty when nothing was missing, e.g. on a second
        call or with an older torchaudio).
    """
    import torchaudio

    added: list[str] = []
    if not hasattr(torchaudio, "set_audio_backend"):
        def set_audio_backend(backend: str | None = None) -> None:
            """No-op stand-in: torchaudio >= 2.9 has a single dispatcher backend."""

        torchaudio.set_audio_backend = set_audio_backend
        added.append("torchaudio.set_audio_backend")

    try:
        import torchaudio.sox_effects  # noqa: F401
    except ImportError:
        mod = types.ModuleType(_SOX_MODULE)
        mod.__doc__ = "Placeholder provided by harness.compat (removed in torchaudio 2.9)."
        mod.apply_effects_tensor = _sox_unavailable
        mod.apply_effects_file = _sox_unavailable
        mod.effect_names = lambda: []
        sys.modules[_SOX_MODULE] = mod
        torchaudio.sox_effects = mod
        added.append(_SOX_MODULE)
    return added
