"""Ranks of a data-parallel run started from a test (``torch.multiprocessing.spawn``): each
joins a gloo group and runs :func:`harness.distill.run_distill`, as torchrun or Ray Train
would start it, then leaves its rank's fingerprints in ``out/rank<r>.pt``."""

from __future__ import annotations

import os
from pathlib import Path


def rank_main(rank: int, world: int, port: int, cfg_dict: dict, run_dir: str, out: str) -> None:
    import torch
    import torch.distributed as dist

    from harness import ddp
    from harness.config import RunConfig, from_dict
    from harness.distill import run_distill

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    growth_sums = []

    import harness.distill as D

    grow = D.grow_to

    def grow_and_fingerprint(run, stage):  # every rank's weights and AdamW moments right after a growth
        grow(run, stage)
        moments = [v for st in run.opt.state.values() for v in st.values() if torch.is_tensor(v) and v.dim()]
        growth_sums.append((run.step, ddp.checksum(run.student), torch.stack([m.double().sum() for m in moments])))

    D.grow_to = grow_and_fingerprint
    try:
        summary = run_distill(from_dict(RunConfig, cfg_dict), Path(run_dir), resume=True)
        torch.save({"summary": summary, "growths": growth_sums}, Path(out) / f"rank{rank}.pt")
    finally:
        D.grow_to = grow
        ddp.shutdown()
