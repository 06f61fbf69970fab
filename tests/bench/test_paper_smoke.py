"""The paper-shape smoke path (``harness bench paper-smoke``): the fabricated LibriSpeech
layout imports with phones for PR (fast), and the whole path runs at HuBERT Base / 12 x 384
shapes on CPU with a small batch (slow: ~1 min on 2 cores)."""

import json

import numpy as np
import pytest
import soundfile as sf

from harness.bench.papersmoke import add_phones, bench_paper_smoke, fabricate_librispeech
from harness.data.importers import import_corpus
from harness.data.manifest import read_manifest


def test_fabricated_librispeech_imports_with_phones(tmp_path):
    counts = {"train-clean-100": 3, "dev-clean": 2, "test-clean": 2}
    rows = fabricate_librispeech(tmp_path / "LibriSpeech", counts, seconds=(2.0, 3.0))
    trans = sorted((tmp_path / "LibriSpeech").glob("*/*/*/*.trans.txt"))
    assert trans and all(line.split()[0] in rows for t in trans for line in t.read_text().splitlines())
    corpus = import_corpus("librispeech", tmp_path / "LibriSpeech", tmp_path / "corpus")
    assert add_phones(corpus, rows) == 7
    for split, n in (("distill", 3), ("asr_train", 3), ("asr_dev", 2), ("asr_test", 2)):
        recs = read_manifest(corpus / f"{split}.jsonl")
        assert len(recs) == n and all(r["text"] for r in recs)
    for r in read_manifest(corpus / "asr_test.jsonl"):
        audio, sr = sf.read(corpus / r["path"] if not r["path"].startswith("/") else r["path"])
        assert sr == 16000 and len(audio) == r["num_samples"] >= 2 * 16000
        # the phone rows tile the audio and carry speech, not only silence
        assert r["phones"][0][1] == 0 and r["phones"][-1][2] == len(audio)
        assert len({p for p, _, _ in r["phones"]}) > 5 and np.abs(audio).max() > 0.05


@pytest.mark.slow
def test_paper_profile_end_to_end_at_real_shapes(tmp_path):
    out = tmp_path / "smoke.json"
    res = bench_paper_smoke(out, work_dir=tmp_path / "work", steps=4,
                            counts={"train-clean-100": 8, "dev-clean": 4, "test-clean": 4}, seconds=(2.0, 4.0),
                            overrides=["data.batch_size=2", "data.max_seconds=2"], log=lambda m: None)
    assert json.loads(out.read_text())["checks"] == res["checks"]
    s = res["settings"]
    assert s["teacher_params"] > 90e6 and 26e6 < s["student_params"] < 28e6 and s["depths"] == [3, 6, 9, 12]
    assert res["checks"]["status"] == "ok" and res["checks"]["report"]
    assert res["checks"]["export_max_abs_diff"] is not None and res["checks"]["export_max_abs_diff"] < 1e-4
    assert set(res["checks"]["tasks"]) == {"pr", "asr"}
    assert res["cache"]["caches"] == 1  # the run read the cache `harness teacher cache` built
    peaks = {k: p["peak_rss_mib"] for k, p in res["phases"].items() if k != "fabricate"}
    assert all(v is not None and v > 10 for v in peaks.values()), peaks  # each command's own VmHWM
    assert min(peaks["cache"], peaks["distill"]) > 500 > peaks["import"]  # torch + HuBERT Base vs a manifest pass
    assert "ARITHMETIC" in res["extrapolated_paper_cost"]["label"]
