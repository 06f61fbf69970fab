"""The one parser style of every ``harness`` command module.

Each module under :mod:`harness.cli` exposes ``add_parser(sub)``, which adds its commands to
the top-level subparsers ``sub`` with :func:`group` (a command group such as ``data``) and
:func:`command` (one command with its ``--help`` examples and the function it runs).
"""

from __future__ import annotations

import argparse
from typing import Callable

Subparsers = argparse._SubParsersAction  # what add_subparsers() returns (argparse has no public name)


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' line breaks and shows every option's default.

    Like ``argparse.ArgumentDefaultsHelpFormatter``, but only where a default says
    something: a help text that names its default already (``(default: the run's
    profile)``), a required option, a flag (off unless given) and an empty default
    (``None``, ``""``, ``[]``, which the help text explains) get nothing appended.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("(default" in text or not action.option_strings or action.required
                or isinstance(default, bool) or default in (None, "", [], argparse.SUPPRESS)):
            return text
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"


def formatter(prog: str) -> argparse.HelpFormatter:
    """Keep the examples' line breaks and show the defaults; wide enough for the options' names."""
    return _Formatter(prog, max_help_position=32)


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


TRUST_HELP = ("also load checkpoints that need pickle (original fairseq files, other tools'): that can "
              "run code from the file, so only for files you trust (= HARNESS_TRUST_CHECKPOINT=1)")


def add_trust_option(parser: argparse.ArgumentParser, help: str = TRUST_HELP) -> None:
    """``--trust-checkpoint``: the one way a command opts into pickle loading (:func:`apply_trust`)."""
    parser.add_argument("--trust-checkpoint", action="store_true", help=help)


def apply_trust(args: argparse.Namespace) -> None:
    """With ``--trust-checkpoint``, set ``HARNESS_TRUST_CHECKPOINT=1`` for this process and
    its children (Ray workers inherit it) before anything is loaded."""
    if args.trust_checkpoint:
        from harness.safeload import trust_checkpoints

        trust_checkpoints()
