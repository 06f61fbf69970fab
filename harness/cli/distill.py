"""``harness distill``: one distillation run into a run folder (:mod:`harness.distill`).

:mod:`harness.distill` is imported inside the command: it pulls in torch.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.cli.common import Subparsers, add_trust_option, apply_trust, command
from harness.config import load_run_config


def cmd_distill(args: argparse.Namespace) -> int:
    from harness.distill import run_distill

    apply_trust(args)
    from harness.progress import Progress

    cfg = load_run_config(args.config, args.overrides)
    # one line per log interval (train.log_every) on a pipe, a live bar on a terminal
    prog = Progress(cfg.train.steps, "distill", start=None)

    def on_log(row: dict) -> None:
        extra = {k: row[k] for k in ("heldout_loss",) if row.get(k) is not None}
        prog.update(row["step"], depth=row.get("depth"), loss=row.get("loss"), **extra)

    try:
        summary = run_distill(cfg, Path(args.out), resume=not args.restart, on_log=on_log)
    finally:
        prog.close()
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
    ])
    p.add_argument("--config", required=True, help="run config YAML (e.g. sweeps/base/tiny.yaml)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides")
    p.add_argument("--out", required=True, help="run folder (its name is the run id)")
    p.add_argument("--restart", action="store_true", help="ignore a checkpoint in --out and start over")
    add_trust_option(p)
