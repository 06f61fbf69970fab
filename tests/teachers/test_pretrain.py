"""HuBERT-style pretraining: a few steps on fabricated audio lower the loss; files written."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from harness.teachers.embedded import load_embedded
from harness.teachers.pretrain_config import profile_config
from harness.teachers.pretrain import (
    fit_kmeans, mfcc_features, pretrain, span_mask, write_log,
)



@pytest.fixture(scope="module")
def corpus(fake_corpus):
    return fake_corpus("teacher", n_distill=48, n_probe=2)


def test_mfcc_targets_on_front_end_grid():
    wav = torch.randn(16000) * 0.1
    f = mfcc_features(wav)
    assert f.shape == (49, 39)  # same 50 Hz frames as the fbank front-end for 1 s
    labels, stats = fit_kmeans([f, f[:10]], k=4, max_frames=1000, seed=0)
    assert [len(x) for x in labels] == [49, 10] and labels[0].dtype == np.int16
    assert stats["used_clusters"] <= 4 and stats["frames"] == 59


def test_span_mask_fraction():
    g = torch.Generator().manual_seed(0)
    m = span_mask(torch.tensor([200, 100, 5]), 200, 0.65, 10, g)
    assert m.shape == (3, 200) and not m[1, 100 + 9 :].any() and not m[2].any()
    frac = m[0].float().mean().item()
    assert 0.3 < frac < 0.7  # ~13 overlapping spans of 10 frames


def test_few_steps_lower_the_loss_and_write_files(corpus, tmp_path):
    cfg = replace(
        profile_config("tiny"), iterations=2, minutes1=0, minutes2=0, steps1=40, steps2=6, k1=8, k2=8,
        batch_seconds=8.0, log_every=5, lr=2e-3, kmeans_frames=5000, phone_minutes=0,
    )
    out = tmp_path / "teacher.pt"
    summary = pretrain(cfg, corpus, out, log_fn=lambda m: None)
    it1 = summary["iter1"]
    assert it1["steps"] == 40 and summary["iter2"]["steps"] == 6
    assert it1["final_loss"] < it1["first_loss"] - 0.1, it1  # learning happens
    rows = (tmp_path / "teacher.log.tsv").read_text().splitlines()
    assert rows[0].split("\t") == ["iteration", "step", "seconds", "lr", "loss", "masked_acc"]
    assert len(rows) == 1 + 40 // 5 + 6 // 5
    meta = json.loads((tmp_path / "teacher.json").read_text())
    assert meta["teacher_id"] == load_embedded(out).id and meta["iter2"]["targets"]["layer"] == 3
    assert load_embedded(out).extra["iter1"]["steps"] == 40
    assert load_embedded(tmp_path / "teacher.iter1.pt").extra["iter1"]["steps"] == 40


def test_phone_iteration_from_a_checkpoint(corpus, tmp_path):
    from harness.data.phones import PHONE_INDEX
    from harness.teachers.pretrain import phone_frame_labels

    lab = phone_frame_labels({"id": "u", "phones": [["sil", 0, 400], ["aa", 400, 1300], ["t", 1300, 1600]]}, 1600)
    assert lab.tolist() == [PHONE_INDEX["sil"], PHONE_INDEX["aa"], PHONE_INDEX["aa"], PHONE_INDEX["aa"], PHONE_INDEX["t"]]
    with pytest.raises(ValueError, match="no 'phones'"):
        phone_frame_labels({"id": "u"}, 1600)
    base = replace(profile_config("tiny"), minutes1=0, minutes2=0, steps1=4, iterations=1, k1=8, batch_seconds=8.0,
                   kmeans_frames=5000, phone_minutes=0)
    pretrain(base, corpus, tmp_path / "a.pt", log_fn=lambda m: None)
    cfg = replace(base, iterations=0, init=str(tmp_path / "a.pt"), phone_steps=30, log_every=5, lr=2e-3)
    summary = pretrain(cfg, corpus, tmp_path / "b.pt", log_fn=lambda m: None)
    ph = summary["phones"]
    assert ph["steps"] == 30 and ph["targets"]["classes"] == len(PHONE_INDEX) and "iter1" not in summary
    assert ph["final_loss"] < ph["first_loss"] - 0.1, ph
    with pytest.raises(ValueError, match="init"):
        pretrain(replace(cfg, init=""), corpus, tmp_path / "c.pt", log_fn=lambda m: None)
    with pytest.raises(ValueError, match="nothing to train"):
        pretrain(replace(cfg, phone_steps=0), corpus, tmp_path / "c.pt", log_fn=lambda m: None)


def test_needs_a_budget_and_the_corpus(corpus, tmp_path):
    cfg = replace(profile_config("tiny"), minutes1=0, steps1=0)
    with pytest.raises(ValueError, match="budget"):
        pretrain(cfg, corpus, tmp_path / "x.pt", log_fn=lambda m: None)
    with pytest.raises(ValueError, match="iter2_layer"):
        pretrain(replace(profile_config("tiny"), iter2_layer=9), corpus, tmp_path / "x.pt", log_fn=lambda m: None)
    with pytest.raises(FileNotFoundError, match="distill"):
        pretrain(profile_config("tiny"), tmp_path, tmp_path / "x.pt", log_fn=lambda m: None)
    with pytest.raises(ValueError, match="profile"):
        profile_config("huge")


def test_write_log_format(tmp_path):
    write_log([{"iteration": 1, "step": 5, "seconds": 1.5, "lr": 1e-3, "loss": 2.0, "masked_acc": 0.25}], tmp_path / "l.tsv")
    assert (tmp_path / "l.tsv").read_text().splitlines()[1] == "1\t5\t1.5\t0.001\t2\t0.25"


def test_utterance_contrastive_loss_matches_halves():
    from harness.teachers.pretrain import utterance_contrastive_loss

    torch.manual_seed(0)
    proj = torch.nn.Identity()
    voices = torch.randn(4, 1, 8) * 3  # one constant "voice" vector per utterance
    a = voices + 0.1 * torch.randn(4, 6, 8)
    b = voices + 0.1 * torch.randn(4, 6, 8)
    b[:, 4:] = 99.0  # padding beyond each item's 4 valid frames must not count
    h = torch.cat([a, b])
    lengths = torch.tensor([6, 6, 6, 6, 4, 4, 4, 4])
    loss, hits = utterance_contrastive_loss(h, lengths, proj, temperature=0.1)
    assert hits == 4 and float(loss) < 0.05
    shuffled = torch.cat([a, b[[1, 2, 3, 0]]])  # halves paired with the wrong utterance
    loss2, hits2 = utterance_contrastive_loss(shuffled, lengths, proj, temperature=0.1)
    assert hits2 == 0 and float(loss2) > 5.0


def test_halves_batch_cuts_whole_frames_and_reaugments():
    from harness.teachers.pretrain import HOP50, halves_batch

    rng = np.random.default_rng(0)
    wav = (np.sin(np.arange(16000) / 7.0) * 8000).astype(np.int16)
    lab = np.arange(50, dtype=np.int16)
    segs, labs = halves_batch([wav, wav[:3200]], [lab, lab[:10]], [0, 1], [5, 0], 20 * HOP50, rng)
    assert [len(s) for s in segs] == [10 * HOP50, 5 * HOP50, 10 * HOP50, 5 * HOP50]
    assert labs[0].tolist() == list(range(5, 15)) and labs[2].tolist() == list(range(15, 25))
    assert labs[1].tolist() == list(range(0, 5)) and labs[3].tolist() == list(range(5, 10))
    # each half has its own level: the recording level cannot tell the halves apart
    first, second = segs[0].numpy(), wav[5 * HOP50 : 15 * HOP50] / 32768.0
    assert not np.allclose(first, second) and np.abs(first).max() <= 0.99


def test_utterance_iteration_from_a_checkpoint(corpus, tmp_path):
    base = replace(profile_config("tiny"), minutes1=0, minutes2=0, steps1=4, iterations=1, k1=8, batch_seconds=8.0,
                   kmeans_frames=5000, phone_minutes=0)
    pretrain(base, corpus, tmp_path / "a.pt", log_fn=lambda m: None)
    cfg = replace(base, iterations=0, init=str(tmp_path / "a.pt"), phone_steps=4, utt_steps=30, utt_layer=2,
                  log_every=5, lr=2e-3, utt_batch_seconds=16.0, utt_crop_seconds=2.0)
    summary = pretrain(cfg, corpus, tmp_path / "b.pt", log_fn=lambda m: None)
    utt = summary["utterance"]
    assert utt["steps"] == 30 and utt["targets"]["contrastive"]["layer"] == 2
    assert utt["final_loss"] < utt["first_loss"], utt
    assert 0.0 <= utt["final_pair_acc"] <= 1.0
    assert load_embedded(tmp_path / "b.phones.pt").extra["phones"]["steps"] == 4  # the stage before is kept
    header = (tmp_path / "b.log.tsv").read_text().splitlines()[0].split("\t")
    assert header[-1] == "utt_acc"
    with pytest.raises(ValueError, match="utt_layer"):
        pretrain(replace(cfg, utt_layer=99), corpus, tmp_path / "c.pt", log_fn=lambda m: None)


def test_speaker_pairs_draw_two_utterances_of_one_speaker():
    from harness.teachers.pretrain import HOP50, SpeakerPairs

    speakers = ["s1", "s1", "s2", "s2", "s2", None, "s3"]  # s3 has one utterance, None is left out
    wavs = [np.full(16000, k, np.int16) for k in range(len(speakers))]
    labels = [np.full(50, k, np.int16) for k in range(len(speakers))]
    pairs = SpeakerPairs(speakers, batch_seconds=40.0, crop_seconds=1.0, seed=0)
    assert sorted(pairs.by) == ["s1", "s2"] and pairs.n == 2
    for _ in range(5):
        spks, segs, labs = pairs.next(wavs, labels)
        assert sorted(spks) == ["s1", "s2"] and len(segs) == 4
        for k, spk in enumerate(spks):
            a, b = int(segs[k][0] * 32768), int(segs[k + 2][0] * 32768)  # utterance index
            assert a != b and speakers[a] == speakers[b] == spk
        assert all(len(s) == 50 * HOP50 for s in segs)
    with pytest.raises(ValueError, match="2 speakers"):
        SpeakerPairs(["s1", "s1", "s2"], 40.0, 1.0, 0)


def test_speaker_positives_leave_out_the_sid_speakers(corpus, tmp_path, monkeypatch):
    from harness.teachers import pretrain as pt

    sid_train = {json.loads(line)["label"] for line in (corpus / "sid_train.jsonl").read_text().splitlines()}
    assert pt.sid_scored_speakers(corpus) == sid_train  # fewer than 128: SID keeps them all
    monkeypatch.setattr(pt, "sid_scored_speakers", lambda data_dir: {"spk0"})
    base = replace(profile_config("tiny"), minutes1=0, minutes2=0, steps1=2, iterations=1, k1=8, batch_seconds=8.0,
                   kmeans_frames=5000, phone_minutes=0)
    pretrain(base, corpus, tmp_path / "a.pt", log_fn=lambda m: None)
    cfg = replace(base, iterations=0, init=str(tmp_path / "a.pt"), utt_steps=6, utt_layer=2, log_every=3,
                  utt_positives="speaker", utt_crop_seconds=1.0, utt_batch_seconds=8.0)
    contrast = pretrain(cfg, corpus, tmp_path / "b.pt", log_fn=lambda m: None)["utterance"]["targets"]["contrastive"]
    assert contrast["speakers"] == 2 and contrast["left_out_sid_speakers"] == 1 and contrast["positives"] == "speaker"
    with pytest.raises(ValueError, match="utt_positives"):
        pretrain(replace(cfg, utt_positives="other"), corpus, tmp_path / "c.pt", log_fn=lambda m: None)


def test_shipped_recipe_is_the_embedded_profile():
    """harness/assets/pretrain_embedded.yaml and profile_config('embedded') cannot drift apart."""
    from harness.teachers.pretrain_config import EMBEDDED_RECIPE, load_pretrain_config

    assert load_pretrain_config("embedded") == profile_config("embedded")
    assert load_pretrain_config("embedded", EMBEDDED_RECIPE) == profile_config("embedded")
    assert load_pretrain_config("tiny", EMBEDDED_RECIPE) == profile_config("embedded")  # every key written out
    assert load_pretrain_config("tiny") == profile_config("tiny")


def test_pretrain_config_is_strict(tmp_path):
    from harness.config import ConfigError
    from harness.teachers.pretrain_config import load_pretrain_config

    cfg = tmp_path / "p.yaml"
    cfg.write_text("model:\n  layrs: 2\n")
    with pytest.raises(ConfigError, match=r"p\.yaml: unknown key 'model\.layrs'; did you mean 'model\.layers'"):
        load_pretrain_config("tiny", cfg)
    with pytest.raises(ConfigError, match="did you mean 'scratch'"):
        load_pretrain_config("tiny", None, ["iter2_init=scrach"])
    with pytest.raises(ConfigError, match="iter2_layer"):  # validate() runs at load
        load_pretrain_config("tiny", None, ["iter2_layer=9"])
    c = load_pretrain_config("embedded", None, ["utt_positives=halves", "model.dropout=0", "threads=1"])
    assert (c.utt_positives, c.model.dropout, c.threads) == ("halves", 0.0, 1)
