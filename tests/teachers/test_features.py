"""One target semantics for cached and live distillation: the live teacher's targets are
the cache's arrays (teacher on the whole utterance, crop afterwards), step by step."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from harness import distill, heldout
from harness.config import load_run_config
from harness.data.loader import CachedBatches, WaveBatches
from harness.data.manifest import read_manifest
from harness.teachers import load_teacher
from harness.teachers.cache import ensure_cache, exact_batches
from harness.teachers.features import utterance_features

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[2]
FP16 = 2e-3  # relative L2 the cache's float16 storage leaves


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))


@pytest.fixture(scope="module")
def corpus(fake_corpus, tmp_path_factory):
    """Tones of 0.3-1.2 s (every length different) and one of 0.01 s (under one frame)."""
    root = fake_corpus("tones", tmp_path_factory.mktemp("feat"), n=7, seconds=(0.3, 1.2), freqs=(100, 900))
    man = root / "distill.jsonl"
    recs = read_manifest(man)
    sf.write(root / "short.flac", (0.1 * np.sin(np.arange(160) / 3)).astype(np.float32), 16000)
    recs.append({**recs[0], "id": "short", "path": "short.flac", "num_samples": 160})
    man.write_text("".join(__import__("json").dumps(r) + "\n" for r in recs))
    return man


@pytest.fixture(scope="module")
def hubert_like(tmp_path_factory):
    """A group-norm HuBERT (HuBERT Base's front-end: its output depends on padding)."""
    import transformers

    cfg = transformers.HubertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                    intermediate_size=64, conv_dim=(16,) * 7, num_conv_pos_embeddings=16,
                                    num_conv_pos_embedding_groups=4, feat_extract_norm="group")
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("hf") / "hubert"
    transformers.HubertModel(cfg).save_pretrained(path)
    return f"hf:{path}"


@pytest.mark.parametrize("spec", ["hubert_like", "embedded"])
def test_live_features_equal_the_cache(corpus, tmp_path, spec, request):
    """Every utterance, the too-short one (padded to one frame) and, with max_seconds under
    the longest, the split ones (run in pieces): the live computation equals the cache."""
    teacher = load_teacher(request.getfixturevalue(spec) if spec == "hubert_like" else spec)
    assert exact_batches(teacher) is (spec == "hubert_like")
    recs = read_manifest(corpus)
    wavs = [torch.from_numpy(sf.read(corpus.parent / r["path"], dtype="float32")[0]) for r in recs]
    layers = list(range(1, teacher.num_layers + 1))
    for max_seconds in (40.0, 0.5):
        cache = ensure_cache(teacher, corpus, layers, cache_dir=tmp_path / f"c{max_seconds}", log=None,
                             max_seconds=max_seconds)
        if max_seconds < 1:
            assert any(len(v) > 1 for v in cache.plan["pieces"].values())  # some utterances split
        live = utterance_features(teacher, wavs, layers, max_seconds=max_seconds)
        for r, got in zip(recs, live):
            ref = cache.get(r["id"])
            assert set(got) == set(ref)
            for name in ref:
                assert got[name].shape == ref[name].shape, (r["id"], name)
                assert rel(got[name], ref[name]) < FP16, (r["id"], name, rel(got[name], ref[name]))


def _run(corpus, tmp_path, cache: bool, *extra):
    cfg = load_run_config(ROOT / "sweeps" / "base" / "tiny.yaml", [
        f"data.corpus={corpus.parent}", f"teacher.cache_dir={tmp_path / 'cache'}", "data.max_seconds=0.4",
        "train.steps=6", "train.threads=1", "train.device=cpu", "data.heldout=2", "data.batch_size=3",
        f"teacher.cache={str(cache).lower()}", "stacking.variant=none", *extra])
    return distill.setup(cfg, tmp_path / f"run-{cache}", None, "now")


@pytest.mark.parametrize("spec", ["hubert_like", "dummy"])
def test_live_step_batches_equal_the_cached_ones(corpus, tmp_path, spec, request):
    """Step k of a live run trains on the frames, utterances and targets of step k of the
    cached run (fp16 tolerance), and both evaluate on the same held-out targets."""
    teacher = request.getfixturevalue(spec) if spec == "hubert_like" else spec
    cached = _run(corpus, tmp_path, True, f"teacher.spec={teacher}")
    live = _run(corpus, tmp_path, False, f"teacher.spec={teacher}")
    assert cached.read_layers == live.read_layers and live.cache is None
    steps = range(8)
    cb = CachedBatches(cached.cache, cached.data, cached.read_layers, 3, distill.max_frames(cached), 0, steps)
    wb = WaveBatches(live.data, 3, 0, steps)
    cropped = 0
    for k in steps:
        c, w = distill.to_device(cb[k], torch.device("cpu")), distill.live_inputs(live, wb[k])
        assert torch.equal(c["frame_lengths"], w["frame_lengths"])
        cropped += int((c["frame_lengths"] < max(len(x) for x in wb[k]["wavs"]) // 320).sum())
        assert rel(w["feats"], c["feats"]) < FP16
        for j in c["targets"]:
            assert rel(w["targets"][j], c["targets"][j]) < FP16, (k, j)
    assert cropped > 0  # the crops did cut utterances: the offsets were exercised
    for hc, hl in zip(cached.holdout.batches, live.holdout.batches):
        assert torch.equal(hc["frame_lengths"], hl["frame_lengths"]) and rel(hl["feats"], hc["feats"]) < FP16
        assert all(rel(hl["targets"][j], hc["targets"][j]) < FP16 for j in hc["targets"])
    ec = heldout.evaluate(cached.student, cached.teacher, cached.holdout, torch.device("cpu"), probe=False)
    el = heldout.evaluate(live.student, live.teacher, live.holdout, torch.device("cpu"), probe=False)
    assert el["output_loss"] == pytest.approx(ec["output_loss"], rel=1e-2)  # same initial student
