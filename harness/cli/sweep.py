"""``harness sweep``: a YAML grid of distill + evaluate trials (:mod:`harness.sweep`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.cli.common import TRUST_HELP, Subparsers, add_trust_option, apply_trust, command
from harness.sweep import dry_run, run_sweep
from harness.sweep.grid import check_suffix
from harness.sweep.run import TrialsFailed


def cmd_sweep(args: argparse.Namespace) -> int:
    check_suffix(args.suffix)
    apply_trust(args)
    extra = {"seeds": args.seeds, "overrides": args.set, "suffix": args.suffix,
             "tasks": [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None}
    if args.dry_run:
        print(dry_run(Path(args.file), recalibrate=args.recalibrate, local=args.local, **extra))
        return 0
    try:
        run_sweep(Path(args.file), resume=args.resume or args.retry_failed, address=args.address, local=args.local,
                  retry_failed=args.retry_failed, check=True, **extra)
    except TrialsFailed:
        return 1  # its summary line is printed already
    return 0


def add_parser(sub: Subparsers) -> None:
    p = command(sub, "sweep", cmd_sweep, "run a YAML grid of distill + evaluate trials (Ray Tune)", [
        "harness sweep sweeps/embedded/main.yaml --dry-run",
        "harness sweep sweeps/embedded/main.yaml",
        "harness sweep sweeps/embedded/main.yaml --resume      # after Ctrl-C or kill -9",
        "harness sweep sweeps/embedded/main.yaml --retry-failed  # rerun failed trials (NaN, config) too",
        "ray start --head && harness sweep sweeps/paper/main.yaml --address auto",
        "harness sweep sweeps/paper/main.yaml --trust-checkpoint  # an original fairseq teacher .pt",
    ])
    p.add_argument("file", help="sweep YAML")
    p.add_argument("--resume", action="store_true",
                   help="finish an interrupted sweep (finished trials are kept; trials that failed because of "
                        "the environment: disk, memory, missing or corrupt input, killed, are rerun)")
    p.add_argument("--retry-failed", action="store_true",
                   help="with --resume (implied): rerun every failed trial, deterministic failures (NaN, config) too")
    p.add_argument("--dry-run", action="store_true",
                   help="list the trials with time and disk estimates, priced by a short calibration on this "
                        "machine (about 20-40 s the first time; cached in the results folder)")
    p.add_argument("--recalibrate", action="store_true",
                   help="with --dry-run: measure the trial costs again instead of reading the cached calibration")
    p.add_argument("--address", default=None, help="existing Ray cluster (default: $RAY_ADDRESS or a local one)")
    p.add_argument("--local", action="store_true", help="run trials in this process, without Ray")
    p.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=None,
                   help="replace the file's seeds, e.g. 0 or 0,1 (default: the file's seeds)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="change every trial's run config (repeatable), e.g. --set train.steps=100 "
                   "(default: none)")
    p.add_argument("--suffix", default="",
                   help="append to the sweep name (results folder), e.g. -quick (default: none)")
    p.add_argument("--tasks", default=None,
                   help="replace the sweep's evaluate list, e.g. ks,ic,pr (default: the file's)")
    add_trust_option(p, TRUST_HELP[:-1] + ", which local Ray workers inherit; on a cluster, set it in the workers' "
                     "environment)")
