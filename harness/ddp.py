"""Data-parallel distillation: one run across several processes (``torch.distributed``).

Launched by an existing engine, never by the harness itself:

- ``torchrun --nproc-per-node N -m harness.cli distill ...`` for one run outside Ray (on
  several machines: ``--nnodes``, ``--node-rank``, ``--rdzv-endpoint``), or
- Ray Train's ``TorchTrainer`` inside a sweep (``resources: {workers: N}``:
  :mod:`harness.sweep.group`), which sets up the process group itself.

Backend ``nccl`` on GPUs, ``gloo`` on CPU. What stays the same as one process (and why a
2-rank run reproduces a 1-rank run of the same global batch up to floating-point
reduction order):

- ``data.batch_size`` is the **global** batch; each rank reads its contiguous
  ``batch_size / world`` slice of the batch a single process would draw at that step
  (:class:`harness.data.loader.CachedBatches` with ``shard``): disjoint reads, the same
  utterances, offsets and padding. Each rank's loss (a mean over its valid frames) is
  weighted by its share of the batch's frames times the world size, so the averaged
  gradient is the gradient of the global frame mean; the logged loss is that mean.
- The learning-rate schedule runs on the global step; every rank takes the same steps.
- Growth happens at the same step on every rank (the stage plan is the config's), with
  the same new weights (copy init, or the same seeded draws) and optimizer state; the DDP
  wrapper is rebuilt over the grown student and broadcasts rank 0's weights.
- Rank 0 alone writes the run folder (metrics, TensorBoard, checkpoints, student,
  summary) and runs the held-out evaluation; a resume reads ``train.pt`` on rank 0 and
  broadcasts it, so the other ranks need no shared file system.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Group:
    """This process's place in the data-parallel group."""

    rank: int
    world: int
    local_rank: int
    backend: str

    @property
    def main(self) -> bool:
        return self.rank == 0

    def describe(self) -> dict:
        return {"world_size": self.world, "backend": self.backend}


_GROUP: Optional[Group] = None


def current() -> Optional[Group]:
    """The group this process trains in (None: one process). Picks up a process group set
    up by an engine (Ray Train) when :func:`init_from_env` was not called."""
    global _GROUP
    if _GROUP is None and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        _GROUP = Group(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)),
                       dist.get_backend())
    return _GROUP


def launched() -> bool:
    """True when a launcher (torchrun) started this process as one of several ranks."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def init_from_env(device: str = "auto", timeout_s: float = 1800.0) -> Optional[Group]:
    """Join the process group torchrun describes (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
    ``MASTER_ADDR``/``PORT``); None when not launched as several ranks.

    The backend is ``nccl`` when the run's device is a GPU (``device`` auto with CUDA, or
    ``cuda``), else ``gloo``; each rank's GPU is ``cuda:LOCAL_RANK``."""
    global _GROUP
    if not launched():
        return None
    if not dist.is_initialized():
        gpu = torch.cuda.is_available() and device in ("auto", "cuda") or device.startswith("cuda")
        backend = "nccl" if gpu else "gloo"
        if gpu:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend, timeout=_dt.timedelta(seconds=timeout_s))
    _GROUP = None
    return current()


def shutdown() -> None:
    """Leave the process group (the end of a torchrun run)."""
    global _GROUP
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _GROUP = None


def device_of(group: Optional[Group], device: torch.device) -> torch.device:
    """Each rank's device: its own GPU (``cuda:LOCAL_RANK``) when the run is on CUDA."""
    if group is not None and device.type == "cuda":
        return torch.device("cuda", group.local_rank)
    return device


def shard(batch_size: int, group: Optional[Group]) -> Optional[tuple[int, int]]:
    """``(rank, world)`` for :class:`harness.data.loader.CachedBatches` (None: one process).

    Raises:
        ValueError: the global batch does not split evenly over the ranks.
    """
    if group is None:
        return None
    if batch_size % group.world:
        raise ValueError(f"data.batch_size {batch_size} (the global batch) does not split over {group.world} "
                         f"ranks: use a multiple of {group.world}")
    return group.rank, group.world


def broadcast(obj: Any, group: Optional[Group]) -> Any:
    """Rank 0's ``obj`` on every rank (any picklable object; tensors go through the CPU)."""
    if group is None:
        return obj
    box = [obj if group.main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def global_loss(loss: torch.Tensor, share: Optional[torch.Tensor], group: Optional[Group]) -> float:
    """The batch's loss over every rank: the sum of each rank's loss times its share of
    the frames (the NaN guard's one sync per step; every rank gets the same number)."""
    if group is None:
        return float(loss.detach())
    x = (loss.detach() * share).float().reshape(1)
    dist.all_reduce(x)
    return float(x)


class StudentStep(nn.Module):
    """The student's part of a training step as one ``forward`` (what DDP wraps): hidden
    states on the step's input, cut to the frames the targets have, projected.

    Returns ``(preds, t)``: the projections ``[(B, t, D_teacher)]`` and the frame count.
    """

    def __init__(self, student: nn.Module, encode) -> None:
        super().__init__()
        self.student = student
        self._encode = encode

    def forward(self, inputs: dict, t_targets: int):
        states, _ = self._encode(self.student, inputs)
        t = min(states[-1].shape[1], t_targets)
        return self.student.project([x[:, :t] for x in states]), t


def wrap(student: nn.Module, encode, group: Optional[Group], device: torch.device) -> nn.Module:
    """The step module over ``student``: wrapped in ``DistributedDataParallel`` in a group
    (its construction broadcasts rank 0's weights and buffers), plain otherwise. Call it
    again after every growth: DDP's buckets are built for one set of parameters."""
    step = StudentStep(student, encode)
    if group is None:
        return step
    ids = [device.index] if device.type == "cuda" else None
    # find_unused_parameters: a shallow stage leaves projection heads (and ramp-masked
    # layers) without a gradient for some steps
    return nn.parallel.DistributedDataParallel(step, device_ids=ids, find_unused_parameters=True,
                                               broadcast_buffers=False)


def checksum(module: nn.Module) -> torch.Tensor:
    """A float64 fingerprint of every parameter (tests compare it across ranks)."""
    with torch.no_grad():
        return torch.stack([p.detach().double().sum() + (p.detach().double() ** 2).sum()
                            for p in module.parameters()]).cpu()
