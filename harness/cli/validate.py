"""``harness validate`` (check YAML configs strictly) and ``harness ls`` (list the registries)."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.cli.common import Subparsers, command
from harness.errors import UserError
from harness.registries import all_registries
from harness.validate import validate_file


def cmd_validate(args: argparse.Namespace) -> int:
    for path in args.files:
        kind = validate_file(Path(path))
        print(f"ok  {path}  ({kind})")
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    regs = all_registries()
    wanted = args.what or list(regs)
    for name in wanted:
        if name not in regs:
            raise UserError(f"unknown registry {name!r}; choose from {', '.join(regs)}")
        reg = regs[name]
        print(f"{name} ({reg.kind}):")
        for item in reg.names():
            print(f"  {item}")
    return 0


def add_parser(sub: Subparsers) -> None:
    p = command(sub, "validate", cmd_validate, "check YAML configs (runs, sweeps, corpora) strictly",
                ["harness validate sweeps/base/tiny.yaml", "harness validate sweeps/**/*.yaml"])
    p.add_argument("files", nargs="+", help="YAML files")

    p = command(sub, "ls", cmd_ls, "list the registries (stacking variants, losses, tasks, teachers)",
                ["harness ls", "harness ls stacking"])
    p.add_argument("what", nargs="*", help="registry names (default: all)")
