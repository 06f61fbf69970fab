"""The teacher-feature cache: read-back equals the teacher, keys, resumption after an
interrupted or killed build, corruption detection and repair, concurrent builders, the
disk-space refusal, and strict errors. Uses the dummy teacher on a few fabricated FLACs."""

import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from harness.teachers import load_teacher
from harness.teachers.cache import CacheError, FeatureCache, ensure_cache, verify_cache
from harness.data.manifest import read_manifest

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[2]
N_UTTS, SHARD = 7, 2  # -> 4 shards


def make_corpus(fake_corpus, root: Path, n=N_UTTS, seed=0) -> Path:
    """``n`` short tone FLACs (0.3-1.2 s) under ``root``; returns their distill manifest."""
    return fake_corpus("tones", root, n=n, seconds=(0.3, 1.2), freqs=(100, 900), seed=seed) / "distill.jsonl"


@pytest.fixture
def manifest(tmp_path, fake_corpus):
    return make_corpus(fake_corpus, tmp_path / "corpus")


def build(manifest, cache_dir, **kw):
    kw.setdefault("shard_size", SHARD)
    kw.setdefault("batch_size", 3)
    kw.setdefault("log", None)
    return ensure_cache("dummy", manifest, kw.pop("layers", None), cache_dir=cache_dir, device="cpu", **kw)


def snapshot(cache: FeatureCache) -> dict:
    return {u: {k: np.array(v) for k, v in cache.get(u).items()} for u in cache.ids}


def test_read_back_equals_the_teacher_and_reopens(manifest, tmp_path):
    cache = build(manifest, tmp_path / "cache")
    teacher = load_teacher("dummy")
    assert cache.built_shards == 4 and cache.reused_shards == 0
    assert cache.names == ["frontend"] + [f"layer_{k}" for k in range(5)]
    assert cache.dims == {"frontend": 32, **{f"layer_{k}": 64 for k in range(5)}}
    assert cache.frame_rate == 50.0 and len(cache) == N_UTTS
    for rec in (json.loads(ln) for ln in manifest.read_text().splitlines()):
        wav, _ = sf.read(manifest.parent / rec["path"], dtype="float32")
        x, n = torch.from_numpy(wav)[None], torch.tensor([len(wav)])
        states, frames = teacher.hidden_states(x, n)
        feats, _ = teacher.frontend(x, n)
        got = cache.get(rec["id"])
        assert got["frontend"].dtype == np.float16 and got["frontend"].shape == (int(frames), 32)
        np.testing.assert_allclose(got["frontend"], feats[0].numpy(), rtol=2e-3, atol=2e-3)
        for k in range(5):
            assert got[f"layer_{k}"].shape == (int(frames), 64)
            np.testing.assert_allclose(got[f"layer_{k}"], states[k][0].numpy(), rtol=2e-3, atol=2e-3)
    again = build(manifest, tmp_path / "cache")  # second call: opened, nothing recomputed
    assert again.root == cache.root and again.built_shards == 0
    reopened = FeatureCache(cache.root)
    assert all(np.array_equal(reopened.get(u)["layer_3"], cache.get(u)["layer_3"]) for u in cache.ids)
    with pytest.raises(KeyError, match="'nope' is not in the feature cache"):
        cache.get("nope")
    import pickle

    blob = pickle.dumps(cache)  # as sent to DataLoader workers: small, maps reopened on use
    assert len(blob) < 20000
    assert np.array_equal(pickle.loads(blob).get("u1")["layer_4"], cache.get("u1")["layer_4"])


def test_key_depends_on_layers_frontend_and_manifest_content(manifest, tmp_path, fake_corpus):
    a = build(manifest, tmp_path / "cache", layers=[1, 3])
    b = build(manifest, tmp_path / "cache", layers=[3, 1])
    c = build(manifest, tmp_path / "cache", layers=[1, 3], frontend=False)
    assert a.root == b.root != c.root
    assert a.names == ["frontend", "layer_1", "layer_3"] and c.names == ["layer_1", "layer_3"]
    other = make_corpus(fake_corpus, tmp_path / "corpus2", seed=1)
    d = build(other, tmp_path / "cache", layers=[1, 3])
    assert d.root != a.root


def test_key_includes_the_audio_content_a_cp_p_copy_with_one_file_changed_is_rebuilt(manifest, tmp_path):
    import shutil

    a = build(manifest, tmp_path / "cache", layers=[2])
    copy = tmp_path / "copy"
    shutil.copytree(manifest.parent, copy)  # copy2: like cp -p, keeps every mtime
    victim = copy / "audio" / "u3.flac"
    wav, sr = sf.read(victim, dtype="float32")
    stat = victim.stat()
    sf.write(victim, np.ascontiguousarray(wav[::-1]), sr)  # same length, other audio
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # and the original's mtime
    assert (copy / manifest.name).read_bytes() == manifest.read_bytes()
    b = build(copy / manifest.name, tmp_path / "cache", layers=[2])
    assert b.root != a.root and b.built_shards == 4
    assert not np.array_equal(np.array(b.get("u3")["layer_2"]), np.array(a.get("u3")["layer_2"]))
    assert np.array_equal(np.array(b.get("u1")["layer_2"]), np.array(a.get("u1")["layer_2"]))
    # an identical copy (another path, same bytes) reuses the cache: the key is the content
    same = tmp_path / "same"
    shutil.copytree(manifest.parent, same)
    assert build(same / manifest.name, tmp_path / "cache", layers=[2]).root == a.root
    # a file rewritten in place (new mtime) changes the key too
    sf.write(manifest.parent / "audio" / "u0.flac", np.zeros(len(sf.read(manifest.parent / "audio" / "u0.flac")[0]),
                                                                np.float32), sr)
    assert build(manifest, tmp_path / "cache", layers=[2]).root not in (a.root, b.root)
    memo = json.loads((tmp_path / "cache" / "audio-digests.json").read_text())
    assert str((copy / "audio" / "u3.flac").resolve()) in memo


def test_limit_caches_the_first_utterances_only(manifest, tmp_path):
    full = build(manifest, tmp_path / "cache", layers=[1])
    part = build(manifest, tmp_path / "cache", layers=[1], limit=2)
    first = [json.loads(line)["id"] for line in Path(manifest).read_text().splitlines()[:2]]
    assert part.root != full.root and sorted(part.ids) == sorted(first)
    assert np.array_equal(part.get(first[1])["layer_1"], full.get(first[1])["layer_1"])
    with pytest.raises(CacheError, match="limit"):
        build(manifest, tmp_path / "cache", layers=[1], limit=-1)


def test_interrupted_build_resumes_from_finished_shards(manifest, tmp_path):
    reference = snapshot(build(manifest, tmp_path / "ref"))

    def stop_after_two(i, count=[0]):
        count[0] += 1
        if count[0] == 2:
            raise KeyboardInterrupt  # what a Ctrl-C or a failing batch leaves behind

    with pytest.raises(KeyboardInterrupt):
        build(manifest, tmp_path / "cache", on_shard=stop_after_two)
    building = list((tmp_path / "cache").glob("*.building"))
    assert len(building) == 1 and not [p for p in (tmp_path / "cache").iterdir() if p.is_dir() and p not in building]
    assert not (building[0] / "COMPLETE.json").exists()
    cache = build(manifest, tmp_path / "cache")
    assert (cache.reused_shards, cache.built_shards) == (2, 2)
    got = snapshot(cache)
    assert all(np.array_equal(got[u][k], reference[u][k]) for u in reference for k in reference[u])


KILL_SCRIPT = """
import os, signal, sys, torch
torch.set_num_threads(1)
from harness.teachers.cache import ensure_cache
def kill(i):
    if i == 1:
        os.kill(os.getpid(), signal.SIGKILL)
ensure_cache("dummy", sys.argv[1], None, cache_dir=sys.argv[2], device="cpu", shard_size=2, batch_size=3,
             on_shard=kill, log=None)
"""


def test_killed_build_is_never_trusted_and_completes_on_rerun(manifest, tmp_path):
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(manifest), str(tmp_path / "cache")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    assert not [p for p in (tmp_path / "cache").glob("*") if (p / "COMPLETE.json").exists()]
    cache = build(manifest, tmp_path / "cache")
    assert cache.reused_shards == 2 and cache.built_shards == 2
    ok, bad, _ = verify_cache(cache.root, full=True)
    assert ok and not bad


def test_corrupted_shard_is_detected_and_rebuilt(manifest, tmp_path):
    cache = build(manifest, tmp_path / "cache")
    reference = snapshot(cache)
    path = cache.root / "layer_2.f16"
    with open(path, "r+b") as fh:  # flip bytes inside the last shard's range
        fh.seek(path.stat().st_size - 100)
        fh.write(b"\x00\x7c" * 20)
    ok, bad, reason = verify_cache(cache.root)
    assert not ok and bad == [3] and "checksum" in reason
    repaired = build(manifest, tmp_path / "cache")
    assert repaired.root == cache.root and repaired.built_shards == 1 and repaired.reused_shards == 3
    got = snapshot(repaired)
    assert all(np.array_equal(got[u][k], reference[u][k]) for u in reference for k in reference[u])


def test_truncated_file_rebuilds_the_cache(manifest, tmp_path):
    cache = build(manifest, tmp_path / "cache")
    path = cache.root / "frontend.f16"
    os.truncate(path, path.stat().st_size // 2)
    assert verify_cache(cache.root, full=False)[1] == [-1]
    again = build(manifest, tmp_path / "cache")
    assert again.built_shards == 4 and verify_cache(again.root)[0]


def _concurrent_worker(manifest, cache_dir, queue):
    torch.set_num_threads(1)
    cache = build(manifest, cache_dir, on_shard=lambda i: time.sleep(0.2))
    queue.put((str(cache.root), cache.built_shards))


def test_concurrent_builders_make_one_cache(manifest, tmp_path):
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_concurrent_worker, args=(manifest, tmp_path / "cache", queue)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert results[0][0] == results[1][0]
    assert sorted(b for _, b in results) == [0, 4]  # one built every shard, the other waited and reused
    assert len([p for p in (tmp_path / "cache").iterdir() if p.is_dir()]) == 1


def test_refuses_when_the_disk_would_not_hold_it(manifest, tmp_path, monkeypatch):
    import harness.teachers.cache as cache_mod

    class Usage:
        total, used, free = 10**9, 10**9 - 1000, 1000

    monkeypatch.setattr(cache_mod.shutil, "disk_usage", lambda path: Usage)
    with pytest.raises(CacheError, match=r"needs 0\.\d\d GB more in .* but only 0\.00 GB are free") as err:
        build(manifest, tmp_path / "cache")
    assert "\n" not in str(err.value)
    assert not list((tmp_path / "cache").glob("*.building"))  # nothing written


def test_caches_a_bare_frontend(manifest, tmp_path):
    from harness.frontends import ConvFrontend, conv_layers

    torch.manual_seed(0)
    fe = ConvFrontend(conv_layers(8), mode="layer_norm").eval()
    cache = ensure_cache(fe, manifest, layers=[], frontend=True, cache_dir=tmp_path / "cache", log=None)
    assert cache.names == ["frontend"] and cache.teacher_id.startswith("frontend-conv-")
    wav, _ = sf.read(manifest.parent / "audio" / "u0.flac", dtype="float32")
    with torch.no_grad():
        ref, _ = fe(torch.from_numpy(wav)[None], torch.tensor([len(wav)]))
    np.testing.assert_allclose(cache.get("u0")["frontend"], ref[0].numpy(), rtol=2e-3, atol=2e-3)


def test_strict_errors(manifest, tmp_path):
    with pytest.raises(CacheError, match=r"hidden states 0\.\.4"):
        build(manifest, tmp_path / "cache", layers=[5])
    with pytest.raises(CacheError, match="nothing to cache"):
        build(manifest, tmp_path / "cache", layers=[], frontend=False)
    lines = manifest.read_text().splitlines()
    rec = json.loads(lines[0])
    rec["num_samples"] += 7
    bad = tmp_path / "corpus" / "bad.jsonl"
    bad.write_text("\n".join([json.dumps(rec)] + lines[1:]) + "\n")
    with pytest.raises(CacheError, match="u0.flac: .* samples but the manifest says"):
        build(bad, tmp_path / "cache")
    dup = tmp_path / "corpus" / "dup.jsonl"
    dup.write_text(lines[0] + "\n" + lines[0] + "\n")
    with pytest.raises(CacheError, match="'u0' more than once"):
        build(dup, tmp_path / "cache")


def test_cli_builds_then_reuses(manifest, tmp_path, capsys):
    from harness.cli import main

    args = ["teacher", "cache", "--teacher", "dummy", "--manifest", str(manifest), "--layers", "0,2-3",
            "--out", str(tmp_path / "cache"), "--device", "cpu", "--shard-size", "3"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "arrays frontend, layer_0, layer_2, layer_3" in out and "shards built 3, reused 0" in out
    assert main(args) == 0
    assert "shards built 0, reused 3" in capsys.readouterr().out


@pytest.mark.parametrize("change,message", [
    ({"--layers": "7"}, "--layers: [7] out of range; this teacher has hidden states 0..4"),
    ({"--layers": "x"}, "--layers: 'x' is not 'all'"),
    ({"--manifest": "missing.jsonl"}, "no such manifest: missing.jsonl"),
    ({"--teacher": "s3prl:hubert:/nope/h.pt"}, "checkpoint not found: /nope/h.pt"),
])
def test_cli_errors_are_one_line(manifest, tmp_path, capsys, change, message):
    from harness.cli import main

    opts = {"--teacher": "dummy", "--manifest": str(manifest), "--layers": "all", "--out": str(tmp_path / "c"),
            "--device": "cpu", **change}
    assert main(["teacher", "cache", *[x for kv in opts.items() for x in kv]]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_unreadable_audio_is_a_one_line_cache_error(manifest, tmp_path):
    (manifest.parent / "audio" / "u3.flac").write_bytes(b"not audio at all")
    with pytest.raises(CacheError, match="u3.flac") as err:
        build(manifest, tmp_path / "cache")
    assert "\n" not in str(err.value)


def test_caches_a_checkpoint_teacher_on_full_utterances(manifest, tmp_path):
    """A transformers HuBERT (group-norm front-end) cached one utterance per batch equals
    the teacher run on each whole utterance alone."""
    import transformers

    cfg = transformers.HubertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                    intermediate_size=64, conv_dim=(16,) * 7, num_conv_pos_embeddings=16,
                                    num_conv_pos_embedding_groups=4)
    torch.manual_seed(0)
    transformers.HubertModel(cfg).save_pretrained(tmp_path / "hf")
    teacher = load_teacher(f"hf:{tmp_path / 'hf'}")
    cache = ensure_cache(teacher, manifest, [0, 2], cache_dir=tmp_path / "cache", batch_size=1, log=None)
    assert cache.names == ["frontend", "layer_0", "layer_2"] and cache.teacher_id == teacher.id
    for utt in ("u0", "u4"):
        wav, _ = sf.read(manifest.parent / "audio" / f"{utt}.flac", dtype="float32")
        x, n = torch.from_numpy(wav)[None], torch.tensor([len(wav)])
        states, frames = teacher.hidden_states(x, n)
        feats, _ = teacher.frontend(x, n)
        got = cache.get(utt)
        assert got["layer_2"].shape == (int(frames), 32) and got["frontend"].shape == (int(frames), 16)
        np.testing.assert_allclose(got["layer_2"], states[2][0].numpy(), rtol=2e-3, atol=2e-3)
        np.testing.assert_allclose(got["frontend"], feats[0].numpy(), rtol=2e-3, atol=2e-3)


def test_padding_dependent_teacher_is_cached_from_unpadded_batches(manifest, tmp_path):
    """HuBERT Base's group-norm front-end normalises over the padded length: in a padded
    batch an utterance's states differ from the utterance run alone. The cache batches such
    a teacher's pieces by equal width only (default batch size), so every cached utterance
    equals its single-utterance forward; the embedded and dummy teachers declare
    ``padding_invariant`` and are measured to be so."""
    import transformers

    from harness.teachers.cache import exact_batches

    cfg = transformers.HubertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                    intermediate_size=64, conv_dim=(16,) * 7, num_conv_pos_embeddings=16,
                                    num_conv_pos_embedding_groups=4, feat_extract_norm="group")
    torch.manual_seed(0)
    transformers.HubertModel(cfg).save_pretrained(tmp_path / "hf")
    teacher = load_teacher(f"hf:{tmp_path / 'hf'}")
    assert exact_batches(teacher)
    wavs = {}
    for rec in read_manifest(manifest):
        wavs[rec["id"]] = torch.from_numpy(sf.read(manifest.parent / rec["path"], dtype="float32")[0])
    assert len({len(w) for w in wavs.values()}) > 1  # lengths differ: padding would happen

    def alone(t, w):
        states, frames = t.hidden_states(w[None], torch.tensor([len(w)]))
        return [x[0, : int(frames[0])] for x in states]

    def rel(a, b):
        return float(np.linalg.norm(np.asarray(a, np.float32) - np.asarray(b, np.float32)) / np.linalg.norm(b))

    # the test can fail: the shortest utterance padded to the longest's length moves its states
    short, long_ = min(wavs, key=lambda u: len(wavs[u])), max(wavs, key=lambda u: len(wavs[u]))
    x = torch.zeros(2, len(wavs[long_]))
    x[0], x[1, : len(wavs[short])] = wavs[long_], wavs[short]
    padded, frames = teacher.hidden_states(x, torch.tensor([len(wavs[long_]), len(wavs[short])]))
    n = int(frames[1])
    assert rel(padded[2][1, :n], alone(teacher, wavs[short])[2]) > 0.01

    cache = ensure_cache(teacher, manifest, [1, 2], cache_dir=tmp_path / "cache", log=None)  # batch size 8
    assert cache.plan["exact_batches"] is True
    for utt, w in wavs.items():
        ref, got = alone(teacher, w), cache.get(utt)
        feats, _ = teacher.frontend(w[None], torch.tensor([len(w)]))
        assert rel(got["layer_2"], ref[2]) < 2e-3 and rel(got["layer_1"], ref[1]) < 2e-3, utt
        assert rel(got["frontend"], feats[0]) < 2e-3, utt
    # padding-invariant teachers (as declared) batch across lengths and lose nothing
    for spec in ("dummy", "embedded"):
        t = load_teacher(spec)
        assert not exact_batches(t)
        x = torch.zeros(2, len(wavs[long_]))
        x[0], x[1, : len(wavs[short])] = wavs[long_], wavs[short]
        padded, frames = t.hidden_states(x, torch.tensor([len(wavs[long_]), len(wavs[short])]))
        n = int(frames[1])
        assert all(rel(p[1, :n], a) < 1e-4 for p, a in zip(padded, alone(t, wavs[short]))), spec


# ----------------------------------------------------------------------------- bounded memory

def _write_corpus(root: Path, lengths: dict[str, int], seed: int = 0) -> Path:
    """WAVs of the given lengths (samples) and their manifest."""
    rng = np.random.default_rng(seed)
    (root / "audio").mkdir(parents=True, exist_ok=True)
    lines = []
    for utt, n in lengths.items():
        t = np.arange(n) / 16000
        wav = (0.3 * np.sin(2 * np.pi * rng.uniform(100, 900) * t) + 0.05 * rng.standard_normal(n)).astype(np.float32)
        sf.write(root / "audio" / f"{utt}.wav", wav, 16000, subtype="PCM_16")
        lines.append(json.dumps({"id": utt, "path": f"audio/{utt}.wav", "num_samples": n, "sample_rate": 16000,
                                 "speaker": "s", "text": ""}))
    (root / "distill.jsonl").write_text("\n".join(lines) + "\n")
    return root / "distill.jsonl"


_UNDER_LIMIT = r"""
import json, resource, sys
from pathlib import Path
import torch
torch.set_num_threads(1)
from harness.teachers.cache import CacheError, ensure_cache
from harness.teachers import load_teacher
teacher = load_teacher("dummy")
vm = next(int(l.split()[1]) * 1024 for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (vm + int(float(sys.argv[3]) * 2**30), resource.RLIM_INFINITY))
log = lambda m: print(m, file=sys.stderr)
try:  # in one forward: refused up front
    ensure_cache(teacher, sys.argv[1], None, cache_dir=sys.argv[2], batch_size=2, max_seconds=900, log=log)
    refused = None
except CacheError as err:
    refused = str(err)
building = [p.name for p in Path(sys.argv[2]).glob("*.building")]
cache = ensure_cache(teacher, sys.argv[1], None, cache_dir=sys.argv[2], batch_size=2, io_threads=1, log=log)
n = json.loads(Path(sys.argv[1]).read_text().splitlines()[0])["num_samples"]
print(json.dumps({"frames": cache.frames("long")["layer_4"], "expected": int(teacher.frame_lengths(torch.tensor([n]))[0]),
                  "meta": json.loads((cache.root / "meta.json").read_text()), "refused": refused, "building": building}))
"""


def test_a_ten_minute_file_is_cached_in_pieces_under_a_memory_limit(tmp_path):
    """10 min of audio: one forward of the dummy teacher would need ~14 GB (attention over
    30 000 frames): the memory check refuses it up front with one line; in (default) 40 s
    pieces the build finishes under a 2.5 GB address-space limit."""
    manifest = _write_corpus(tmp_path / "corpus", {"long": 600 * 16000, "a": 16000, "b": 8000})
    script = tmp_path / "under_limit.py"
    script.write_text(_UNDER_LIMIT)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2"}
    run = subprocess.run([sys.executable, str(script), str(manifest), str(tmp_path / "cache"), "2.5"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    msg = got["refused"]
    assert msg.count("\n") == 0 and "one forward of 1 x 600.0 s needs about" in msg
    assert "left under the address-space limit (ulimit -v); lower --max-seconds (now 900 s) or --batch-size" in msg
    assert got["building"] == []  # refused before anything was written
    assert got["frames"] == got["expected"] == 29999  # the pieces' frames tile the whole file's
    meta = got["meta"]
    assert meta["split_utterances"] == 1 and meta["split_pieces"] == 16 and meta["max_seconds"] == 40.0
    assert "1 utterance(s) longer than max_seconds = 40 s (longest 600.0 s) run in 16 pieces" in run.stderr
    assert "largest forward: 2 x 37.5 s, about" in run.stderr


def test_pieces_tile_the_frames_of_the_whole_utterance(tmp_path):
    manifest = _write_corpus(tmp_path / "corpus", {"long": 5 * 16000 + 123, "short": 9000})
    teacher = load_teacher("dummy")
    cache = ensure_cache(teacher, manifest, [0, 4], cache_dir=tmp_path / "cache", max_seconds=2.0, log=None,
                         batch_size=2)
    plan = cache.plan
    pieces = plan["pieces"][str(cache.ids.index("long"))]
    assert len(pieces) == 3 and pieces[-1][1] == 5 * 16000 + 123
    wav, _ = sf.read(manifest.parent / "audio" / "long.wav", dtype="float32")
    got = cache.get("long")
    assert got["layer_4"].shape[0] == int(teacher.frame_lengths(torch.tensor([len(wav)]))[0])
    for s0, s1, _, lo, n in pieces:  # each piece's frames = the teacher run on that window alone
        x = torch.from_numpy(wav[s0:s1])[None]
        states, frames = teacher.hidden_states(x, torch.tensor([s1 - s0]))
        assert int(frames) >= n
        np.testing.assert_allclose(got["layer_4"][lo:lo + n], states[4][0, :n].numpy(), rtol=2e-3, atol=2e-3)
        feats, _ = teacher.frontend(x, torch.tensor([s1 - s0]))
        np.testing.assert_allclose(got["frontend"][lo:lo + n], feats[0, :n].numpy(), rtol=2e-3, atol=2e-3)
    ok, bad, _ = verify_cache(cache.root)
    assert ok and not bad
    # max_seconds is part of the key: another cap is another cache
    other = ensure_cache(teacher, manifest, [0, 4], cache_dir=tmp_path / "cache", max_seconds=3.0, log=None)
    assert other.root != cache.root
    with pytest.raises(CacheError, match="max_seconds must be > 0"):
        ensure_cache(teacher, manifest, [0, 4], cache_dir=tmp_path / "cache", max_seconds=float("nan"), log=None)


def test_a_batch_of_only_too_short_files_is_padded_with_a_line(tmp_path):
    manifest = _write_corpus(tmp_path / "corpus", {"s1": 120, "s2": 250, "s3": 399})
    lines = []
    cache = ensure_cache("dummy", manifest, None, cache_dir=tmp_path / "cache", device="cpu", log=lines.append)
    assert "3 utterance(s) shorter than 400 samples (one frame) zero-padded to it" in lines
    assert any(line.startswith("largest forward: 3 x 0.025 s, about") for line in lines)
    assert all(cache.frames(u) == {n: 1 for n in cache.names} for u in ("s1", "s2", "s3"))
    meta = json.loads((cache.root / "meta.json").read_text())
    assert meta["padded_utterances"] == 3 and meta["split_utterances"] == 0 and meta["min_samples"] == 400


def test_memory_refusal_is_one_line_and_writes_nothing(manifest, tmp_path, monkeypatch, capsys):
    import harness.teachers.cache as cache_mod
    from harness.cli import main

    monkeypatch.setattr(cache_mod, "available_memory", lambda device: (10**6, "available RAM"))
    args = ["teacher", "cache", "--teacher", "dummy", "--manifest", str(manifest), "--out", str(tmp_path / "c"),
            "--device", "cpu"]
    assert main(args) == 2
    *progress, err = capsys.readouterr().err.strip().split("\n")  # progress lines, then the one error line
    assert all(line.startswith("[teacher cache] ") for line in progress)
    assert err.startswith("harness: error: teacher cache for dummy-") and "needs about" in err
    assert "but only 0.00 GB are available RAM; lower --max-seconds (now 40 s) or --batch-size" in err
    assert not list((tmp_path / "c").glob("*.building"))
    assert main(args + ["--max-seconds", "0"]) == 2
    assert "max_seconds must be > 0, got 0.0" in capsys.readouterr().err


def test_the_build_logs_each_shard_with_an_eta_and_a_lookup_never_builds(manifest, tmp_path):
    from harness.teachers.cache import CacheMissing

    with pytest.raises(CacheMissing, match="is not built in"):
        ensure_cache("dummy", manifest, [1], cache_dir=tmp_path / "c", build=False, log=None)
    assert not list((tmp_path / "c").glob("*/meta.json"))
    lines = []
    ensure_cache("dummy", manifest, [1], cache_dir=tmp_path / "c", shard_size=2, log=lines.append)
    shards = [ln for ln in lines if " done (" in ln]
    assert len(shards) >= 2 and all("to build, ETA" in ln for ln in shards), shards
    assert ensure_cache("dummy", manifest, [1], cache_dir=tmp_path / "c", build=False, log=None) is not None
