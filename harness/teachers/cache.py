"""The teacher-feature cache: a frozen teacher's outputs, computed once, memory-mapped.

Every trial of a sweep runs the same frozen teacher over the same audio, so its hidden
states (and its front-end output, which a student with a copied frozen front-end takes
as input) are computed once and stored as fp16.

Layout of one cache, ``<cache_dir>/<key>/``, where ``key`` hashes the teacher id, the
manifest's content, the content of every audio file it lists (blake2b of the bytes,
memoised by path/size/mtime/inode in ``<cache_dir>/audio-digests.json``; see
:func:`audio_digest`), the cached layers and whether the front-end output is included:

- ``plan.json``: the utterances in storage order (longest first), for each the frame
  offset and count in the flat arrays, the shards (contiguous runs of utterances), the
  array names and widths, and the forward pieces of the utterances longer than
  ``max_seconds`` (run in pieces whose frames tile theirs) or too short for one frame
  (zero-padded to one);
- ``<name>.f16``: one flat ``(total_frames, D)`` float16 array per name (``frontend``,
  ``layer_<k>``), utterance after utterance;
- ``shards/<i>.json``: written when shard ``i`` is complete, with a checksum of each
  array's byte range for that shard;
- ``COMPLETE.json``: written last; only a cache with it is ever read.

Building happens in ``<key>.building/`` and ends with a rename to ``<key>/``. A killed
build leaves ``<key>.building/`` with some finished shards; the next call verifies them
(checksums), reuses them and computes only the rest. Opening a finished cache checks file
sizes and, for caches up to ``verify_limit`` bytes, every shard checksum; a corrupted
shard is recomputed, a file of the wrong size rebuilds the cache. Several processes (Ray
trials) may ask at once: one builds under an exclusive ``fcntl.flock`` on
``<key>.lock``; the others block on it and then open the finished cache.

Size: over 500 lines on purpose: the layout, its verification (checksums, sizes, markers),
resumption and the build are one crash-safety contract; :func:`ensure_cache` reads as its
phases (open if valid, shards to build, disk and memory checks, run the teacher, publish).
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import torch

from harness.config import ConfigError
from harness.data.audio import SAMPLE_RATE, AudioError
from harness.data.manifest import audio_path, read_manifest
from harness.runs import write_json
from harness.teachers.ident import weights_id


def _write_json(path: Path, data: dict) -> None:
    write_json(path, data, indent=None, fsync=True)  # a cache must survive a crash mid-build


FORMAT_VERSION = 1
FP16_MAX = 65504.0
_MARGIN_BYTES = 64 * 2**20  # keep this much free beyond the estimate
MAX_SECONDS = 40.0
"""Longest piece of audio the teacher runs on in one forward, seconds (``teacher cache
--max-seconds``). Longer utterances are cut into pieces (their frames still stored whole,
under their id); 40 s is above every LibriSpeech utterance (<= 35 s), so only unusual
files are split. A transformer's memory grows with the square of the length: one 10-minute
utterance in one forward needed 14.4 GB for the 4-layer ``dummy`` teacher."""


class CacheError(ConfigError):
    """The cache cannot be built or used (not enough disk, audio not matching the
    manifest...). A ``ConfigError``: the fix is a setting (``teacher.cache_dir``, the
    layers, ``teacher.cache=false``) or the data."""


# ----------------------------------------------------------------------------- helpers


def _log_stderr(msg: str) -> None:
    print(f"[teacher cache] {msg}", file=sys.stderr, flush=True)


def _load_audio(path: Path) -> np.ndarray:
    """16 kHz mono float32 samples; the validating reader of harness.data when present."""
    try:
        from harness.data.audio import load_audio
    except ImportError:
        import soundfile as sf

        wav, sr = sf.read(str(path), dtype="float32", always_2d=False)
        if sr != 16000 or wav.ndim != 1:
            raise CacheError(f"{path}: expected 16 kHz mono audio, got {sr} Hz with shape {wav.shape}")
        return wav
    try:
        return load_audio(path)
    except AudioError as err:  # already one line naming the file
        raise CacheError(f"teacher cache: {err}") from None


def file_digest(path: str | Path) -> str:
    """blake2b-128 hex digest of a file's bytes."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _range_digest(path: Path, start: int, stop: int) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        fh.seek(start)
        left = stop - start
        while left > 0:
            block = fh.read(min(left, 1 << 20))
            if not block:
                break
            h.update(block)
            left -= len(block)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (released by the OS if the holder dies)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def array_names(layers: Sequence[int], frontend: bool) -> list[str]:
    """Array names in storage order: ``frontend`` (when cached), then ``layer_<k>``."""
    return (["frontend"] if frontend else []) + [f"layer_{k}" for k in layers]


AUDIO_MEMO = "audio-digests.json"  # in the cache folder: path -> [size, mtime_ns, inode, digest]


def audio_digest(records: list[dict], root: Path, memo_dir: Path, say: Callable[[str], None]) -> str:
    """One digest of the audio files' content, in manifest order (part of the cache key).

    Each file's digest is a blake2b of its bytes. Hashing costs about a second per GB, so
    digests are memoised in ``<memo_dir>/audio-digests.json`` by absolute path, size,
    ``mtime_ns`` and inode: a file whose stat changed (or a copy: a new path and inode,
    even with ``cp -p``) is hashed again. What the memo cannot see is a file rewritten in
    place with its size and mtime restored.

    Returns:
        A blake2b hex digest over every record's id and file digest.
    """
    memo_path = memo_dir / AUDIO_MEMO
    try:
        memo = json.loads(memo_path.read_text())
        if not isinstance(memo, dict):
            memo = {}
    except (OSError, ValueError):
        memo = {}
    total = hashlib.blake2b(digest_size=16)
    fresh, fresh_bytes = 0, 0
    for rec in records:
        path = audio_path(rec, root).resolve()
        try:
            st = path.stat()
        except OSError as err:
            raise CacheError(f"teacher cache: {path}: cannot read the audio of utterance {rec['id']!r} "
                             f"({err.strerror or err}); rebuild or re-import the corpus") from None
        key, stamp = str(path), [st.st_size, st.st_mtime_ns, st.st_ino]
        hit = memo.get(key)
        if not (isinstance(hit, list) and hit[:3] == stamp):
            hit = stamp + [file_digest(path)]
            memo[key] = hit
            fresh, fresh_bytes = fresh + 1, fresh_bytes + st.st_size
        total.update(f"{rec['id']}\0{hit[3]}\n".encode())
    if fresh:
        if fresh_bytes > 2**30:
            say(f"hashed {fresh} audio files ({_gb(fresh_bytes)}) for the cache key")
        tmp = None
        try:  # a lost update (two trials at once) only costs a re-hash next time: no lock
            fd, tmp = tempfile.mkstemp(prefix=f"{AUDIO_MEMO}.", suffix=".tmp", dir=memo_dir)
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps(memo, separators=(",", ":")))
            os.replace(tmp, memo_path)
        except OSError:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
    return total.hexdigest()


def exact_batches(teacher) -> bool:
    """True unless the teacher declares ``padding_invariant``: its states of an utterance
    then depend on what else is in the batch (a group-norm front-end normalising over the
    padded length, an unmasked positional conv or attention: transformers' and s3prl's
    HuBERT Base), so the cache runs it on batches of equal-length pieces only, and each
    utterance's features equal the teacher run on that utterance alone."""
    return not bool(getattr(teacher, "padding_invariant", False))


def cache_key(teacher_id: str, manifest_digest: str, layers: Sequence[int], frontend: bool) -> str:
    """The folder name of a cache: a hash of what determines its content."""
    h = hashlib.blake2b(digest_size=10)
    h.update(json.dumps([FORMAT_VERSION, teacher_id, manifest_digest, list(layers), bool(frontend)]).encode())
    return f"{teacher_id}-{h.hexdigest()}"


# ----------------------------------------------------------------------------- memory


def _heads(teacher) -> int:
    """Attention heads of a teacher (for the memory estimate); a guess of width / 64 when unknown."""
    for get in (lambda t: t.config["heads"], lambda t: t.cfg.heads, lambda t: t.model.config.num_attention_heads):
        try:
            return max(1, int(get(teacher)))
        except (AttributeError, KeyError, TypeError, ValueError):
            continue
    return max(1, int(getattr(teacher, "width", 64) or 64) // 64)


def forward_bytes(teacher, batch: int, samples: int, layers: Sequence[int], frontend: bool) -> int:
    """Estimated peak memory of one cache forward of ``batch`` waveforms of ``samples``, bytes.

    An upper-bound model, not a measurement: the waveforms; the conv front-end's largest
    layer input plus twice its output (norm and activation); when layers are read, the
    ``L + 1`` hidden states kept, one layer's attention scores and softmax
    (``2 x B x heads x T^2`` float32) and its feed-forward activations (``B x T x 4D``,
    twice); and the float32 + float16 copies of every cached array.
    """
    b, n = int(batch), int(samples)
    total = b * n * 4
    conv = getattr(teacher.frontend, "layers", None)
    if isinstance(conv, (list, tuple)) and conv and all(isinstance(c, (list, tuple)) and len(c) == 3 for c in conv):
        prev, peak, m = b * n * 4, 0, n
        for ch, k, st in conv:
            m = max(0, (m - int(k)) // int(st) + 1)
            out = b * int(ch) * m * 4
            peak, prev = max(peak, prev + 2 * out), out
        total += peak
    else:  # unknown front-end: a wav2vec2-like one (512 channels at a 5-sample stride)
        total += 3 * b * 512 * (n // 5) * 4
    frames = _nframes(teacher.frontend.frame_lengths, n) if frontend else 0
    if layers:
        t, d, nl = _nframes(teacher.frame_lengths, n), int(teacher.width), int(teacher.num_layers)
        total += (nl + 1) * b * t * d * 4 + 2 * b * _heads(teacher) * t * t * 4 + 2 * b * t * 4 * d * 4
        total += len(layers) * b * t * d * 6
    if frontend:
        total += b * frames * int(teacher.frontend.out_dim) * 6
    return int(total)


def _meminfo_available() -> Optional[int]:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def available_memory(device: torch.device) -> tuple[Optional[int], str]:
    """Bytes one forward may use on ``device`` and where the bound comes from.

    CUDA: the free device memory. CPU: the smallest of the available RAM
    (``MemAvailable``), the room left under the address-space limit (``ulimit -v``,
    ``RLIMIT_AS``: limit minus this process' current ``VmSize``) and under a cgroup v2
    memory limit. ``(None, "")`` when nothing is known.
    """
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free), f"free on {device}"
    bounds: list[tuple[int, str]] = []
    avail = _meminfo_available()
    if avail is not None:
        bounds.append((avail, "available RAM"))
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY:
            vm = next(int(line.split()[1]) * 1024 for line in Path("/proc/self/status").read_text().splitlines()
                      if line.startswith("VmSize:"))
            bounds.append((max(0, soft - vm), "left under the address-space limit (ulimit -v)"))
    except (ImportError, OSError, ValueError, StopIteration):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            bounds.append((max(0, int(limit) - used), "left under the cgroup memory limit"))
    except (OSError, ValueError):
        pass
    return min(bounds) if bounds else (None, "")


def _check_memory(plan: dict, todo: list[int], teacher, samples: list[int], batch_size: int,
                  max_batch_samples: int, device: torch.device, say: Callable[[str], None]) -> int:
    """Refuse, before any forward, a build whose largest forward would not fit in memory;
    returns that forward's estimated peak bytes."""
    if not todo:
        return 0
    shapes = {(len(batch), batch[0][1][2]) for shard in todo
              for batch in _batches(plan, shard, samples, batch_size, max_batch_samples)}
    worst, shape = max((forward_bytes(teacher, b, w, plan["layers"], plan["frontend"]), (b, w)) for b, w in shapes)
    avail, where = available_memory(device)
    b, width = shape
    secs = f"{width / SAMPLE_RATE:.1f}" if width >= SAMPLE_RATE else f"{width / SAMPLE_RATE:.3f}"
    say(f"largest forward: {b} x {secs} s, about {_gb(worst)} at peak"
        + (f"; {_gb(avail)} {where}" if avail is not None else ""))
    if avail is not None and worst > avail:
        raise CacheError(
            f"teacher cache for {teacher.id}: one forward of {b} x {secs} s needs about "
            f"{_gb(worst)} but only {_gb(avail)} are {where}; lower --max-seconds (now "
            f"{plan['max_samples'] / SAMPLE_RATE:g} s) or --batch-size, or free memory")
    return worst


# ----------------------------------------------------------------------------- reading


class CacheMissing(CacheError):
    """``ensure_cache(build=False)``: the cache is not built."""


class FeatureCache:
    """A finished cache, opened read-only.

    Args:
        root: the cache folder (``<cache_dir>/<key>``) holding ``COMPLETE.json``.

    Attributes:
        teacher_id, layers (hidden-state indices), frontend (bool), names, dims
        (``{name: D}``), frame_rate, ids (storage order), built_shards / reused_shards
        (what the :func:`ensure_cache` call that returned it did).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not (self.root / "COMPLETE.json").is_file():
            raise CacheError(f"{self.root}: not a finished feature cache (no COMPLETE.json)")
        plan = json.loads((self.root / "plan.json").read_text())
        self.plan = plan
        self.teacher_id: str = plan["teacher_id"]
        self.layers: list[int] = plan["layers"]
        self.frontend: bool = plan["frontend"]
        self.names: list[str] = plan["names"]
        self.dims: dict[str, int] = plan["dims"]
        self.frame_rate: float = plan["frame_rate"]
        self.ids: list[str] = [u[0] for u in plan["utts"]]
        self._index = {u[0]: u for u in plan["utts"]}
        self._arrays: dict[str, np.ndarray] = {}
        self.built_shards = 0
        self.reused_shards = len(plan["shards"])

    def __len__(self) -> int:
        return len(self.ids)

    def __getstate__(self) -> dict:
        # sent to DataLoader workers: reopen the memory maps there instead of copying them
        state = dict(self.__dict__)
        state["_arrays"] = {}
        return state

    def __contains__(self, utt_id: object) -> bool:
        return utt_id in self._index

    def _array(self, name: str) -> np.ndarray:
        arr = self._arrays.get(name)
        if arr is None:
            total = self.plan["total_frames"]["frontend" if name == "frontend" else "layers"]
            shape = (total, self.dims[name])
            if total == 0:
                arr = np.zeros(shape, dtype=np.float16)
            else:
                arr = np.memmap(self.root / f"{name}.f16", dtype=np.float16, mode="r", shape=shape)
            self._arrays[name] = arr
        return arr

    def frames(self, utt_id: str) -> dict[str, int]:
        """Frames stored for ``utt_id`` per name."""
        _, h_off, h_n, f_off, f_n = self._index[utt_id]
        return {name: (f_n if name == "frontend" else h_n) for name in self.names}

    def get(self, utt_id: str) -> dict[str, np.ndarray]:
        """The cached arrays of one utterance.

        Returns:
            ``{"frontend": (T_f, C), "layer_<k>": (T, D), ...}``: read-only float16
            memory-mapped views (valid frames only; copy or cast before modifying).

        Raises:
            KeyError: ``utt_id`` is not in the cached manifest.
        """
        try:
            _, h_off, h_n, f_off, f_n = self._index[utt_id]
        except KeyError:
            raise KeyError(f"utterance {utt_id!r} is not in the feature cache {self.root}") from None
        out = {}
        for name in self.names:
            off, n = (f_off, f_n) if name == "frontend" else (h_off, h_n)
            out[name] = self._array(name)[off: off + n]
        return out


# ----------------------------------------------------------------------------- planning


def _nframes(fn: Callable[[torch.Tensor], torch.Tensor], n: int) -> int:
    return int(fn(torch.tensor([int(n)], dtype=torch.int64))[0])


def _least_samples(fns: list, frames: int, hi: int) -> int:
    """The fewest samples for which every frame arithmetic in ``fns`` gives >= ``frames``."""
    lo = 1
    if not all(_nframes(f, hi) >= frames for f in fns):
        raise CacheError(f"the teacher's frame arithmetic gives fewer than {frames} frame(s) for {hi} samples")
    while lo < hi:  # frame counts grow with the length: bisect
        mid = (lo + hi) // 2
        if all(_nframes(f, mid) >= frames for f in fns):
            hi = mid
        else:
            lo = mid + 1
    return lo


def _split(utt_id: str, n: int, fns: list, hop: int, max_samples: int, teacher_id: str) -> list[list[int]]:
    """Pieces of an utterance longer than ``max_samples``: ``[s0, s1, width, frame_lo, frames]``.

    Equal pieces of ``P`` frames; piece ``j`` reads samples from ``j * P * hop`` on, just
    enough for its ``P`` frames (the last one: to the end), so the frames of the pieces
    tile the frames of the whole utterance (conv arithmetic with hop ``hop`` is shift
    invariant). Checked here: a teacher whose arithmetic is not gets a one-line refusal.
    """
    total = _nframes(fns[0], n)
    if any(_nframes(f, n) != total for f in fns[1:]):
        raise CacheError(f"utterance {utt_id!r} ({n / SAMPLE_RATE:.1f} s) is longer than max_seconds "
                         f"({max_samples / SAMPLE_RATE:g} s) but teacher {teacher_id}'s layers and front-end count "
                         f"frames differently, so it cannot be split; raise max_seconds above it")
    per = max(1, min(_nframes(f, max_samples) for f in fns))
    k = -(-total // per)
    p = -(-total // k)
    need = _least_samples(fns, p, max_samples + 2 * hop)
    pieces = []
    for j in range(k):
        lo, hi = j * p, min(total, (j + 1) * p)
        s0 = lo * hop
        s1 = n if j == k - 1 else min(n, s0 + need)
        if any(_nframes(f, s1 - s0) < hi - lo for f in fns):
            raise CacheError(f"utterance {utt_id!r}: teacher {teacher_id}'s frame arithmetic does not allow "
                             f"splitting it at {max_samples / SAMPLE_RATE:g} s; raise max_seconds above "
                             f"{n / SAMPLE_RATE:.1f} s")
        pieces.append([s0, s1, s1 - s0, lo, hi - lo])
    return pieces


def _make_plan(teacher, records: list[dict], layers: list[int], frontend: bool, shard_size: int,
               max_samples: int) -> dict:
    """Storage order, offsets, shards and the pieces the teacher runs on; deterministic in its
    inputs.

    Every utterance is one forward piece, except: one longer than ``max_samples`` is cut
    into pieces of at most about ``max_samples`` (see :func:`_split`; its frames are stored
    contiguously under its id, as for any other), and one too short for a single frame is
    zero-padded to the shortest length that gives one (``plan["min_samples"]``).
    ``plan["pieces"]`` lists ``[s0, s1, width, frame_lo, frames]`` per split or padded
    utterance (by storage index); the others are ``[0, n, n, 0, frames]``.
    """
    ids = [r["id"] for r in records]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise CacheError(f"manifest has the utterance id {dup!r} more than once")
    order = sorted(range(len(records)), key=lambda i: (-int(records[i]["num_samples"]), records[i]["id"]))
    fns = ([teacher.frame_lengths] if layers else []) + ([teacher.frontend.frame_lengths] if frontend else [])
    min_samples = _least_samples(fns, 1, 10 * SAMPLE_RATE)
    hop = max(1, int(round(SAMPLE_RATE / float(teacher.frame_rate))))
    utts, pieces, h_off, f_off = [], {}, 0, 0
    for j, i in enumerate(order):
        n = int(records[i]["num_samples"])
        if n > max_samples:
            pieces[str(j)] = _split(records[i]["id"], n, fns, hop, max_samples, teacher.id)
        elif n < min_samples:
            pieces[str(j)] = [[0, n, min_samples, 0, 1]]
        width = n if n >= min_samples else min_samples  # the length the frame counts are taken of
        h_n = _nframes(teacher.frame_lengths, width) if layers else 0
        f_n = _nframes(teacher.frontend.frame_lengths, width) if frontend else 0
        utts.append([records[i]["id"], h_off, h_n, f_off, f_n])
        h_off += h_n
        f_off += f_n
    names = array_names(layers, frontend)
    dims = {name: int(teacher.frontend.out_dim if name == "frontend" else teacher.width) for name in names}
    shards = [[s, min(s + shard_size, len(utts))] for s in range(0, len(utts), shard_size)]
    return {
        "version": FORMAT_VERSION, "teacher_id": teacher.id, "layers": layers, "frontend": frontend,
        "names": names, "dims": dims, "frame_rate": float(teacher.frame_rate),
        "total_frames": {"layers": h_off, "frontend": f_off}, "shards": shards, "utts": utts,
        "max_samples": int(max_samples), "min_samples": int(min_samples), "pieces": pieces,
        "exact_batches": exact_batches(teacher),
    }


def _pieces(plan: dict, i: int, n: int) -> list[list[int]]:
    """The forward pieces ``[s0, s1, width, frame_lo, frames]`` of storage index ``i`` (``n`` samples)."""
    got = plan["pieces"].get(str(i))
    if got is not None:
        return got
    u = plan["utts"][i]
    return [[0, n, n, 0, u[2] if plan["layers"] else u[4]]]


def _plan_bytes(plan: dict, name: str) -> int:
    group = "frontend" if name == "frontend" else "layers"
    return plan["total_frames"][group] * plan["dims"][name] * 2


def _shard_range(plan: dict, shard: int, name: str) -> tuple[int, int]:
    """Byte range ``[start, stop)`` of ``shard`` in array ``name``."""
    start, stop = plan["shards"][shard]
    utts, d = plan["utts"], plan["dims"][name] * 2
    off, n = (3, 4) if name == "frontend" else (1, 2)
    first = utts[start][off]
    last = utts[stop - 1][off] + utts[stop - 1][n]
    return first * d, last * d


def _shard_ok(folder: Path, plan: dict, shard: int, full: bool) -> bool:
    marker = folder / "shards" / f"{shard}.json"
    if not marker.is_file():
        return False
    try:
        sums = json.loads(marker.read_text())["checksums"]
    except (OSError, ValueError, KeyError):
        return False
    if set(sums) != set(plan["names"]):
        return False
    if full:
        for name in plan["names"]:
            start, stop = _shard_range(plan, shard, name)
            if _range_digest(folder / f"{name}.f16", start, stop) != sums[name]:
                return False
    return True


def _sizes_ok(folder: Path, plan: dict) -> bool:
    for name in plan["names"]:
        path = folder / f"{name}.f16"
        if not path.is_file() or path.stat().st_size != _plan_bytes(plan, name):
            return False
    return True


def verify_cache(folder: str | Path, full: bool = True) -> tuple[bool, list[int], str]:
    """Check a cache folder against its plan.

    Args:
        folder: a cache (or ``.building``) folder.
        full: recompute every shard's checksums (else only sizes and markers).

    Returns:
        ``(ok, bad_shards, reason)``; ``bad_shards`` = ``[-1]`` when the folder must be
        rebuilt from scratch (missing plan, wrong file size).
    """
    folder = Path(folder)
    try:
        plan = json.loads((folder / "plan.json").read_text())
    except (OSError, ValueError):
        return False, [-1], "plan.json missing or unreadable"
    if not _sizes_ok(folder, plan):
        return False, [-1], "an array file is missing or has the wrong size"
    bad = [i for i in range(len(plan["shards"])) if not _shard_ok(folder, plan, i, full)]
    if bad:
        return False, bad, f"{len(bad)} shard(s) missing or failing their checksum"
    if not (folder / "COMPLETE.json").is_file():
        return False, [], "no COMPLETE.json"
    return True, [], ""


# ----------------------------------------------------------------------------- building


def _batches(plan: dict, shard: int, samples: list[int], batch_size: int, max_batch_samples: int):
    """The forward pieces of a shard as batches ``[(i, piece, whole), ...]`` (``whole``: the
    piece is the whole utterance): longest first, capped in count and in padded size (``B x``
    the longest piece's width, samples). With ``plan["exact_batches"]`` (a teacher whose
    output depends on padding) a batch holds pieces of one width only: no padding at all."""
    start, stop = plan["shards"][shard]
    items = []
    for i in range(start, stop):
        pieces = _pieces(plan, i, samples[i])
        items += [(i, pc, len(pieces) == 1) for pc in pieces]
    items.sort(key=lambda it: -it[1][2])  # stable: storage order within one width
    exact = bool(plan.get("exact_batches"))
    batch: list = []
    for item in items:
        # sorted longest first, so the first of a batch sets its padded length
        if batch and (len(batch) >= batch_size or (len(batch) + 1) * batch[0][1][2] > max_batch_samples
                      or (exact and item[1][2] != batch[0][1][2])):
            yield batch
            batch = []
        batch.append(item)
    if batch:
        yield batch


def _read_window(path: Path, start: int, stop: int, n: int) -> np.ndarray:
    """Samples ``[start, stop)`` of a file that must hold ``n`` (a piece of a long utterance)."""
    from harness.data.audio import load_audio

    try:
        return load_audio(path, start=start, stop=stop, expected_len=n)
    except AudioError as err:
        raise CacheError(f"teacher cache: {err}") from None


def _read_batch(batch: list, utts: list, records: dict, root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode one batch: ``(B, S)`` zero-padded float32 waveforms and ``(B,)`` lengths
    (each piece's ``width``: a too-short utterance counts as zero-padded to one frame)."""
    wavs, widths = [], []
    for i, (s0, s1, width, _, _), _ in batch:
        rec = records[utts[i][0]]
        path = audio_path(rec, root)
        n = int(rec["num_samples"])
        if s0 == 0 and s1 == n:
            wav = _load_audio(path)
            if len(wav) != n:
                raise CacheError(f"{path}: {len(wav)} samples but the manifest says {rec['num_samples']} "
                                 f"(utterance {rec['id']!r}); rebuild the manifest")
        else:
            wav = _read_window(path, s0, s1, n)
        wavs.append(wav)
        widths.append(max(width, len(wav)))
    lengths = torch.tensor(widths, dtype=torch.int64)
    x = torch.zeros(len(wavs), int(lengths.max()), dtype=torch.float32)
    for b, w in enumerate(wavs):
        x[b, : len(w)] = torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32))
    return x, lengths


def _prefetched(fn, items: list, pool: Optional[ThreadPoolExecutor], depth: int = 2):
    """``fn(item)`` for each item in order, up to ``depth`` computed ahead in ``pool``
    (decoding audio releases the GIL, so it overlaps the teacher's forward)."""
    if pool is None:
        for item in items:
            yield fn(item)
        return
    pending: collections.deque = collections.deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) > depth:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def forward_arrays(teacher, x: torch.Tensor, lengths: torch.Tensor, layers: Sequence[int],
                   frontend: bool) -> dict[str, torch.Tensor]:
    """One teacher forward of a batch of pieces: ``{"layer_<k>": (B, T, D), "frontend":
    (B, T_f, C)}`` (what the cache stores, before the fp16 cast); the cache's build and the
    live teacher (:mod:`harness.teachers.features`) both call it."""
    with torch.inference_mode():
        out: dict[str, torch.Tensor] = {}
        if layers:
            states, _ = teacher.hidden_states(x, lengths)
            for k in layers:
                out[f"layer_{k}"] = states[k]
        if frontend:
            out["frontend"], _ = teacher.frontend(x, lengths)
    return out


def _build_shard(folder: Path, plan: dict, shard: int, teacher, records: dict, root: Path,
                 device: torch.device, batch_size: int, max_batch_samples: int,
                 pool: Optional[ThreadPoolExecutor] = None) -> None:
    names, layers = plan["names"], plan["layers"]
    utts = plan["utts"]
    samples = [int(records[u[0]]["num_samples"]) for u in utts]
    fds = {name: os.open(folder / f"{name}.f16", os.O_RDWR) for name in names}
    batches = list(_batches(plan, shard, samples, batch_size, max_batch_samples))
    try:
        for batch, (x, lengths) in zip(batches, _prefetched(lambda b: _read_batch(b, utts, records, root),
                                                            batches, pool)):
            out = forward_arrays(teacher, x.to(device), lengths.to(device), layers, plan["frontend"])
            for name in names:
                d = plan["dims"][name]
                arr = out[name].float().clamp(-FP16_MAX, FP16_MAX).to(torch.float16).cpu().numpy()
                if arr.shape[-1] != d:
                    raise CacheError(f"teacher output {name} has width {arr.shape[-1]}, planned {d}")
                off_i, n_i = (3, 4) if name == "frontend" else (1, 2)
                for b, (i, (_, _, _, lo, frames), whole) in enumerate(batch):
                    n = utts[i][n_i] if whole else frames  # split pieces: the same count in every array
                    if arr.shape[1] < n:
                        raise CacheError(f"teacher returned {arr.shape[1]} frames for utterance {utts[i][0]!r}, "
                                         f"its frame arithmetic says {n}")
                    data = np.ascontiguousarray(arr[b, :n]).tobytes()
                    os.pwrite(fds[name], data, (utts[i][off_i] + lo) * d * 2)
        for fd in fds.values():
            os.fsync(fd)
    finally:
        for fd in fds.values():
            os.close(fd)
    # pieces are written out of storage order: the checksum is of the range as it lies on disk
    _write_json(folder / "shards" / f"{shard}.json",
                {"checksums": {name: _range_digest(folder / f"{name}.f16", *_shard_range(plan, shard, name))
                               for name in names}})


class _FrontendOnly(torch.nn.Module):
    """A bare front-end (e.g. a student's frozen copy) seen as a teacher with no layers."""

    def __init__(self, frontend: torch.nn.Module) -> None:
        super().__init__()
        self.frontend = frontend
        self.num_layers, self.width, self.frame_rate = 0, 0, float(frontend.frame_rate)
        self.id = weights_id(f"frontend-{frontend.spec.get('type', 'x')}", frontend.spec, frontend.state_dict())

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return self.frontend.frame_lengths(lengths)


def _resolve(teacher_or_spec, device):
    if not isinstance(teacher_or_spec, str) and not hasattr(teacher_or_spec, "hidden_states"):
        teacher_or_spec = _FrontendOnly(teacher_or_spec)  # a bare front-end module
    if isinstance(teacher_or_spec, str):
        from harness.teachers.base import load_teacher

        dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return load_teacher(teacher_or_spec, dev), dev, teacher_or_spec
    teacher = teacher_or_spec
    params = list(teacher.parameters()) if isinstance(teacher, torch.nn.Module) else []
    dev = params[0].device if params else torch.device(device or "cpu")
    return teacher, dev, None


def ensure_cache(
    teacher_or_spec,
    manifest_path: str | Path,
    layers: Optional[Sequence[int]] = None,
    frontend: bool = True,
    cache_dir: str | Path = "cache/teacher",
    batch_size: int = 8,
    device: Optional[str] = None,
    shard_size: int = 256,
    max_batch_seconds: float = 320.0,
    verify_limit: int = 2**30,
    io_threads: int = 2,
    on_shard: Optional[Callable[[int], None]] = None,
    log: Optional[Callable[[str], None]] = _log_stderr,
    limit: int = 0,
    max_seconds: float = MAX_SECONDS,
    build: bool = True,
) -> FeatureCache:
    """Return the feature cache of ``teacher`` over a manifest, building it once if needed.

    Args:
        teacher_or_spec: a teacher spec (``"dummy"``, ``"hf:/dir"``...) or a loaded
            teacher (Upstream with ``.frontend``).
        manifest_path: JSONL manifest of the utterances (all are cached, full length).
        layers: teacher hidden-state indices to cache (0 = pre-encoder features ... L);
            ``None`` = all. ``[]`` with ``frontend=True`` caches only the front-end.
        frontend: also cache ``teacher.frontend``'s output (key ``"frontend"``).
        cache_dir: parent folder of all caches.
        batch_size: utterances per teacher forward (length-sorted, so padding is small).
        device: where the teacher runs when built from a spec (default: cuda if present).
        shard_size: utterances per shard (the unit of resumption).
        max_batch_seconds: cap on the padded audio of one batch (B x longest), seconds.
        io_threads: threads decoding audio ahead of the teacher (0 = decode in line).
        verify_limit: caches up to this many bytes are checksummed on every open; larger
            ones are checked by file sizes and shard markers only.
        on_shard: called with each finished shard's index (tests use it to interrupt).
        log: progress messages (``None`` = silent).
        limit: cache only the manifest's first ``limit`` utterances (0 = all); a separate
            cache, so a short run (``data.max_utterances``) does not pay for the whole split.
        max_seconds: the longest audio of one forward (:data:`MAX_SECONDS`): a longer
            utterance is run in pieces of at most about this length whose frames tile its
            frames (still stored whole under its id; frames near a cut see less context
            than in one forward). Utterances too short for one frame are zero-padded to
            one. Both are counted in the log and in ``meta.json``.
        build: False = only open a finished cache (else :class:`CacheMissing`).

    Returns:
        The finished, verified cache.

    Raises:
        CacheMissing: ``build`` is False and the cache is not built.
        CacheError: not enough free disk or memory for the largest forward (both checked
            before building), a layer out of range, audio not matching its manifest.
        FileNotFoundError / ManifestError: missing manifest or audio.
    """
    say = log or (lambda msg: None)
    manifest_path = Path(manifest_path)
    records = read_manifest(manifest_path)  # ManifestError names a missing/bad manifest
    if limit < 0:
        raise CacheError(f"limit must be >= 0, got {limit}")
    if not max_seconds > 0:  # also refuses NaN
        raise CacheError(f"max_seconds must be > 0, got {max_seconds}")
    max_samples = max(1, int(max_seconds * SAMPLE_RATE))
    digest = file_digest(manifest_path)
    if limit and limit < len(records):
        records, digest = records[:limit], f"{digest}:first{limit}"
    teacher, dev, spec = _resolve(teacher_or_spec, device)
    if layers is None:
        layers = list(range(teacher.num_layers + 1))
    layers = sorted({int(k) for k in layers})
    if layers and (layers[0] < 0 or layers[-1] > teacher.num_layers):
        raise CacheError(f"layers {layers}: teacher {teacher.id} has hidden states 0..{teacher.num_layers}")
    if not layers and not frontend:
        raise CacheError("nothing to cache: give layers or frontend=True")

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    # the audio's content, not only the manifest: a copy of a corpus with one file changed
    # must not reuse the features of the original
    digest = f"{digest}:audio-{audio_digest(records, manifest_path.parent, cache_dir, say)}:max{max_samples}"
    if exact_batches(teacher):  # a cache built from padded batches (before this) is not reused
        digest += ":exact-batches"
    key = cache_key(teacher.id, digest, layers, frontend)
    final, building, lock = cache_dir / key, cache_dir / f"{key}.building", cache_dir / f"{key}.lock"

    cache = _open_if_valid(final, verify_limit)  # fast path: no lock for a finished, intact cache
    if cache is not None:
        return cache
    if not build:
        raise CacheMissing(f"the teacher cache of {teacher.id} over {manifest_path} is not built in {cache_dir}")
    with _locked(lock):
        cache = _open_if_valid(final, verify_limit)  # another process may have finished it meanwhile
        if cache is not None:
            return cache
        plan = _make_plan(teacher, records, layers, frontend, shard_size, max_samples)
        todo = _shards_to_build(final, building, plan, say)
        reused = len(plan["shards"]) - len(todo)
        hours = sum(int(r["num_samples"]) for r in records) / SAMPLE_RATE / 3600
        total = _check_disk(plan, todo, cache_dir, teacher.id, len(records), hours, say)
        by_id = {r["id"]: r for r in records}
        lengths = _say_pieces(plan, by_id, max_seconds, say)
        peak = _check_memory(plan, todo, teacher, lengths, batch_size, int(max_batch_seconds * SAMPLE_RATE),
                             dev, say)
        _start_building(building, plan)
        if reused:
            say(f"resuming: {reused} of {len(plan['shards'])} shards already built")
        t0 = time.perf_counter()
        _run_teacher(building, plan, todo, teacher, by_id, manifest_path.parent, dev,
                     batch_size, int(max_batch_seconds * SAMPLE_RATE), io_threads, on_shard, say)
        split = [k for k, v in plan["pieces"].items() if len(v) > 1]
        meta = {"teacher_id": teacher.id, "teacher_spec": spec, "manifest": str(manifest_path.resolve()),
                "utterances": len(records), "hours": hours, "bytes": total, "max_seconds": max_seconds,
                "split_utterances": len(split), "split_pieces": sum(len(plan["pieces"][k]) for k in split),
                "padded_utterances": len(plan["pieces"]) - len(split), "min_samples": plan["min_samples"],
                "forward_peak_bytes_estimate": peak}
        _publish(building, final, plan, meta, t0)
        say(f"ready: {final}")
        cache = FeatureCache(final)
        cache.built_shards, cache.reused_shards = len(todo), reused
        return cache


def _start_building(building: Path, plan: dict) -> None:
    """A new ``.building`` folder: the plan and every array file at its final size (kept
    as it is when a killed build left one: its finished shards are reused)."""
    if building.exists():
        return
    (building / "shards").mkdir(parents=True)
    _write_json(building / "plan.json", plan)
    for name in plan["names"]:
        with open(building / f"{name}.f16", "wb") as fh:
            fh.truncate(_plan_bytes(plan, name))


def _say_pieces(plan: dict, by_id: dict, max_seconds: float, say: Callable[[str], None]) -> list[int]:
    """Log the split and padded utterances; returns every utterance's samples in storage order."""
    lengths = [int(by_id[u[0]]["num_samples"]) for u in plan["utts"]]
    split = [int(k) for k, v in plan["pieces"].items() if len(v) > 1]
    padded = [int(k) for k, v in plan["pieces"].items() if len(v) == 1]
    if split:
        longest = max(lengths[i] for i in split) / SAMPLE_RATE
        say(f"{len(split)} utterance(s) longer than max_seconds = {max_seconds:g} s (longest {longest:.1f} s) run "
            f"in {sum(len(plan['pieces'][str(i)]) for i in split)} pieces of at most ~{max_seconds:g} s "
            f"(frames stored whole; --max-seconds to change)")
    if padded:
        say(f"{len(padded)} utterance(s) shorter than {plan['min_samples']} samples (one frame) zero-padded to it")
    return lengths


def _open_if_valid(final: Path, verify_limit: int) -> Optional[FeatureCache]:
    """The finished cache at ``final`` if it verifies (checksums up to ``verify_limit`` bytes)."""
    if not (final / "COMPLETE.json").is_file():
        return None
    try:
        plan = json.loads((final / "plan.json").read_text())
        full = sum(_plan_bytes(plan, n) for n in plan["names"]) <= verify_limit
    except (OSError, ValueError, KeyError):
        return None
    try:
        ok, _, _ = verify_cache(final, full=full)
        return FeatureCache(final) if ok else None
    except OSError:  # another process is repairing it right now (renamed away)
        return None


def _shards_to_build(final: Path, building: Path, plan: dict, say: Callable[[str], None]) -> list[int]:
    """Shard indices still to compute in ``building`` (a damaged finished cache moves there;
    a building folder of another plan is discarded)."""
    if final.exists():  # finished once but damaged: repair it in the building folder
        _, _, reason = verify_cache(final, full=False)
        say(f"{final}: {reason or 'a shard fails its checksum'}; rebuilding the damaged part")
        if building.exists():
            shutil.rmtree(building)
        (final / "COMPLETE.json").unlink(missing_ok=True)
        os.rename(final, building)
    if building.exists():
        try:
            same = json.loads((building / "plan.json").read_text()) == plan and _sizes_ok(building, plan)
        except (OSError, ValueError):
            same = False
        if not same:
            shutil.rmtree(building)
    todo = [i for i in range(len(plan["shards"])) if not (building.exists() and _shard_ok(building, plan, i, True))]
    for i in todo:
        if building.exists():
            (building / "shards" / f"{i}.json").unlink(missing_ok=True)
    return todo


def _check_disk(plan: dict, todo: list[int], cache_dir: Path, teacher_id: str, utterances: int, hours: float,
                say: Callable[[str], None]) -> int:
    """Refuse, before writing anything, a build the free disk cannot hold; returns the
    cache's total bytes (array files are sparse: only the shards to build count)."""
    need = sum(_shard_range(plan, i, n)[1] - _shard_range(plan, i, n)[0] for i in todo for n in plan["names"])
    total = sum(_plan_bytes(plan, n) for n in plan["names"])
    free = shutil.disk_usage(cache_dir).free
    say(f"{utterances} utterances ({hours:.2f} h), {len(plan['names'])} arrays "
        f"({', '.join(plan['names'][:3])}{'...' if len(plan['names']) > 3 else ''}) in fp16: "
        f"{_gb(total)} in all, {_gb(need)} to write; {_gb(free)} free in {cache_dir}")
    if need + _MARGIN_BYTES > free:
        raise CacheError(
            f"teacher cache for {teacher_id} needs {_gb(need)} more in {cache_dir} but only {_gb(free)} "
            f"are free; free disk, point teacher.cache_dir elsewhere, cache fewer layers, or set teacher.cache=false"
        )
    return total


def _run_teacher(building: Path, plan: dict, todo: list[int], teacher, by_id: dict, root: Path, dev,
                 batch_size: int, max_batch_samples: int, io_threads: int,
                 on_shard: Optional[Callable[[int], None]], say: Callable[[str], None]) -> None:
    """Compute the ``todo`` shards (teacher in eval mode, restored after; audio decoded ahead)."""
    was_training = getattr(teacher, "training", False)
    if isinstance(teacher, torch.nn.Module):
        teacher.eval()
    from harness.progress import Progress, eta

    t0 = time.perf_counter()
    prog = Progress(len(todo), "teacher cache", unit="shard", tty=False)  # its lines go through say
    pool = ThreadPoolExecutor(max_workers=io_threads) if io_threads > 0 else None
    try:
        for k, i in enumerate(todo):
            _build_shard(building, plan, i, teacher, by_id, root, dev, batch_size, max_batch_samples, pool)
            prog.tick(k + 1)
            say(f"shard {i + 1}/{len(plan['shards'])} done ({time.perf_counter() - t0:.1f} s; "
                f"{k + 1}/{len(todo)} to build, ETA {eta(prog.eta_seconds())})")
            if on_shard is not None:
                on_shard(i)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if was_training:
            teacher.train()


def _publish(building: Path, final: Path, plan: dict, meta: dict, t0: float) -> None:
    """Verify the built folder, write its meta (build time since ``t0``) and COMPLETE
    markers, rename it into place."""
    ok, bad, reason = verify_cache(building, full=False)
    if bad:
        raise CacheError(f"{building}: {reason} after building")
    _write_json(building / "meta.json", {**meta, "built_seconds": time.perf_counter() - t0})
    _write_json(building / "COMPLETE.json", {
        "plan": file_digest(building / "plan.json"),
        "shards": {str(i): json.loads((building / "shards" / f"{i}.json").read_text())["checksums"]
                   for i in range(len(plan["shards"]))},
    })
    os.rename(building, final)
    _fsync_dir(final.parent)
