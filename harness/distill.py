"""One distillation run, in named phases that read top to bottom (nanoGPT / torchtune).

``run_distill(cfg, out_dir)`` trains a student against a frozen teacher by layer-to-layer
(L2L) distillation while its depth grows by a stacking variant (``harness.stacking``):

1. :func:`setup`: device, stage sizes (:func:`harness.stacking.plan_stages`), teacher
   and feature cache, data, student, optimizer, EMA self-teacher (ASKD);
2. :func:`begin`: resume from ``train.pt`` or start clean; ``config.yaml``; a
   ``running`` summary;
3. :func:`train`: the loop; :func:`grow_to` at each stage boundary, one
   :func:`train_step` per batch, its loss from the objective family's step loss
   (:data:`STEP_LOSSES`: :func:`teacher_loss` for ``l2l``/``pred_heads``,
   :func:`askd_loss` for ``askd_l2l``, which adds the EMA self-teacher);
4. :func:`finish`: ``student.ckpt`` and ``summary.json``.

No trainer framework, no callbacks. A run that raises in any phase leaves
``summary.json`` at ``"status": "failed: <reason>"`` with ``failure`` saying whether
the environment broke it or it would fail again (:mod:`harness.failures`); a kill
(simulated by :class:`RunInterrupted`) leaves it ``running``, so that a rerun resumes.
One writer at a time: the run holds ``out_dir/.lock`` (:mod:`harness.locks`), and a
rerun into a folder that holds another config's run is refused with the differing keys.

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

Each file is written by one small helper (section "run-folder files").

Data: with ``teacher.cache: true`` the teacher's hidden states *and its front-end output*
come from the feature cache (``harness.teachers.cache``), so a step costs only the
student's encoder; the student's front-end is frozen (a copy of the teacher's). Without
the cache the live teacher computes the same arrays on every step's utterances
(:func:`live_inputs`): one target semantics, the teacher on each whole utterance and the
crop taken afterwards, in frames, with the same draws (docs/architecture.md, "Targets").
In both cases step ``k``'s batch is a pure function of ``(seed, k)``
(``harness.data.loader``), which is what makes a resumed run identical.

Timing: each stage's wall-clock is measured between device synchronisations and excludes
checkpoint writes; the growth itself counts in the stage it starts.

Data-parallel: launched as several ranks (torchrun, or Ray Train in a sweep), a run trains
one student across them (:mod:`harness.ddp`): each rank reads its slice of the global
batch, the gradient is averaged by DDP, and rank 0 alone writes the run folder.

Size: over 500 lines: one recipe kept in one file so that it reads top to bottom (no
function over ~60 lines); the run-folder formats live in :mod:`harness.runs`.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from harness import ddp, failures, heldout, locks, runs, safeload, stacking
from harness.config import ConfigError, RunConfig, to_dict, validate_tree
from harness.data.loader import AudioDataset, CachedBatches, WaveBatches, crop_stack, restore_rng
from harness.data.manifest import read_manifest
from harness.losses import OBJECTIVES, EmaTeacher, SelfTeacher, askd_alpha
from harness.provenance import git_commit, hardware, load_average, now_iso, run_load
from harness.student import build_student, save_student
from harness.teachers.base import load_teacher
from harness.teachers.cache import ensure_cache
from harness.teachers.features import frontend_crops, utterance_features

CKPT_NAME = "train.pt"
# after a 'zero' growth of a post-LN student, the new layers' MSG masks rise 0 -> 1 over
# this fraction of the new stage's steps (harness.stacking.ramp_masks)
RAMP_FRAC = 0.1


class RunInterrupted(RuntimeError):
    """Raised by a test hook (or a signal handler) to stop a run as a kill would."""


# ----------------------------------------------------------------------------- run-folder files
# The formats belong to harness.runs; the training checkpoint is this module's own.


def save_train_state(out_dir: Path, state: dict) -> None:
    """``train.pt``, atomically; plain tensors and primitives only (:func:`harness.safeload.save`)."""
    safeload.save(state, out_dir / CKPT_NAME)


def load_train_state(out_dir: Path, device: torch.device) -> Optional[dict]:
    """``train.pt`` read with ``weights_only=True`` (None when absent).

    Its tensors stay on the CPU whatever ``device`` is: the RNG states must (a CUDA
    tensor is refused by ``torch.set_rng_state``), and ``load_state_dict`` copies the
    weights and optimizer moments onto the run's device.

    Raises:
        UnsafeCheckpointError: the file needs pickle (it was not written by the harness)
            and ``--trust-checkpoint`` was not given.
        CorruptCheckpointError: unreadable, or not a training checkpoint.
    """
    path = out_dir / CKPT_NAME
    if not path.is_file():
        return None
    ck = safeload.load(path, map_location="cpu", what="training checkpoint")
    if not isinstance(ck, dict) or not {"step", "stage", "student", "optimizer"} <= set(ck):
        raise safeload.CorruptCheckpointError(f"{path}: not a training checkpoint (delete it, or rerun with --restart)")
    return ck


def clear_run_files(out_dir: Path) -> None:
    """Start over: drop what a previous run left (config.yaml is rewritten)."""
    for name in (CKPT_NAME, runs.METRICS, runs.STUDENT, runs.SUMMARY, runs.SUPERB, runs.ANALYSIS):
        (out_dir / name).unlink(missing_ok=True)


class MetricsLog:
    """``metrics.jsonl``, appended one line per logged step, and the same scalars (losses,
    lr, depth, held-out metrics) plus growth events as TensorBoard events in
    ``<run>/tensorboard/`` (``train.tensorboard``, default on).

    Opening it drops the lines past ``keep_through`` (the resumed checkpoint's step):
    those steps are redone identically; TensorBoard purges its events past that step the
    same way (``purge_step``) and keeps the earlier ones.
    """

    def __init__(self, out_dir: Path, keep_through: int, tensorboard: bool = False) -> None:
        self._file = runs.open_metrics(out_dir, keep_until_step=keep_through)
        self._tb = None
        if tensorboard:
            try:
                from tensorboardX import SummaryWriter
            except ImportError:
                raise ConfigError("train.tensorboard: tensorboardX is not installed (it is in "
                                  "requirements.lock: ./run_all.sh repair)") from None
            # a unique file name: a resume in the same second would otherwise overwrite the earlier events
            self._tb = SummaryWriter(str(out_dir / "tensorboard"), purge_step=keep_through + 1,
                                     filename_suffix=f".{time.time_ns()}")

    def append(self, row: dict) -> None:
        runs.append_metrics(self._file, row)
        if self._tb is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)):
                    self._tb.add_scalar(key, value, row["step"])

    def event(self, tag: str, text: str, step: int) -> None:
        """A text event (a growth) in TensorBoard; ``metrics.jsonl`` has it as the depth change."""
        if self._tb is not None:
            self._tb.add_text(tag, text, step)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


class NullLog:
    """The metrics log of a rank that writes nothing (ranks > 0 of a data-parallel run)."""

    def append(self, row: dict) -> None:
        pass

    def event(self, tag: str, text: str, step: int) -> None:
        pass

    def close(self) -> None:
        pass


# ----------------------------------------------------------------------------- small helpers


def resolve_device(name: str) -> torch.device:
    """``auto`` -> ``cuda`` when available, else ``cpu``; a device this machine lacks is an error
    (the name's form was checked with the config: :func:`harness.config.check_device`)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {name!r} asked for but CUDA is not available (use cpu or auto)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        n = torch.cuda.device_count()
        raise ConfigError(f"train.device: {name!r} but this machine has {n} CUDA device(s): use cuda:0 .. cuda:{n - 1}")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"train.device: {name!r} asked for but MPS (Apple GPU) is not available (use cpu or auto)")
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

    @property
    def running(self) -> bool:
        return self._t0 is not None

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


# ----------------------------------------------------------------------------- data and cost


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
    skip = ("step", "stage", "depth", "lr", "time", "cpu_time", "heldout_loss", "heldout_probe")
    return {k: v for k, v in row.items() if k not in skip}


def cost_model(cfg: RunConfig, student, teacher, whole_frames: Optional[float] = None):
    """The run's per-step FLOPs model (``harness.stacking.CostModel``).

    Frames per sequence = the crop length (``data.max_seconds``); with the cache, the
    front-end and the teacher cost nothing per step. A live teacher's forward is counted
    as 2 FLOPs per parameter per frame (its encoder) plus its conv front-end's exact count,
    over the whole utterances it runs on (``whole_frames``: their mean frame count, from
    :func:`live_frames`; default the crop length), scaled to the crop's frames.
    """
    frames = max(1, int(cfg.data.max_seconds * teacher.frame_rate))
    fe_flops = teacher_flops = 0.0
    if not cfg.teacher.cache:
        spec = getattr(teacher.frontend, "spec", {}) or {}
        if spec.get("type") == "conv":
            fe_flops = stacking.conv_frontend_flops(spec["layers"])
        fe_params = {id(p) for p in teacher.frontend.parameters()}
        encoder = sum(p.numel() for p in teacher.parameters() if id(p) not in fe_params) \
            if isinstance(teacher, torch.nn.Module) else 0
        whole = (whole_frames or frames) / frames  # the teacher sees whole utterances, the student crops
        teacher_flops = (2.0 * encoder + fe_flops) * whole  # the teacher runs its own front-end too
        fe_flops *= whole
    return stacking.CostModel.for_student(student, seq_frames=frames, frames_per_step=cfg.data.batch_size * frames,
                                          frontend_flops=fe_flops, teacher_flops=teacher_flops)


def live_frames(run) -> Optional[float]:
    """Mean frames of the whole utterances a live teacher runs on (None with the cache)."""
    if run.cache is not None:
        return None
    data = run.data
    records = [data.dataset.records[i] for i in data.indices] if hasattr(data, "indices") else data.records
    lengths = torch.tensor([int(r["num_samples"]) for r in records], dtype=torch.int64)
    return float(run.teacher.frame_lengths(lengths).double().mean()) if len(lengths) else None


# ----------------------------------------------------------------------------- the run


@dataclass
class Run:
    """Everything one run holds between its phases (what used to be closure locals).

    ``step`` counts finished optimisation steps; ``stage`` is the stage being trained.
    """

    cfg: RunConfig
    out_dir: Path
    sweep: Optional[str]
    started: str
    device: torch.device
    amp_dtype: Optional[torch.dtype]
    stages: stacking.Stages
    teacher: Any
    cache: Any  # the teacher-feature cache, or None (live teacher)
    data: Any  # utterance ids (cached) or the AudioDataset (live)
    student: Any = None
    opt: Optional[torch.optim.Optimizer] = None
    ema: Optional[EmaTeacher] = None  # ASKD's self-teacher
    loss_fn: Callable = None
    clock: Optional[StageClock] = None
    step: int = 0
    stage: int = 0
    ckpt_seconds: float = 0.0
    ramp: bool = False  # post-LN student grown with 'zero': blend the new layers in
    read_layers: list[int] = field(default_factory=list)  # cached teacher layers every step reads
    holdout: Optional[heldout.HeldoutSet] = None  # the fixed held-out set (data.heldout > 0)
    last_eval: Optional[dict] = None  # the latest held-out evaluation
    eval_seconds: float = 0.0
    compute_matched: Optional[dict] = None  # train.compute_matched: the schedule it matches
    load_start: Optional[float] = None  # the machine's load average when this process started the run
    group: Optional[ddp.Group] = None  # the data-parallel group (None: one process)
    model: Any = None  # what a step runs: the student's forward (DDP-wrapped in a group), rebuilt at growth
    window: Any = None  # the LogWindow since the last log line (checkpointed: a resume logs the same means)

    @property
    def main(self) -> bool:
        """Whether this process writes the run folder (rank 0, or the only process)."""
        return self.group is None or self.group.main

    @property
    def total(self) -> int:
        return self.stages.total


def run_distill(
    cfg: RunConfig,
    out_dir: str | Path,
    resume: bool = True,
    on_log: Optional[Callable[[dict], None]] = None,
    sweep: Optional[str] = None,
    threads: Optional[int] = None,
    hold_lock: bool = True,
) -> dict:
    """Distill one student; write the run folder; return the summary.

    Args:
        cfg: the resolved run config.
        out_dir: run folder (created); its name is the run id.
        resume: continue from ``out_dir/train.pt`` when present (a finished run is
            returned as is); ``False`` starts over. Either way a folder whose
            ``config.yaml`` holds another config is refused when resuming.
        on_log: called with each ``metrics.jsonl`` line (sweeps report it to Ray; tests
            raise :class:`RunInterrupted` from it to simulate a kill).
        sweep: sweep name recorded in the summary (``None`` for a single run).
        threads: the CPUs this run was given (a sweep trial: Ray's); they override
            ``train.threads``, so a trial never runs more threads than its cores.
        hold_lock: take the run folder's lock (False: a process that launched this
            rank, a sweep trial's Ray Train driver, holds it). In a data-parallel group
            only rank 0 takes it, and only rank 0 writes.

    Returns:
        The ``summary.json`` content. A non-finite loss stops the run with
        ``status = "failed: nan at step N"`` (its last good ``train.pt`` kept).

    Raises:
        FileNotFoundError: missing corpus manifest or teacher checkpoint.
        ConfigError: an unusable config value (unknown variant...); or ``resume`` into a
            folder that holds a run of another config (the differing keys named).
        FolderLocked: another process writes ``out_dir`` (:mod:`harness.locks`).
        NoSpaceError: the disk of ``out_dir`` is full (one line with the free space).
        Any error of a phase, after ``summary.json`` says ``failed: <reason>`` and
        ``failure: environment | deterministic`` (:mod:`harness.failures`).
    """
    out_dir = Path(out_dir)
    group = ddp.current()
    main = group is None or group.main
    lock = locks.hold(out_dir, f"harness distill {out_dir.name}") if main and hold_lock else contextlib.nullcontext()
    with lock:
        if resume:
            old = ddp.broadcast(_finished_or_error(out_dir, cfg) if main else None, group)
            if isinstance(old, str):
                raise ConfigError(old)
            if old:
                return old
        started = ddp.broadcast(now_iso(), group)
        load0 = load_average()
        run = None
        try:
            run = setup(cfg, out_dir, sweep, started, threads)
            run.load_start = load0
            begin(run, resume)
            status = train(run, on_log)
            return finish(run, status)
        except RunInterrupted:
            raise  # a kill: the folder stays 'running' and a rerun resumes from train.pt
        except Exception as err:
            if failures.is_no_space(err):
                failures.release(err)
            need = run_bytes(run) if run is not None and run.student is not None else None
            if main:
                record_failed(out_dir, cfg, sweep, started, err, need)
            if failures.is_no_space(err):
                raise failures.NoSpaceError(failures.no_space_message(out_dir, need)) from err
            raise


def _finished_or_error(out_dir: Path, cfg: RunConfig):
    """Rank 0's look at the folder before a resume: the finished run's summary, the
    refusal's message (another config's run), or None (go on)."""
    try:
        check_same_config(out_dir, cfg)
    except ConfigError as err:
        return str(err)
    old = runs.read_summary(out_dir)
    return old if old and old.get("status") == "ok" and (out_dir / "student.ckpt").is_file() else None


def run_bytes(run: Run) -> float:
    """What a run folder takes at its final depth, roughly: ``student.ckpt`` plus ``train.pt``
    (weights and AdamW's two moments), fp32; the full-depth student, whatever the stage."""
    now = sum(p.numel() for p in run.student.parameters())
    depth = max(1, len(run.student.layers))
    return 4 * 4 * now * run.stages.depths[-1] / depth


def check_same_config(out_dir: Path, cfg: RunConfig) -> None:
    """Refuse to continue or return a run of ``out_dir`` that another config made.

    Raises:
        ConfigError: the folder's ``config.yaml`` differs from ``cfg`` (the differing keys
            named, the folder's value first).
    """
    diff = runs.config_changes(out_dir, to_dict(cfg))
    if diff:
        raise ConfigError(f"{out_dir} holds a run of a different config ({', '.join(diff)}); "
                          "use a new --out, or --restart to replace it")


def record_failed(out_dir: Path, cfg: RunConfig, sweep: Optional[str], started: str, err: Exception,
                  need: Optional[float] = None) -> None:
    """``summary.json`` at ``failed: <reason>`` with its failure class; a full disk that
    cannot take even that leaves the error to the caller (it says so in one line)."""
    if failures.is_no_space(err):
        reason = failures.no_space_message(out_dir, need)
    else:
        reason = f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0]}"
    try:
        old = runs.read_summary(out_dir) or {}
    except runs.RunFormatError:
        old = {}
    try:
        runs.write_summary(out_dir, {
            "run_id": out_dir.name, "sweep": sweep, "variant": cfg.stacking.variant, "seed": cfg.train.seed,
            "started": old.get("started", started), "ended": now_iso(),
            "status": f"failed: {reason}", "failure": failures.classify(err),
        })
    except OSError:
        pass  # the disk is full: the original error says so


def setup(cfg: RunConfig, out_dir: Path, sweep: Optional[str], started: str, threads: Optional[int] = None) -> Run:
    """Device, stages, teacher (+ feature cache), student, optimizer, EMA, data."""
    group = ddp.current()
    device = ddp.device_of(group, resolve_device(cfg.train.device))
    amp_dtype = resolve_precision(cfg.train.precision, device)
    if threads or cfg.train.threads:
        torch.set_num_threads(int(threads or cfg.train.threads))
    validate_tree(cfg)  # a RunConfig built in code has not been validated yet
    stages = stacking.plan_stages(cfg)
    if group is not None:
        check_data_parallel(cfg, group)
    manifest = manifest_path(cfg)

    # the teacher (frozen) and, when cached, its features for every distill utterance
    teacher = load_teacher(cfg.teacher.spec, device)
    cache = None
    layers = teacher_layers(cfg, teacher.num_layers)
    if cfg.teacher.cache:
        cache = ensure_cache(teacher, manifest, layers, frontend=True,
                             cache_dir=cfg.teacher.cache_dir, limit=cfg.data.max_utterances)
    held_ids, data = load_data(cfg, manifest, cache is not None)
    run = Run(cfg, out_dir, sweep, started, device, amp_dtype, stages, teacher, cache,
              data=data, loss_fn=OBJECTIVES.get(cfg.loss.objective), read_layers=layers, group=group)
    if held_ids and run.main:  # evaluated on rank 0 only
        run.holdout = heldout.build(held_ids, manifest, teacher, cache,
                                    max_seconds=cfg.data.heldout_seconds or cfg.data.max_seconds)

    torch.manual_seed(cfg.train.seed)  # here: loading the teacher may have drawn numbers
    run.student, run.opt = build_student_and_optimizer(run)
    run.model = ddp.wrap(run.student, encode, group, device)
    if cfg.train.compute_matched:
        match_compute(run)
    run.ema = SelfTeacher(run.student, cfg.loss.askd, run.total) if cfg.loss.objective == "askd_l2l" else None
    run.ramp = cfg.stacking.init == "zero" and not run.student.layer_norm_first
    run.clock = StageClock(device, len(run.stages))
    return run


def check_data_parallel(cfg: RunConfig, group: ddp.Group) -> None:
    """What a data-parallel run needs, checked before anything loads.

    Raises:
        ConfigError: the live teacher (the ranks shard the cached features), or a global
            batch that does not split evenly over the ranks.
    """
    if not cfg.teacher.cache:
        raise ConfigError(f"teacher.cache: a data-parallel run ({group.world} ranks) reads the cached teacher "
                          "features, each rank its slice of the batch: set teacher.cache: true")
    try:
        ddp.shard(cfg.data.batch_size, group)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def load_data(cfg: RunConfig, manifest: Path, cached: bool):
    """The held-out ids (the split's first ``data.heldout``, never trained on) and what the
    run draws batches from: the other ids (cached features) or an AudioDataset of them."""
    ids = [r["id"] for r in read_manifest(manifest)]
    if cfg.data.max_utterances:
        ids = ids[: cfg.data.max_utterances]
    held, train_ids = heldout.split_ids(ids, cfg.data.heldout)
    if cached:
        return held, train_ids
    audio = AudioDataset(str(manifest), max_seconds=None, seed=cfg.train.seed)
    return held, torch.utils.data.Subset(audio, range(len(held), len(ids)))


def match_compute(run: Run) -> None:
    """``train.compute_matched``: ``none`` trained for the stacking schedule's compute.

    The schedule (``stacking.stages``/``add``/``schedule`` over ``train.steps``) costs
    ``1 / S`` of full-depth training by the FLOP model (``S`` = its theoretical speedup,
    the same for every growing variant); this run trains full depth for
    ``round(train.steps / S)`` steps with its own warmup and decay over them.
    """
    cfg = run.cfg
    grown = dataclasses.replace(cfg, stacking=dataclasses.replace(cfg.stacking, variant="interleaved"))
    sched = stacking.plan_stages(grown)
    cost = cost_model(cfg, run.student, run.teacher, live_frames(run))
    speedup = stacking.theoretical_speedup(sched.depths, sched.steps, cost)
    steps = max(1, round(cfg.train.steps / speedup))
    run.stages = stacking.Stages([run.stages.depths[-1]], [steps])
    run.compute_matched = {"steps": steps, "of_steps": cfg.train.steps, "speedup": speedup,
                           "schedule_depths": list(sched.depths), "schedule_steps": list(sched.steps)}


def build_student_and_optimizer(run: Run):
    """The first-stage student and its AdamW."""
    cfg = run.cfg
    try:
        student = build_student(dataclasses.replace(cfg.student, layers=run.stages.depths[0]),
                                run.teacher).to(run.device)
    except ValueError as err:
        raise ConfigError(f"student: {err}") from None
    if run.cache is not None:
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


def grow_to(run: Run, stage: int) -> None:
    """Grow the student from stage ``stage - 1``'s depth to stage ``stage``'s, in place."""
    sc, depths = run.cfg.stacking, run.stages.depths
    p = stacking.plan(sc.variant, depths[stage - 1], depths[stage] - depths[stage - 1],
                      offset=sc.offset, init=sc.init)
    stacking.grow(run.student, run.opt, p, init=sc.init, optim_state=sc.optim_state,
                  layer_map=sc.layer_map, teacher_layers=run.teacher.num_layers)
    if run.ema is not None:
        run.ema.update(run.student)  # a new shape: the EMA re-copies the grown student
    # new parameters: a new step module (DDP's buckets hold the old ones; it broadcasts rank 0's)
    run.model = ddp.wrap(run.student, encode, run.group, run.device)


# ----------------------------------------------------------------------------- resume, checkpoint


def begin(run: Run, resume: bool) -> None:
    """Resume from ``train.pt`` (replaying the growth so the shapes match) or start
    clean; then write ``config.yaml`` and a ``running`` summary (sweeps rerun 'running'
    trials, which resume from ``train.pt``)."""
    ck = load_train_state(run.out_dir, run.device) if resume and run.main else None
    ck = ddp.broadcast(ck, run.group)  # rank 0's train.pt: the other ranks need no shared folder
    if ck is not None:
        if ck.get("config") != to_dict(run.cfg):
            raise ConfigError(f"{run.out_dir / CKPT_NAME}: was written by a different config; "
                              "delete it or use a new --out")
        for s in range(1, ck["stage"] + 1):
            grow_to(run, s)
        run.student.load_state_dict(ck["student"])
        run.opt.load_state_dict(ck["optimizer"])
        if run.ema is not None:
            run.ema.load_state_dict(ck["ema"])
        torch.set_rng_state(ck["rng"])
        if run.device.type == "cuda" and ck.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(ck["cuda_rng"], run.device)
        run.step, run.stage, run.ckpt_seconds = ck["step"], ck["stage"], ck["ckpt_seconds"]
        run.eval_seconds = ck.get("eval_seconds", 0.0)
        if ck.get("log_window"):  # the steps since the last log line before the checkpoint
            run.window = LogWindow(sums=dict(ck["log_window"]["sums"]), n=ck["log_window"]["n"])
        run.clock.wall, run.clock.cpu = ck["stage_seconds"], ck["stage_cpu_seconds"]
        run.started = ck["started"]
    if not run.main:
        return
    if ck is None:
        clear_run_files(run.out_dir)
    runs.write_config(run.out_dir, run.cfg)
    runs.write_summary(run.out_dir, {"run_id": run.out_dir.name, "sweep": run.sweep, "variant": run.cfg.stacking.variant,
                                "seed": run.cfg.train.seed, "status": "running", "started": run.started})


def all_finite(run: Run) -> bool:
    """Whether every floating tensor of the student, its optimizer state and the EMA
    self-teacher is finite (one device sync: called only before a checkpoint)."""
    tensors = list(run.student.state_dict().values())
    for state in run.opt.state.values():
        tensors += [v for v in state.values() if torch.is_tensor(v)]
    if run.ema is not None:
        tensors += list(run.ema.module.state_dict().values())
    flags = [torch.isfinite(t).all() for t in tensors if t.is_floating_point()]
    return bool(torch.stack(flags).all()) if flags else True


def save_checkpoint(run: Run) -> bool:
    """``train.pt``: everything a rerun needs to continue as if never stopped.

    Returns:
        ``False``, writing nothing, when a weight or optimizer moment is non-finite: a
        NaN never replaces the last finite ``train.pt`` (an update can turn the weights
        NaN while the loss that drove it was finite).
    """
    if not all_finite(run):
        return False
    if not run.main:
        return True  # rank 0 writes it (every rank holds the same weights)
    t0 = time.perf_counter()
    save_train_state(run.out_dir, {
        "config": to_dict(run.cfg), "step": run.step, "stage": run.stage,
        "student": run.student.state_dict(), "optimizer": run.opt.state_dict(),
        "ema": run.ema.state_dict() if run.ema is not None else None,
        "rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state(run.device) if run.device.type == "cuda" else None,
        "stage_seconds": run.clock.wall, "stage_cpu_seconds": run.clock.cpu, "ckpt_seconds": run.ckpt_seconds,
        "eval_seconds": run.eval_seconds,
        "log_window": None if run.window is None else {
            "sums": {k: float(v) for k, v in run.window.sums.items()}, "n": run.window.n},
        "started": run.started,
    })
    run.ckpt_seconds += time.perf_counter() - t0
    return True


# ----------------------------------------------------------------------------- one step


def stage_batches(run: Run, steps: range) -> torch.utils.data.DataLoader:
    """Batches for ``steps``, made per stage.

    With the cache, every step of every stage and variant reads the same arrays: the
    front-end output and every teacher layer the run can match (``run.read_layers``),
    whichever the stage's student matches. The data cost per step is then the same for
    every arm of a study, so a stacking run's speedup measures the student's compute,
    not fewer reads (a shallow stage with the ``fixed`` layer map matches 3 of 9 arrays,
    and the page cache does not keep a multi-GB cache resident).
    """
    cfg = run.cfg
    if run.cache is not None:
        ds = CachedBatches(run.cache, run.data, run.read_layers, cfg.data.batch_size, max_frames(run),
                           cfg.train.seed, steps, shard=ddp.shard(cfg.data.batch_size, run.group))
    else:
        ds = WaveBatches(run.data, cfg.data.batch_size, cfg.train.seed, steps)
    return torch.utils.data.DataLoader(ds, batch_size=None, shuffle=False, num_workers=cfg.data.num_workers,
                                       pin_memory=run.device.type == "cuda")


def to_device(batch: dict, device: torch.device) -> dict:
    """A cached batch's tensors (``feats``/``frame_lengths``/``targets``) on ``device``."""
    out = {"feats": batch["feats"].to(device, non_blocking=True),
           "frame_lengths": batch["frame_lengths"].to(device),
           "targets": {j: x.to(device, non_blocking=True) for j, x in batch["targets"].items()}}
    if "share" in batch:  # a rank's slice of a data-parallel batch: its share of the frames
        out["share"] = batch["share"].to(device)
    return out


def live_inputs(run: Run, batch: dict) -> dict:
    """A live batch (:class:`WaveBatches`) as a cached one: the teacher and its front-end on
    each whole utterance (:func:`harness.teachers.features.utterance_features`, the cache's
    computation), cropped with the step's draws (:func:`harness.data.loader.crop_stack`).
    With a trainable front-end the student's own front-end runs on the whole waveforms in
    :func:`encode`, cropped at the same ``offsets``."""
    arrays = utterance_features(run.teacher, batch["wavs"], run.read_layers, frontend=True, device=run.device)
    keys = ["frontend"] + [f"layer_{j}" for j in run.read_layers]
    x, offsets, lengths = crop_stack(arrays, keys, restore_rng(batch["rng_state"]), max_frames(run))
    inputs = {"feats": x["frontend"], "frame_lengths": torch.tensor(lengths, dtype=torch.int64, device=run.device),
              "targets": {j: x[f"layer_{j}"] for j in run.read_layers}}
    if run.student.shape.frontend_trainable:
        inputs.update(wavs=batch["wavs"], offsets=offsets)
    return inputs


def max_frames(run: Run) -> int:
    """The training crop in frames (``data.max_seconds`` at the teacher's frame rate)."""
    return max(1, int(run.cfg.data.max_seconds * run.teacher.frame_rate))


def encode(model, inputs: dict) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Hidden states ``(B, T, D)`` of the student (or its EMA copy) and valid frames ``(B,)``.

    The input is the (cached or live) front-end output, except for a trainable front-end
    (live only): the model's own front-end then runs on the whole waveforms and its output
    is cropped where the targets were (``inputs["offsets"]``)."""
    flen = inputs["frame_lengths"]
    if "wavs" in inputs and model.frontend is not None:
        feats = frontend_crops(model.frontend, inputs["wavs"], inputs["offsets"], flen.tolist(), flen.device)
        return model.forward_features(feats, flen), flen
    return model.forward_features(inputs["feats"], flen), flen


def matched_outputs(run: Run, inputs: dict, matched: list[int]):
    """The student's projections and their teacher targets on the frames both have.

    Returns:
        ``(preds, targets, frame_mask, t)``: ``L`` tensors ``(B, t, D_teacher)``, teacher
        states by index ``{j: (B, t, D_teacher)}``, ``(B, t)`` bool, the frame count.
    """
    targets = inputs["targets"]
    if run.model is None:  # a Run built by hand (benchmarks): the plain step module
        run.model = ddp.wrap(run.student, encode, run.group, run.device)
    # front-end and teacher frame counts can differ by one: use the common part
    preds, t = run.model(inputs, next(iter(targets.values())).shape[1])
    frame_mask = torch.arange(t, device=run.device)[None, :] < inputs["frame_lengths"].to(run.device)[:, None]
    return preds, {j: x[:, :t] for j, x in targets.items()}, frame_mask, t


def teacher_loss(run: Run, inputs: dict, matched: list[int]):
    """``l2l`` and ``pred_heads``: the student against the teacher only."""
    preds, targets, frame_mask, _ = matched_outputs(run, inputs, matched)
    return run.loss_fn(preds, targets, run.student.targets, run.cfg.loss.per_layer, run.cfg.loss.w, frame_mask)


def askd_loss(run: Run, inputs: dict, matched: list[int]):
    """``askd_l2l``: the teacher term weighted by alpha(t), the rest against the EMA student."""
    preds, targets, frame_mask, t = matched_outputs(run, inputs, matched)
    with torch.no_grad():
        e_states, _ = encode(run.ema.module, inputs)
        e_preds = run.ema.module.project([x[:, :t] for x in e_states])
    a = run.cfg.loss.askd
    alpha = askd_alpha(run.step / run.total, a.decay, a.alpha_start, a.alpha_end, a.start_frac)
    return run.loss_fn(preds, targets, e_preds, run.student.targets, alpha,
                       run.cfg.loss.per_layer, run.cfg.loss.w, frame_mask)


# objective -> its step loss (one per objective family)
STEP_LOSSES: dict[str, Callable] = {"l2l": teacher_loss, "pred_heads": teacher_loss, "askd_l2l": askd_loss}


def train_step(run: Run, batch: dict, matched: list[int], lr: float):
    """One optimisation step at learning rate ``lr``.

    Returns:
        ``(loss value, parts)``, or ``None`` for a non-finite loss (nothing updated).
    """
    for g in run.opt.param_groups:
        g["lr"] = lr
    if run.ramp and run.stage > 0:
        start, steps = run.stages.starts[run.stage], run.stages.steps[run.stage]
        stacking.ramp_masks(run.student, run.step - start, int(RAMP_FRAC * steps))
    # the live teacher runs as the cache's build does: full precision, outside autocast
    inputs = live_inputs(run, batch) if "rng_state" in batch else to_device(batch, run.device)
    with autocast(run):
        loss, parts = STEP_LOSSES[run.cfg.loss.objective](run, inputs, matched)
    share = inputs.get("share")
    loss_value = ddp.global_loss(loss, share, run.group)  # the NaN guard's (only) per-step sync
    if not math.isfinite(loss_value):
        return None  # every rank sees the same global loss, so every rank stops
    run.opt.zero_grad(set_to_none=True)
    # in a group DDP averages the ranks' gradients: weighting each rank's frame mean by its
    # frame share x ranks makes that average the gradient of the global batch's frame mean
    (loss if run.group is None else loss * (share * run.group.world)).backward()
    if run.cfg.optim.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(run.student.parameters(), run.cfg.optim.grad_clip)
    run.opt.step()
    if run.ema is not None:
        run.ema.update(run.student)
    run.step += 1
    return loss_value, parts


def eval_due(run: Run) -> bool:
    """A held-out evaluation at this (logged) step: every ``train.eval_every`` and the last."""
    every = run.cfg.train.eval_every
    return run.holdout is not None and (run.step == run.total or bool(every and run.step % every == 0))


def evaluate_heldout(run: Run) -> dict:
    """Evaluate on the held-out set; the ``metrics.jsonl`` keys of the result. The phone
    probe (9 ridge fits at full depth, ~40% of an evaluation) runs at the last step only:
    the curve is the output loss; ``heldout_probe`` is null before the last step."""
    res = heldout.evaluate(run.student, run.teacher, run.holdout, run.device, probe=run.step == run.total)
    run.last_eval = res
    run.eval_seconds += res["seconds"]
    return {"heldout_loss": res["output_loss"], "heldout_probe": res.get("probe_best")}


def autocast(run: Run):
    if run.amp_dtype is None:
        return torch.autocast(run.device.type, enabled=False)
    return torch.autocast(run.device.type, dtype=run.amp_dtype)


# ----------------------------------------------------------------------------- the loop


@dataclass
class LogWindow:
    """Sums of the loss and its parts since the last log line. The parts stay on the
    device until a log step (no extra sync per step)."""

    sums: dict = field(default_factory=dict)
    n: int = 0

    def add(self, loss_value: float, parts: dict) -> None:
        self.sums["loss"] = self.sums.get("loss", 0.0) + loss_value
        for k, v in parts.items():
            self.sums[k] = self.sums.get(k, 0.0) + v.detach().float()
        self.n += 1

    def means(self) -> dict:
        out = {k: float(v) / self.n for k, v in self.sums.items()}
        self.sums, self.n = {}, 0
        return out


def checkpoint(run: Run) -> bool:
    """A growth or periodic ``train.pt``, outside the timed work (:func:`save_checkpoint`)."""
    run.clock.stop(run.stage)
    saved = save_checkpoint(run)
    run.clock.start()
    return saved


def nan_status(step: int) -> str:
    return f"failed: nan at step {step}"


def train(run: Run, on_log: Optional[Callable[[dict], None]]) -> str:
    """Stage by stage to ``train.steps``, growing at each stage boundary.

    The NaN guard: a non-finite loss stops the run before its update; non-finite weights
    or optimizer moments (checked before every checkpoint and after the last step) stop
    it without writing them. The last finite ``train.pt`` stays.

    Returns:
        ``"ok"``, or ``"failed: nan at step N"`` (1-based, as in ``metrics.jsonl``: the
        step whose loss, or whose update, was non-finite).
    """
    cfg, stages, clock = run.cfg, run.stages, run.clock
    status = "ok"
    window = run.window = run.window if run.window is not None else LogWindow()
    metrics = MetricsLog(run.out_dir, keep_through=run.step, tensorboard=cfg.train.tensorboard) if run.main \
        else NullLog()
    run.student.train()
    clock.start()
    try:
        while run.step < run.total and status == "ok":
            while run.stage + 1 < len(stages) and run.step >= stages.starts[run.stage + 1]:
                # growth (its cost counts in the new stage), then a checkpoint (not counted)
                clock.stop(run.stage)
                run.stage += 1
                clock.start()
                grow_to(run, run.stage)
                metrics.event("growth", f"step {run.step}: grew to {len(run.student.layers)} layers "
                              f"(stage {run.stage}, {cfg.stacking.variant})", run.step)
                if not checkpoint(run):
                    status = nan_status(run.step)
                    break
            if status != "ok":
                break
            stage_end = stages.starts[run.stage + 1] if run.stage + 1 < len(stages) else run.total
            matched = sorted(set(run.student.targets))
            for batch in stage_batches(run, range(run.step, stage_end)):
                lr = lr_at(run.step, run.total, cfg.optim)
                result = train_step(run, batch, matched, lr)
                if result is None:
                    status = nan_status(run.step + 1)
                    break
                window.add(*result)
                if run.step % cfg.train.log_every == 0 or run.step == run.total:
                    wall, cpu = clock.elapsed()
                    row = {"step": run.step, "stage": run.stage, "depth": len(run.student.layers),
                           **window.means(), "lr": lr, "time": wall, "cpu_time": cpu}
                    if eval_due(run):
                        clock.stop(run.stage)  # the evaluation is not training time
                        row.update(evaluate_heldout(run))
                        clock.start()
                    metrics.append(row)
                    if on_log is not None and run.main:
                        on_log(row)
                if cfg.train.ckpt_every and run.step % cfg.train.ckpt_every == 0 and run.step < run.total:
                    if not checkpoint(run):
                        status = nan_status(run.step)
                        break
    finally:
        if clock.running:  # closing the logs (TensorBoard's flush) is not training time
            clock.stop(run.stage)
        metrics.close()
    if status == "ok" and not all_finite(run):  # never save a non-finite student.ckpt
        status = nan_status(run.step)
    return status


# ----------------------------------------------------------------------------- summary


def heldout_summary(run: Run, status: str) -> Optional[dict]:
    """``summary.json``'s ``heldout`` block: the final evaluation and the curve (read back
    from ``metrics.jsonl``, so that a resumed run's curve includes the steps before it)."""
    if run.holdout is None or status != "ok":
        return None
    if run.last_eval is None:  # resumed after the last step was logged: evaluate the final student
        run.last_eval = heldout.evaluate(run.student, run.teacher, run.holdout, run.device)
    lines, _ = runs.read_metrics(run.out_dir / runs.METRICS)
    curve = [{"step": r["step"], "time": r["time"], "cpu_time": r["cpu_time"], "output_loss": r["heldout_loss"],
              "probe_best": r.get("heldout_probe")} for r in lines if r.get("heldout_loss") is not None]
    return heldout.summary_block(run.last_eval, curve, run.eval_seconds)


def data_per_step(run: Run) -> dict:
    """What every training step reads: the same arrays for every stage (and arm)."""
    if run.cache is None:
        return {"source": "audio (live teacher)", "arrays": None}
    return {"source": "teacher cache", "arrays": ["frontend"] + [f"layer_{j}" for j in run.read_layers],
            "batch_size": run.cfg.data.batch_size,
            "max_frames": max(1, int(run.cfg.data.max_seconds * run.teacher.frame_rate))}


def finish(run: Run, status: str) -> dict:
    """Save the student (when ok) and write ``summary.json``; return the summary."""
    cfg, sc, stages, student, clock = run.cfg, run.cfg.stacking, run.stages, run.student, run.clock
    if not run.main:  # rank 0 writes the student and the summary
        return {"run_id": run.out_dir.name, "status": status, "rank": run.group.rank, "steps": run.step}
    train_params = sum(p.numel() for p in student.parameters() if p.requires_grad)
    if student.frontend is None:
        # the student trained on the cached output of the teacher's front-end: attach a
        # copy so that the checkpoint is a complete upstream
        student.frontend = copy.deepcopy(run.teacher.frontend).requires_grad_(False)
    if status == "ok":
        save_student(student, run.out_dir / "student.ckpt", extra={"run_id": run.out_dir.name, "config": to_dict(cfg)})
        (run.out_dir / CKPT_NAME).unlink(missing_ok=True)  # the finished student supersedes it
    cost = cost_model(cfg, student, run.teacher, live_frames(run))
    summary = {
        "run_id": run.out_dir.name,
        "sweep": run.sweep,
        "profile": cfg.profile,
        "variant": sc.variant,
        "schedule": sc.schedule,
        "init": sc.init,
        "optim_state": sc.optim_state,
        "layer_map": sc.layer_map,
        "seed": cfg.train.seed,
        "teacher": run.teacher.id,
        "teacher_spec": cfg.teacher.spec,
        "teacher_cached": cfg.teacher.cache,
        "student_params": student.encoder_params(),  # as an upstream (no projections)
        "train_params": train_params,
        "steps": run.step,
        "stages": [
            {"stage": s, "depth": stages.depths[s], "start_step": stages.starts[s], "steps": stages.steps[s],
             "seconds": clock.wall[s], "cpu_seconds": clock.cpu[s]}
            for s in range(len(stages))
        ],
        "train_seconds": sum(clock.wall),
        "train_cpu_seconds": sum(clock.cpu),
        "checkpoint_seconds": run.ckpt_seconds,
        "flops": stacking.theoretical_cost(stages.depths, stages.steps, cost),
        "flops_full_depth": stacking.theoretical_cost([stages.depths[-1]], [run.total], cost),
        "theoretical_speedup": stacking.theoretical_speedup(stages.depths, stages.steps, cost),
        "cost_model": dataclasses.asdict(cost),
        "final_losses": final_losses(run.out_dir / runs.METRICS),
        "arm": "none_cm" if run.compute_matched else sc.variant,
        "compute_matched": run.compute_matched,
        "data_per_step": data_per_step(run),
        "heldout": heldout_summary(run, status),
        "hardware": hardware(),
        "load": run_load(run.load_start),
        "distributed": None if run.group is None else {
            **run.group.describe(), "global_batch": cfg.data.batch_size,
            "per_rank_batch": cfg.data.batch_size // run.group.world},
        "git_commit": git_commit(),
        "started": run.started,
        "ended": now_iso(),
        "status": status,
        "config": to_dict(cfg),
        "tasks": {},
        "superb_score": None,
    }
    if status != "ok":
        summary["failure"] = failures.DETERMINISTIC  # a non-finite loss: the same run fails again
    runs.write_summary(run.out_dir, summary)
    return summary
