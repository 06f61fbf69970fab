import json
import os
import time
from pathlib import Path

import pytest
import soundfile as sf

from harness.cli import main
from harness.data import phones, text
from harness.data.manifest import CorpusFolderError, audio_path, corpus_stats, format_stats, read_manifest, write_manifest
from harness.data.synth import (
    PROFILES, STYLES, Profile, SynthError, build_corpus, config_hash,
)

SPLITS = ["distill"] + [f"{t}_{p}" for t in ("ks", "ic", "sid", "er", "asr") for p in ("train", "dev", "test")]

# a few dozen utterances: enough to exercise every kind of job in about a second
MICRO = Profile(
    name="micro", speakers=6, heldout=1, babble_voices=2, babble_utts=2, distill=3, distill_clauses=2,
    ks_per_class=(1, 0, 0), ic_per_intent=(0, 0, 0), sid_per_speaker=(1, 0, 0), er_per_style=(1, 0, 0),
    asr=(2, 1, 1), variants=4,
)


def _records(corpus, split):
    return read_manifest(corpus / f"{split}.jsonl")


def test_every_split_and_class_present(tiny_corpus):
    meta = json.loads((tiny_corpus / "corpus.json").read_text())
    assert sorted(meta["counts"]) == sorted(SPLITS)
    assert meta["profile"] == "tiny" and meta["er_is_proxy"] and "proxy" in meta["tasks"]["er"]
    assert meta["phone_set"]["phones"] == list(phones.PHONES)
    assert meta["unknown_ipa"] == {}
    for part in ("train", "dev", "test"):
        assert {r["label"] for r in _records(tiny_corpus, f"ks_{part}")} == set(text.KS_CLASSES)
        assert len({r["label"] for r in _records(tiny_corpus, f"ic_{part}")}) == len(text.INTENTS) == 31
        assert {r["label"] for r in _records(tiny_corpus, f"er_{part}")} == set(STYLES)
        assert {r["label"] for r in _records(tiny_corpus, f"sid_{part}")} == set(meta["speakers"])
    assert not (tiny_corpus / ".building").exists()


def test_records_fields_audio_and_phones(tiny_corpus):
    for split in SPLITS:
        recs = _records(tiny_corpus, split)
        assert recs, split
        for r in recs[:5]:
            assert r["sample_rate"] == 16000 and not Path(r["path"]).is_absolute()
            assert r["path"].startswith(f"audio/{split}/") and r["path"].endswith(".flac")
            info = sf.info(str(audio_path(r, tiny_corpus)))
            assert (info.samplerate, info.channels, info.frames, info.subtype) == (16000, 1, r["num_samples"], "PCM_16")
            rows = r["phones"]
            assert rows[0][1] == 0 and rows[-1][2] == r["num_samples"]
            assert all(a[2] == b[1] for a, b in zip(rows, rows[1:]))
            assert all(p in phones.PHONE_INDEX for p, _, _ in rows)
            if r.get("label") != text.SILENCE_LABEL:
                assert r["text"] and any(p != "sil" for p, _, _ in rows)
    for r in _records(tiny_corpus, "ks_train"):
        assert r["num_samples"] == 16000
        if r["label"] in text.KEYWORDS:
            assert r["text"] == r["label"]
    ic = _records(tiny_corpus, "ic_train")[0]
    assert ic["label"] == "|".join(ic["slots"][k] for k in ("action", "object", "location"))
    words = text.vocabulary()
    for r in _records(tiny_corpus, "asr_train"):
        assert set(r["text"].split()) <= words


def test_heldout_speakers(tiny_corpus):
    """KS, IC, ER and ASR/PR test and dev speakers never appear in training or distill."""
    spk = lambda split: {r["speaker"] for r in _records(tiny_corpus, split)} - {"none"}  # noqa: E731
    train_side = spk("distill")
    for task in ("ks", "ic", "er", "asr"):
        train_side |= spk(f"{task}_train")
    for task in ("ks", "ic", "er", "asr"):
        assert not spk(f"{task}_dev") & train_side, task
        assert not spk(f"{task}_test") & train_side, task
        assert not spk(f"{task}_dev") & spk(f"{task}_test"), task
    meta = json.loads((tiny_corpus / "corpus.json").read_text())
    pools = meta["speaker_pools"]
    assert len(pools["test"]) == PROFILES["tiny"].heldout
    assert spk("asr_test") <= set(pools["test"])
    # SID: same speakers everywhere, different utterances
    assert spk("sid_train") == spk("sid_dev") == spk("sid_test") == set(meta["speakers"])
    ids = [r["id"] for s in ("sid_train", "sid_dev", "sid_test") for r in _records(tiny_corpus, s)]
    assert len(ids) == len(set(ids))


def test_stats_table(tiny_corpus, capsys):
    out = format_stats(corpus_stats(tiny_corpus))
    assert "ks_train" in out and "_silence_" in out
    assert main(["data", "stats", str(tiny_corpus)]) == 0
    assert "distill" in capsys.readouterr().out


def test_rerun_is_a_fast_noop(tiny_corpus):
    before = (tiny_corpus / "corpus.json").stat().st_mtime_ns
    t = time.time()
    build_corpus("tiny", tiny_corpus, seed=0, workers=1, verbose=False)
    assert time.time() - t < 5
    assert (tiny_corpus / "corpus.json").stat().st_mtime_ns == before


def test_deterministic_across_worker_counts(tmp_path):
    a = build_corpus(MICRO, tmp_path / "a", seed=3, workers=1, verbose=False)
    b = build_corpus(MICRO, tmp_path / "b", seed=3, workers=2, verbose=False)
    c = build_corpus(MICRO, tmp_path / "c", seed=4, workers=1, verbose=False)
    for m in sorted(p.name for p in a.glob("*.jsonl")):
        assert (a / m).read_bytes() == (b / m).read_bytes(), m
    for f in sorted((a / "audio").rglob("*.flac")):
        assert f.read_bytes() == (b / f.relative_to(a)).read_bytes(), f
    assert (a / "asr_train.jsonl").read_bytes() != (c / "asr_train.jsonl").read_bytes()
    assert config_hash(MICRO, 3) != config_hash(MICRO, 4)


def test_tiny_profile_audio_identical_for_1_and_2_workers(tiny_corpus, tmp_path):
    # the session corpus is built with --workers 0 (every core); build the other count here.
    # Format 2 differed in 10 of 492 FLACs (eSpeak state carried between a worker's utterances).
    fixture_workers = os.cpu_count() or 1
    other = build_corpus("tiny", tmp_path / "other", seed=0, workers=2 if fixture_workers == 1 else 1, verbose=False)
    for m in sorted(p.name for p in tiny_corpus.glob("*.jsonl")):
        assert (tiny_corpus / m).read_bytes() == (other / m).read_bytes(), m
    flacs = sorted((tiny_corpus / "audio").rglob("*.flac"))
    assert len(flacs) == sum(json.loads((tiny_corpus / "corpus.json").read_text())["counts"].values())
    differ = [str(f.relative_to(tiny_corpus)) for f in flacs if f.read_bytes() != (other / f.relative_to(tiny_corpus)).read_bytes()]
    assert differ == []


def test_crash_leaves_nothing_trusted_and_rebuilds(tmp_path, capsys):
    out = build_corpus(MICRO, tmp_path / "c", seed=0, workers=1, verbose=False)
    # simulate a crash after the audio and manifests but before corpus.json
    (out / "corpus.json").unlink()
    (out / ".building").write_text("")
    (out / "distill.jsonl").write_text('{"id": "half')
    build_corpus(MICRO, out, seed=0, workers=1, verbose=False)
    assert len(read_manifest(out / "distill.jsonl")) == MICRO.distill
    assert not (out / ".building").exists()
    # a different seed into the same folder is another corpus: refused, kept; --force replaces it
    with pytest.raises(CorpusFolderError, match=r"holds another corpus \(the synthetic micro corpus \(seed 0\)\).*--force"):
        build_corpus(MICRO, out, seed=1, workers=1, verbose=False)
    assert json.loads((out / "corpus.json").read_text())["seed"] == 0
    assert len(read_manifest(out / "distill.jsonl")) == MICRO.distill
    build_corpus(MICRO, out, seed=1, workers=1, verbose=True, force=True)
    assert "--force: cleared the synthetic micro corpus (seed 0): removed corpus.json, " in capsys.readouterr().out
    assert json.loads((out / "corpus.json").read_text())["seed"] == 1


def test_build_refuses_an_imported_corpus_and_force_clears_it(tmp_path, capsys):
    out = tmp_path / "c"
    out.mkdir()
    (out / "corpus.json").write_text(json.dumps({"corpus": "iemocap", "source": "/data/IEMOCAP"}))
    write_manifest(out / "er_fold1_train.jsonl", [{"id": "a", "path": "/x.flac", "num_samples": 1, "sample_rate": 16000,
                                             "speaker": "s", "text": ""}])
    (out / "notes.txt").write_text("mine")
    assert main(["data", "build", "--profile", "tiny", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "holds another corpus (iemocap imported from /data/IEMOCAP)" in err
    assert (out / "er_fold1_train.jsonl").is_file()
    build_corpus(MICRO, out, seed=0, workers=1, verbose=True, force=True)
    assert "removed corpus.json, 1 manifest(s)" in capsys.readouterr().out
    assert not (out / "er_fold1_train.jsonl").exists() and (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / "corpus.json").read_text())["profile"] == "micro"


def test_bad_input_one_line_errors(tmp_path, capsys):
    with pytest.raises(SynthError, match="unknown corpus profile 'huge'.*tiny"):
        build_corpus("huge", tmp_path / "x")
    with pytest.raises(SynthError, match="--workers"):
        build_corpus(MICRO, tmp_path / "x", workers=-1)
    with pytest.raises(SynthError, match="--seed"):
        build_corpus(MICRO, tmp_path / "x", seed=-2)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(SynthError, match="not empty") as err:
        build_corpus(MICRO, foreign, workers=1)
    assert str(foreign) in str(err.value) and (foreign / "notes.txt").exists()
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["data", "build", "--profile", "tiny", "--out", str(blocker / "sub")]) == 2
    msg = capsys.readouterr().err.strip()
    assert msg.count("\n") == 0 and str(blocker) in msg
    assert main(["data", "build", "--profile", "tiny", "--out", str(blocker)]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_only_renders_a_subset_identical_to_the_full_build(tiny_corpus, tmp_path, capsys):
    sub = build_corpus("tiny", tmp_path / "sub", seed=0, workers=1, verbose=False, only="distill:7,ks,asr_test")
    meta = json.loads((sub / "corpus.json").read_text())
    assert meta["only"] == {"distill": 7, "ks": None, "asr_test": None}
    assert sorted(p.stem for p in sub.glob("*.jsonl")) == ["asr_test", "distill", "ks_dev", "ks_test", "ks_train"]
    full_distill = _records(tiny_corpus, "distill")
    assert [r["id"] for r in _records(sub, "distill")] == [r["id"] for r in full_distill[:7]]
    for m in ("ks_train", "ks_test", "asr_test"):
        assert (sub / f"{m}.jsonl").read_bytes() == (tiny_corpus / f"{m}.jsonl").read_bytes(), m
    for f in sorted((sub / "audio").rglob("*.flac")):  # each job is seeded on its own
        assert f.read_bytes() == (tiny_corpus / f.relative_to(sub)).read_bytes(), f
    # a smaller subset, or the same one, is up to date; a full build holds every subset
    before = (sub / "corpus.json").stat().st_mtime_ns
    build_corpus("tiny", sub, seed=0, workers=1, verbose=False, only="distill:5,ks_train")
    assert (sub / "corpus.json").stat().st_mtime_ns == before
    full_before = (tiny_corpus / "corpus.json").stat().st_mtime_ns
    build_corpus("tiny", tiny_corpus, seed=0, workers=1, verbose=False, only="distill:7,ks")
    assert (tiny_corpus / "corpus.json").stat().st_mtime_ns == full_before
    # more than the folder holds: rebuilt with what is asked
    build_corpus("tiny", sub, seed=0, workers=1, verbose=False, only="distill,ks")
    assert json.loads((sub / "corpus.json").read_text())["only"] == {"distill": None, "ks": None}
    assert not (sub / "asr_test.jsonl").exists()
    assert len(_records(sub, "distill")) == len(full_distill)
    # bad specs: one line, before anything is written
    for spec, msg in (("distill:0", "SPLIT:N"), ("distill:x", "SPLIT:N"), (",ks", "SPLIT:N"), ("kws", "no split or task 'kws'")):
        assert main(["data", "build", "--profile", "tiny", "--out", str(tmp_path / "bad"), "--only", spec]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and msg in err, (spec, err)
    assert not (tmp_path / "bad").exists()
