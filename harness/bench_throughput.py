"""``harness bench throughput`` / ``harness bench gpu``: our student's training step
against s3prl's ``DistillerModel``, and GPU efficiency of the paper student.

**Throughput** (:func:`bench_throughput`). Both models are built at the same shape (conv
front-end, layers, width, heads, FFN, positional conv, prediction heads or per-layer
projections) and trained with the same objective and optimizer (AdamW) on the same
batch (``batch`` random waveforms of ``seconds`` seconds, all full length) against the
same fixed teacher targets (a cached teacher: no teacher forward in the step). They run in
one process, after a warm-up, in interleaved repeats (A B C, C B A, A B C ...:
counterbalanced, so a drift of the machine's load hits all alike); each repeat times
``steps`` steps.
Figures: step time (wall-clock and process CPU time) and samples per second per model
(median, min, max over repeats), the ratio ``s3prl step / our step`` (> 1 = ours is
faster) from the medians and per repeat pair, and peak memory: on CPU the peak resident
set size above the built model (``VmHWM``, reset after building) of a fresh subprocess per model
(tracemalloc does not see torch's allocator); on CUDA ``torch.cuda.max_memory_allocated``
above the block's start plus the model's parameters and optimizer state.

Objectives (``target``):

- ``pred_heads`` (default; DistilHuBERT's): ours = ``Student.project`` +
  :func:`harness.losses.pred_head_loss` (``l1_cos``); s3prl = ``DistillerModel`` in
  ``expand-last`` mode (its own prediction heads) + L1 + ``-log sigmoid(cos)`` on the
  stacked ``(B, N, T, D)`` predictions, per-head means summed over heads, the form of
  s3prl's DistilHuBERT pre-training expert (``s3prl/pretrain/distiller``, which the
  0.4.18 wheel does not ship, so it is written here);
- ``l2l``: ours = per-layer projections + :func:`harness.losses.l2l_loss` (``l1_cos``,
  ``w = 0.5``); s3prl = ``DistillerModel`` with ``get_hidden=True, no_pred=True`` and the
  same per-layer ``nn.Linear`` projections held beside it, same loss.

Documented architecture difference: s3prl drops ``post_extract_proj`` when the front-end
channels equal the width; the student always has it (``width * (C + 1)`` more parameters
in that case only). Otherwise the parameter counts are equal (checked by the tests).

**GPU** (:func:`bench_gpu`): model FLOPs utilisation of the ``student_paper`` training
step fed by a teacher-feature cache (FLOPs from :class:`harness.stacking.CostModel`, the
same per-layer model as ``theoretical_cost``), and the data loader's share of step time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from harness.provenance import git_commit, hardware, now_iso

MODELS = ("ours", "s3prl")
# the student as the harness trains it with teacher.cache=true: fed the cached output of its
# frozen front-end (informational; the ratio compares the same computation, MODELS)
CACHED = "ours_cached"
TARGETS = ("pred_heads", "l2l")
FRONTENDS = ("frozen", "trainable")
ADAMW_IMPLS = ("default", "foreach", "fused")


def make_adamw(params: list, lr: float, impl: str) -> torch.optim.Optimizer:
    """torch's AdamW with the implementation ``impl`` (``default``, ``foreach``, ``fused``)."""
    kw = {"foreach": True} if impl == "foreach" else {"fused": True} if impl == "fused" else {}
    return torch.optim.AdamW(params, lr=lr, **kw)


@dataclass
class ThroughputSettings:
    """The shape and protocol of a throughput comparison (defaults: the paper student).

    Attributes:
        layers, width, heads, ffn: encoder shape.
        batch: utterances per step.
        seconds: audio per utterance (all full length), seconds at 16 kHz.
        steps: timed training steps per repeat.
        repeats: timed repeats per model (interleaved).
        warmup: untimed steps per model first (allocator, thread pools, lazy init).
        device: ``cpu`` or ``cuda`` (CUDA: bf16 autocast; attention by SDPA in both).
        frontend: ``frozen`` (no gradient through the conv front-end) or ``trainable``.
        target: ``pred_heads`` (DistilHuBERT) or ``l2l`` (one projection per layer).
        conv_dim: channels of the conv front-end (512 = HuBERT Base's).
        conv_pos, conv_pos_groups: positional conv kernel and groups.
        teacher_width: width of the teacher targets.
        teacher_layers: teacher depth (for the proportional ``l2l`` map).
        pred_layers: teacher layers the prediction heads predict (``pred_heads``).
        dropout: dropout of both models (residual, attention, activation).
        lr: AdamW learning rate.
        adamw: implementation of torch's AdamW for our student (``default``: torch's
            choice, a per-tensor loop on CPU; ``foreach``; ``fused``: one kernel, the
            fastest on CPU and CUDA). Same algorithm and values in every case.
        s3prl_adamw: the same for s3prl's model.
        memory: measure CPU peak memory in a subprocess per model.
        cached_row: also time ``ours_cached`` (frozen front-end only): the student fed
            its front-end's output precomputed, as with the teacher-feature cache.
        threads: torch intra-op threads (0 = leave torch's default).
        seed: seed of the weights, batch and targets.
    """

    layers: int = 12
    width: int = 384
    heads: int = 12
    ffn: int = 1536
    batch: int = 2
    seconds: float = 4.0
    steps: int = 2
    repeats: int = 5
    warmup: int = 1
    device: str = "cpu"
    frontend: str = "frozen"
    target: str = "pred_heads"
    conv_dim: int = 512
    conv_pos: int = 128
    conv_pos_groups: int = 16
    teacher_width: int = 768
    teacher_layers: int = 12
    pred_layers: list[int] = field(default_factory=lambda: [4, 8, 12])
    dropout: float = 0.0
    lr: float = 2e-4
    adamw: str = "default"
    s3prl_adamw: str = "default"
    memory: bool = True
    cached_row: bool = True
    threads: int = 0
    seed: int = 0

    def validate(self) -> None:
        """Raise ``ValueError`` (one line naming the option) for an impossible setting."""
        for name in ("layers", "width", "heads", "ffn", "batch", "steps", "repeats", "conv_dim",
                     "teacher_width", "teacher_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise ValueError(f"--warmup must be >= 0, got {self.warmup}")
        if self.width % self.heads:
            raise ValueError(f"--heads {self.heads} must divide --width {self.width}")
        if self.conv_pos < 1 or self.conv_pos_groups < 1 or self.width % self.conv_pos_groups:
            raise ValueError(f"--conv-pos {self.conv_pos} must be >= 1 and --conv-pos-groups "
                             f"{self.conv_pos_groups} must divide --width {self.width}")
        for name in ("adamw", "s3prl_adamw"):
            if getattr(self, name) not in ADAMW_IMPLS:
                raise ValueError(f"--{name.replace('_', '-')} must be one of {', '.join(ADAMW_IMPLS)}, "
                                 f"got {getattr(self, name)!r}")
        if self.frontend not in FRONTENDS:
            raise ValueError(f"--frontend must be one of {', '.join(FRONTENDS)}, got {self.frontend!r}")
        if self.target not in TARGETS:
            raise ValueError(f"--target must be one of {', '.join(TARGETS)}, got {self.target!r}")
        if self.target == "pred_heads":
            bad = [k for k in self.pred_layers if not 1 <= k <= self.teacher_layers]
            if not self.pred_layers or bad:
                raise ValueError(f"--pred-layers {self.pred_layers}: need teacher layers in 1..{self.teacher_layers}")
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"--device must be cpu or cuda, got {self.device!r}")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"--device {self.device}: CUDA is not available on this machine")
        if self.frames < 1:
            raise ValueError(f"--seconds {self.seconds}: too short for one 25 ms frame")

    @property
    def samples(self) -> int:
        """Waveform samples per utterance."""
        return int(round(self.seconds * 16000))

    @property
    def frames(self) -> int:
        """Front-end frames per utterance (the standard conv stack's arithmetic)."""
        n = self.samples
        for k, s in [(10, 5)] + [(3, 2)] * 4 + [(2, 2)] * 2:
            n = (n - k) // s + 1
        return n


# ----------------------------------------------------------------------------- the two models


def build_ours(s: ThroughputSettings) -> nn.Module:
    """Our student at the settings' shape (post-LN, HuBERT-style conv front-end)."""
    from harness.student import Student, StudentShape
    from harness.frontends import ConvFrontend, conv_layers

    frontend = ConvFrontend(conv_layers(s.conv_dim), mode="group_norm", conv_bias=False)
    shape = StudentShape(
        layers=s.layers, width=s.width, heads=s.heads, ffn=s.ffn, frontend_dim=s.conv_dim,
        teacher_width=s.teacher_width, teacher_layers=s.teacher_layers, layer_norm_first=False,
        dropout=s.dropout, conv_pos=s.conv_pos, conv_pos_groups=s.conv_pos_groups,
        target_mode=s.target, pred_head_layers=list(s.pred_layers) if s.target == "pred_heads" else [],
        frontend_trainable=s.frontend == "trainable",
    )
    return Student(shape, frontend)


class S3prlL2L(nn.Module):
    """s3prl's ``DistillerModel`` (no prediction heads) with per-layer projections beside
    it: the L2L objective on the reference model."""

    def __init__(self, model: nn.Module, layers: int, width: int, teacher_width: int) -> None:
        super().__init__()
        self.model = model
        self.proj = nn.ModuleList(nn.Linear(width, teacher_width) for _ in range(layers))


def build_s3prl(s: ThroughputSettings) -> nn.Module:
    """s3prl's ``DistillerModel`` at the settings' shape (wrapped in :class:`S3prlL2L`
    for the ``l2l`` target)."""
    from harness.compat import apply_s3prl_shim

    apply_s3prl_shim()  # s3prl 0.4.18 needs it with torchaudio >= 2.9
    from s3prl.upstream.distiller.model import DistillerConfig, DistillerModel

    c = s.conv_dim
    heads = s.target == "pred_heads"
    cfg = DistillerConfig({
        "extractor_mode": "default",  # GroupNorm on the first conv, as HuBERT Base
        "extractor_conv_feature_layers": f"[({c},10,5)] + [({c},3,2)] * 4 + [({c},2,2)] * 2",
        "feature_grad_mult": 1.0 if s.frontend == "trainable" else 0.0,
        "conv_pos": s.conv_pos, "conv_pos_groups": s.conv_pos_groups,
        "encoder_layers": s.layers, "encoder_embed_dim": s.width, "encoder_ffn_embed_dim": s.ffn,
        "encoder_attention_heads": s.heads, "activation_fn": "gelu", "layer_norm_first": False,
        "dropout": s.dropout, "attention_dropout": s.dropout, "activation_dropout": s.dropout,
        "encoder_layerdrop": 0.0, "final_dim": s.teacher_width,
        "task_emb_type": "expand-last" if heads else "none",
        "out_layer_type": "expand-last" if heads else "none",
        "n_tasks": len(s.pred_layers) if heads else 1,
        "pred_layer_id": list(s.pred_layers) if heads else [1],
    })
    # it prints its configuration, and uses the deprecated torch.nn.utils.weight_norm
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model = DistillerModel(cfg)
    if s.frontend == "frozen":
        model.feature_extractor.requires_grad_(False)
    if not heads:
        return S3prlL2L(model, s.layers, s.width, s.teacher_width)
    return model


def param_counts(model: nn.Module) -> dict:
    """``{"total": n, "trainable": n}`` parameters."""
    return {"total": sum(p.numel() for p in model.parameters()),
            "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)}


def make_batch(s: ThroughputSettings, device: torch.device) -> dict:
    """The fixed batch: waveforms, lengths, pad mask and the teacher targets.

    Returns:
        ``wavs`` (B, S) float32, ``lengths`` (B,), ``pad_mask`` (B, S) (1 = valid, s3prl's
        convention), ``targets`` {teacher layer: (B, T, D_teacher)} and ``stacked``
        (B, N, T, D_teacher) for s3prl's loss (a cache hands either layout for free).
    """
    g = torch.Generator().manual_seed(s.seed + 1)
    b, n, t = s.batch, s.samples, s.frames
    wavs = 0.1 * torch.randn(b, n, generator=g)
    layers = (list(s.pred_layers) if s.target == "pred_heads"
              else _proportional(s.layers, s.teacher_layers))
    targets = {k: torch.randn(b, t, s.teacher_width, generator=g) for k in sorted(set(layers))}
    stacked = torch.stack([targets[k] for k in layers], dim=1)
    return {
        "wavs": wavs.to(device), "lengths": torch.full((b,), n, dtype=torch.int64).to(device),
        "pad_mask": torch.ones(b, n, dtype=torch.long).to(device),
        "targets": {k: v.to(device) for k, v in targets.items()}, "stacked": stacked.to(device),
        "layers": layers,
    }


def _proportional(layers: int, teacher_layers: int) -> list[int]:
    from harness.student import proportional_targets

    return proportional_targets(layers, teacher_layers)


def _l1_cos_sum(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """s3prl DistilHuBERT expert's loss on (B, N, T, D): per-head mean L1 plus per-head
    mean ``-log sigmoid(cos)``, summed over heads (float32)."""
    pred, target = pred.float(), target.float()
    rec = F.l1_loss(pred, target, reduction="none").mean((0, 2, 3))
    sim = -F.logsigmoid(F.cosine_similarity(pred, target, dim=-1)).mean((0, 2))
    return rec.sum() + sim.sum()



def _student_step(model, opt, autocast, target: str, targets, forward) -> torch.Tensor:
    """One training step of our student (live front-end or cached features): ``forward()``
    returns ``(hidden states, frame lengths)``; L1+cos on pred heads or L2L projections."""
    from harness.losses import l2l_loss, pred_head_loss

    with autocast():
        states, frames = forward()
        preds = model.project(states)
        mask = torch.arange(preds[0].shape[1], device=preds[0].device)[None, :] < frames[:, None]
        if target == "pred_heads":
            loss, _ = pred_head_loss(preds, targets, model.targets, "l1_cos", frame_mask=mask)
        else:
            loss, _ = l2l_loss(preds, targets, model.targets, "l1_cos", 0.5, frame_mask=mask)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()

def make_step(name: str, model: nn.Module, s: ThroughputSettings, batch: dict,
              device: torch.device) -> Callable[[], torch.Tensor]:
    """A closure running one training step (forward, loss, backward, AdamW) of ``model``.

    Args:
        name: ``ours`` or ``s3prl``.
        model: from :func:`build_ours` / :func:`build_s3prl`, on ``device``, in train mode.
        s: the settings.
        batch: from :func:`make_batch`.
        device: where the model lives (CUDA: the forward runs under bf16 autocast).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_adamw(params, s.lr, s.s3prl_adamw if name == "s3prl" else s.adamw)
    cuda = device.type == "cuda"
    wavs, lengths, pad_mask = batch["wavs"], batch["lengths"], batch["pad_mask"]
    targets, stacked, layers = batch["targets"], batch["stacked"], batch["layers"]

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()

    if name == CACHED:
        with torch.no_grad():  # what the feature cache hands the step (fp32 here, fp16 on disk)
            feats, feat_frames = model.frontend(wavs, lengths)
        model.frontend = None

        def step() -> torch.Tensor:
            return _student_step(model, opt, autocast, s.target, targets,
                                 lambda: (model.forward_features(feats, feat_frames), feat_frames))
    elif name == "ours":
        def step() -> torch.Tensor:
            return _student_step(model, opt, autocast, s.target, targets,
                                 lambda: model.hidden_states(wavs, lengths))
    elif name == "s3prl":
        def step() -> torch.Tensor:
            with autocast():
                if s.target == "pred_heads":
                    _, _, pred, _ = model(wavs, pad_mask)  # pred (B, N, T, D_teacher)
                    loss = _l1_cos_sum(pred, stacked)
                else:
                    out = model.model(wavs, pad_mask, get_hidden=True, no_pred=True)
                    hiddens = out[4]
                    losses = [_l1_cos_sum(p(h).unsqueeze(1), stacked[:, i:i + 1])
                              for i, (p, h) in enumerate(zip(model.proj, hiddens))]
                    inter = torch.stack(losses[:-1]).mean() if len(losses) > 1 else losses[-1] * 0
                    loss = losses[-1] + 0.5 * inter
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return loss.detach()
    else:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS + (CACHED,))}")
    step.optimizer = opt  # type: ignore[attr-defined]
    return step


def _build(name: str, s: ThroughputSettings, device: torch.device) -> nn.Module:
    torch.manual_seed(s.seed)
    model = build_s3prl(s) if name == "s3prl" else build_ours(s)
    return model.to(device).train()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _state_bytes(model: nn.Module, opt: torch.optim.Optimizer) -> int:
    n = sum(p.numel() * p.element_size() for p in model.parameters())
    for st in opt.state.values():
        n += sum(v.numel() * v.element_size() for v in st.values() if torch.is_tensor(v))
    return n


def _summary(values: list[float]) -> dict:
    med = statistics.median(values)
    return {"median": med, "min": min(values), "max": max(values),
            "spread": (max(values) - min(values)) / med if med else 0.0, "runs": values}


# ----------------------------------------------------------------------------- CPU memory probe


def _proc_status_kib(field_name: str) -> Optional[int]:
    """A ``/proc/self/status`` field in KiB (``VmRSS``, ``VmHWM``), or None off Linux."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset this process' peak RSS to its current RSS (Linux ``clear_refs`` 5)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _memory_child(payload: str) -> None:
    """Entry point of the memory subprocess: build one model, train a few steps, print
    ``{"base_rss", "peak_rss", "delta_rss", "source"}`` (bytes) as the last stdout line.

    The peak is ``VmHWM`` (this process' own high-water mark, reset to the current RSS
    after building). ``ru_maxrss`` is only the fallback: Linux carries it over from the
    parent across fork + exec, so in a subprocess of a big parent it reads the parent's peak.
    """
    args = json.loads(payload)
    s = ThroughputSettings(**args["settings"])
    if s.threads:
        torch.set_num_threads(s.threads)
    device = torch.device("cpu")
    model = _build(args["model"], s, device)
    batch = make_batch(s, device)
    step = make_step(args["model"], model, s, batch, device)
    if _proc_status_kib("VmHWM") is not None:
        source = "VmHWM (reset after build)" if _reset_peak_rss() else "VmHWM"
        base = _proc_status_kib("VmRSS") * 1024
    else:
        source = "ru_maxrss"
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    for _ in range(max(2, s.warmup)):  # step 1 allocates the AdamW moments
        step()
    if source.startswith("VmHWM"):
        peak = _proc_status_kib("VmHWM") * 1024
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"base_rss": base, "peak_rss": peak, "delta_rss": peak - base, "source": source}))


def cpu_peak_memory(name: str, s: ThroughputSettings, timeout: float = 1200.0) -> dict:
    """Peak resident memory of ``name``'s training step, in a fresh subprocess.

    Returns:
        ``{"base_rss", "peak_rss", "delta_rss"}`` bytes: after building the model and the
        batch, the peak over two training steps, and their difference (the step's own
        activations, gradients and optimizer state).
    """
    root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    payload = json.dumps({"model": name, "settings": dataclasses.asdict(s)})
    code = "import sys; from harness.bench_throughput import _memory_child; _memory_child(sys.argv[1])"
    proc = subprocess.run([sys.executable, "-c", code, payload], capture_output=True, text=True,
                          env=env, timeout=timeout)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"memory probe for {name} failed: {tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- the benchmark


def versions() -> dict:
    """Library versions and the git commit the benchmark ran on."""
    import numpy

    info = {"python": platform.python_version(), "torch": torch.__version__,
            "numpy": numpy.__version__, "git_commit": git_commit()}
    try:
        from importlib.metadata import version

        info["s3prl"] = version("s3prl")
    except Exception:  # noqa: BLE001 - metadata missing: report what is known
        info["s3prl"] = "unknown"
    return info


def load_average() -> Optional[list[float]]:
    """The 1, 5 and 15 minute load averages (None where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def bench_throughput(s: ThroughputSettings, out: Optional[str | Path] = None,
                     log: Callable[[str], None] = print) -> dict:
    """Time our student's training step against s3prl's ``DistillerModel``, side by side.

    Args:
        s: shape and protocol.
        out: JSON file to write (None: do not write).
        log: progress and the final table.

    Returns:
        The JSON content: ``benchmark``, ``date``, ``machine``, ``versions``,
        ``settings``, ``load_average`` (before, after), ``models`` (per model: params,
        step seconds, CPU seconds per step, samples/s, memory), ``ratio`` (s3prl step /
        our step: median of medians, per repeat pair).
    """
    s.validate()
    if s.threads:
        torch.set_num_threads(s.threads)
    device = torch.device(s.device)
    load_before = load_average()
    names = MODELS + ((CACHED,) if s.frontend == "frozen" and s.cached_row else ())
    models = {name: _build(name, s, device) for name in names}
    batch = make_batch(s, device)
    steps = {name: make_step(name, models[name], s, batch, device) for name in names}
    for name in names:  # warm-up, untimed
        for _ in range(s.warmup):
            steps[name]()
        _sync(device)
    wall: dict[str, list[float]] = {m: [] for m in names}
    cpu: dict[str, list[float]] = {m: [] for m in names}
    cuda_peak: dict[str, int] = {m: 0 for m in names}
    losses: dict[str, float] = {}
    for r in range(s.repeats):
        # A B B A ...: each model runs first in half the repeats, so a load drift or an
        # order effect (caches warmed by the other model) does not favour one side
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                start_alloc = torch.cuda.memory_allocated(device)
            _sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(s.steps):
                loss = steps[name]()
            _sync(device)
            wall[name].append((time.perf_counter() - t0) / s.steps)
            cpu[name].append((time.process_time() - c0) / s.steps)
            losses[name] = float(loss)
            if device.type == "cuda":
                cuda_peak[name] = max(cuda_peak[name], torch.cuda.max_memory_allocated(device) - start_alloc)
        log(f"  repeat {r + 1}/{s.repeats}: " + ", ".join(
            f"{m} {1000 * wall[m][-1]:.1f} ms" for m in names))
    load_after = load_average()

    results: dict[str, dict] = {}
    for name in names:
        step_s = _summary(wall[name])
        results[name] = {
            "params": param_counts(models[name]),
            "step_seconds": step_s,
            "step_cpu_seconds": _summary(cpu[name]),
            "samples_per_second": {"median": s.batch / step_s["median"], "min": s.batch / step_s["max"],
                                   "max": s.batch / step_s["min"]},
            "audio_seconds_per_second": s.batch * s.seconds / step_s["median"],
            "last_loss": losses[name],
        }
        if device.type == "cuda":
            results[name]["memory"] = {
                "kind": "cuda max_memory_allocated above the block start + params and optimizer state",
                "peak_bytes": int(cuda_peak[name] + _state_bytes(models[name], steps[name].optimizer)),
                "step_peak_bytes": int(cuda_peak[name]),
            }
    del models, steps
    if device.type == "cpu" and s.memory:
        for name in names:
            mem = cpu_peak_memory(name, s)
            results[name]["memory"] = {"kind": "peak RSS of a fresh subprocess above the built model (bytes)", **mem}
    pair = [b / a for a, b in zip(wall["ours"], wall["s3prl"])]
    pair_cpu = [b / a for a, b in zip(cpu["ours"], cpu["s3prl"])]
    report = {
        "benchmark": "throughput",
        "date": now_iso(),
        "machine": hardware(),
        "versions": versions(),
        "settings": {**dataclasses.asdict(s), "frames": s.frames, "samples": s.samples,
                     "precision": "bf16 autocast" if device.type == "cuda" else "float32",
                     "attention": "F.scaled_dot_product_attention (ours); F.multi_head_attention_forward "
                                  "-> SDPA (s3prl)",
                     "optimizer": f"AdamW (ours: {s.adamw}, s3prl: {s.s3prl_adamw} implementation)",
                     "loss": "l1_cos (pred heads)" if s.target == "pred_heads" else "l1_cos L2L, w=0.5",
                     "order": "counterbalanced interleaved repeats (A B C, C B A, ...) after warm-up",
                     "torch_threads": torch.get_num_threads()},
        "load_average": {"before": load_before, "after": load_after},
        "models": results,
        "ratio": {
            "s3prl_over_ours_step": (results["s3prl"]["step_seconds"]["median"]
                                     / results["ours"]["step_seconds"]["median"]),
            "per_repeat": _summary(pair),
            "cpu_time": (results["s3prl"]["step_cpu_seconds"]["median"]
                         / results["ours"]["step_cpu_seconds"]["median"]),
            "cpu_time_per_repeat": _summary(pair_cpu),
        },
    }
    if CACHED in results:
        report["ratio"]["s3prl_over_ours_cached_step"] = (
            results["s3prl"]["step_seconds"]["median"] / results[CACHED]["step_seconds"]["median"])
    if out is not None:
        write_json(out, report)
    log(format_throughput(report))
    return report


def format_throughput(report: dict) -> str:
    """The throughput comparison as a short fixed-width table."""
    s = report["settings"]
    lines = [
        f"throughput: {s['layers']} x {s['width']} (heads {s['heads']}, FFN {s['ffn']}), batch {s['batch']} x "
        f"{s['seconds']:g} s, {s['target']}, front-end {s['frontend']}, {s['device']} {s['precision']}, "
        f"{s['steps']} steps x {s['repeats']} repeats, AdamW impl ours {s.get('adamw', 'default')} / "
        f"s3prl {s.get('s3prl_adamw', 'default')}",
        f"machine: {report['machine'].get('device')}, {report['machine'].get('cpu_count')} CPUs, "
        f"torch threads {s['torch_threads']}; load average before {report['load_average']['before']}, "
        f"after {report['load_average']['after']}",
        f"{'model':<11} {'params':>11} {'step ms (median [min, max])':>30} {'cpu ms':>9} {'samples/s':>10} "
        f"{'peak mem MiB':>13}",
    ]
    for name, r in report["models"].items():
        st = r["step_seconds"]
        mem = r.get("memory")
        mib = "n/a"
        if mem:
            mib = f"{(mem.get('delta_rss', mem.get('peak_bytes', 0))) / 2**20:.1f}"
        span = f"{1000 * st['median']:.1f} [{1000 * st['min']:.1f}, {1000 * st['max']:.1f}]"
        lines.append(
            f"{name:<11} {r['params']['total']:>11,} {span:>30} "
            f"{1000 * r['step_cpu_seconds']['median']:>9.1f} {r['samples_per_second']['median']:>10.2f} {mib:>13}"
        )
    ra = report["ratio"]
    pr = ra["per_repeat"]
    lines.append(f"s3prl / ours step time = {ra['s3prl_over_ours_step']:.3f} (per repeat pair: median "
                 f"{pr['median']:.3f}, [{pr['min']:.3f}, {pr['max']:.3f}]); CPU time {ra['cpu_time']:.3f}; "
                 f"> 1 = ours faster")
    if "s3prl_over_ours_cached_step" in ra:
        lines.append(f"s3prl / ours_cached step time = {ra['s3prl_over_ours_cached_step']:.3f} (ours fed its "
                     f"front-end's output precomputed, as with the teacher-feature cache; not the same computation)")
    return "\n".join(lines)


def throughput_markdown(report: dict) -> str:
    """The throughput comparison as a Markdown table (for ``docs/benchmarks.md``)."""
    s = report["settings"]
    rows = ["| model | params | step s, median [min, max] | CPU s / step | samples/s | peak RSS above model, MiB |",
            "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in report["models"].items():
        st, mem = r["step_seconds"], r.get("memory") or {}
        peak = mem.get("delta_rss", mem.get("peak_bytes"))
        peak_s = f"{peak / 2**20:.0f}" if peak is not None else "n/a"
        rows.append(f"| {name} | {r['params']['total']:,} | {st['median']:.3f} [{st['min']:.3f}, {st['max']:.3f}] | "
                    f"{r['step_cpu_seconds']['median']:.3f} | {r['samples_per_second']['median']:.2f} | {peak_s} |")
    ra, pr = report["ratio"], report["ratio"]["per_repeat"]
    rows.append("")
    rows.append(f"s3prl / ours step time: **{ra['s3prl_over_ours_step']:.3f}** (median of medians; per "
                f"repeat pair median {pr['median']:.3f}, range [{pr['min']:.3f}, {pr['max']:.3f}]); "
                f"CPU time ratio {ra['cpu_time']:.3f}. Load average before / after: "
                f"{report['load_average']['before']} / {report['load_average']['after']}; "
                f"torch threads {s['torch_threads']}.")
    return "\n".join(rows)


def write_json(out: str | Path, report: dict) -> None:
    """Write ``report`` atomically (tmp file + rename), creating the folder."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str))
    tmp.replace(out)


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

    from harness.data.audio import write_wav
    from harness.data.manifest import write_manifest

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
    from harness.losses import l2l_loss
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
    tmp = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    torch.manual_seed(g.seed)
    try:
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

        def batches():
            while True:
                yield from loader

        it = batches()
        data_s, compute_s = [], []
        frames = None
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
    finally:
        if work_dir is None:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    report = {
        "benchmark": "gpu",
        "date": now_iso(),
        "machine": hardware(),
        "versions": versions(),
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
