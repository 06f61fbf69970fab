"""Speed ratios from ``harness bench stacking`` JSON (``harness report --bench PATH``).

Sweep trials run two at a time on a 2-core machine (one thread each), so their wall-clock
times are not clean speed ratios; the bench measures the variants side by side in one
process. Per variant the bench JSON holds (``docs/architecture.md``, "Statistics"):
``speedup_wall`` and ``speedup_cpu`` (each with its spread over repeats), ``theory_flop``
(the schedule's FLOP ratio), ``theory_fitted`` (from the per-depth costs it measured) and
``ratio_cpu_fitted`` = speedup_cpu / theory_fitted.

The reader is tolerant, because the format is young: the variants may sit under
``variants`` (a mapping or a list of rows with ``variant``), under ``rows``/``results``, or
at the top level; a value may be a number or a mapping with ``mean`` / ``median`` /
``value`` and spread keys (``std``, ``sd``, ``spread``, ``min``/``max``, ``ci_low``/
``ci_high``, ``iqr``); a ``<key>_spread`` / ``<key>_std`` beside a number is its spread.
Missing keys are n/a, never an error.
"""

from __future__ import annotations

import math
from pathlib import Path

from harness import runs as runs_io
from harness.config import ConfigError
from harness.report.collect import _num

KEYS = ("speedup_wall", "speedup_cpu", "theory_flop", "theory_fitted", "ratio_cpu_fitted")
LABELS = {"speedup_wall": "wall-clock speedup", "speedup_cpu": "CPU speedup", "theory_flop": "theory (FLOPs)",
          "theory_fitted": "theory (fitted per-depth costs)", "ratio_cpu_fitted": "CPU / fitted"}
ORDER = ("none", "top", "bottom", "middle", "interleaved")


def value(entry: dict, key: str) -> dict:
    """``{"value", "low", "high", "spread"}`` of one key of a variant's entry (NaN = absent).

    ``low``/``high`` is the range the bench gave (min/max or a CI); ``spread`` a std-like
    number when that is what it gave.
    """
    raw = entry.get(key)
    out = {"value": math.nan, "low": math.nan, "high": math.nan, "spread": math.nan}
    if isinstance(raw, dict):
        for k in ("mean", "median", "value", "estimate"):
            if k in raw:
                out["value"] = _num(raw[k])
                break
        for lo, hi in (("ci_low", "ci_high"), ("min", "max"), ("low", "high")):
            if lo in raw and hi in raw:
                out["low"], out["high"] = _num(raw[lo]), _num(raw[hi])
                break
        for k in ("std", "sd", "spread", "iqr", "half_width"):
            if k in raw and not isinstance(raw[k], (dict, list)):
                out["spread"] = _num(raw[k])
                break
        if isinstance(raw.get("spread"), dict):
            sub = value({"x": raw["spread"]}, "x")
            out["low"], out["high"] = sub["low"], sub["high"]
            out["spread"] = sub["spread"] if math.isfinite(sub["spread"]) else sub["value"]
    else:
        out["value"] = _num(raw)
        for suffix in ("_spread", "_std", "_sd"):
            if f"{key}{suffix}" in entry:
                sp = entry[f"{key}{suffix}"]
                if isinstance(sp, dict):
                    out["low"], out["high"] = _num(sp.get("min", sp.get("low"))), _num(sp.get("max", sp.get("high")))
                    out["spread"] = _num(sp.get("std", sp.get("sd")))
                elif isinstance(sp, (list, tuple)) and len(sp) == 2:  # harness bench stacking: [min, max]
                    out["low"], out["high"] = _num(sp[0]), _num(sp[1])
                else:
                    out["spread"] = _num(sp)
                break
        for lo, hi in ((f"{key}_min", f"{key}_max"), (f"{key}_low", f"{key}_high")):
            if lo in entry and hi in entry:
                out["low"], out["high"] = _num(entry[lo]), _num(entry[hi])
    return out


def _variants(data: dict) -> dict[str, dict]:
    for name in ("variants", "rows", "results", "by_variant"):
        block = data.get(name)
        if isinstance(block, dict):
            return {str(k): v for k, v in block.items() if isinstance(v, dict)}
        if isinstance(block, list):
            return {str(r["variant"]): r for r in block if isinstance(r, dict) and "variant" in r}
    return {str(k): v for k, v in data.items() if isinstance(v, dict) and any(x in v for x in KEYS)}


def read_bench(path: str | Path) -> dict:
    """``{"path", "variants": {variant: {key: value(...)}}, "machine", "settings"}``.

    Raises:
        FileNotFoundError: no such file.
        ConfigError: not a JSON mapping, or no variant with any of :data:`KEYS`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such bench file (written by `harness bench stacking`)")
    data, why = runs_io.load_json(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: bench file is {why or 'not a JSON mapping'}")
    found = _variants(data)
    variants = {v: {k: value(e, k) for k in KEYS} for v, e in found.items()}
    variants = {v: e for v, e in variants.items() if any(math.isfinite(x["value"]) for x in e.values())}
    if not variants:
        raise ConfigError(f"{path}: no variant with any of {', '.join(KEYS)} (is it `harness bench stacking` JSON?)")
    order = [v for v in ORDER if v in variants] + sorted(v for v in variants if v not in ORDER)
    machine = data.get("machine") or data.get("hardware") or {}
    return {"path": str(path), "variants": {v: variants[v] for v in order},
            "machine": machine if isinstance(machine, dict) else {}, "settings": data.get("settings") or {}}


def fmt(v: dict, decimals: int = 2) -> str:
    """``1.21 [1.18, 1.25]``, ``1.21 ± 0.02`` or ``1.21``; ``n/a`` when absent."""
    if not math.isfinite(v["value"]):
        return "n/a"
    text = f"{v['value']:.{decimals}f}"
    if math.isfinite(v["low"]) and math.isfinite(v["high"]):
        return f"{text} [{v['low']:.{decimals}f}, {v['high']:.{decimals}f}]"
    if math.isfinite(v["spread"]):
        return f"{text} ± {v['spread']:.{decimals}f}"
    return text


def bench_rows(bench: dict) -> list[dict]:
    """One row per variant for the report's bench table: ``variant`` and every key, formatted."""
    return [{"variant": v, **{k: fmt(e[k], 3 if k == "ratio_cpu_fitted" else 2) for k in KEYS}}
            for v, e in bench["variants"].items()]


def bench_sentences(bench: dict) -> list[str]:
    """Speed findings from the bench: measured against theory per variant (no ranking)."""
    parts = []
    for v, e in bench["variants"].items():
        if v == "none":
            continue
        bits = [f"{LABELS[k]} {fmt(e[k])}" for k in KEYS if math.isfinite(e[k]["value"])]
        if bits:
            parts.append(f"{v}: " + ", ".join(bits))
    if not parts:
        return []
    return [f"Speed, measured by `harness bench stacking` (variants side by side in one process; "
            f"{Path(bench['path']).name}; spread over repeats in brackets or after ±): " + "; ".join(parts) + "."]
