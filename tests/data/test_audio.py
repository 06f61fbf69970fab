"""Audio reading: every kind of bad file is one AudioError naming the path."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf

from harness.data.audio import AudioError, check_audio, load_audio, probe_audio, write_wav

SR = 16000


def _sine(n: int = 8000, sr: int = SR) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / sr)).astype(np.float32)


@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_good_file_round_trips(tmp_path, fmt):
    x = _sine()
    path = tmp_path / f"a.{fmt}"
    sf.write(path, x, SR)
    assert probe_audio(path) == (SR, 1, 8000)
    assert check_audio(path) == 8000
    y = load_audio(path)
    assert y.dtype == np.float32 and y.shape == (8000,)
    np.testing.assert_allclose(y, x, atol=1e-4)  # 16-bit quantisation
    np.testing.assert_allclose(load_audio(path, start=100, stop=300), y[100:300])


def _bad(tmp_path, kind: str, fmt: str):
    path = tmp_path / f"{kind}.{fmt}"
    good = tmp_path / f"good.{fmt}"
    sf.write(good, _sine(16000), SR)
    data = good.read_bytes()
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4000))
    elif kind == "truncated":
        path.write_bytes(data[: len(data) // 3])
    elif kind == "header_only":
        path.write_bytes(data[:30])
    return path


@pytest.mark.parametrize("fmt", ["wav", "flac"])
@pytest.mark.parametrize("kind,words", [
    ("empty", "empty file"), ("random", "not readable audio"),
    ("truncated", "truncated"), ("header_only", "not readable audio"),
])
def test_bad_files_raise_one_line_naming_path(tmp_path, fmt, kind, words):
    path = _bad(tmp_path, kind, fmt)
    for fn in (probe_audio, load_audio):
        with pytest.raises(AudioError) as err:
            fn(path)
        msg = str(err.value)
        assert msg.startswith(str(path)) and "\n" not in msg
        if fn is probe_audio:
            assert words in msg


def test_wrong_rate_and_stereo(tmp_path):
    p8 = tmp_path / "8k.wav"
    sf.write(p8, _sine(8000, 8000), 8000)
    assert probe_audio(p8)[0] == 8000  # probe reports, check refuses
    with pytest.raises(AudioError, match=r"8k\.wav: sample rate 8000 Hz, expected 16000 Hz"):
        check_audio(p8)
    with pytest.raises(AudioError, match="sample rate 8000"):
        load_audio(p8)
    st = tmp_path / "st.flac"
    sf.write(st, np.stack([_sine(), _sine()], 1), SR)
    with pytest.raises(AudioError, match=r"st\.flac: 2 channels, expected mono"):
        check_audio(st)
    with pytest.raises(AudioError, match="2 channels"):
        load_audio(st)


def test_missing_zero_samples_nan_and_length_mismatch(tmp_path):
    with pytest.raises(AudioError, match="cannot read"):
        load_audio(tmp_path / "nope.wav")
    z = tmp_path / "zero.wav"
    sf.write(z, np.zeros(0, np.float32), SR)
    assert z.stat().st_size > 0
    with pytest.raises(AudioError, match="empty audio"):
        probe_audio(z)
    nan = tmp_path / "nan.wav"
    x = _sine()
    x[5] = np.nan
    sf.write(nan, x, SR, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN"):
        load_audio(nan)
    ok = tmp_path / "ok.wav"
    sf.write(ok, _sine(), SR)
    with pytest.raises(AudioError, match="holds 8000 samples, the manifest says 9000"):
        load_audio(ok, expected_len=9000)
    with pytest.raises(AudioError, match="outside"):
        load_audio(ok, start=7000, stop=9000)


def test_write_wav_atomic_and_readable(tmp_path):
    path = tmp_path / "sub" / "x.wav"
    write_wav(path, _sine())
    assert check_audio(path) == 8000
    assert not [p for p in os.listdir(path.parent) if p.endswith(".tmp")]
