import numpy as np
import pytest

from harness.data import espeak


def test_synthesize_int16_16k_with_phone_spans():
    syn = espeak.synthesize("the quick brown fox", "en-us+m3")
    assert syn.audio.dtype == np.int16 and syn.audio.ndim == 1
    n = len(syn.audio)
    assert 0.5 * espeak.SAMPLE_RATE < n < 3 * espeak.SAMPLE_RATE
    assert np.abs(syn.audio).max() > 1000  # real speech, not silence
    names = [p.ipa for p in syn.phones]
    assert names[0] == "ð" and "f" in names and "k" in names
    starts = [p.start for p in syn.phones]
    assert starts == sorted(starts)
    assert all(0 <= p.start < p.end <= n for p in syn.phones)
    # consecutive events share a boundary except around pauses
    assert sum(a.end == b.start for a, b in zip(syn.phones, syn.phones[1:])) >= len(syn.phones) - 3
    assert len(syn.words) == 4


def test_float32_matches_int16_and_is_deterministic():
    a = espeak.synthesize("hello world", "en-gb-x-rp+f1", pitch=60, rate=190)
    b = espeak.synthesize("hello world", "en-gb-x-rp+f1", pitch=60, rate=190, dtype="float32")
    c = espeak.synthesize("hello world", "en-gb-x-rp+f1", pitch=60, rate=190)
    assert b.audio.dtype == np.float32 and np.abs(b.audio).max() <= 1.0
    assert np.array_equal(a.audio, c.audio)  # no state leaks between calls (flutter etc. off)
    assert np.abs(a.audio / 32768.0 - b.audio).max() < 1e-4


def test_rate_and_speed_change_duration():
    slow = len(espeak.synthesize("one two three four five", "en-us", rate=120).audio)
    fast = len(espeak.synthesize("one two three four five", "en-us", rate=300).audio)
    assert fast < 0.7 * slow
    n1 = espeak.synthesize("one two three", "en-us", speed=1.0)
    n2 = espeak.synthesize("one two three", "en-us", speed=1.25)
    assert abs(len(n2.audio) * 1.25 / len(n1.audio) - 1) < 0.01
    assert abs(n2.phones[-1].start * 1.25 / n1.phones[-1].start - 1) < 0.01


def test_phonemize_ipa_per_accent():
    us = espeak.phonemize("car", "en-us")
    gb = espeak.phonemize("car", "en-gb-x-rp")
    assert us.endswith("ɹ") and "ɑː" in us
    assert "ɑː" in gb and not gb.endswith("ɹ")


def test_bad_voice_and_parameter_are_one_line_errors():
    with pytest.raises(espeak.EspeakError, match="not found") as err:
        espeak.synthesize("hi", "en-us+nosuchvariant")
    assert "\n" not in str(err.value)
    with pytest.raises(espeak.EspeakError, match="speed"):
        espeak.synthesize("hi", "en-us", speed=3.0)
    with pytest.raises(espeak.EspeakError, match="dtype"):
        espeak.synthesize("hi", "en-us", dtype="int8")


def test_custom_variant_data_dir(tmp_path):
    low = "language variant\nname low\npitch 70 90\n"
    high = "language variant\nname high\npitch 230 260\nformant 1 120 100 100\n"
    d = espeak.make_data_dir(tmp_path, {"low": low, "high": high}, stock_variants=False, english_only=True)
    assert (d / "voices" / "!v" / "low").read_text().endswith(espeak.DETERMINISTIC_VOICE_LINES)
    old = espeak._DATA_DIR
    try:
        espeak.use_data_dir(d)
        a = espeak.synthesize("aaah", "en-us+low", dtype="float32").audio
        b = espeak.synthesize("aaah", "en-us+high", dtype="float32").audio

        def f0(x):  # autocorrelation pitch of the loudest 100 ms
            i = int(np.argmax(np.convolve(x**2, np.ones(1600), "valid")))
            seg = x[i : i + 1600] - x[i : i + 1600].mean()
            ac = np.correlate(seg, seg, "full")[1600:]
            lo, hi = 16000 // 400, 16000 // 50
            return 16000 / (lo + int(np.argmax(ac[lo:hi])))

        assert f0(a) < 110 < 180 < f0(b)
        assert "m3" not in espeak.list_variants() and "low" in espeak.list_variants()
    finally:
        espeak.reset(old)
    assert "m3" in espeak.list_variants()


def test_too_many_variants_rejected(tmp_path):
    many = {f"v{i}": "language variant\n" for i in range(400)}
    with pytest.raises(espeak.EspeakError, match="limit"):
        espeak.make_data_dir(tmp_path, many, stock_variants=False, english_only=True)


def _hello():
    return espeak.synthesize("hello there, how are you", "en-us", volume=100).audio


def _hello_after_a_loud_one():
    espeak.synthesize("aaah oooh, eeeh aaah", "en-us", volume=200, pitch=99, range=99)  # overflows: lowers agc
    return _hello()


def test_audio_does_not_depend_on_what_the_process_synthesised_before():
    """The two states of eSpeak's wavegen that outlive an utterance (measured before the fix:
    both assertions failed): its automatic gain, lowered by a loud utterance, and the
    modulation-cycle counter of trilled phonemes (Scottish /r/), which alternated "tree"."""
    import multiprocessing as mp

    with mp.get_context("fork").Pool(1, maxtasksperchild=1) as pool:
        fresh = pool.apply(_hello)  # a process that synthesised nothing before
        after = pool.apply(_hello_after_a_loud_one)
    assert np.array_equal(fresh, after)
    runs = [espeak.synthesize("tree", "en-gb-scotland").audio for _ in range(3)]
    assert all(np.array_equal(runs[0], r) for r in runs[1:])
