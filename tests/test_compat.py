"""The s3prl / torchaudio shim: what breaks without it, that it fixes it, idempotence."""

import subprocess
import sys
import types
from pathlib import Path

import pytest

from harness.compat import apply_s3prl_shim

ROOT = Path(__file__).resolve().parent.parent

WITHOUT = """
try:
    import s3prl.hub
except (AttributeError, ImportError) as err:
    print("FAILED", type(err).__name__, err)
else:
    print("IMPORTED")
"""

WITH = """
from harness.compat import apply_s3prl_shim
added = apply_s3prl_shim()
import s3prl.hub, s3prl.nn
print("IMPORTED", sorted(added), apply_s3prl_shim())
"""


def test_s3prl_imports_only_with_the_shim():
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True) for code in (WITHOUT, WITH)]
    without, with_ = (p.communicate(timeout=180)[0] for p in procs)
    if "IMPORTED" in without:  # an older torchaudio: nothing to fix
        pytest.skip("s3prl imports without the shim with this torchaudio")
    assert "FAILED" in without and "set_audio_backend" in without
    assert "IMPORTED ['torchaudio.set_audio_backend', 'torchaudio.sox_effects'] []" in with_


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
