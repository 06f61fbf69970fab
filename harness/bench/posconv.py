"""``harness bench posconv``: the student's positional conv, its path against ``F.conv1d``.

:class:`harness.student.PosConv` runs its grouped convolution as a channels-last
``conv2d`` (:func:`harness.student.pos_conv_channels_last`); fairseq's formulation is
``F.conv1d`` on the transposed input (:func:`harness.student.pos_conv_reference`). This
times both at given shapes in one process, interleaved (ABAB..., reversed every other
repeat), forward and backward separately, with the weight norm and the GELU included and
the input needing its gradient (as in training, where it flows back to the input
projection). CPU time per call on the calling thread (``time.thread_time``, one torch
thread unless ``threads`` says otherwise, then ``time.process_time``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from harness.bench.common import report_header
from harness.bench.stepcost import cpu_clock, load_average, spread
from harness.runs import write_json
from harness.student import PosConv, pos_conv_reference

#: (name, batch, frames, width, kernel, groups): the embedded student's crop batch and the paper's
SHAPES = (("embedded", 8, 150, 128, 32, 8), ("paper", 2, 200, 384, 128, 16))
PATHS = ("channels_last", "conv1d")


def _call(conv: PosConv, x: torch.Tensor, path: str) -> torch.Tensor:
    if path == "channels_last":
        return conv(x)
    return F.gelu(pos_conv_reference(x, conv.weight(), conv.bias, conv.kernel, conv.groups))


def time_paths(batch: int, frames: int, width: int, kernel: int, groups: int, repeats: int = 7, n: int = 5,
               clock: Optional[Callable[[], float]] = None) -> dict:
    """Forward, backward and total CPU ms per call of both paths at one shape.

    Returns:
        ``{path: {"forward_ms", "backward_ms", "total_ms"}}``, each a
        :func:`~harness.bench.stepcost.spread` over the repeats (mean of ``n`` calls each),
        plus ``max_abs_diff`` between the two paths' outputs.
    """
    clock = clock or cpu_clock()[1]
    torch.manual_seed(0)
    conv = PosConv(width, kernel, groups)
    x = torch.randn(batch, frames, width, requires_grad=True)
    raw = {p: {"forward_ms": [], "backward_ms": [], "total_ms": []} for p in PATHS}
    for p in PATHS:  # warm-up
        _call(conv, x, p).sum().backward()
    for r in range(repeats):
        for p in (PATHS if r % 2 == 0 else PATHS[::-1]):
            fwd = bwd = 0.0
            for _ in range(n):
                c0 = clock()
                s = _call(conv, x, p).sum()
                c1 = clock()
                s.backward()
                fwd, bwd = fwd + c1 - c0, bwd + clock() - c1
            raw[p]["forward_ms"].append(1000 * fwd / n)
            raw[p]["backward_ms"].append(1000 * bwd / n)
            raw[p]["total_ms"].append(1000 * (fwd + bwd) / n)
    with torch.no_grad():
        diff = float((_call(conv, x, "channels_last") - _call(conv, x, "conv1d")).abs().max())
    out = {p: {k: spread(v) for k, v in raw[p].items()} for p in PATHS}
    return {**out, "max_abs_diff": diff}


def bench_posconv(out: Optional[str | Path] = None, shapes: Sequence[tuple] = SHAPES, repeats: int = 7,
                  n: int = 5, threads: int = 1, log: Callable[[str], None] = print) -> dict:
    """Both paths at every shape; JSON (machine, versions, load average, every repeat) to ``out``."""
    if repeats < 1 or n < 1 or threads < 1:
        raise ValueError(f"repeats, calls and threads must be >= 1, got {repeats}, {n}, {threads}")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    start = load_average()
    clock_name = cpu_clock()[0]  # the clock time_paths uses, at the thread count it runs with
    results = []
    try:
        for name, *shape in shapes:
            r = time_paths(*shape, repeats=repeats, n=n)
            results.append({"shape": name, "batch": shape[0], "frames": shape[1], "width": shape[2],
                            "kernel": shape[3], "groups": shape[4], **r,
                            "speedup": r["conv1d"]["total_ms"]["median"] / r["channels_last"]["total_ms"]["median"]})
    finally:
        torch.set_num_threads(before)
    report = {**report_header("posconv"),  # hardware() sees the restored thread count; settings has the used one
              "settings": {"repeats": repeats, "calls": n, "threads": threads, "cpu_clock": clock_name},
              "load_average": {"start": start, "end": load_average()}, "results": results}
    if out:
        write_json(out, report)
    log(format_posconv(report))
    return report


def format_posconv(report: dict) -> str:
    """One line per shape and path: forward, backward, total CPU ms (median [min, max])."""
    s = report["settings"]
    lines = [f"positional conv, {s['threads']} thread(s), {s['cpu_clock']}, {s['repeats']} repeats x {s['calls']} "
             f"calls, load {report['load_average']['start']} -> {report['load_average']['end']}",
             f"{'shape':<9} {'path':<14} {'forward ms':>22} {'backward ms':>22} {'total ms':>22}"]

    def cell(x: dict) -> str:
        return f"{x['median']:.2f} [{x['min']:.2f}, {x['max']:.2f}]"

    for r in report["results"]:
        for p in PATHS:
            lines.append(f"{r['shape']:<9} {p:<14} {cell(r[p]['forward_ms']):>22} {cell(r[p]['backward_ms']):>22} "
                         f"{cell(r[p]['total_ms']):>22}")
        lines.append(f"{r['shape']:<9} conv1d / channels_last total = {r['speedup']:.2f}x "
                     f"(max |difference| {r['max_abs_diff']:.1e})")
    return "\n".join(lines)

