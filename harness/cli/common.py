"""The one parser style of every ``harness`` command module.

Each module under :mod:`harness.cli` exposes ``add_parser(sub)``, which adds its commands to
the top-level subparsers ``sub`` with :func:`group` (a command group such as ``data``) and
:func:`command` (one command with its ``--help`` examples and the function it runs).
"""

from __future__ import annotations

import argparse
from typing import Callable

Subparsers = argparse._SubParsersAction  # what add_subparsers() returns (argparse has no public name)


def formatter(prog: str) -> argparse.HelpFormatter:
    """Keep the examples' line breaks; wide enough for the options' names."""
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def group(sub: Subparsers, name: str, help: str) -> Subparsers:
    """Add the command group ``harness <name> <NAME_COMMAND>`` and return its subparsers."""
    parser = sub.add_parser(name, help=help)
    commands = parser.add_subparsers(dest=f"{name}_command", metavar=f"{name.upper()}_COMMAND")
    commands.required = True
    return commands


def command(sub: Subparsers, name: str, func: Callable[[argparse.Namespace], int], help: str,
            examples: list[str]) -> argparse.ArgumentParser:
    """Add one command that runs ``func(args)``; ``examples`` are shown under ``--help``."""
    parser = sub.add_parser(name, help=help, formatter_class=formatter,
                            epilog="examples:\n" + "\n".join(f"  {line}" for line in examples))
    parser.set_defaults(func=func)
    return parser
