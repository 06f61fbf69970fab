"""The one atomic file writer: a temporary file beside the target, then a rename; and
:func:`set_aside` / :func:`restore` for rewriting a set of entries all or nothing.

Below every other harness module (no harness imports), so that the data layer, the
checkpoint writers and :mod:`harness.runs` all write through it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Sequence


def atomic_write(path: str | Path, data: str | bytes | Callable[[Path], None], fsync: bool = False) -> Path:
    """Write ``path`` all at once: a temporary file beside it, then a rename.

    A reader never sees half a file, and a write that fails (or is killed) leaves the old
    file as it was; the temporary file is removed on failure.

    Args:
        path: the file to write; its folder is created.
        data: text, bytes, or a function that writes the temporary file given its path
            (``torch.save``, ``DataFrame.to_csv``).
        fsync: flush the file to disk before the rename (caches that must survive a crash).

    Returns:
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        if callable(data):
            data(tmp)
        else:
            with open(tmp, "wb" if isinstance(data, bytes) else "w") as fh:
                fh.write(data)
                if fsync:
                    fh.flush()
                    os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def set_aside(folder: Path, names: Sequence[str], prefix: str = ".previous-") -> Path:
    """Move ``folder``'s entries ``names`` (those that exist) into a new hidden folder inside
    it and return that folder: a rewrite then starts clean, and :func:`restore` puts the old
    entries back if it fails (delete the returned folder once it succeeded)."""
    aside = Path(tempfile.mkdtemp(prefix=prefix, dir=folder))
    for name in names:
        if (folder / name).exists():
            (folder / name).rename(aside / name)
    return aside


def restore(aside: Path, folder: Path, names: Sequence[str]) -> None:
    """Undo :func:`set_aside`: whatever a failed rewrite left under ``names`` is replaced by
    the set-aside entries; the hidden folder is removed."""
    for name in names:
        if (aside / name).exists():
            if (folder / name).is_dir():
                shutil.rmtree(folder / name)
            elif (folder / name).exists():
                (folder / name).unlink()
            (aside / name).rename(folder / name)
    shutil.rmtree(aside, ignore_errors=True)
