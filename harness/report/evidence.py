"""From collected runs to the observations :mod:`harness.stats` compares, and its records.

One observation per finished-or-failed run of a table row and metric. The metrics, each
with the direction that is better:

| metric | from | better |
| --- | --- | --- |
| ``heldout.output_loss`` | ``summary.json`` ``heldout.output_loss`` | lower |
| ``heldout.probe_best`` | ``heldout.probe_best`` (frame-phone ridge probe accuracy) | higher |
| ``task.<name>`` | each SUPERB task's metric | its ``direction`` |
| ``superb_score`` | ``superb_score`` | higher |
| ``train_seconds``, ``train_cpu_seconds`` | training wall-clock / CPU seconds | lower |
| ``ttq.time``, ``ttq.cpu_time`` | time-to-quality (below) | lower |

Time-to-quality of a run: the training wall-clock (and CPU) seconds at which its held-out
curve first reaches the final held-out output loss of the compute-matched ``none``
(``none_cm``) of the same sweep, setting and seed (:func:`harness.stats.time_to_quality`).
A run that never reaches it has no value and says so (``why``); so does a run whose seed
has no ``none_cm``. Only sweeps with a ``none_cm`` arm get these metrics.

Rows of a main table are arms; each arm is compared with ``none``, ``none_cm`` and
``interleaved``. Rows of an ablation table are settings; each is compared with the
reference setting: the one whose values are the config defaults (``RunConfig()``), else
the first row.
"""

from __future__ import annotations

import math

import pandas as pd

from harness import runs as runs_io
from harness import stats
from harness.config import RunConfig, to_dict
from harness.report.collect import Results, varying_keys

METRIC_LABELS = {
    "heldout.output_loss": "held-out output loss",
    "heldout.probe_best": "held-out phone-probe accuracy (best layer)",
    "superb_score": "SUPERB score",
    "train_seconds": "train wall-clock",
    "train_cpu_seconds": "train CPU time",
    "ttq.time": "wall-clock time to none_cm's held-out loss",
    "ttq.cpu_time": "CPU time to none_cm's held-out loss",
}
RUN_METRICS = (("heldout.output_loss", "heldout_output_loss", "lower"),
               ("heldout.probe_best", "heldout_probe_best", "higher"),
               ("superb_score", "superb_score", "higher"),
               ("train_seconds", "train_seconds", "lower"),
               ("train_cpu_seconds", "train_cpu_seconds", "lower"))
# Keys whose change leaves the compute of a run unchanged: their ablations plot quality only.
SAME_COMPUTE_KEYS = frozenset({"loss.w", "loss.per_layer", "loss.objective", "stacking.init", "stacking.layer_map",
                               "stacking.optim_state", "stacking.offset"})


def metric_label(metric: str, tasks: pd.DataFrame | None = None) -> str:
    """How a sentence names a metric: ``held-out output loss``, ``PR PER``."""
    if metric.startswith("task."):
        name = metric[5:]
        m = ""
        if tasks is not None and not tasks.empty:
            hit = tasks.loc[tasks["task"] == name, "metric"]
            m = f" {str(hit.iloc[0]).upper() if str(hit.iloc[0]).lower() != 'accuracy' else 'accuracy'}" \
                if len(hit) else ""
        return f"{name.upper()}{m}"
    return METRIC_LABELS.get(metric, metric)


def _settings(runs: pd.DataFrame) -> pd.Series:
    """Run key -> the values of the sweep's non-arm varying keys, as a label ("" if none)."""
    keys = varying_keys(runs)
    if not keys:
        return pd.Series("", index=runs["key"], dtype=object)
    return pd.Series([", ".join(f"{k}={r.get(f'cfg.{k}')}" for k in keys) for _, r in runs.iterrows()],
                     index=runs["key"], dtype=object)


def time_to_quality_runs(results: Results) -> pd.DataFrame:
    """Per run with a held-out curve in a sweep with ``none_cm``: ``key``, ``ttq_time``,
    ``ttq_cpu`` (NaN when not reached), ``target`` (the none_cm loss), ``why`` (None, or why
    there is no value)."""
    cols = ["key", "ttq_time", "ttq_cpu", "target", "why"]
    out = []
    h = results.heldout
    if h.empty:
        return pd.DataFrame(columns=cols)
    for sweep in results.sweeps():
        sr = results.runs[(results.runs["sweep"] == sweep) & results.runs["ok"]]
        if "none_cm" not in set(sr["arm"]):
            continue
        setting = _settings(sr)
        finals = {}
        for _, r in sr[sr["arm"] == "none_cm"].iterrows():
            finals[(setting[r["key"]], r["seed"])] = r["heldout_output_loss"]
        for _, r in sr.iterrows():
            curve = h[h["key"] == r["key"]].sort_values("step")
            if curve.empty:
                continue
            target = finals.get((setting[r["key"]], r["seed"]), math.nan)
            if not math.isfinite(target):
                out.append([r["key"], math.nan, math.nan, target, "no compute-matched none of this seed"])
                continue
            hit = stats.time_to_quality(list(zip(curve["time"], curve["cpu_time"], curve["output_loss"])), target)
            if hit is None:
                out.append([r["key"], math.nan, math.nan, target, f"never reached none_cm's loss {target:.4g}"])
            else:
                out.append([r["key"], hit[0], hit[1], target, None])
    return pd.DataFrame(out, columns=cols)


def reference_row(table) -> str:
    """The ablation row the others are compared with: config defaults, else the first row."""
    defaults = runs_io.flatten(to_dict(RunConfig()))
    for label, vals in zip(table.index, table.group_values):
        keys = {k: v for k, v in vals.items() if k != "variant"}
        if keys and all(str(defaults.get(k)) == str(v) for k, v in keys.items()):
            return label
    return table.index[0]


def observations(results: Results, table, ttq: pd.DataFrame | None = None) -> list[dict]:
    """The observations of one stacking table (main: arms; ablation: settings).

    Args:
        table: a :class:`harness.report.tables.Table` (its ``members`` and ``kind``).
        ttq: :func:`time_to_quality_runs` (computed when None).
    """
    ttq = time_to_quality_runs(results) if ttq is None else ttq
    ttq = ttq.set_index("key") if not ttq.empty else ttq
    runs = results.runs.set_index("key")
    tasks = results.tasks
    has = {m: runs[col].notna().any() for m, col, _ in RUN_METRICS}
    out = []
    for label, keys in table.members.items():
        for key in keys:
            r = runs.loc[key]
            why_failed = None if r["ok"] else f"run {r['status']}"[:80]
            base = {"sweep": table.sweep, "setting": None, "arm": label, "seed": int(r["seed"])}
            for metric, col, direction in RUN_METRICS:
                if has[metric]:
                    v = r[col] if r["ok"] else math.nan
                    out.append({**base, "metric": metric, "direction": direction, "value": v,
                                "why": why_failed or ("not recorded" if not math.isfinite(v) else None)})
            tr = tasks[tasks["key"] == key]
            for _, t in tr.iterrows():
                out.append({**base, "metric": f"task.{t['task']}", "direction": t["direction"],
                            "value": t["value"] if r["ok"] else math.nan, "why": why_failed})
            if not ttq.empty and key in ttq.index:
                q = ttq.loc[key]
                for metric, col in (("ttq.time", "ttq_time"), ("ttq.cpu_time", "ttq_cpu")):
                    out.append({**base, "metric": metric, "direction": "lower", "value": q[col], "why": q["why"]})
    return out


def table_records(results: Results, table, ttq: pd.DataFrame | None = None) -> list[dict]:
    """The stats records of one table: every row's mean, and its comparisons (main: each arm
    against none, none_cm and interleaved; ablation: each setting against the reference)."""
    obs = observations(results, table, ttq)
    if table.kind == "main":
        return stats.compare(obs)
    ref = reference_row(table)
    return stats.compare(obs, pairs=lambda arms: [(a, ref) for a in arms if a != ref and ref in arms])


def all_records(results: Results, tables: list) -> list[dict]:
    """The records of every stacking table, in table order (what ``stats.json`` holds)."""
    ttq = time_to_quality_runs(results)
    out = []
    for t in tables:
        if t.kind in ("main", "ablation"):
            out += table_records(results, t, ttq)
    return out


def same_compute(keys: list[str]) -> bool:
    """True when every varying key of an ablation leaves the compute unchanged."""
    return bool(keys) and all(k in SAME_COMPUTE_KEYS for k in keys)
