"""Importers on miniature fabricated copies of each corpus' layout (real WAV/FLAC files)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from harness.cli import main
from harness.data import importers
from harness.data.audio import check_audio
from harness.data.importers import LayoutError, import_corpus, normalize_text
from harness.data.manifest import audio_path, read_manifest

SR = 16000
RNG = np.random.default_rng(0)


def _audio(path: Path, n: int = 3200, sr: int = SR, channels: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    x = (0.1 * RNG.standard_normal((n, channels))).astype(np.float32)
    sf.write(path, x if channels > 1 else x[:, 0], sr)
    return path


def _corrupt(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(RNG.bytes(3000))  # random bytes with an audio name
    return path


def _truncated(path: Path) -> Path:
    _audio(path, 16000)
    path.write_bytes(path.read_bytes()[:5000])
    return path


def _manifests(out: Path) -> dict[str, list[dict]]:
    return {p.stem: read_manifest(p) for p in sorted(out.glob("*.jsonl"))}


def _check_records(out: Path, splits: dict[str, list[dict]]) -> None:
    for recs in splits.values():
        for r in recs:
            p = audio_path(r, out)
            assert p.is_file(), p
            assert check_audio(p) == r["num_samples"] and r["sample_rate"] == SR


def _skipped(out: Path) -> dict[str, str]:
    meta = json.loads((out / "corpus.json").read_text())
    assert meta["skipped"] == len(meta["skips"])
    return {Path(p).name: reason for p, reason in meta["skips"]}


# ----------------------------------------------------------------------------- LibriSpeech


def _librispeech(root: Path) -> Path:
    src = root / "LibriSpeech"
    ch = src / "train-clean-100" / "19" / "198"
    for utt in ("0000", "0001"):
        _audio(ch / f"19-198-{utt}.flac")
    _corrupt(ch / "19-198-0002.flac")
    _audio(ch / "19-198-0003.flac")  # no transcript line
    _audio(ch / "19-198-0005.flac", sr=8000)
    _audio(ch / "19-198-0006.flac", channels=2)
    _truncated(ch / "19-198-0007.flac")
    (ch / "19-198.trans.txt").write_text(
        "19-198-0000 HE'S TWENTY-ONE\n19-198-0001 NORTHANGER ABBEY\n19-198-0002 BAD\n"
        "19-198-0004 NO AUDIO HERE\n19-198-0005 EIGHT K\n19-198-0006 STEREO\n19-198-0007 CUT\n"
    )
    ch2 = src / "train-clean-360" / "20" / "1"
    _audio(ch2 / "20-1-0000.flac")
    (ch2 / "20-1.trans.txt").write_text("20-1-0000 A\n")
    _audio(src / "train-clean-360" / "21" / "5" / "21-5-0000.flac")  # no transcript file
    for subset, spk in (("dev-clean", "30"), ("test-clean", "40"), ("dev-other", "50")):
        _audio(src / subset / spk / "2" / f"{spk}-2-0000.flac")
        (src / subset / spk / "2" / f"{spk}-2.trans.txt").write_text(f"{spk}-2-0000 HELLO WORLD\n")
    return src


def test_librispeech(tmp_path, capsys):
    src = _librispeech(tmp_path)
    out = import_corpus("librispeech", src, tmp_path / "out")
    splits = _manifests(out)
    assert set(splits) == {"distill", "asr_train", "asr_dev", "asr_test"}
    assert [r["id"] for r in splits["asr_train"]] == ["19-198-0000", "19-198-0001"]
    assert [r["id"] for r in splits["distill"]] == ["19-198-0000", "19-198-0001", "20-1-0000"]
    assert [r["id"] for r in splits["asr_dev"]] == ["30-2-0000"]
    assert splits["asr_train"][0]["text"] == "he's twenty one"
    assert splits["asr_train"][0]["speaker"] == "19"
    assert all(Path(r["path"]).is_absolute() for r in splits["distill"])
    _check_records(out, splits)
    skipped = _skipped(out)
    assert set(skipped) == {
        "19-198-0002.flac", "19-198-0003.flac", "19-198-0004.flac", "19-198-0005.flac",
        "19-198-0006.flac", "19-198-0007.flac", "21-5-0000.flac",
    }
    assert "not readable audio" in skipped["19-198-0002.flac"]
    assert "no transcript line" in skipped["19-198-0003.flac"]
    assert "audio file is missing" in skipped["19-198-0004.flac"]
    assert "8000 Hz" in skipped["19-198-0005.flac"]
    assert "2 channels" in skipped["19-198-0006.flac"]
    assert "truncated or corrupt" in skipped["19-198-0007.flac"]
    assert "missing transcript file" in skipped["21-5-0000.flac"]
    printed = capsys.readouterr().out
    assert "skipped: 7 file(s)" in printed and "19-198-0002.flac" in printed


def test_rerun_is_noop_and_crash_leaves_no_trusted_folder(tmp_path, monkeypatch, capsys):
    src = _librispeech(tmp_path)
    out = import_corpus("librispeech", src, tmp_path / "out")
    stamp = (out / "distill.jsonl").stat().st_mtime_ns
    capsys.readouterr()
    import_corpus("librispeech", src, out)
    assert "already imported" in capsys.readouterr().out
    assert (out / "distill.jsonl").stat().st_mtime_ns == stamp

    calls = []

    def failing(path, records):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(path, records)

    real = importers.write_manifest
    monkeypatch.setattr(importers, "write_manifest", failing)
    with pytest.raises(OSError):
        import_corpus("librispeech", src, out, force=True)
    assert not (out / "corpus.json").exists()  # nothing claims the folder is complete
    assert not list(out.glob("*.tmp"))
    monkeypatch.setattr(importers, "write_manifest", real)
    import_corpus("librispeech", src, out)  # not a no-op: re-imports
    assert "imported librispeech" in capsys.readouterr().out
    assert (out / "corpus.json").is_file()


# ----------------------------------------------------------------------------- Speech Commands


def test_speech_commands(tmp_path):
    src = tmp_path / "speech_commands_v0.01"
    for word, hashes in (("yes", ["aa01", "bb02", "cc03"]), ("no", ["aa01", "dd04"]), ("bed", ["ee05"])):
        for h in hashes:
            _audio(src / word / f"{h}_nohash_0.wav", 16000)
    _corrupt(src / "go" / "ff06_nohash_0.wav")
    (src / "validation_list.txt").write_text("yes/bb02_nohash_0.wav\n")
    (src / "testing_list.txt").write_text("yes/cc03_nohash_0.wav\nno/dd04_nohash_0.wav\nup/gone_nohash_0.wav\n")
    _audio(src / "_background_noise_" / "white_noise.wav", int(10.5 * SR))
    _audio(src / "_background_noise_" / "low_rate.wav", 16000, sr=8000)
    (src / "_background_noise_" / "README.md").write_text("noise")
    out = import_corpus("speech_commands", src, tmp_path / "ks")
    splits = _manifests(out)
    assert set(splits) == {"ks_train", "ks_dev", "ks_test"}
    labels = {s: sorted(r["label"] for r in recs) for s, recs in splits.items()}
    assert labels["ks_train"] == ["_silence_"] * 8 + ["_unknown_", "no", "yes"]
    assert labels["ks_dev"] == ["_silence_", "yes"]
    assert labels["ks_test"] == ["_silence_", "no", "yes"]
    sil = [r for r in splits["ks_test"] if r["label"] == "_silence_"][0]
    assert sil["path"] == "silence/white_noise_0009.wav" and sil["num_samples"] == SR
    yes = [r for r in splits["ks_dev"] if r["label"] == "yes"][0]
    assert yes["speaker"] == "bb02" and yes["text"] == "yes" and yes["id"] == "yes_bb02_nohash_0"
    _check_records(out, splits)
    skipped = _skipped(out)
    assert set(skipped) == {"ff06_nohash_0.wav", "gone_nohash_0.wav", "low_rate.wav"}
    # importing into the source folder itself: the generated silence/ is not a word
    import_corpus("speech_commands", src, src)
    inside = import_corpus("speech_commands", src, src, force=True)  # silence/ now exists
    assert {s: len(r) for s, r in _manifests(inside).items()} == {s: len(r) for s, r in splits.items()}
    # the loader reads every record, generated clips through their corpus-relative path
    from harness.data.loader import AudioDataset, collate

    ds = AudioDataset(out / "ks_test.jsonl")
    batch = collate([ds[i] for i in range(len(ds))])
    assert batch.wavs.shape == (3, SR) and "silence_white_noise_0009" in batch.ids
    # the silence clips are the noise file's consecutive seconds
    noise, _ = sf.read(src / "_background_noise_" / "white_noise.wav", dtype="float32")
    clip, _ = sf.read(out / "silence" / "white_noise_0003.wav", dtype="float32")
    np.testing.assert_allclose(clip, noise[3 * SR:4 * SR], atol=1e-4)


# ----------------------------------------------------------------------------- Fluent Speech Commands


def test_fluent_commands(tmp_path):
    src = tmp_path / "fluent_speech_commands_dataset"
    header = ",path,speakerId,transcription,action,object,location\n"
    rows = {
        "train": [("spkA", "u1", "Turn on the lights.", "activate", "lights", "none"),
                  ("spkA", "u2", "Bring me my shoes", "bring", "shoes", "none"),
                  ("spkB", "bad", "Lights off", "deactivate", "lights", "none"),
                  ("spkB", "gone", "Lights off", "deactivate", "lights", "none")],
        "valid": [("spkC", "u3", "Heat up the kitchen", "increase", "heat", "kitchen")],
        "test": [("spkD", "u4", "Volume down", "decrease", "volume", "none")],
    }
    (src / "data").mkdir(parents=True)
    for split, rs in rows.items():
        lines = [header]
        for i, (spk, stem, text, a, o, loc) in enumerate(rs):
            rel = f"wavs/speakers/{spk}/{stem}.wav"
            if stem == "bad":
                _corrupt(src / rel)
            elif stem != "gone":
                _audio(src / rel)
            lines.append(f'{i},{rel},{spk},"{text}",{a},{o},{loc}\n')
        (src / "data" / f"{split}_data.csv").write_text("".join(lines))
    out = import_corpus("fluent_commands", src, tmp_path / "ic")
    splits = _manifests(out)
    assert {s: len(r) for s, r in splits.items()} == {"ic_train": 2, "ic_dev": 1, "ic_test": 1}
    r = splits["ic_train"][0]
    assert r["label"] == "activate|lights|none"
    assert r["slots"] == {"action": "activate", "object": "lights", "location": "none"}
    assert r["text"] == "turn on the lights" and r["speaker"] == "spkA" and r["id"] == "spkA_u1"
    _check_records(out, splits)
    assert set(_skipped(out)) == {"bad.wav", "gone.wav"}

    broken = tmp_path / "broken"
    (broken / "data").mkdir(parents=True)
    for split in ("train", "valid", "test"):
        (broken / "data" / f"{split}_data.csv").write_text("path,speakerId,transcription\n")
    with pytest.raises(LayoutError, match=r"train_data\.csv: lacks column\(s\) action, object, location"):
        import_corpus("fluent_commands", broken, tmp_path / "ic2")


# ----------------------------------------------------------------------------- VoxCeleb1


def test_voxceleb1(tmp_path):
    src = tmp_path / "VoxCeleb1"
    lines = []
    for spk in ("id10001", "id10002"):
        for i, sid in enumerate((1, 1, 2, 3), 1):
            _audio(src / "wav" / spk / "vidA" / f"{i:05d}.wav")
            lines.append(f"{sid} {spk}/vidA/{i:05d}.wav")
    _corrupt(src / "wav" / "id10001" / "vidB" / "00001.wav")
    _audio(src / "wav" / "id10002" / "vidB" / "00001.wav", channels=2)
    lines += ["1 id10001/vidB/00001.wav", "1 id10002/vidB/00001.wav", "3 id10003/vidC/00001.wav",
              "3 id10002/vidA/00004.wav"]  # listed twice
    (src / "iden_split.txt").write_text("\n".join(lines) + "\n")
    out = import_corpus("voxceleb1", src, tmp_path / "sid")
    splits = _manifests(out)
    assert {s: len(r) for s, r in splits.items()} == {"sid_train": 4, "sid_dev": 2, "sid_test": 2}
    r = splits["sid_test"][0]
    assert r["id"] == "id10001-vidA-00004" and r["label"] == r["speaker"] == "id10001"
    _check_records(out, splits)
    meta = json.loads((out / "corpus.json").read_text())
    reasons = dict((Path(p).parent.parent.name + "/" + Path(p).parent.name, why) for p, why in meta["skips"])
    assert "not readable audio" in reasons["id10001/vidB"]
    assert "2 channels" in reasons["id10002/vidB"]
    assert "missing" in reasons["id10003/vidC"]
    assert "duplicate utterance id 'id10002-vidA-00004'" in reasons["id10002/vidA"]

    (src / "iden_split.txt").write_text("1 id10001/vidA/00001.wav\nfour id10001\n")
    with pytest.raises(LayoutError) as err:
        import_corpus("voxceleb1", src, tmp_path / "sid2")
    assert "iden_split.txt: line 2 is 'four id10001'" in str(err.value)


# ----------------------------------------------------------------------------- IEMOCAP


def _iemocap(root: Path) -> Path:
    src = root / "IEMOCAP_full_release"
    for k in range(1, 6):
        sess = src / f"Session{k}"
        dialog = f"Ses0{k}F_impro01"
        labels = {"F000": "neu", "M000": "exc", "F001": "fru", "M001": "ang", "F002": "sad", "M002": "hap"}
        if k == 1:
            labels["F003"] = "sad"  # its audio is corrupt
            labels["M003"] = "neu"  # its audio is missing
        lines = ["% header", ""]
        for i, (utt, emo) in enumerate(labels.items()):
            name = f"{dialog}_{utt}"
            if utt == "F003":
                _corrupt(sess / "sentences" / "wav" / dialog / f"{name}.wav")
            elif utt != "M003":
                _audio(sess / "sentences" / "wav" / dialog / f"{name}.wav")
            lines.append(f"[{i}.0000 - {i}.5000]\t{name}\t{emo}\t[2.5000, 2.5000, 2.5000]")
            lines.append(f"C-E1:\t{emo.title()};\t()")
        (sess / "dialog" / "EmoEvaluation").mkdir(parents=True)
        (sess / "dialog" / "EmoEvaluation" / f"{dialog}.txt").write_text("\n".join(lines) + "\n")
        (sess / "dialog" / "EmoEvaluation" / "Categorical").mkdir()
    tr = src / "Session1" / "dialog" / "transcriptions"
    tr.mkdir(parents=True)
    (tr / "Ses01F_impro01.txt").write_text("Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me. [LAUGHTER]\n")
    return src


def test_iemocap_folds(tmp_path):
    src = _iemocap(tmp_path)
    out = import_corpus("iemocap", src, tmp_path / "er")
    splits = _manifests(out)
    assert set(splits) == {f"er_{p}" for p in ("train", "dev", "test")} | {
        f"er_fold{k}_{p}" for k in range(1, 6) for p in ("train", "dev", "test")
    }
    for k in range(1, 6):
        test = splits[f"er_fold{k}_test"]
        train, dev = splits[f"er_fold{k}_train"], splits[f"er_fold{k}_dev"]
        assert {r["session"] for r in test} == {k} and len(test) == 5
        assert k not in {r["session"] for r in train + dev}
        assert len(train) + len(dev) == 20 and len(dev) == 4  # 20 % of the other sessions
        assert not {r["id"] for r in train} & {r["id"] for r in dev}
    for part in ("train", "dev", "test"):
        assert splits[f"er_{part}"] == splits[f"er_fold1_{part}"]
    test1 = {r["id"]: r for r in splits["er_fold1_test"]}
    assert test1["Ses01F_impro01_M000"]["label"] == "hap"  # exc merged into hap
    assert "Ses01F_impro01_F001" not in test1  # fru dropped
    assert test1["Ses01F_impro01_M000"]["speaker"] == "Ses01M"
    assert test1["Ses01F_impro01_F000"]["text"] == "excuse me"
    assert {r["label"] for recs in splits.values() for r in recs} == {"neu", "hap", "ang", "sad"}
    _check_records(out, splits)
    meta = json.loads((out / "corpus.json").read_text())
    assert meta["notes"]["dropped_labels"] == {"fru": 5}
    assert set(_skipped(out)) == {"Ses01F_impro01_F003.wav", "Ses01F_impro01_M003.wav"}


# ----------------------------------------------------------------------------- wrong layouts


@pytest.mark.parametrize("corpus", ["librispeech", "speech_commands", "fluent_commands", "voxceleb1", "iemocap"])
def test_wrong_layout_is_one_line_error(tmp_path, corpus, capsys):
    src = tmp_path / "not_a_corpus"
    _audio(src / "some" / "file.wav")
    with pytest.raises(LayoutError) as err:
        import_corpus(corpus, src, tmp_path / "out")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(str(src)) and f"expected the {corpus} layout" in msg
    assert not (tmp_path / "out" / "corpus.json").exists()
    # through the CLI: exit status 2, one line on stderr
    assert main(["data", "import", corpus, str(src), "--out", str(tmp_path / "out")]) == 2
    errline = capsys.readouterr().err.strip()
    assert errline.startswith("harness: error: ") and "\n" not in errline


def test_missing_src_and_all_skipped(tmp_path):
    with pytest.raises(LayoutError, match="no such folder"):
        import_corpus("voxceleb1", tmp_path / "nope", tmp_path / "out")
    src = tmp_path / "vox"
    _corrupt(src / "wav" / "id1" / "v" / "00001.wav")
    (src / "iden_split.txt").write_text("1 id1/v/00001.wav\n")
    with pytest.raises(LayoutError, match="no usable audio .1 file.s. skipped; first skip: .*00001.wav: not readable"):
        import_corpus("voxceleb1", src, tmp_path / "out")


def test_librispeech_hint_for_parent_folder(tmp_path):
    src = _librispeech(tmp_path)
    with pytest.raises(LayoutError, match="did you mean .*LibriSpeech"):
        import_corpus("librispeech", src.parent, tmp_path / "out")


def test_normalize_text():
    assert normalize_text("HE'S TWENTY-ONE.") == "he's twenty one"
    assert normalize_text("  Oh [LAUGHTER] well,  ok\u2019ay <sil>") == "oh well ok'ay"


def test_import_refuses_a_folder_holding_another_corpus_and_force_clears_it(tmp_path, capsys):
    from tests.data.test_synth import MICRO

    from harness.data.synth import build_corpus

    synth = build_corpus(MICRO, tmp_path / "corpus", seed=0, workers=1, verbose=False)
    before = sorted(p.name for p in synth.glob("*.jsonl"))
    src = _librispeech(tmp_path)
    assert main(["data", "import", "librispeech", str(src), "--out", str(synth)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert f"{synth}: holds another corpus (the synthetic micro corpus (seed 0)); pick another --out, or pass --force" in err
    assert sorted(p.name for p in synth.glob("*.jsonl")) == before and (synth / "audio").is_dir()

    assert main(["data", "import", "librispeech", str(src), "--out", str(synth), "--force"]) == 0
    out = capsys.readouterr().out
    assert f"--force: cleared the synthetic micro corpus (seed 0): removed corpus.json, {len(before)} manifest(s), " \
           "audio/ (" in out
    # nothing of the synthetic corpus is left to mix with the import
    assert sorted(p.stem for p in synth.glob("*.jsonl")) == ["asr_dev", "asr_test", "asr_train", "distill"]
    assert not (synth / "audio").exists()
    assert json.loads((synth / "corpus.json").read_text())["corpus"] == "librispeech"
    # another source of the same corpus is another corpus too; a crashed import of the same one is not
    other = tmp_path / "copy"
    import shutil
    shutil.copytree(src, other)
    with pytest.raises(importers.CorpusFolderError, match="librispeech imported from"):
        import_corpus("librispeech", other, synth)
    (synth / "corpus.json").unlink()
    (synth / ".importing").write_text(json.dumps({"corpus": "librispeech", "source": str(src.resolve())}))
    import_corpus("librispeech", src, synth)
    assert (synth / "corpus.json").is_file() and not (synth / ".importing").exists()


def test_nan_inf_short_empty_files_are_counted_skips(tmp_path, capsys):
    src = tmp_path / "vox"
    wav = src / "wav" / "id1" / "v"
    good = _audio(wav / "00001.wav", 3200)
    sf.write(wav / "00002.wav", np.full(3200, 0.1, np.float32), SR, subtype="FLOAT")  # a finite float WAV: kept
    x = np.full(3200, 0.1, np.float32)
    x[1600] = np.nan
    sf.write(wav / "00003.wav", x, SR, subtype="FLOAT")
    x[1600] = np.inf
    sf.write(wav / "00004.wav", x, SR, subtype="DOUBLE")
    _audio(wav / "00005.wav", 200)  # 12.5 ms: no 50 Hz frame
    (wav / "00006.wav").write_bytes(b"")
    _audio(wav / "00007.wav", 3200, sr=8000)
    _corrupt(wav / "00008.wav")
    (src / "iden_split.txt").write_text("".join(f"1 id1/v/0000{i}.wav\n" for i in range(1, 9)))
    out = import_corpus("voxceleb1", src, tmp_path / "out")
    assert [r["id"] for r in read_manifest(out / "sid_train.jsonl")] == ["id1-v-00001", "id1-v-00002"]
    skipped = _skipped(out)
    assert skipped == {
        "00003.wav": "holds NaN or infinite samples (first at sample 1600, 0.100 s)",
        "00004.wav": "holds NaN or infinite samples (first at sample 1600, 0.100 s)",
        "00005.wav": "too short: 200 samples (12.5 ms), fewer than 400 (25 ms, one 50 Hz frame)",
        "00006.wav": "empty file (0 bytes)",
        "00007.wav": skipped["00007.wav"], "00008.wav": skipped["00008.wav"],
    }
    assert skipped["00007.wav"].startswith("sample rate 8000 Hz, expected 16000 Hz")
    assert skipped["00008.wav"].startswith("not readable audio")
    printed = capsys.readouterr().out
    assert "skipped: 6 file(s)" in printed and f"{wav / '00003.wav'}: holds NaN" in printed
    assert good.is_file()


def test_stats_of_a_folder_without_manifests_is_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for folder, message in ((tmp_path / "empty", "no <split>.jsonl manifests here"), (tmp_path / "nope", "no such folder")):
        assert main(["data", "stats", str(folder)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{folder}: {message}" in err
