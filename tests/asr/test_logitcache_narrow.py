"""The teacher-logit cache equals the live teacher and is rebuilt, never reused, for another
teacher or split; a narrowed student keeps the teacher's most active channels and, narrowed
to the full width, is the teacher."""

import json

import numpy as np
import pytest
import torch

from harness.asr.data import AsrSplit
from harness.asr.logitcache import TeacherLogits, ensure_logit_cache
from harness.asr.narrow import calibrate, choose, narrow_state
from harness.asr.student import shrink
from harness.asr.teacher import load_asr_model
from harness.asr.train import AsrLossConfig, AsrOptimConfig, _teacher_side, fit


def test_cached_logits_are_the_live_teachers(tone, tmp_path):
    root, tdir = tone
    teacher = load_asr_model(tdir)
    split = AsrSplit(root / "asr_train.jsonl", teacher)
    cache = ensure_logit_cache(teacher, tdir, split, tmp_path, batch_size=8, log=lambda m: None)
    assert len(cache.index) == len(split)
    loss = AsrLossConfig(objective="kd")
    for index in ([3, 0, 17, 9, 30], [1, 2]):  # other batches than the cache was built with
        b = split.batch(teacher, index)
        _, _, labels, live = _teacher_side(teacher, teacher, b, loss, {})
        _, _, _, cached = _teacher_side(teacher, teacher, b, loss, {}, cached=cache)
        mask = labels != -100
        assert torch.allclose(cached[mask], live[mask].float(), atol=1e-4), (cached[mask] - live[mask]).abs().max()
    # a second call loads the file; another batch size (or teacher, or manifest) makes another file
    logs = []
    again = ensure_logit_cache(teacher, tdir, split, tmp_path, batch_size=8, log=logs.append)
    assert again.path == cache.path and not logs
    other = ensure_logit_cache(teacher, tdir, split, tmp_path, batch_size=4, log=logs.append)
    assert other.path != cache.path and "cached" in logs[-1]
    with np.load(cache.path, allow_pickle=False) as z:  # plain arrays only
        assert json.loads(str(z["meta"]))["utterances"] == len(split)
    with pytest.raises(KeyError, match="stale cache"):
        TeacherLogits(cache.path).batch(["no-such-utterance"], 4)


def test_kd_with_the_cache_trains_like_the_live_teacher(tone, tmp_path):
    root, tdir = tone
    teacher = load_asr_model(tdir)
    split = AsrSplit(root / "asr_train.jsonl", teacher)
    cache = ensure_logit_cache(teacher, tdir, split, tmp_path, batch_size=8, log=lambda m: None)
    loss, opt = AsrLossConfig(objective="askd"), AsrOptimConfig(lr=3e-3, warmup_frac=0.1)
    runs = [fit(shrink(teacher, 1), split, 6, loss, opt, batch_size=8, seed=1, teacher=teacher, log_every=3,
                freeze_encoder=False, teacher_logits=c) for c in (None, cache)]
    assert runs[1]["final"]["total"] == pytest.approx(runs[0]["final"]["total"], rel=1e-4)


def test_narrowing_to_full_width_is_the_teacher_and_narrower_keeps_active_channels(tone):
    root, tdir = tone
    teacher = load_asr_model(tdir)
    split = AsrSplit(root / "asr_train.jsonl", teacher)
    batches = [split.batch(teacher, list(range(i, i + 8))) for i in (0, 8)]
    stats = calibrate(teacher, batches)
    d = teacher.model.config.d_model
    ffn = teacher.model.config.encoder_ffn_dim
    full = choose(teacher.model, stats, d, ffn)
    assert all(torch.equal(v, torch.arange(v.numel())) for v in full.values())
    state = teacher.model.state_dict()
    same = narrow_state(state, full)
    assert all(torch.equal(same[k], state[k]) for k in state)
    narrow = shrink(teacher, decoder_layers=1, encoder_layers=1, d_model=16, calib_batches=batches)
    cfg = narrow.model.config
    assert (cfg.d_model, cfg.encoder_ffn_dim, cfg.encoder_layers, cfg.decoder_layers) == (16, 32, 1, 1)
    # the kept residual channels of the decoder are the 16 most active ones, in order
    top = torch.sort(torch.topk(stats["dec.res"], 16).indices).values
    t_emb = teacher.model.model.decoder.embed_tokens.weight
    assert torch.equal(narrow.model.model.decoder.embed_tokens.weight, t_emb[:, top])
    b = batches[0]
    out = narrow.model(input_features=b.features, decoder_input_ids=b.decoder_input).logits
    assert out.shape[-1] == t_emb.shape[0] and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="calibration"):
        shrink(teacher, 1, 1, d_model=16)
    with pytest.raises(ValueError, match="multiple"):
        shrink(teacher, 1, 1, d_model=15, calib_batches=batches)
