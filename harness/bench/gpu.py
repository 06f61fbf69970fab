"""``harness bench gpu``: model FLOPs utilisation of the ``student_paper`` training step fed
by a teacher-feature cache (FLOPs from :class:`harness.stacking.CostModel`, the same
per-layer model as ``theoretical_cost``), and the data loader's share of step time."""

from __future__ import annotations

import contextlib
import dataclasses
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

from harness.bench.common import report_header, scratch
from harness.bench.throughput import _summary, _sync
from harness.data.audio import write_wav
from harness.data.manifest import write_manifest
from harness.runs import write_json

# ----------------------------------------------------------------------------- GPU efficiency

# Dense (no sparsity) BF16 tensor-core peaks from NVIDIA's data sheets, TFLOP/s, matched
# against torch.cuda.get_device_name() in order; anything else needs --peak-tflops.
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.4),  # SXM ("NVIDIA H100 80GB HBM3")
    ("H200", 989.4),
    ("A100", 312.0),
)


def peak_tflops(device_name: str) -> Optional[float]:
    """The dense BF16 peak of a device by name (TFLOP/s), or None if not in the table."""
    for key, value in PEAK_BF16_TFLOPS:
        if key.lower() in device_name.lower():
            return value
    return None


@dataclass
class GpuSettings:
    """The ``student_paper`` step fed by a teacher-feature cache.

    Attributes:
        batch: utterances per step.
        seconds: audio per utterance (all the same length: no padding, no bucketing).
        utterances: fabricated utterances in the manifest (cached once).
        steps: timed steps; warmup: untimed steps first.
        num_workers: DataLoader worker processes reading the memory-mapped cache.
        teacher_layers, teacher_width, conv_dim: the (dummy, random) teacher's shape;
            the defaults are HuBERT Base's, so the student is the paper's.
        peak_tflops: the device's peak (0: from :data:`PEAK_BF16_TFLOPS`).
        device: ``cuda`` (``cpu`` only for tests, with ``allow_cpu``).
        seed: data and weights.
    """

    batch: int = 8
    seconds: float = 4.0
    utterances: int = 64
    steps: int = 50
    warmup: int = 5
    num_workers: int = 2
    teacher_layers: int = 12
    teacher_width: int = 768
    conv_dim: int = 512
    peak_tflops: float = 0.0
    device: str = "cuda"
    seed: int = 0


class _CachedSteps(torch.utils.data.Dataset):
    """Item ``i`` = one cached utterance: front-end features ``(T, C)`` and the teacher
    states the student's layer map needs, each ``(T, D)``, as float16 tensors."""

    def __init__(self, cache, layers: list[int]) -> None:
        self.cache, self.layers, self.ids = cache, layers, list(cache.ids)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        import numpy as np

        arrays = self.cache.get(self.ids[i])
        item = {"frontend": torch.from_numpy(np.array(arrays["frontend"]))}
        for k in self.layers:
            item[k] = torch.from_numpy(np.array(arrays[f"layer_{k}"]))
        return item


def _fabricate_manifest(folder: Path, n: int, seconds: float, seed: int) -> Path:
    """``n`` utterances of low-level noise (WAV) and their manifest (the data does not
    matter to speed, only the shapes)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    samples = int(round(seconds * 16000))
    records = []
    for i in range(n):
        path = folder / "audio" / f"u{i:04d}.wav"
        write_wav(path, (0.05 * rng.standard_normal(samples)).clip(-1, 1))
        records.append({"id": f"u{i:04d}", "path": str(path), "num_samples": samples, "sample_rate": 16000,
                        "speaker": "s0", "text": ""})
    manifest = folder / "distill.jsonl"
    write_manifest(manifest, records)
    return manifest


def _time_steps(student, opt, loader, layers: list[int], g: GpuSettings,
                device: torch.device) -> tuple[list[float], list[float], int]:
    """Train ``g.warmup + g.steps`` steps on the loader's batches (cycled).

    Returns:
        Per timed step the seconds waiting for the batch and copying it to the device
        (``data``) and the forward + backward + optimizer seconds (``compute``), both
        synchronised; and the frames per utterance.
    """
    from harness.losses import l2l_loss

    cuda = device.type == "cuda"

    def batches():
        while True:
            yield from loader

    it = batches()
    data_s, compute_s = [], []
    frames = 0
    for i in range(g.warmup + g.steps):
        t0 = time.perf_counter()
        b = next(it)
        feats = b["frontend"].to(device, non_blocking=True)
        tgt = {k: b[k].to(device, non_blocking=True) for k in layers}
        _sync(device)
        t1 = time.perf_counter()
        with (torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()):
            # the cache stores fp16; the student's first linear takes it under autocast
            states = student.forward_features(feats if cuda else feats.float())
            loss, _ = l2l_loss(student.project(states), tgt, student.targets, "l1_cos", 0.5)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _sync(device)
        t2 = time.perf_counter()
        frames = feats.shape[1]
        if i >= g.warmup:
            data_s.append(t1 - t0)
            compute_s.append(t2 - t1)
    return data_s, compute_s, frames


def bench_gpu(g: GpuSettings, out: Optional[str | Path] = None, work_dir: Optional[str | Path] = None,
              allow_cpu: bool = False, log: Callable[[str], None] = print) -> dict:
    """Model FLOPs utilisation of the ``student_paper`` training step with a cached
    teacher, and the data loader's share of the step.

    A random HuBERT-Base-shaped dummy teacher fills a feature cache over fabricated
    audio (outside any timing); the student (bf16 autocast, AdamW, L2L ``l1_cos`` over all
    12 layers, proportional map) then trains on batches that a ``DataLoader`` reads from
    that cache. Per step, ``data`` = waiting for the next batch and copying it to the
    device, ``compute`` = forward + backward + optimizer (synchronised).

    MFU = FLOPs per step (:class:`harness.stacking.CostModel` of the student, front-end
    and teacher cached = 0; the model ``theoretical_cost`` sums) / median step seconds /
    the device's peak. Reported both for the compute alone and for the whole step.

    Raises:
        ValueError: no CUDA (unless ``allow_cpu``, for tests), or no known peak.
    """
    from harness.stacking import CostModel, theoretical_cost
    from harness.student import student_paper
    from harness.teachers.cache import ensure_cache
    from harness.teachers.dummy import DummyTeacher

    if g.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("bench gpu: needs a CUDA device and this machine has none (torch.cuda.is_available() "
                         "is False); run it where a GPU is lent")
    if not g.device.startswith("cuda") and not allow_cpu:
        raise ValueError(f"bench gpu: --device {g.device} is not a GPU; this benchmark measures GPU efficiency")
    device = torch.device(g.device)
    cuda = device.type == "cuda"
    name = torch.cuda.get_device_name(device) if cuda else "cpu"
    peak = g.peak_tflops or (peak_tflops(name) if cuda else 0.0)
    if not peak:
        raise ValueError(f"bench gpu: no known BF16 peak for {name!r}; give --peak-tflops")
    torch.manual_seed(g.seed)
    with scratch(work_dir, "bench-gpu-") as tmp:
        manifest = _fabricate_manifest(tmp / "data", g.utterances, g.seconds, g.seed)
        teacher = DummyTeacher(num_layers=g.teacher_layers, width=g.teacher_width, heads=12,
                               conv_dim=g.conv_dim).to(device)
        student = student_paper(teacher)
        layers = sorted(set(student.targets))
        t0 = time.perf_counter()
        cache = ensure_cache(teacher, manifest, layers, frontend=True, cache_dir=tmp / "cache", log=None)
        cache_seconds = time.perf_counter() - t0
        del teacher
        student.frontend = None  # fed the cached front-end output
        student = student.to(device).train()
        opt = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=2e-4,
                                fused=True if cuda else None)
        loader = torch.utils.data.DataLoader(
            _CachedSteps(cache, layers), batch_size=g.batch, shuffle=True, drop_last=True,
            num_workers=g.num_workers, pin_memory=cuda, persistent_workers=g.num_workers > 0,
            generator=torch.Generator().manual_seed(g.seed))
        if len(loader) == 0:
            raise ValueError(f"bench gpu: --utterances {g.utterances} < --batch {g.batch}")

        data_s, compute_s, frames = _time_steps(student, opt, loader, layers, g, device)
        model = CostModel.for_student(student, seq_frames=frames, frames_per_step=g.batch * frames)
        flops = theoretical_cost([student.num_layers], [1], model)
        step_s = [a + b for a, b in zip(data_s, compute_s)]
        results = {
            "device_name": name,
            "peak_tflops": peak,
            "flops_per_step": flops,
            "frames_per_utterance": frames,
            "step_seconds": _summary(step_s),
            "compute_seconds": _summary(compute_s),
            "data_seconds": _summary(data_s),
            "loader_share": sum(data_s) / sum(step_s),
            "mfu_step": flops / statistics.median(step_s) / (peak * 1e12),
            "mfu_compute": flops / statistics.median(compute_s) / (peak * 1e12),
            "samples_per_second": g.batch / statistics.median(step_s),
            "cache_build_seconds": cache_seconds,
            "peak_memory_bytes": int(torch.cuda.max_memory_allocated(device)) if cuda else None,
            "student_params": student.encoder_params(),
        }
    report = {
        **report_header("gpu", ("s3prl",)),
        "settings": {**dataclasses.asdict(g), "precision": "bf16 autocast" if cuda else "float32",
                     "optimizer": "AdamW (fused on CUDA)", "loss": "l1_cos L2L, w=0.5, all 12 layers",
                     "student": "student_paper", "teacher": "dummy (random, HuBERT Base shape), cached"},
        "results": results,
    }
    if out is not None:
        write_json(out, report)
    log(format_gpu(report))
    return report


def format_gpu(report: dict) -> str:
    """The GPU benchmark as a short table."""
    r, s = report["results"], report["settings"]
    return "\n".join([
        f"gpu: student_paper, cached teacher, batch {s['batch']} x {s['seconds']:g} s, {s['precision']}, "
        f"{r['device_name']} (peak {r['peak_tflops']:g} TFLOP/s), {s['num_workers']} loader workers",
        f"{'step ms':>9} {'compute ms':>11} {'data ms':>8} {'loader share':>13} {'MFU step':>9} "
        f"{'MFU compute':>12} {'samples/s':>10}",
        f"{1000 * r['step_seconds']['median']:>9.2f} {1000 * r['compute_seconds']['median']:>11.2f} "
        f"{1000 * r['data_seconds']['median']:>8.2f} {100 * r['loader_share']:>12.1f}% "
        f"{100 * r['mfu_step']:>8.1f}% {100 * r['mfu_compute']:>11.1f}% {r['samples_per_second']:>10.1f}",
        f"FLOPs per step {r['flops_per_step']:.3e} (CostModel, teacher + front-end cached)",
    ])
