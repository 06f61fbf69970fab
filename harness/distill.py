"""One distillation run: build, loop, grow at stage boundaries, log, checkpoint.

``run_distill(cfg, out_dir)`` trains a student against a frozen teacher by layer-to-layer
(L2L) distillation while its depth grows by a stacking variant (``harness.stacking``).
It reads top to bottom like nanoGPT's ``train.py``: no trainer framework, no callbacks.

The run folder (``out_dir``) receives, as ARCHITECTURE.md "Result files" requires:

- ``config.yaml``: the fully resolved :class:`~harness.config.RunConfig`;
- ``metrics.jsonl``: one line per logged step (step, stage, depth, loss and its parts,
  each the mean over the log window; lr; cumulative training wall-clock ``time`` and
  process CPU ``cpu_time`` in seconds);
- ``student.ckpt``: the final student (``harness.student.save_student``; an upstream);
- ``summary.json``: the contract fields (run id, variant, schedule, per-stage steps and
  seconds, theoretical FLOPs and speedup, final losses, hardware, git commit, status...;
  ``tasks: {}`` and ``superb_score: null`` for the scoring step to fill);
- ``train.pt``: the training checkpoint (student + optimizer + RNG + step + stage), every
  ``train.ckpt_every`` steps and at every growth; a rerun resumes from it mid-stage and
  ends with the same number of steps and the same stage boundaries.

Data: with ``teacher.cache: true`` the teacher's hidden states *and its front-end output*
come from the feature cache (``harness.teachers.cache``), so a step costs only the
student's encoder; the student's front-end is frozen (a copy of the teacher's). Without
the cache the live teacher runs on every waveform batch. In both cases step ``k``'s batch
is a pure function of ``(seed, k)``, which is what makes a resumed run identical.

Timing: each stage's wall-clock is measured between device synchronisations and excludes
checkpoint writes; the growth itself counts in the stage it starts.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from harness import runs
from harness.config import ConfigError, RunConfig, to_dict
from harness.provenance import git_commit, hardware, now_iso

CKPT_NAME = "train.pt"
# after a 'zero' growth of a post-LN student, the new layers' MSG masks rise 0 -> 1 over
# this fraction of the new stage's steps (harness.stacking.ramp_masks)
RAMP_FRAC = 0.1


class RunInterrupted(RuntimeError):
    """Raised by a test hook (or a signal handler) to stop a run as a kill would."""


# ----------------------------------------------------------------------------- small helpers


def _torch_save(obj: Any, path: Path) -> None:
    runs.atomic_write(path, lambda tmp: torch.save(obj, tmp))


def resolve_device(name: str) -> torch.device:
    """``auto`` -> ``cuda`` when available, else ``cpu``; an unusable CUDA name is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {name!r} asked for but CUDA is not available (use cpu or auto)")
    return dev


def resolve_precision(precision: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype: bf16 on CUDA (``auto`` or ``bf16``), none (fp32) on CPU."""
    if precision == "bf16" and device.type != "cuda":
        raise ConfigError("train.precision: bf16 autocast is for CUDA only; use fp32 or auto on CPU")
    if precision == "fp32":
        return None
    return torch.bfloat16 if device.type == "cuda" else None


def sync(device: torch.device) -> None:
    """Wait for queued device work so wall-clock stamps measure the work, not the queue."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def lr_at(step: int, total: int, optim) -> float:
    """Learning rate of step ``step`` (0-based) of ``total``: linear warmup, then decay.

    The schedule is a function of the global step only, so it continues across growth
    (new layers join at the current LR) and a resumed run needs no scheduler state.
    """
    warmup = int(optim.warmup_frac * total)
    if step < warmup:
        return optim.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    if optim.decay == "linear":
        return optim.lr * (1.0 - progress)
    if optim.decay == "cosine":
        return optim.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    return optim.lr


def stage_boundaries(stage_steps: list[int]) -> list[int]:
    """First global step of each stage: ``[0, s0, s0 + s1, ...]`` (length B)."""
    out, acc = [], 0
    for s in stage_steps:
        out.append(acc)
        acc += s
    return out


class StageClock:
    """Training time per stage: wall-clock (device-synchronised) and process CPU time.

    ``start``/``stop`` bracket the timed work; bookkeeping between a ``stop`` and the next
    ``start`` (checkpoint writes) is not counted. CPU seconds are the process' CPU time
    (all its threads): on a shared CPU machine they are far less sensitive to other
    processes' load than the wall-clock, so benchmarks report both.
    """

    def __init__(self, device: torch.device, stages: int):
        self.device = device
        self.wall = [0.0] * stages
        self.cpu = [0.0] * stages
        self._t0: Optional[float] = None
        self._c0 = 0.0

    def start(self) -> None:
        sync(self.device)
        self._t0, self._c0 = time.perf_counter(), time.process_time()

    def stop(self, stage: int) -> None:
        sync(self.device)
        self.wall[stage] += time.perf_counter() - self._t0
        self.cpu[stage] += time.process_time() - self._c0
        self._t0 = None

    def elapsed(self) -> tuple[float, float]:
        """Wall-clock and CPU training seconds so far, the running interval included."""
        sync(self.device)
        if self._t0 is None:
            return sum(self.wall), sum(self.cpu)
        return (sum(self.wall) + time.perf_counter() - self._t0,
                sum(self.cpu) + time.process_time() - self._c0)


# ----------------------------------------------------------------------------- data


def manifest_path(cfg: RunConfig) -> Path:
    """``<data.corpus>/<data.split>.jsonl``, or a one-line error saying how to build it."""
    path = Path(cfg.data.corpus) / f"{cfg.data.split}.jsonl"
    if not path.is_file():
        hint = (
            f"build it with `harness data build --profile {cfg.profile} --out {cfg.data.corpus}`"
            if cfg.profile in ("tiny", "embedded")
            else "import the corpus with `harness data import` and set data.corpus"
        )
        raise FileNotFoundError(f"data.corpus: {path} not found; {hint}")
    return path


def _pick(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    return rng.choice(n, size=k, replace=n < k)


class CachedBatches(torch.utils.data.Dataset):
    """Step ``k`` -> a batch of cached front-end features and teacher states.

    Each utterance's cached arrays (``frontend`` and ``layer_<j>``, all ``(T, D)`` at the
    front-end's frame rate) are cropped at the same random offset to at most
    ``max_frames`` frames, so the features and the targets stay aligned; the utterances
    and offsets of step ``k`` depend only on ``(seed, k)``.

    Items: ``{"feats": (B, T, C) float32, "frame_lengths": (B,) int64,
    "targets": {j: (B, T, D) float32}}``.
    """

    def __init__(self, cache, ids: list[str], layers: list[int], batch_size: int,
                 max_frames: int, seed: int, steps: range):
        self.cache, self.ids, self.layers = cache, ids, layers
        self.batch_size, self.max_frames, self.seed, self.steps = batch_size, max_frames, seed, steps

    def __len__(self) -> int:
        return len(self.steps)

    def __getitem__(self, i: int) -> dict:
        step = self.steps[i]
        rng = np.random.default_rng([self.seed, step])
        keys = ["frontend"] + [f"layer_{j}" for j in self.layers]
        crops = []
        for idx in _pick(rng, len(self.ids), self.batch_size):
            arrays = self.cache.get(self.ids[idx])
            t = min(arrays[k].shape[0] for k in keys)  # guard against off-by-one frame counts
            n = min(t, self.max_frames)
            o = int(rng.integers(0, t - n + 1))
            crops.append({k: arrays[k][o:o + n] for k in keys})
        lengths = [c["frontend"].shape[0] for c in crops]
        t_max = max(lengths)

        def stack(key: str) -> torch.Tensor:
            out = np.zeros((len(crops), t_max, crops[0][key].shape[1]), dtype=np.float32)
            for b, c in enumerate(crops):
                out[b, : c[key].shape[0]] = c[key]
            return torch.from_numpy(out)

        return {
            "feats": stack("frontend"),
            "frame_lengths": torch.tensor(lengths, dtype=torch.int64),
            "targets": {j: stack(f"layer_{j}") for j in self.layers},
        }


class WaveBatches(torch.utils.data.Dataset):
    """Step ``k`` -> a batch of waveforms (live teacher), cropped to ``max_samples``.

    Items: ``{"wavs": (B, S) float32 at 16 kHz, "lengths": (B,) int64 samples}``.
    """

    def __init__(self, dataset, batch_size: int, max_samples: int, seed: int, steps: range):
        self.dataset, self.batch_size, self.max_samples = dataset, batch_size, max_samples
        self.seed, self.steps = seed, steps

    def __len__(self) -> int:
        return len(self.steps)

    def __getitem__(self, i: int) -> dict:
        rng = np.random.default_rng([self.seed, self.steps[i]])
        wavs = []
        for idx in _pick(rng, len(self.dataset), self.batch_size):
            wav = np.asarray(self.dataset[int(idx)]["wav"], dtype=np.float32)
            n = min(len(wav), self.max_samples)
            o = int(rng.integers(0, len(wav) - n + 1))
            wavs.append(wav[o:o + n])
        lengths = [len(w) for w in wavs]
        out = np.zeros((len(wavs), max(lengths)), dtype=np.float32)
        for b, w in enumerate(wavs):
            out[b, : len(w)] = w
        return {"wavs": torch.from_numpy(out), "lengths": torch.tensor(lengths, dtype=torch.int64)}


def teacher_layers(cfg: RunConfig, num_layers: int) -> list[int]:
    """Teacher hidden-state indices a run can need as targets (1..L, or the pred heads').

    Growth with a proportional layer map visits nearly every layer over the stages, so
    every layer is cached; prediction heads need only theirs.
    """
    if cfg.student.target_mode == "pred_heads":
        return sorted(set(cfg.student.pred_head_layers))
    return list(range(1, num_layers + 1))


def final_losses(metrics_path: Path) -> Optional[dict]:
    """The loss and its parts on the last ``metrics.jsonl`` line (mean of its log window)."""
    lines, _ = runs.read_metrics(metrics_path)
    if not lines:
        return None
    row = lines[-1]
    return {k: v for k, v in row.items() if k not in ("step", "stage", "depth", "lr", "time", "cpu_time")}


def cost_model(cfg: RunConfig, student, teacher):
    """The run's per-step FLOPs model (``harness.stacking.CostModel``).

    Frames per sequence = the crop length (``data.max_seconds``); with the cache, the
    front-end and the teacher cost nothing per step. A live teacher's forward is counted
    as 2 FLOPs per parameter per frame (its encoder) plus its conv front-end's exact count.
    """
    from harness.stacking import CostModel, conv_frontend_flops

    frames = max(1, int(cfg.data.max_seconds * teacher.frame_rate))
    fe_flops = teacher_flops = 0.0
    if not cfg.teacher.cache:
        spec = getattr(teacher.frontend, "spec", {}) or {}
        if spec.get("type") == "conv":
            fe_flops = conv_frontend_flops(spec["layers"])
        fe_params = {id(p) for p in teacher.frontend.parameters()}
        encoder = sum(p.numel() for p in teacher.parameters() if id(p) not in fe_params) \
            if isinstance(teacher, torch.nn.Module) else 0
        teacher_flops = 2.0 * encoder + fe_flops  # the teacher runs its own front-end too
    return CostModel.for_student(student, seq_frames=frames, frames_per_step=cfg.data.batch_size * frames,
                                 frontend_flops=fe_flops, teacher_flops=teacher_flops)


# ----------------------------------------------------------------------------- the run


def run_distill(
    cfg: RunConfig,
    out_dir: str | Path,
    resume: bool = True,
    on_log: Optional[Callable[[dict], None]] = None,
    sweep: Optional[str] = None,
) -> dict:
    """Distill one student; write the run folder; return the summary.

    Args:
        cfg: the resolved run config.
        out_dir: run folder (created); its name is the run id.
        resume: continue from ``out_dir/train.pt`` when present (a finished run is
            returned as is); ``False`` starts over.
        on_log: called with each ``metrics.jsonl`` line (sweeps report it to Ray; tests
            raise :class:`RunInterrupted` from it to simulate a kill).
        sweep: sweep name recorded in the summary (``None`` for a single run).

    Returns:
        The ``summary.json`` content. A non-finite loss stops the run with
        ``status = "failed: nan at step N"`` (its last good ``train.pt`` kept).

    Raises:
        FileNotFoundError: missing corpus manifest or teacher checkpoint.
        ConfigError / RegistryError: an unusable config value (unknown variant...).
    """
    from harness import stacking
    from harness.losses import LOSSES, EmaTeacher, askd_alpha
    from harness.student import PRESETS, build_student, save_student
    from harness.teachers.base import load_teacher

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary_path = out_dir / "summary.json"
    if resume and summary_path.is_file():
        old = runs.read_summary(out_dir) or {}
        if old.get("status") == "ok" and (out_dir / "student.ckpt").is_file():
            return old
    started = now_iso()

    # ---- settings: device, precision, threads; names checked before anything is loaded
    device = resolve_device(cfg.train.device)
    amp_dtype = resolve_precision(cfg.train.precision, device)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    sc, objective = cfg.stacking, cfg.loss.objective
    stacking.STACKING.get(sc.variant)  # unknown variant -> RegistryError with the nearest names
    loss_fn = LOSSES.get(objective)
    wants = "pred_heads" if objective == "pred_heads" else "l2l"
    if objective not in ("l2l", "pred_heads", "askd_l2l"):
        raise ConfigError(f"loss.objective: {objective!r} is not a feature-distillation objective "
                          "(use l2l, pred_heads or askd_l2l)")
    if cfg.student.target_mode != wants:
        raise ConfigError(f"loss.objective {objective!r} needs student.target_mode: {wants}")
    manifest = manifest_path(cfg)

    # ---- stages: depth and steps of each ('none' is one full-depth stage)
    final_depth = cfg.student.layers or PRESETS[cfg.student.preset]["layers"]
    n_stages, total = sc.num_stages, cfg.train.steps
    add = sc.add or (final_depth // n_stages if n_stages > 1 else 0)
    try:
        depths = stacking.stage_depths(final_depth, n_stages, add)
        steps_per_stage = stacking.stage_steps(total, n_stages, sc.schedule)
    except ValueError as err:
        raise ConfigError(f"stacking: {err}") from None
    starts = stage_boundaries(steps_per_stage)

    # ---- teacher (frozen) and, when cached, its features for every distill utterance
    teacher = load_teacher(cfg.teacher.spec, device)
    layers_needed = teacher_layers(cfg, teacher.num_layers)
    cache = None
    if cfg.teacher.cache:
        if cfg.student.frontend_trainable:
            raise ConfigError("teacher.cache: the cached front-end output is frozen; set "
                              "student.frontend_trainable=false or teacher.cache=false")
        from harness.teachers.cache import ensure_cache

        cache = ensure_cache(teacher, manifest, layers_needed, frontend=True, cache_dir=cfg.teacher.cache_dir,
                             limit=cfg.data.max_utterances)

    # ---- student (first-stage depth), optimizer, EMA self-teacher (ASKD)
    def make_student_and_optimizer():
        try:
            student = build_student(dataclasses.replace(cfg.student, layers=depths[0]), teacher).to(device)
        except ValueError as err:
            raise ConfigError(f"student: {err}") from None
        if cache is not None:
            student.frontend = None  # fed the cached (frozen) front-end output instead
        opt = torch.optim.AdamW(
            [p for p in student.parameters() if p.requires_grad], lr=cfg.optim.lr,
            betas=tuple(cfg.optim.betas), weight_decay=cfg.optim.weight_decay,
            # fused: one kernel for the whole update; measured at the paper student shape on
            # the 2-core CPU: 29 ms/step vs 93 ms (default) and 136 ms (foreach)
            # (harness bench throughput --adamw, docs/benchmarks.md)
            fused=True,
        )
        return student, opt

    def grow_to(student, opt, stage: int) -> None:
        """Grow ``student`` from stage ``stage - 1``'s depth to stage ``stage``'s, in place."""
        p = stacking.plan(sc.variant, depths[stage - 1], depths[stage] - depths[stage - 1],
                          offset=sc.offset, init=sc.init)
        stacking.grow(student, opt, p, init=sc.init, optim_state=sc.optim_state,
                      layer_map=sc.layer_map, teacher_layers=teacher.num_layers)
        if ema is not None:
            ema.update(student)  # a new shape: the EMA re-copies the grown student

    torch.manual_seed(cfg.train.seed)  # here: loading the teacher may have drawn numbers
    student, opt = make_student_and_optimizer()
    ema = EmaTeacher(student, cfg.loss.askd.ema) if objective == "askd_l2l" else None
    # a post-LN student grown with 'zero' blends the new layers in (MSG masks 0 -> 1)
    ramp = sc.init == "zero" and not student.layer_norm_first
    step, stage, ckpt_seconds = 0, 0, 0.0
    clock = StageClock(device, n_stages)
    ckpt_path = out_dir / CKPT_NAME
    if resume and ckpt_path.is_file():
        ck = torch.load(ckpt_path, map_location=device, weights_only=False)
        if ck.get("config") != to_dict(cfg):
            raise ConfigError(f"{ckpt_path}: was written by a different config; delete it or use a new --out")
        for s in range(1, ck["stage"] + 1):  # replay the growth so that the shapes match
            grow_to(student, opt, s)
        student.load_state_dict(ck["student"])
        opt.load_state_dict(ck["optimizer"])
        if ema is not None:
            ema.load_state_dict(ck["ema"])
        torch.set_rng_state(ck["rng"])
        if device.type == "cuda" and ck.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(ck["cuda_rng"], device)
        step, stage, ckpt_seconds = ck["step"], ck["stage"], ck["ckpt_seconds"]
        clock.wall, clock.cpu = ck["stage_seconds"], ck["stage_cpu_seconds"]
        started = ck["started"]
    else:
        for name in (CKPT_NAME, "metrics.jsonl", "student.ckpt", "summary.json"):
            (out_dir / name).unlink(missing_ok=True)
    runs.write_config(out_dir, cfg)
    # a folder killed mid-run says so (sweeps rerun 'running' trials, resuming from train.pt)
    runs.write_summary(out_dir, {"run_id": out_dir.name, "sweep": sweep, "variant": sc.variant,
                               "seed": cfg.train.seed, "status": "running", "started": started})

    def save_checkpoint() -> None:
        nonlocal ckpt_seconds
        t0 = time.perf_counter()
        _torch_save({
            "config": to_dict(cfg), "step": step, "stage": stage,
            "student": student.state_dict(), "optimizer": opt.state_dict(),
            "ema": ema.state_dict() if ema is not None else None,
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "stage_seconds": clock.wall, "stage_cpu_seconds": clock.cpu, "ckpt_seconds": ckpt_seconds,
            "started": started,
        }, ckpt_path)
        ckpt_seconds += time.perf_counter() - t0

    # ---- metrics.jsonl: drop lines past the checkpoint (they are redone identically)
    metrics_path = out_dir / "metrics.jsonl"
    metrics = runs.open_metrics(out_dir, keep_until_step=step)

    # ---- data: one batch per step, a pure function of (seed, step)
    if cache is not None:
        from harness.data.manifest import read_manifest

        ids = [r["id"] for r in read_manifest(manifest)]
        if cfg.data.max_utterances:
            ids = ids[: cfg.data.max_utterances]
        max_frames = max(1, int(cfg.data.max_seconds * teacher.frame_rate))
    else:
        from harness.data.loader import AudioDataset

        audio = AudioDataset(str(manifest), max_seconds=None, seed=cfg.train.seed)
        if cfg.data.max_utterances:
            audio = torch.utils.data.Subset(audio, range(min(len(audio), cfg.data.max_utterances)))

    def batches(steps: range, layers: list[int]):
        """Batches for ``steps``. Made per stage: a stage reads only the cached teacher
        layers its student matches, so the data cost shrinks with the depth too."""
        if cache is not None:
            ds = CachedBatches(cache, ids, layers, cfg.data.batch_size, max_frames, cfg.train.seed, steps)
        else:
            ds = WaveBatches(audio, cfg.data.batch_size, int(cfg.data.max_seconds * 16000), cfg.train.seed, steps)
        return torch.utils.data.DataLoader(ds, batch_size=None, shuffle=False, num_workers=cfg.data.num_workers,
                                           pin_memory=device.type == "cuda")

    def autocast():
        if amp_dtype is None:
            return torch.autocast(device.type, enabled=False)
        return torch.autocast(device.type, dtype=amp_dtype)

    # ---- the loop: stage by stage; growth at each stage boundary
    status = "ok"
    window: dict[str, float] = {}
    window_n = 0
    student.train()
    clock.start()
    try:
        while step < total and status == "ok":
            while stage + 1 < n_stages and step >= starts[stage + 1]:
                # growth (its cost counts in the new stage), then a checkpoint (not counted)
                clock.stop(stage)
                stage += 1
                clock.start()
                grow_to(student, opt, stage)
                clock.stop(stage)
                save_checkpoint()
                clock.start()
            stage_end = starts[stage + 1] if stage + 1 < n_stages else total
            matched = sorted(set(student.targets))
            for batch in batches(range(step, stage_end), matched):
                lr = lr_at(step, total, cfg.optim)
                for g in opt.param_groups:
                    g["lr"] = lr

                if ramp and stage > 0:
                    stacking.ramp_masks(student, step - starts[stage], int(RAMP_FRAC * steps_per_stage[stage]))
                with autocast():
                    if cache is not None:
                        feats = batch["feats"].to(device, non_blocking=True)
                        frame_lengths = batch["frame_lengths"].to(device)
                        targets = {j: x.to(device, non_blocking=True) for j, x in batch["targets"].items()}
                        states = student.forward_features(feats, frame_lengths)
                    else:
                        wavs = batch["wavs"].to(device, non_blocking=True)
                        lengths = batch["lengths"].to(device)
                        with torch.no_grad():
                            t_states, frame_lengths = teacher.hidden_states(wavs, lengths)
                        targets = {j: t_states[j] for j in matched}
                        states, frame_lengths = student.hidden_states(wavs, lengths)
                    # front-end and teacher frame counts can differ by one: use the common part
                    t = min(states[-1].shape[1], next(iter(targets.values())).shape[1])
                    frame_mask = torch.arange(t, device=device)[None, :] < frame_lengths.to(device)[:, None]
                    preds = student.project([x[:, :t] for x in states])
                    targets = {j: x[:, :t] for j, x in targets.items()}
                    if ema is None:
                        loss, parts = loss_fn(preds, targets, student.targets, cfg.loss.per_layer,
                                              cfg.loss.w, frame_mask)
                    else:
                        with torch.no_grad():
                            e_states = (ema.module.forward_features(feats, frame_lengths) if cache is not None
                                        else ema.module.hidden_states(wavs, lengths)[0])
                            e_preds = ema.module.project([x[:, :t] for x in e_states])
                        a = cfg.loss.askd
                        alpha = askd_alpha(step / total, a.decay, a.alpha_start, a.alpha_end, a.start_frac)
                        loss, parts = loss_fn(preds, targets, e_preds, student.targets, alpha,
                                              cfg.loss.per_layer, cfg.loss.w, frame_mask)

                loss_value = float(loss.detach())  # the NaN guard's (only) per-step sync
                if not math.isfinite(loss_value):
                    status = f"failed: nan at step {step + 1}"  # 1-based, as in metrics.jsonl
                    break
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.optim.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(student.parameters(), cfg.optim.grad_clip)
                opt.step()
                if ema is not None:
                    ema.update(student)
                step += 1

                # log the mean over the log window: smoother than one step; the parts stay
                # on the device until a log step (no extra sync per step)
                window["loss"] = window.get("loss", 0.0) + loss_value
                for k, v in parts.items():
                    window[k] = window.get(k, 0.0) + v.detach().float()
                window_n += 1
                if step % cfg.train.log_every == 0 or step == total:
                    wall, cpu = clock.elapsed()
                    row = {
                        "step": step, "stage": stage, "depth": len(student.layers),
                        **{k: float(v) / window_n for k, v in window.items()},
                        "lr": lr, "time": wall, "cpu_time": cpu,
                    }
                    runs.append_metrics(metrics, row)
                    window, window_n = {}, 0
                    if on_log is not None:
                        on_log(row)
                if cfg.train.ckpt_every and step % cfg.train.ckpt_every == 0 and step < total:
                    clock.stop(stage)
                    save_checkpoint()
                    clock.start()
    finally:
        metrics.close()
    clock.stop(stage)

    # ---- results: student.ckpt, summary.json
    train_params = sum(p.numel() for p in student.parameters() if p.requires_grad)
    if student.frontend is None:
        # the student trained on the cached output of the teacher's front-end: attach a
        # copy so that the checkpoint is a complete upstream
        student.frontend = copy.deepcopy(teacher.frontend).requires_grad_(False)
    if status == "ok":
        save_student(student, out_dir / "student.ckpt", extra={"run_id": out_dir.name, "config": to_dict(cfg)})
        ckpt_path.unlink(missing_ok=True)  # the finished student supersedes it
    cost = cost_model(cfg, student, teacher)
    summary = {
        "run_id": out_dir.name,
        "sweep": sweep,
        "profile": cfg.profile,
        "variant": sc.variant,
        "schedule": sc.schedule,
        "init": sc.init,
        "optim_state": sc.optim_state,
        "layer_map": sc.layer_map,
        "seed": cfg.train.seed,
        "teacher": teacher.id,
        "teacher_spec": cfg.teacher.spec,
        "teacher_cached": cfg.teacher.cache,
        "student_params": student.encoder_params(),  # as an upstream (no projections)
        "train_params": train_params,
        "steps": step,
        "stages": [
            {"stage": s, "depth": depths[s], "start_step": starts[s], "steps": steps_per_stage[s],
             "seconds": clock.wall[s], "cpu_seconds": clock.cpu[s]}
            for s in range(n_stages)
        ],
        "train_seconds": sum(clock.wall),
        "train_cpu_seconds": sum(clock.cpu),
        "checkpoint_seconds": ckpt_seconds,
        "flops": stacking.theoretical_cost(depths, steps_per_stage, cost),
        "flops_full_depth": stacking.theoretical_cost([depths[-1]], [total], cost),
        "theoretical_speedup": stacking.theoretical_speedup(depths, steps_per_stage, cost),
        "cost_model": dataclasses.asdict(cost),
        "final_losses": final_losses(metrics_path),
        "hardware": hardware(),
        "git_commit": git_commit(),
        "started": started,
        "ended": now_iso(),
        "status": status,
        "config": to_dict(cfg),
        "tasks": {},
        "superb_score": None,
    }
    runs.write_summary(out_dir, summary)
    return summary
