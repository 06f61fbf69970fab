"""Where a result came from: git commit, hardware, library versions, timestamps."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
from pathlib import Path


def git_commit(cwd: str | Path | None = None) -> str:
    """The current commit hash (with ``-dirty`` when the tree has changes), or ``unknown``."""
    cwd = Path(cwd) if cwd is not None else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        if not sha:
            return "unknown"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd, capture_output=True, text=True, timeout=10,
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def load_average() -> float | None:
    """The machine's 1-minute load average (None where the OS has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def run_load(start: float | None) -> dict:
    """What a run records of the machine it shared: the threads it used, the cores, and the
    1-minute load average at its start and end (a load above the cores: something else ran,
    or the trials oversubscribed them; the report warns about such runs' times)."""
    try:
        import torch

        threads = torch.get_num_threads()
    except ImportError:
        threads = None
    return {"threads": threads, "cpu_count": os.cpu_count(), "start": start, "end": load_average()}


def oversubscribed(load: dict | None) -> bool:
    """True when a run's recorded load average (start or end) exceeded the machine's cores."""
    if not load or not load.get("cpu_count"):
        return False
    peak = max((v for v in (load.get("start"), load.get("end")) if isinstance(v, (int, float))), default=None)
    return peak is not None and peak > load["cpu_count"] + 0.5


def hardware() -> dict:
    """Device name, CPU count and library versions, for ``summary.json`` and benchmarks."""
    info = {
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["device"] = torch.cuda.get_device_name(0)
            info["cuda"] = torch.version.cuda
        else:
            info["device"] = f"cpu ({info['cpu']})"
    except ImportError:
        info["device"] = f"cpu ({info['cpu']})"
    return info


def now_iso() -> str:
    """The current UTC time, ISO 8601 with seconds."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def versions(packages: tuple[str, ...] = ()) -> dict:
    """Python, torch and numpy versions and the git commit, for benchmark JSON; plus the
    installed version of each of ``packages`` (``unknown`` when its metadata is missing)."""
    import numpy
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__,
            "numpy": numpy.__version__, "git_commit": git_commit()}
    for name in packages:
        try:
            from importlib.metadata import version

            info[name] = version(name)
        except Exception:  # noqa: BLE001 - metadata missing: report what is known
            info[name] = "unknown"
    return info
