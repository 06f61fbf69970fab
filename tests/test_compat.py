"""The s3prl / torchaudio shim: what breaks without it, that it fixes it, idempotence."""

import subprocess
import sys
import types
from pathlib import Path

import pytest

from harness.compat import apply_s3prl_shim

ROOT = Path(__file__).resolve().parent.parent

# the two modules s3prl.hub imports first that touch each removed API
WITHOUT = """
import importlib
for m in ("s3prl.upstream.byol_s.byol_a.common", "s3prl.upstream.mos_prediction.expert"):
    try:
        importlib.import_module(m)
    except (AttributeError, ImportError) as err:
        print("FAILED", m, type(err).__name__, err)
    else:
        print("IMPORTED", m)
"""


def test_s3prl_imports_only_with_the_shim():
    out = subprocess.run([sys.executable, "-c", WITHOUT], cwd=ROOT, capture_output=True, text=True,
                         timeout=180).stdout
    if "FAILED" not in out:  # an older torchaudio: nothing to fix
        pytest.skip("s3prl imports without the shim with this torchaudio")
    assert "FAILED s3prl.upstream.byol_s.byol_a.common AttributeError" in out and "set_audio_backend" in out
    assert "FAILED s3prl.upstream.mos_prediction.expert ModuleNotFoundError" in out and "sox_effects" in out
    apply_s3prl_shim()
    import s3prl.hub
    import s3prl.nn

    assert hasattr(s3prl.hub, "hubert_local") and hasattr(s3prl.nn, "S3PRLUpstream")


def test_shim_is_idempotent_and_its_placeholders_explain_themselves():
    apply_s3prl_shim()
    assert apply_s3prl_shim() == []
    import torchaudio
    from torchaudio.sox_effects import apply_effects_tensor

    assert torchaudio.set_audio_backend("sox_io") is None
    with pytest.raises(RuntimeError, match="removed in torchaudio 2.9"):
        apply_effects_tensor(None, 16000, [])


def test_shim_leaves_a_torchaudio_that_has_the_apis_alone(monkeypatch):
    import torchaudio

    real = types.ModuleType("torchaudio.sox_effects")
    monkeypatch.setattr(torchaudio, "set_audio_backend", lambda backend=None: "real", raising=False)
    monkeypatch.setitem(sys.modules, "torchaudio.sox_effects", real)
    monkeypatch.setattr(torchaudio, "sox_effects", real, raising=False)
    assert apply_s3prl_shim() == []
    assert torchaudio.set_audio_backend() == "real" and sys.modules["torchaudio.sox_effects"] is real
