"""``harness export``: a run's student in another toolkit's format (:mod:`harness.export`).

:mod:`harness.export` is imported inside the command: it pulls in torch.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.cli.common import Subparsers, add_trust_option, apply_trust, command
from harness.errors import UserError


def cmd_export(args: argparse.Namespace) -> int:
    from harness.export import ExportError, describe, export_run

    apply_trust(args)
    try:
        result = export_run(Path(args.run_dir), Path(args.out), fmt=args.format, verify=not args.no_verify)
    except (ExportError, ValueError) as err:  # ValueError: not a harness student checkpoint
        raise UserError(f"{args.run_dir}: cannot export to {args.format}: {err}") from None
    print(describe(result))
    return 0


def add_parser(sub: Subparsers) -> None:
    p = command(sub, "export", cmd_export, "write a run's student in another toolkit's format (s3prl distiller)", [
        "harness export results/tiny/run1 --format s3prl --out distiller.ckpt",
        "# then: S3PRLUpstream('distiller_local', path_or_url='distiller.ckpt')",
    ])
    p.add_argument("run_dir", help="a finished run folder (with student.ckpt), or the checkpoint itself")
    p.add_argument("--format", choices=("s3prl",), default="s3prl",
                   help="checkpoint layout: s3prl = s3prl's distiller upstream")
    p.add_argument("--out", required=True, help="output checkpoint file")
    p.add_argument("--no-verify", action="store_true",
                   help="skip reloading the file through s3prl to compare hidden states")
    add_trust_option(p)
