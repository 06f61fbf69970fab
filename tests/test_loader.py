"""Loader: padded batches, aligned deterministic crops, bucketing, bad files surfaced."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from harness.data.audio import AudioError
from harness.data.loader import (
    FRAME_HOP, AudioDataset, BucketBatchSampler, RandomBatchSampler, collate, make_loader,
    padding_fraction,
)
from harness.data.manifest import write_manifest

SR = 16000


def _corpus(tmp_path: Path, lengths: list[int]) -> Path:
    """Files whose sample k holds k/32768 (so crops can be located exactly)."""
    recs = []
    for i, n in enumerate(lengths):
        rel = f"audio/u{i}.wav"
        (tmp_path / "audio").mkdir(exist_ok=True)
        sf.write(tmp_path / rel, (np.arange(n) % 32768).astype(np.int16), SR, subtype="PCM_16")
        recs.append({"id": f"u{i}", "path": rel, "num_samples": n, "sample_rate": SR, "speaker": "s", "text": ""})
    write_manifest(tmp_path / "split.jsonl", recs)
    return tmp_path / "split.jsonl"


def test_items_and_collate_shapes_masks(tmp_path):
    man = _corpus(tmp_path, [8000, 3000, 12000])
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


def test_crop_alignment_and_determinism(tmp_path):
    man = _corpus(tmp_path, [20000, 5000, 16000 * 3])
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


def test_bucketing_reduces_padding(tmp_path):
    lengths = np.random.default_rng(0).integers(16000, 16000 * 15, size=2000).tolist()
    bucket = BucketBatchSampler(lengths, 16, seed=0)
    rand = RandomBatchSampler(lengths, 16, seed=0)
    pb = padding_fraction(bucket.batches(0), lengths)
    pr = padding_fraction(rand.batches(0), lengths)
    assert pb < 0.05 and pr > 0.3 and pb < pr / 5  # measured: 0.019 vs 0.425
    for sampler in (bucket, rand):
        flat = sorted(i for b in sampler.batches(0) for i in b)
        assert flat == list(range(2000))  # every item exactly once
        assert len(sampler) == len(sampler.batches(0))
    # deterministic per (seed, epoch), different across epochs and seeds
    assert bucket.batches(1) == BucketBatchSampler(lengths, 16, seed=0).batches(1)
    assert bucket.batches(1) != bucket.batches(0)
    assert BucketBatchSampler(lengths, 16, seed=1).batches(0) != bucket.batches(0)
    # iterating advances the epoch and yields (epoch, index) keys
    first = next(iter(bucket))
    second = next(iter(bucket))
    assert {e for e, _ in first} == {0} and {e for e, _ in second} == {1}
    bucket.set_epoch(0)
    assert next(iter(bucket)) == first
    fixed = BucketBatchSampler(lengths, 16, shuffle=False)
    flat = [lengths[i] for b in fixed.batches(0) for i in b]
    assert flat == sorted(lengths)
    drop = BucketBatchSampler(lengths[:100], 16, seed=0, pool_batches=2, drop_last=True)
    assert all(len(b) == 16 for b in drop.batches(0)) and len(drop) == len(drop.batches(0))


def test_make_loader_end_to_end(tmp_path):
    lengths = [4000, 4100, 9000, 9100, 20000, 20500, 3000]
    man = _corpus(tmp_path, lengths)
    loader = make_loader(man, batch_size=2, max_seconds=1.0, seed=0)
    seen = []
    for batch in loader:
        assert batch.wavs.shape[0] == len(batch.ids) <= 2
        assert batch.wavs.shape[1] == int(batch.lengths.max()) <= 16000
        assert torch.all(batch.offsets % FRAME_HOP == 0)
        seen += batch.ids
    assert sorted(seen) == sorted(f"u{i}" for i in range(7))
    loader.batch_sampler.set_epoch(5)
    a = [(b.ids, b.offsets.tolist()) for b in loader]
    loader.batch_sampler.set_epoch(5)
    b = [(b.ids, b.offsets.tolist()) for b in loader]
    assert a == b
    # worker processes get the epoch through the sampler's keys: same crops as in-process
    workers = make_loader(man, batch_size=2, max_seconds=1.0, seed=0, num_workers=1)
    workers.batch_sampler.set_epoch(5)
    assert [(b.ids, b.offsets.tolist()) for b in workers] == a
    unbucketed = make_loader(man, batch_size=3, bucket=False, shuffle=False)
    assert [b.ids for b in unbucketed] == [["u0", "u1", "u2"], ["u3", "u4", "u5"], ["u6"]]


def test_corrupt_file_surfaces_as_audio_error(tmp_path):
    man = _corpus(tmp_path, [4000, 4000])
    bad = tmp_path / "audio" / "u1.wav"
    bad.write_bytes(np.random.default_rng(0).bytes(2000))
    ds = AudioDataset(man)
    ds[0]
    with pytest.raises(AudioError) as err:
        ds[1]
    assert str(bad) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(AudioError, match="u1.wav"):
        list(make_loader(man, batch_size=2))
    # a file replaced by one of another length no longer matches its manifest record
    sf.write(bad, np.zeros(5000, np.float32), SR)
    with pytest.raises(AudioError, match="holds 5000 samples, the manifest says 4000"):
        ds[1]
