"""What every benchmark shares: the report's header and a scratch folder for its runs."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Optional

from harness.provenance import hardware, now_iso, versions


def report_header(benchmark: str, packages: tuple[str, ...] = ()) -> dict:
    """``benchmark``, ``date``, ``machine`` and ``versions`` (plus ``packages``' versions):
    the keys every bench JSON starts with."""
    return {"benchmark": benchmark, "date": now_iso(), "machine": hardware(), "versions": versions(packages)}


@contextlib.contextmanager
def scratch(work_dir: Optional[str | Path], prefix: str) -> Iterator[Path]:
    """``work_dir`` (kept), or a temporary folder removed afterwards, for a benchmark's runs."""
    if work_dir:
        yield Path(work_dir)
        return
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
