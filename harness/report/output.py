"""The report folder: the files a report owns, and the refusal to overwrite a committed one.

A report folder whose own files (:data:`OWNED`) are tracked by git, such as the reference
report ``reports/embedded/``, is a committed result: re-rendering into it would replace
what the repository records (and what the README's numbers are checked against) with
whatever this clone's results hold. :func:`refuse_committed` asks git which of those files
it tracks (``git ls-files`` run in the folder, so the repository that contains the folder
answers, wherever the command runs from) and refuses unless told to overwrite. A folder
outside any repository, or a machine without git, holds nothing committed.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Callable, Optional

from harness.errors import UserError

RUN_TABLE = "run_table.csv"  # one row per run (runs.csv is the sweep folder's: one row per run x task)
# what a report writes into its folder (set aside and replaced as a whole on a rerender)
OWNED = ("figures", "tables", "index.html", "report.pdf", RUN_TABLE, "stats.json")


def tracked_files(out: Path) -> list[str]:
    """The files of :data:`OWNED` under ``out`` that git tracks (paths relative to ``out``).

    Returns:
        An empty list when ``out`` does not exist, is in no git repository, or git is
        missing or fails.
    """
    if not out.is_dir():
        return []
    try:
        done = subprocess.run(["git", "-C", str(out), "ls-files", "-z", "--", *OWNED],
                              capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return []
    if done.returncode != 0:  # not a repository (128), or git refused the folder
        return []
    return [name for name in done.stdout.decode("utf-8", "replace").split("\0") if name]


def refuse_committed(out: Path, overwrite: bool) -> None:
    """Refuse to render into a folder whose report files git tracks, unless ``overwrite``.

    Raises:
        UserError: one line naming the folder, how many files are committed, and the two ways on.
    """
    if overwrite:
        return
    tracked = tracked_files(out)
    if tracked:
        shown = ", ".join(tracked[:3]) + (", ..." if len(tracked) > 3 else "")
        raise UserError(f"{out} holds a committed report ({len(tracked)} files tracked by git: {shown}): "
                        f"write this one elsewhere (--out reports/NAME), or pass --overwrite to replace it")


def parts_log(total: int, log: Optional[Callable[[str], None]]) -> Callable[[str], None]:
    """``say(part)``: one more of the report's ``total`` parts is done; a progress line
    with the ETA (:class:`harness.progress.Progress`) goes to ``log`` (None: silent)."""
    from harness.progress import Progress

    prog = Progress(total, "report", unit="part", tty=False)

    def say(part: str) -> None:
        text = f"{prog.tick(prog.done + 1)}: {part}"
        if log is not None:
            log(text)

    return say
