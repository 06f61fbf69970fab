"""Peak CPU memory of one model's training step, measured in a fresh subprocess (tracemalloc
does not see torch's allocator; ``VmHWM`` of a new process does)."""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Optional

import torch

from harness.bench.models import ThroughputSettings, _build, make_batch, make_step

# ----------------------------------------------------------------------------- CPU memory probe


def _proc_status_kib(field_name: str) -> Optional[int]:
    """A ``/proc/self/status`` field in KiB (``VmRSS``, ``VmHWM``), or None off Linux."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset this process' peak RSS to its current RSS (Linux ``clear_refs`` 5)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _memory_child(payload: str) -> None:
    """Entry point of the memory subprocess: build one model, train a few steps, print
    ``{"base_rss", "peak_rss", "delta_rss", "source"}`` (bytes) as the last stdout line.

    The peak is ``VmHWM`` (this process' own high-water mark, reset to the current RSS
    after building). ``ru_maxrss`` is only the fallback: Linux carries it over from the
    parent across fork + exec, so in a subprocess of a big parent it reads the parent's peak.
    """
    args = json.loads(payload)
    s = ThroughputSettings(**args["settings"])
    if s.threads:
        torch.set_num_threads(s.threads)
    device = torch.device("cpu")
    model = _build(args["model"], s, device)
    batch = make_batch(s, device)
    step = make_step(args["model"], model, s, batch, device)
    if _proc_status_kib("VmHWM") is not None:
        source = "VmHWM (reset after build)" if _reset_peak_rss() else "VmHWM"
        base = _proc_status_kib("VmRSS") * 1024
    else:
        source = "ru_maxrss"
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    for _ in range(max(2, s.warmup)):  # step 1 allocates the AdamW moments
        step()
    if source.startswith("VmHWM"):
        peak = _proc_status_kib("VmHWM") * 1024
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"base_rss": base, "peak_rss": peak, "delta_rss": peak - base, "source": source}))


def cpu_peak_memory(name: str, s: ThroughputSettings, timeout: float = 1200.0) -> dict:
    """Peak resident memory of ``name``'s training step, in a fresh subprocess.

    Returns:
        ``{"base_rss", "peak_rss", "delta_rss"}`` bytes: after building the model and the
        batch, the peak over two training steps, and their difference (the step's own
        activations, gradients and optimizer state).
    """
    root = str(Path(__file__).resolve().parents[2])  # the folder holding harness/
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    payload = json.dumps({"model": name, "settings": dataclasses.asdict(s)})
    code = "import sys; from harness.bench.memory import _memory_child; _memory_child(sys.argv[1])"
    proc = subprocess.run([sys.executable, "-c", code, payload], capture_output=True, text=True,
                          env=env, timeout=timeout)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"memory probe for {name} failed: {tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
