"""``harness bench ddp``: step time of one distillation run by rank count (data-parallel).

The same run (``sweeps/base/<profile>.yaml`` with the overrides; the same global batch and
steps) is trained, interleaved, ``repeats`` times in each arrangement:

- ``1x<t>``: one process with ``t`` torch threads (``harness distill``), for each ``t`` in
  ``threads`` (one thread; every core);
- ``<n>x1``: ``n`` ranks of one thread each, launched by ``torchrun`` (``gloo`` on CPU,
  ``nccl`` with ``--device cuda``), for each ``n`` in ``ranks``.

Step time is the run's training wall-clock (rank 0's clock: the gradient all-reduce
included, held-out evaluation and checkpoints not) over its steps. Scaling efficiency of
``n`` ranks is ``t(1x1) / (n * t(nx1))``: 1.0 when ``n`` ranks split the global batch with
no cost. Every figure is the median over the repeats with the min, max and raw values; the
load average before and after is recorded (trials must not share the cores with other work).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from harness import runs
from harness.bench.common import report_header, scratch
from harness.bench.stepcost import spread
from harness.provenance import load_average

ROOT = Path(__file__).resolve().parents[2]


def _launch(arrangement: tuple[int, int], cfg: Path, overrides: Sequence[str], out: Path) -> dict:
    ranks, threads = arrangement
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    args = ["-m", "harness.cli", "distill", "--config", str(cfg), *overrides, f"train.threads={threads}",
            "train.tensorboard=false", "--out", str(out)]
    if ranks > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks), "--max-restarts", "0",
               "--master-port", str(_free_port()), *args]
    else:
        cmd = [sys.executable, *args]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["?"]
        raise RuntimeError(f"bench ddp: {ranks}x{threads} failed: {tail[0][:300]}")
    s = json.loads((out / runs.SUMMARY).read_text())
    return {"step_ms": 1000 * s["train_seconds"] / s["steps"], "train_seconds": s["train_seconds"],
            "steps": s["steps"], "wall_seconds": time.perf_counter() - t0,
            "loss": (s.get("final_losses") or {}).get("loss"), "distributed": s.get("distributed")}


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bench_ddp(profile: str, out: str | Path, ranks: Sequence[int] = (2,), threads: Sequence[int] = (1,),
              repeats: int = 3, overrides: Sequence[str] = (), work_dir=None,
              log: Callable[[str], None] = print) -> dict:
    """Time the arrangements (see the module) and write ``out``.

    Returns:
        The JSON: the header, ``settings``, ``arrangements`` (per name: ``ranks``,
        ``threads``, ``step_ms`` (:func:`spread`), ``runs``), ``efficiency`` per rank count
        (``n`` > 1) from the per-repeat step times, ``load``.
    """
    cfg = ROOT / "sweeps" / "base" / f"{profile}.yaml"
    plan = [(1, t) for t in threads] + [(n, 1) for n in ranks if n > 1]
    if (1, 1) not in plan:
        plan.insert(0, (1, 1))
    load0 = load_average()
    results: dict[str, list[dict]] = {f"{n}x{t}": [] for n, t in plan}
    with scratch(work_dir, "harness-bench-ddp-") as tmp:
        for r in range(repeats):
            for n, t in (plan if r % 2 == 0 else plan[::-1]):  # interleaved: drift hits every arrangement
                name = f"{n}x{t}"
                res = _launch((n, t), cfg, overrides, Path(tmp) / f"{name}-r{r}")
                results[name].append(res)
                log(f"  {name} repeat {r}: {res['step_ms']:.1f} ms/step ({res['train_seconds']:.1f} s, "
                    f"loss {res['loss']})")
    base = [x["step_ms"] for x in results["1x1"]]
    payload = {
        **report_header("ddp"),
        "settings": {"profile": profile, "overrides": list(overrides), "ranks": list(ranks), "threads": list(threads),
                     "repeats": repeats},
        "arrangements": {name: {"ranks": int(name.split("x")[0]), "threads": int(name.split("x")[1]),
                                "step_ms": spread([x["step_ms"] for x in rs]), "runs": rs}
                         for name, rs in results.items()},
        "efficiency": {str(n): spread([b / (n * x["step_ms"]) for b, x in zip(base, results[f"{n}x1"])])
                       for n in ranks if n > 1},
        "load": {"before": load0, "after": load_average()},
    }
    runs.write_json(out, payload)
    log(f"[bench ddp] -> {out}")
    return payload


def format_ddp(res: dict) -> str:
    """The docs table of a ``bench ddp`` JSON: step time per arrangement and efficiency."""
    rows = ["| arrangement | step (median, min-max) | scaling efficiency |", "| --- | ---: | ---: |"]
    for name, a in res["arrangements"].items():
        s = a["step_ms"]
        eff = res["efficiency"].get(str(a["ranks"])) if a["ranks"] > 1 else None
        e = f"{eff['median']:.2f} ({eff['min']:.2f}-{eff['max']:.2f})" if eff else "-"
        who = f"{a['ranks']} rank{'s' if a['ranks'] > 1 else ''} x {a['threads']} thread{'s' if a['threads'] > 1 else ''}"
        rows.append(f"| {who} | {s['median']:.1f} ms ({s['min']:.1f}-{s['max']:.1f}) | {e} |")
    return "\n".join(rows)
