"""Loader: padded batches, aligned deterministic crops, step-indexed batches, bad files surfaced."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from harness.data.audio import AudioError
from harness.data.loader import FRAME_HOP, AudioDataset, CachedBatches, WaveBatches, collate

SR = 16000


@pytest.fixture
def ramps(tmp_path, fake_corpus):
    """``ramps(lengths)``: files whose sample k holds k/32768 under ``tmp_path``; their manifest."""
    return lambda lengths: fake_corpus("ramps", tmp_path, lengths=lengths) / "split.jsonl"


def test_items_and_collate_shapes_masks(ramps):
    man = ramps([8000, 3000, 12000])
    ds = AudioDataset(man)
    items = [ds[i] for i in range(3)]
    assert items[1]["wav"].dtype == torch.float32 and items[1]["wav"].shape == (3000,)
    assert items[1]["num_samples"] == 3000 and items[1]["offset"] == 0
    b = collate(items)
    assert b.wavs.shape == (3, 12000) and b.wavs.dtype == torch.float32
    assert b.lengths.tolist() == [8000, 3000, 12000] and b.lengths.dtype == torch.int64
    assert b.mask.dtype == torch.bool and b.mask.sum(1).tolist() == [8000, 3000, 12000]
    assert b.mask[1, 2999] and not b.mask[1, 3000]
    assert torch.all(b.wavs[1, 3000:] == 0)
    assert torch.equal(b.wavs[0, :8000], items[0]["wav"])
    assert b.ids == ["u0", "u1", "u2"] and b.offsets.tolist() == [0, 0, 0]
    # sample k holds k/32768: the file was read as written
    assert b.wavs[2, 1000].item() == pytest.approx(1000 / 32768)


def test_crop_alignment_and_determinism(ramps):
    man = ramps([20000, 5000, 16000 * 3])
    ds = AudioDataset(man, max_seconds=0.5, seed=3)  # 8000 samples
    for i, n in enumerate([20000, 5000, 48000]):
        offs = {ds.crop_offset(i, epoch) for epoch in range(20)}
        item = ds[(4, i)]
        if n <= 8000:
            assert offs == {0} and item["num_samples"] == n
            continue
        assert all(o % FRAME_HOP == 0 and 0 <= o <= n - 8000 for o in offs)
        assert len(offs) > 1  # crops move across epochs
        assert item["num_samples"] == 8000 and item["offset"] == ds.crop_offset(i, 4)
        o = item["offset"]
        expect = (np.arange(o, o + 8000) % 32768) / 32768
        np.testing.assert_allclose(item["wav"].numpy(), expect, atol=1e-6)
    again = AudioDataset(man, max_seconds=0.5, seed=3)
    assert [again.crop_offset(2, e) for e in range(5)] == [ds.crop_offset(2, e) for e in range(5)]
    other = AudioDataset(man, max_seconds=0.5, seed=4)
    assert [other.crop_offset(2, e) for e in range(8)] != [ds.crop_offset(2, e) for e in range(8)]
    assert ds[2]["offset"] == ds.crop_offset(2, 0)  # plain index = epoch 0


def test_step_batches_are_functions_of_seed_and_step(ramps):
    """A run's step k reads the same batch whatever range of steps its dataset serves
    (a resumed run restarts mid-stage), and another seed reads another batch."""
    man = ramps([4000, 9000, 20000, 3000])
    ds = AudioDataset(man)
    whole = WaveBatches(ds, 3, seed=1, steps=range(0, 10))
    tail = WaveBatches(ds, 3, seed=1, steps=range(6, 10))
    for i in range(4):
        a, b = whole[6 + i], tail[i]
        assert all(torch.equal(x, y) for x, y in zip(a["wavs"], b["wavs"])) and a["rng_state"] == b["rng_state"]
    item = whole[0]
    # whole utterances (the live teacher sees each one entire; the crop comes afterwards)
    assert len(item["wavs"]) == 3 and all(w.dtype == torch.float32 for w in item["wavs"])
    assert {w.shape[0] for w in item["wavs"]} <= {4000, 9000, 20000, 3000}
    other = WaveBatches(ds, 3, seed=2, steps=range(0, 10))
    assert [[w.sum().item() for w in whole[i]["wavs"]] for i in range(10)] != \
        [[w.sum().item() for w in other[i]["wavs"]] for i in range(10)]

    class Cache:  # the feature cache's interface: id -> {"frontend", "layer_j"} (T, D)
        def get(self, uid):
            t = 30 + int(uid[1:]) * 7
            base = np.arange(t, dtype=np.float32)[:, None]
            return {"frontend": np.repeat(base, 2, 1), "layer_1": np.repeat(base, 3, 1) + 0.5}

    ids = ["u0", "u1", "u2", "u3"]
    cached = CachedBatches(Cache(), ids, [1], 2, 20, seed=1, steps=range(0, 8))
    again = CachedBatches(Cache(), ids, [1], 2, 20, seed=1, steps=range(5, 8))
    assert torch.equal(cached[5]["feats"], again[0]["feats"])
    c = cached[0]
    assert c["feats"].shape[:2] == c["targets"][1].shape[:2] and c["feats"].shape[2] == 2
    for b, n in enumerate(c["frame_lengths"].tolist()):  # features and targets cropped alike
        assert torch.equal(c["feats"][b, :n, 0] + 0.5, c["targets"][1][b, :n, 0])


def test_live_draws_are_the_cached_draws(ramps):
    """WaveBatches picks the utterances CachedBatches picks for the same (seed, step), and
    its generator, restored, crops arrays of those utterances at the same frame offsets."""
    from harness.data.loader import crop_stack, restore_rng

    lengths = [4000, 9000, 20000, 3000, 15000]
    man = ramps(lengths)
    ds = AudioDataset(man)
    ids = [r["id"] for r in ds.records]

    def arrays(n):  # frame k holds k: the crop offset can be read back
        base = np.arange(n // FRAME_HOP, dtype=np.float32)[:, None]
        return {"frontend": np.repeat(base, 2, 1), "layer_1": np.repeat(base, 3, 1)}

    class Cache:
        def get(self, uid):
            return arrays(lengths[ids.index(uid)])

    cached = CachedBatches(Cache(), ids, [1], 3, 20, seed=4, steps=range(12))
    live = WaveBatches(ds, 3, seed=4, steps=range(12))
    for k in range(12):
        c, w = cached[k], live[k]
        x, offsets, n = crop_stack([arrays(len(v)) for v in w["wavs"]], ["frontend", "layer_1"],
                                   restore_rng(w["rng_state"]), 20)
        assert torch.equal(x["frontend"], c["feats"]) and torch.equal(x["layer_1"], c["targets"][1])
        assert n == c["frame_lengths"].tolist() and offsets == [int(v) for v in c["feats"][:, 0, 0]]


def test_corrupt_file_surfaces_as_audio_error(tmp_path, ramps):
    man = ramps([4000, 4000])
    bad = tmp_path / "audio" / "u1.wav"
    bad.write_bytes(np.random.default_rng(0).bytes(2000))
    ds = AudioDataset(man)
    ds[0]
    with pytest.raises(AudioError) as err:
        ds[1]
    assert str(bad) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(AudioError, match="u1.wav"):
        list(WaveBatches(ds, 2, seed=0, steps=range(4)))  # both items, in some step
    # a file replaced by one of another length no longer matches its manifest record
    sf.write(bad, np.zeros(5000, np.float32), SR)
    with pytest.raises(AudioError, match="holds 5000 samples, the manifest says 4000"):
        ds[1]
