import numpy as np
import soundfile as sf

from harness.data.probe import mean_fbank, probe_task


def test_mean_fbank_shape_and_level(tmp_path):
    t = np.arange(16000) / 16000
    loud, quiet = tmp_path / "loud.flac", tmp_path / "quiet.flac"
    sf.write(loud, 0.5 * np.sin(2 * np.pi * 440 * t), 16000)
    sf.write(quiet, 0.05 * np.sin(2 * np.pi * 440 * t), 16000)
    a, b = mean_fbank(loud), mean_fbank(quiet, with_std=True)
    assert a.shape == (80,) and b.shape == (160,)
    # 20 dB quieter = log-energy lower by ln(100) in the band that holds the tone
    k = int(np.argmax(a))
    assert abs((a[k] - b[k]) - np.log(100)) < 0.05


def test_probe_task_on_tiny(tiny_corpus):
    res = probe_task(tiny_corpus, "er")
    assert res["classes"] == 4 and res["n_test"] == 12 and res["n_train"] == 32
    assert 0.0 <= res["accuracy"] <= 1.0 and res["chance"] == 0.25
