"""Per-depth training-step cost, the cost model fitted to it, and the fixed-part pieces.

What ``harness bench stacking`` predicts a schedule's speedup from, measured rather than
counted:

- :class:`DepthCosts` / :func:`measure_depth_costs`: for each depth a schedule visits, ``steps`` training steps
  (:func:`harness.distill.train_step`: forward, backward, fused AdamW) of a student of that
  depth on one **in-memory** batch of the run's shape (``B x frames x frontend_dim``,
  targets of the teacher width): no disk read in the timed part. Wall-clock
  (``time.perf_counter``) and CPU time per step (:func:`cpu_clock`), after warm-up steps,
  depths round-robin within each round.
- :func:`fit_cost`: least squares ``cost(depth) = a * depth + b`` on those costs.
- :func:`fitted_speedup`: ``sum_s steps_s * cost(depth_s)`` of ``none`` (full depth for
  every step) over the same sum for a schedule.
- :func:`time_pos_conv`, :func:`time_teacher_forward`, :func:`time_growths`: the
  positional conv (part of ``b``), the live teacher's forward (what a live teacher adds to
  ``b``), and what a growth and the first step after it cost.

Every timing is the median over repeats with its min and max, and keeps the raw numbers.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from harness import distill, stacking
from harness.config import RunConfig
from harness.student import pos_conv_reference

#: fabricated batches: a fixed seed, so every depth sees the same numbers
BATCH_SEED = 1234


def cpu_clock() -> tuple[str, Callable[[], float]]:
    """The CPU clock that sees all of a step's work: ``time.thread_time`` when torch runs
    one intra-op thread (all work on the calling thread, other threads of the process not
    counted), else ``time.process_time`` (every thread's, since OpenMP workers compute)."""
    if torch.get_num_threads() == 1:
        return "thread_time", time.thread_time
    return "process_time", time.process_time


def spread(values: Sequence[float]) -> dict:
    """``{"median", "min", "max", "runs"}`` of some repeats."""
    vals = [float(v) for v in values]
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "runs": vals}


def frames_per_crop(cfg: RunConfig, frame_rate: float) -> int:
    """Frames of a training crop (``data.max_seconds`` at the front-end's rate)."""
    return max(1, int(cfg.data.max_seconds * frame_rate))


def fake_batch(cfg: RunConfig, teacher, layers: Sequence[int]) -> dict:
    """One batch of the run's shape, in memory, as :class:`harness.data.loader.CachedBatches`
    yields it: ``feats (B, T, C)``, ``frame_lengths (B,)`` (all ``T``: a full crop),
    ``targets {j: (B, T, D_teacher)}`` for the teacher layers ``layers``; float32."""
    g = torch.Generator().manual_seed(BATCH_SEED)
    b, t = cfg.data.batch_size, frames_per_crop(cfg, teacher.frame_rate)
    c = int(teacher.frontend.out_dim)
    return {"feats": torch.randn(b, t, c, generator=g),
            "frame_lengths": torch.full((b,), t, dtype=torch.int64),
            "targets": {j: torch.randn(b, t, teacher.width, generator=g) for j in layers}}


def depth_run(cfg: RunConfig, teacher, depth: int) -> distill.Run:
    """A :class:`harness.distill.Run` holding a student of ``depth`` layers and its AdamW,
    built as the run builds them (``distill.build_student_and_optimizer``), fed cached
    features (no front-end), no run folder."""
    from harness.losses import OBJECTIVES

    device = distill.resolve_device(cfg.train.device)
    run = distill.Run(cfg, Path("."), None, "", device, distill.resolve_precision(cfg.train.precision, device),
                      stacking.Stages([depth], [cfg.train.steps]), teacher, cache=None, data=None,
                      loss_fn=OBJECTIVES.get(cfg.loss.objective))
    torch.manual_seed(cfg.train.seed)
    run.student, run.opt = distill.build_student_and_optimizer(run)
    run.student.frontend = None  # fed the cached front-end output
    run.student.train()
    return run


def _steps(run: distill.Run, batch: dict, n: int, clock: Callable[[], float]) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU seconds of each of ``n`` training steps."""
    matched = sorted(set(run.student.targets))
    lr = run.cfg.optim.lr
    wall, cpu = [], []
    for _ in range(n):
        distill.sync(run.device)
        t0, c0 = time.perf_counter(), clock()
        if distill.train_step(run, batch, matched, lr) is None:
            raise RuntimeError("bench stacking: a step-cost step gave a non-finite loss")
        distill.sync(run.device)
        wall.append(time.perf_counter() - t0)
        cpu.append(clock() - c0)
    return wall, cpu


class DepthCosts:
    """Training-step cost of each depth on an in-memory batch, one round at a time.

    Built once (a student and AdamW per depth, warmed up); :meth:`round` times every depth
    once, so a benchmark can spread its rounds between its end-to-end rounds and both see
    the same drift of a shared machine.

    Args:
        cfg: the run config (batch size, crop, student, loss, optimizer, device).
        teacher: the teacher (width, frame rate, front-end dim; never run here).
        depths: the depths to time.
        steps: timed steps per depth and round.
        warmup: untimed steps per depth first (thread pool, allocator, lazy inits).
    """

    def __init__(self, cfg: RunConfig, teacher, depths: Sequence[int], steps: int, warmup: int) -> None:
        self.depths, self.steps = list(depths), steps
        self.clock_name, self.clock = cpu_clock()
        self.runs = {d: depth_run(cfg, teacher, d) for d in self.depths}
        self.batches = {d: fake_batch(cfg, teacher, sorted(set(self.runs[d].student.targets))) for d in self.depths}
        for d in self.depths:
            _steps(self.runs[d], self.batches[d], warmup, self.clock)
        self.wall: dict = {d: [] for d in self.depths}
        self.cpu: dict = {d: [] for d in self.depths}
        self.extra: dict[str, tuple[distill.Run, dict]] = {}

    def add(self, name: str, run: distill.Run, batch: dict) -> None:
        """Also time ``run`` in every round (e.g. a student grown to the final depth, next
        to the fresh one of that depth: does growth leave a student slower per step?)."""
        self.extra[name] = (run, batch)
        self.wall[name], self.cpu[name] = [], []

    def round(self, r: int, log: Callable[[str], None] = print) -> None:
        """Time ``steps`` steps of every depth and added run (order reversed when ``r`` is odd)."""
        keys = self.depths + list(self.extra)
        for k in (keys if r % 2 == 0 else keys[::-1]):
            run, batch = self.extra[k] if k in self.extra else (self.runs[k], self.batches[k])
            w, c = _steps(run, batch, self.steps, self.clock)
            self.wall[k].append([1000 * x for x in w])
            self.cpu[k].append([1000 * x for x in c])
            log(f"  step cost {k if k in self.extra else f'depth {k}'} round {r}: "
                f"{statistics.mean(self.cpu[k][-1]):.1f} ms CPU, {statistics.mean(self.wall[k][-1]):.1f} ms wall per step")

    def _row(self, k) -> dict:
        return {"wall_ms": spread([statistics.mean(x) for x in self.wall[k]]),
                "cpu_ms": spread([statistics.mean(x) for x in self.cpu[k]]),
                "wall_ms_steps": self.wall[k], "cpu_ms_steps": self.cpu[k]}

    def rows(self) -> list[dict]:
        """One row per depth: ``depth``, ``wall_ms`` and ``cpu_ms`` (:func:`spread` over the
        rounds of the mean step), ``wall_ms_steps`` / ``cpu_ms_steps`` (every step)."""
        return [{"depth": d, **self._row(d)} for d in self.depths]

    def extra_rows(self) -> dict[str, dict]:
        """The added runs' rows (as :meth:`rows`), plus ``over_depth``: per round, the
        run's mean CPU step over that of the fresh student of its depth (:func:`spread`)."""
        out = {}
        for name, (run, _) in self.extra.items():
            d = len(run.student.layers)
            ratios = [statistics.mean(a) / statistics.mean(b) for a, b in zip(self.cpu[name], self.cpu.get(d, []))]
            out[name] = {"depth": d, **self._row(name), "over_depth": spread(ratios) if ratios else None}
        return out


def measure_depth_costs(cfg: RunConfig, teacher, depths: Sequence[int], steps: int, warmup: int,
                        repeats: int, log: Callable[[str], None] = print) -> list[dict]:
    """:class:`DepthCosts` with ``repeats`` rounds back to back; its :meth:`~DepthCosts.rows`."""
    costs = DepthCosts(cfg, teacher, depths, steps, warmup)
    for r in range(repeats):
        costs.round(r, log)
    return costs.rows()


def fit_cost(depths: Sequence[float], costs: Sequence[float]) -> dict:
    """Least squares ``cost = a * depth + b``.

    Args:
        depths: at least two distinct depths.
        costs: the measured cost of each (any unit; ``a`` and ``b`` come out in it).

    Returns:
        ``{"a", "b", "r2", "residuals"}`` (``residuals[i] = costs[i] - fit(depths[i])``;
        ``r2`` is 1.0 for an exact fit).

    Raises:
        ValueError: fewer than two distinct depths, or lengths that differ.
    """
    if len(depths) != len(costs):
        raise ValueError(f"fit_cost: {len(depths)} depths but {len(costs)} costs")
    if len(set(depths)) < 2:
        raise ValueError(f"fit_cost: need at least two distinct depths, got {list(depths)}")
    n = len(depths)
    mx, my = sum(depths) / n, sum(costs) / n
    sxx = sum((x - mx) ** 2 for x in depths)
    a = sum((x - mx) * (y - my) for x, y in zip(depths, costs)) / sxx
    b = my - a * mx
    residuals = [y - (a * x + b) for x, y in zip(depths, costs)]
    ss_tot = sum((y - my) ** 2 for y in costs)
    ss_res = sum(r * r for r in residuals)
    return {"a": a, "b": b, "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0, "residuals": residuals}


def schedule_cost(depths: Sequence[int], steps: Sequence[int], a: float, b: float) -> float:
    """``sum_s steps[s] * (a * depths[s] + b)``."""
    if len(depths) != len(steps):
        raise ValueError(f"schedule_cost: {len(depths)} depths but {len(steps)} step counts")
    return float(sum(n * (a * d + b) for d, n in zip(depths, steps)))


def fitted_speedup(depths: Sequence[int], steps: Sequence[int], a: float, b: float) -> float:
    """The fitted-model theory of a schedule: its final depth for all its steps (``none``)
    over the schedule, both priced by ``cost(depth) = a * depth + b``."""
    return schedule_cost([depths[-1]], [sum(steps)], a, b) / schedule_cost(depths, steps, a, b)


def _time(fn: Callable[[], None], n: int, repeats: int, clock: Callable[[], float]) -> dict:
    """:func:`spread` of the CPU milliseconds per call of ``fn`` (``n`` calls per repeat)."""
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        c0 = clock()
        for _ in range(n):
            fn()
        out.append(1000 * (clock() - c0) / n)
    return spread(out)


def time_pos_conv(cfg: RunConfig, teacher, width_run: distill.Run, n: int = 5, repeats: int = 3) -> dict:
    """Forward + backward CPU ms of the student's positional conv on a ``(B, T, width)``
    input that needs its gradient (as in training), the weight norm and GELU included:
    the path :class:`harness.student.PosConv` runs (``channels_last_ms``) and the
    ``F.conv1d`` formulation it replaced (``conv1d_ms``), interleaved."""
    conv = width_run.student.pos_conv
    if conv is None:
        return {}
    _, clock = cpu_clock()
    b, t = cfg.data.batch_size, frames_per_crop(cfg, teacher.frame_rate)
    x = torch.randn(b, t, conv.bias.shape[0], generator=torch.Generator().manual_seed(BATCH_SEED),
                    device=width_run.device, requires_grad=True)

    def new() -> None:
        conv(x).sum().backward()

    def ref() -> None:
        w = conv.weight()
        torch.nn.functional.gelu(pos_conv_reference(x, w, conv.bias, conv.kernel, conv.groups)).sum().backward()

    cl, c1 = [], []
    for _ in range(repeats):  # interleaved, so load drift hits both alike
        cl.append(_time(new, n, 1, clock)["median"])
        c1.append(_time(ref, n, 1, clock)["median"])
    return {"shape": {"batch": b, "frames": t, "width": int(conv.bias.shape[0]), "kernel": conv.kernel,
                      "groups": conv.groups},
            "channels_last_ms": spread(cl), "conv1d_ms": spread(c1)}


def time_teacher_forward(cfg: RunConfig, teacher, n: int = 2, repeats: int = 3) -> dict:
    """CPU ms per batch of what a live teacher adds to a step (no grad): the teacher's
    ``hidden_states`` on ``B`` waveforms of ``data.max_seconds`` (``teacher_ms``) and the
    student's frozen front-end copy on them (``frontend_ms``)."""
    _, clock = cpu_clock()
    device = distill.resolve_device(cfg.train.device)
    samples = int(cfg.data.max_seconds * 16000)
    g = torch.Generator().manual_seed(BATCH_SEED)
    wavs = (0.1 * torch.randn(cfg.data.batch_size, samples, generator=g)).to(device)
    lengths = torch.full((cfg.data.batch_size,), samples, dtype=torch.int64, device=device)

    def teacher_fwd() -> None:
        with torch.no_grad():
            teacher.hidden_states(wavs, lengths)

    def frontend_fwd() -> None:
        with torch.no_grad():
            teacher.frontend(wavs, lengths)

    return {"teacher_ms": _time(teacher_fwd, n, repeats, clock), "frontend_ms": _time(frontend_fwd, n, repeats, clock)}


def time_growths(cfg: RunConfig, teacher, stages: stacking.Stages,
                 warm_steps: int = 2) -> tuple[list[dict], distill.Run, dict]:
    """CPU ms of each growth of a schedule (:func:`harness.distill.grow_to`: the surgery and
    the AdamW state copy), and of the first and second steps after it (the first pays
    the allocator's and the kernels' warm-up at the new shapes), on in-memory batches.

    Returns:
        ``(rows, run, batch)``: one row per growth, and the grown run with its batch (for
        :meth:`DepthCosts.add`).
    """
    _, clock = cpu_clock()
    run = depth_run(cfg, teacher, stages.depths[0])
    run.stages = stages
    out = []
    _steps(run, fake_batch(cfg, teacher, sorted(set(run.student.targets))), warm_steps, clock)
    for s in range(1, len(stages)):
        run.stage = s
        c0 = clock()
        distill.grow_to(run, s)
        grow_ms = 1000 * (clock() - c0)
        batch = fake_batch(cfg, teacher, sorted(set(run.student.targets)))
        _, cpu = _steps(run, batch, 2, clock)
        out.append({"growth": s, "from_depth": stages.depths[s - 1], "to_depth": stages.depths[s],
                    "grow_ms": grow_ms, "first_step_ms": 1000 * cpu[0], "second_step_ms": 1000 * cpu[1]})
    return out, run, batch


def load_average() -> Optional[list[float]]:
    """The 1, 5 and 15 minute load averages (None where the OS has none)."""
    try:
        import os

        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None
