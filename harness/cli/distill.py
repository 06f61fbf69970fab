"""``harness distill``: one distillation run into a run folder (:mod:`harness.distill`).

Under ``torchrun --nproc-per-node N -m harness.cli distill ...`` the run is data-parallel
over the N ranks (:mod:`harness.ddp`): rank 0 shows the progress and writes the folder.

:mod:`harness.distill` is imported inside the command: it pulls in torch.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.cli.common import Subparsers, add_trust_option, apply_trust, command
from harness.config import load_run_config
from harness.errors import UserError


def cmd_distill(args: argparse.Namespace) -> int:
    from harness import ddp
    from harness.distill import run_distill

    apply_trust(args)
    from harness.progress import Progress

    cfg = load_run_config(args.config, args.overrides)
    group = ddp.init_from_env(cfg.train.device)  # torchrun: one rank of a data-parallel run
    if group is not None and args.restart:
        ddp.shutdown()
        raise UserError("--restart under torchrun: remove the run folder instead (every rank would race to clear it)")
    # one line per log interval (train.log_every) on a pipe, a live bar on a terminal
    prog = Progress(cfg.train.steps, "distill", start=None) if group is None or group.main else None

    def on_log(row: dict) -> None:
        extra = {k: row[k] for k in ("heldout_loss",) if row.get(k) is not None}
        if prog is not None:
            prog.update(row["step"], depth=row.get("depth"), loss=row.get("loss"), **extra)

    try:
        summary = run_distill(cfg, Path(args.out), resume=not args.restart, on_log=on_log)
    finally:
        if prog is not None:
            prog.close()
        ddp.shutdown()
    if group is not None and not group.main:
        return 0 if summary["status"] == "ok" else 1
    losses = summary.get("final_losses") or {}
    loss = f"{losses['loss']:.4f}" if "loss" in losses else "n/a"
    print(f"{summary['status']}  {args.out}  {summary['steps']} steps  "
          f"{summary['train_seconds']:.1f} s  loss {loss}")
    return 0 if summary["status"] == "ok" else 1


def add_parser(sub: Subparsers) -> None:
    p = command(sub, "distill", cmd_distill, "one distillation run (stacking, L2L losses) into a run folder", [
        "harness distill --config sweeps/base/tiny.yaml --out results/tiny-demo",
        "harness distill --config sweeps/base/tiny.yaml stacking.variant=top train.steps=40 --out /tmp/r",
        "harness distill --config sweeps/base/embedded.yaml --out results/emb   # rerun resumes",
        "torchrun --nproc-per-node 2 -m harness.cli distill --config sweeps/base/tiny.yaml --out /tmp/ddp "
        "# data-parallel, 2 ranks",
    ])
    p.add_argument("--config", required=True, help="run config YAML (e.g. sweeps/base/tiny.yaml)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides")
    p.add_argument("--out", required=True, help="run folder (its name is the run id)")
    p.add_argument("--restart", action="store_true", help="ignore a checkpoint in --out and start over")
    add_trust_option(p)
