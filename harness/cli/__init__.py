"""``harness <command>``: a thin command line over the library.

One module per command group (``data``, ``teacher``, ``distill``, ``sweep``, ``evaluate``,
``report``, ``bench``, ``asr``, ``export``; ``validate`` and ``ls`` together), each with
``add_parser(sub)`` and ``cmd_*`` functions that parse arguments and call one library
function. Every user-facing error (:class:`harness.errors.HarnessError`, and a missing,
unreadable or misplaced file: ``FileNotFoundError``, ``PermissionError``,
``IsADirectoryError``, ``NotADirectoryError``) is a one-line message on stderr and exit
status 2, no traceback, because bad input (a misspelled key, a missing file) is expected,
not exceptional; :func:`main` is the one place that turns it into that message. Output
piped into a reader that stops early (``| head``) ends quietly with status 141, as a
Unix tool killed by SIGPIPE. The library never imports this package.
"""

from __future__ import annotations

import argparse
import os
import sys

from harness.cli import asr, bench, data, distill, evaluate, export, report, sweep, teacher, validate
from harness.cli.common import formatter
from harness.errors import HarnessError

EPILOG_MAIN = """examples:
  harness data build --profile tiny --out data/tiny
  harness data stats data/tiny
  harness validate sweeps/base/tiny.yaml
  harness ls
"""

# the order of the commands in ``harness --help``
COMMAND_MODULES = (validate, data, evaluate, sweep, teacher, report, export, distill, bench, asr)


def build_parser() -> argparse.ArgumentParser:
    """The ``harness`` parser: every command module's ``add_parser`` on one subparsers."""
    parser = argparse.ArgumentParser(
        prog="harness",
        description="Benchmark and ablate fast distillation of speech foundation models.",
        epilog=EPILOG_MAIN,
        formatter_class=formatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in COMMAND_MODULES:
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``harness`` console script.

    Returns:
        The exit status: the command's (0 = ok), 2 for a user-facing error (and for bad
        arguments, argparse's), 130 on Ctrl-C, 141 when stdout was closed early.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (HarnessError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as err:
        print(f"harness: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader of stdout is gone: send what is still buffered nowhere, so that the
        # interpreter's final flush does not fail (and print) once more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        print("harness: interrupted", file=sys.stderr)
        return 130
