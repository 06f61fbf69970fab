"""The one base class of the harness' user-facing errors.

Bad input (a misspelled config key, a missing checkpoint, a corpus in the wrong layout) is
expected, not exceptional: every error raised for it derives from :class:`HarnessError`,
carries a one-line message that names what is wrong (a file, a key, a layout), and the CLI
turns it into ``harness: error: <message>`` with exit status 2 and no traceback
(``harness.cli.main`` is the one place that catches it). Library modules raise these
errors; they never import the CLI.

Most subclasses also derive from the builtin exception they were before (``ValueError``,
``KeyError``, ``RuntimeError``), so ``except ValueError`` in callers keeps working.
"""

from __future__ import annotations


class HarnessError(Exception):
    """An error caused by input or environment; its message is one line."""


class UserError(HarnessError):
    """Bad input that has no more specific class (a command-line value, a corpus layout)."""
