import numpy as np
import pytest
import soundfile as sf
import torch

from harness.superb.data import DataError, keep_classes, load_wav, subsample
from harness.superb.featurizer import Featurizer
from harness.superb.heads import LinearCTC
from harness.superb.train import _SeqModel, targets_of
from harness.superb.tasks import get_task


def test_subsample_is_seeded_ordered_and_shared():
    recs = [{"id": str(i)} for i in range(50)]
    a = subsample(recs, 10, seed=3)
    assert a == subsample(recs, 10, seed=3) and len(a) == 10
    assert [int(r["id"]) for r in a] == sorted(int(r["id"]) for r in a)
    assert subsample(recs, 0) == recs and subsample(recs, 99) == recs


def test_keep_classes_filters_every_split():
    splits = {"tr": [{"label": f"s{i % 6}"} for i in range(30)],
              "te": [{"label": f"s{i % 7}"} for i in range(14)]}
    kept = keep_classes(splits, "tr", 2, seed=1)
    labels = {r["label"] for r in kept["tr"]}
    assert len(labels) == 2 and {r["label"] for r in kept["te"]} <= labels
    assert len(kept["tr"]) == 10
    assert keep_classes(splits, "tr", 0) is splits


def test_load_wav_errors_name_the_file(tmp_path):
    sf.write(tmp_path / "ok.flac", np.zeros(1600, np.float32), 16000)
    assert load_wav({"path": "ok.flac"}, tmp_path).shape == (1600,)
    sf.write(tmp_path / "st.flac", np.zeros((1600, 2), np.float32), 16000)
    with pytest.raises(DataError, match="st.flac has 2 channels"):
        load_wav({"path": "st.flac"}, tmp_path)
    sf.write(tmp_path / "sr.flac", np.zeros(800, np.float32), 8000)
    with pytest.raises(DataError, match="sr.flac is 8000 Hz"):
        load_wav({"path": "sr.flac"}, tmp_path)
    (tmp_path / "bad.flac").write_bytes(b"xx")
    with pytest.raises(DataError, match="bad.flac"):
        load_wav({"path": "bad.flac"}, tmp_path)


def test_targets():
    rec = {"id": "u", "text": "Hi, Bob!", "phones": [["sil", 0, 5], ["HH", 5, 9], ["AY", 9, 20]]}
    assert targets_of(get_task("pr"), rec) == ["HH", "AY"]  # silence is not a phone target
    assert targets_of(get_task("asr"), rec) == list("hi bob")


def test_frame_averaging_lengths_and_padding():
    model = _SeqModel(Featurizer(1, 2), LinearCTC(2, 3), downsample=2)
    states = torch.ones(2, 5, 1, 2)
    lens = torch.tensor([5, 2])
    assert model.out_lengths(lens).tolist() == [3, 1]
    assert model(states, lens).shape == (2, 3, 4)
