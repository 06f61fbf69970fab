"""A data-parallel sweep trial: one run trained by a Ray Train group of workers.

With ``resources: {workers: N, cpu: C, gpus_per_worker: G}`` a trial's Tune driver (which
holds no resources itself) starts a ``TorchTrainer`` of N workers, each with C CPUs and G
GPUs; Ray Train sets up the process group (``gloo`` on CPU, ``nccl`` with GPUs), and every
worker runs :func:`harness.distill.run_distill` into the trial's run folder as one rank
(:mod:`harness.ddp`): rank 0 writes the folder. The driver keeps the run folder's lock for
the whole group. A worker that dies (kill -9, a lost node) fails the group (no automatic
restart); the trial is then recorded as failed because of the environment, and
``harness sweep --resume`` reruns it, resuming from the last ``train.pt``. The SUPERB
scoring and analysis run afterwards in the driver, as for a one-process trial.
"""

from __future__ import annotations

import os
from pathlib import Path


def _worker(config: dict) -> None:
    """One rank (a Ray Train worker): the trial's run, resumed from ``train.pt`` if any."""
    import ray.train
    import torch

    from harness.config import RunConfig, from_dict
    from harness.distill import run_distill

    trial = config["trial"]
    if trial.get("cwd"):
        os.chdir(trial["cwd"])
    threads = max(1, int(trial["group"]["cpu"]))
    torch.set_num_threads(threads)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    if trial["group"]["gpu"]:  # Ray gives each worker its own visible GPU(s)
        os.environ["LOCAL_RANK"] = str(ray.train.torch.get_device().index or 0)
    else:
        os.environ["LOCAL_RANK"] = str(ray.train.get_context().get_local_rank())
    cfg = from_dict(RunConfig, trial["config"], source=Path(trial["run_dir"]) / "trial.json")
    # a failed run (NaN, a bad value) is recorded in the folder by rank 0 and returns here
    run_distill(cfg, Path(trial["run_dir"]), resume=True, sweep=trial["sweep"], threads=threads, hold_lock=False)


class GroupFailed(RuntimeError):
    """The group stopped before the run recorded an end (a worker died): rerun to resume."""


def run_group(trial: dict, run_dir: Path) -> None:
    """Train the trial's run with its Ray Train group (called in the trial's Tune driver,
    which holds the run folder's lock).

    Raises:
        GroupFailed: the group stopped before rank 0 recorded the run's end (a worker
            was killed or raised): an environment failure, so ``--resume`` reruns it.
    """
    from harness import runs

    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    g = trial["group"]
    gpu = float(g["gpu"]) > 0
    trainer = TorchTrainer(
        _worker,
        train_loop_config={"trial": trial},
        torch_config=TorchConfig(backend="nccl" if gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=int(g["workers"]), use_gpu=gpu,
                                     resources_per_worker={"CPU": float(g["cpu"]), **({"GPU": float(g["gpu"])}
                                                                                        if gpu else {})}),
        run_config=RunConfig(name=f"{trial['run_id']}"[:80], storage_path=str(Path(run_dir).parent / "_train"),
                             failure_config=FailureConfig(max_failures=0)),
    )
    try:
        trainer.fit()
    except Exception as err:  # TrainingFailedError wraps the worker's error
        summary = runs.read_summary(run_dir) or {}
        if str(summary.get("status", "")).startswith("failed"):
            return  # rank 0 recorded why (and whether a rerun would fail again)
        text = [ln for ln in str(err).strip().splitlines() if ln.strip()] or [type(err).__name__]
        raise GroupFailed(f"the Ray Train group of {g['workers']} workers stopped: {text[-1][:300]} "
                          "(--resume continues from the last checkpoint)") from None
