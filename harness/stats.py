"""Paired-seed comparisons and 95% confidence intervals (scipy.stats) -> ``stats.json``.

The statistics contract (``docs/architecture.md``, "Statistics"): a report folder holds
``stats.json``, a list of records, one per comparison. Two designs:

``paired`` (two arms, paired by seed)::

    {"sweep": "main", "setting": null, "metric": "heldout.output_loss", "direction": "lower",
     "arms": ["interleaved", "none"], "design": "paired", "level": 0.95,
     "n": 3,                          # pairs: seeds with a finite value in both arms
     "estimate": -0.012,              # mean over pairs of (first - second)
     "ci_low": -0.020, "ci_high": -0.004, "half_width": 0.008,   # t-interval, n-1 df
     "p": 0.01,                       # two-sided paired t-test (scipy.stats.ttest_rel)
     "resolved": true,                # the CI excludes 0
     "mean_second": 1.04, "relative": -0.0115,   # estimate / |mean of the second arm| over the pairs
     "sd": 0.003,                     # std (ddof 1) of the paired differences
     "seeds": [0, 1, 2],              # the seeds paired
     "excluded": [{"arm": "top", "seed": 2, "why": "no value"}],  # a seed missing in one arm
     "note": null}                    # why a CI is absent or degenerate

``mean`` (one arm): ``arms: [arm]``, ``estimate`` = the arm's mean over seeds, its t-interval,
``sd``, ``n``, ``seeds``, ``excluded``; ``p`` is null and ``resolved`` false (nothing is
compared).

Edge cases, decided once here:

- ``n < 2``: no spread, so no interval: ``ci_low``/``ci_high``/``half_width``/``p`` null,
  ``resolved`` false, ``note`` says why ("one pair: no spread, no interval").
- zero spread with ``n >= 2`` (every paired difference equal, e.g. a quantity that does not
  depend on the seed): the t-interval's limit is the point ``[d, d]``; ``p`` = 0 if
  ``d != 0`` else 1; ``resolved`` = ``d != 0``; ``note`` says "zero spread". ``ttest_rel``
  itself returns NaN there, which is why this case is handled before calling it.
- a non-finite value (not measured, target never reached) is not a value: the seed drops
  out, listed in ``excluded`` with its reason, never silently.

Time-to-quality: :func:`time_to_quality` interpolates a held-out curve linearly between
evaluation points to the first time it reaches a target loss (None when it never does).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Iterable, Mapping, Optional, Sequence

import numpy as np
from scipy import stats as st

from harness.fsio import atomic_write

LEVEL = 0.95
DESIGNS = ("paired", "mean")
RECORD_KEYS = ("sweep", "setting", "metric", "direction", "arms", "design", "level", "n", "estimate", "ci_low",
               "ci_high", "half_width", "p", "resolved", "mean_second", "relative", "sd", "seeds", "excluded",
               "note")
# Comparison order: every arm against these references, first to last (arms.md: "none" at
# equal steps, the compute-matched "none_cm", and the paper's method).
REFERENCES = ("none", "none_cm", "interleaved")


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _interval(values: np.ndarray) -> dict:
    """Mean and t-interval of ``values`` (finite, 1-D); the edge cases of the module docstring."""
    n = int(values.size)
    out = {"n": n, "estimate": None, "ci_low": None, "ci_high": None, "half_width": None, "sd": None,
           "p": None, "note": None}
    if n == 0:
        out["note"] = "no value"
        return out
    mean = float(values.mean())
    out["estimate"] = mean
    if n < 2:
        out["note"] = "one value: no spread, no interval"
        return out
    sd = float(values.std(ddof=1))
    out["sd"] = sd
    if sd == 0.0 or not math.isfinite(sd):
        out.update(ci_low=mean, ci_high=mean, half_width=0.0, p=0.0 if mean != 0 else 1.0,
                   note=f"zero spread over {n} values: the interval is the point itself")
        return out
    half = float(st.t.ppf(0.5 + LEVEL / 2, n - 1) * sd / math.sqrt(n))
    out.update(ci_low=mean - half, ci_high=mean + half, half_width=half)
    out["p"] = float(st.ttest_1samp(values, 0.0).pvalue)
    return out


def mean_ci(values: Iterable[float]) -> dict:
    """One arm's mean with its 95% t-interval over the finite values.

    Returns:
        ``{"n", "estimate", "ci_low", "ci_high", "half_width", "sd", "note"}`` (None where
        undefined: see the module docstring).
    """
    v = np.asarray([x for x in values if _finite(x)], dtype=float)
    out = _interval(v)
    out.pop("p")
    return out


def paired(first: Mapping[int, float], second: Mapping[int, float]) -> dict:
    """Paired comparison of two arms over the seeds both have (first minus second).

    Args:
        first, second: seed -> value (NaN / None = not measured: that seed drops out).

    Returns:
        The numeric fields of a ``paired`` record: ``n``, ``estimate``, ``ci_low``,
        ``ci_high``, ``half_width``, ``sd``, ``p``, ``resolved``, ``mean_second``,
        ``relative``, ``seeds``, ``note``. ``p`` is the two-sided paired t-test
        (``scipy.stats.ttest_rel``; equal to the one-sample test of the differences).
    """
    seeds = sorted(s for s in first if s in second and _finite(first[s]) and _finite(second[s]))
    a = np.asarray([first[s] for s in seeds], dtype=float)
    b = np.asarray([second[s] for s in seeds], dtype=float)
    out = _interval(a - b)
    if out["n"] >= 2 and out["sd"]:
        out["p"] = float(st.ttest_rel(a, b).pvalue)
    if out["n"] == 1:
        out["note"] = "one pair: no spread, no interval"
    elif out["n"] == 0:
        out["note"] = "no seed with a value in both arms"
    out["resolved"] = bool(out["ci_low"] is not None and (out["ci_low"] > 0 or out["ci_high"] < 0))
    ms = float(b.mean()) if b.size else None
    out["mean_second"] = ms
    out["relative"] = out["estimate"] / abs(ms) if out["estimate"] is not None and ms else None
    out["seeds"] = [int(s) for s in seeds]
    return out


def reference_pairs(arms: Sequence[str]) -> list[tuple[str, str]]:
    """Each arm against ``none``, then against ``none_cm``, then against ``interleaved``
    (those present), each unordered pair once, in the first orientation met."""
    out, seen = [], set()
    for ref in REFERENCES:
        if ref not in arms:
            continue
        for a in arms:
            if a != ref and frozenset((a, ref)) not in seen:
                seen.add(frozenset((a, ref)))
                out.append((a, ref))
    return out


def _values(obs: Sequence[dict], arm: str) -> tuple[dict[int, float], list[dict]]:
    """seed -> value of one arm, and the seeds without a value (with the reason)."""
    vals, excluded = {}, []
    for o in obs:
        if o["arm"] != arm:
            continue
        v = o.get("value")
        if _finite(v):
            vals[int(o["seed"])] = float(v)
        else:
            excluded.append({"arm": arm, "seed": int(o["seed"]), "why": o.get("why") or "no value"})
    return vals, excluded


def compare(observations: Iterable[dict], pairs: Optional[Callable[[list[str]], list[tuple[str, str]]]] = None
            ) -> list[dict]:
    """Every ``mean`` and ``paired`` record of a set of observations.

    Args:
        observations: one dict per run and metric: ``sweep``, ``setting`` (None, or the
            ablation setting the arms share), ``arm``, ``seed``, ``metric``, ``direction``
            (``higher`` / ``lower``), ``value`` (None / NaN = not measured) and optionally
            ``why`` (the reason it is missing, e.g. "never reached the target").
        pairs: arms present -> the (first, second) pairs to compare; default
            :func:`reference_pairs`.

    Returns:
        Records (see the module docstring), grouped by sweep, setting and metric in the
        order first met; within each, the mean records (arms in order met), then the
        paired ones.
    """
    pairs = pairs or reference_pairs
    groups: dict[tuple, list[dict]] = {}
    for o in observations:
        groups.setdefault((o["sweep"], o.get("setting"), o["metric"]), []).append(o)
    records = []
    for (sweep, setting, metric), obs in groups.items():
        direction = obs[0].get("direction")
        arms = list(dict.fromkeys(o["arm"] for o in obs))
        base = {"sweep": sweep, "setting": setting, "metric": metric, "direction": direction, "level": LEVEL}
        for arm in arms:
            vals, excluded = _values(obs, arm)
            rec = {**base, "arms": [arm], "design": "mean", **mean_ci(vals.values()), "p": None,
                   "resolved": False, "mean_second": None, "relative": None, "seeds": sorted(vals),
                   "excluded": excluded}
            records.append(rec)
        for a, b in pairs(arms):
            va, xa = _values(obs, a)
            vb, xb = _values(obs, b)
            res = paired(va, vb)
            excluded = xa + xb
            excluded += [{"arm": b, "seed": s, "why": "no run of this seed"} for s in sorted(va)
                         if s not in vb and not any(x["seed"] == s and x["arm"] == b for x in xb)]
            excluded += [{"arm": a, "seed": s, "why": "no run of this seed"} for s in sorted(vb)
                         if s not in va and not any(x["seed"] == s and x["arm"] == a for x in xa)]
            if excluded and res["n"] >= 1:
                dropped = sorted({x["seed"] for x in excluded})
                res["note"] = ((res["note"] + "; ") if res["note"] else "") + \
                    f"seed(s) {', '.join(map(str, dropped))} not paired (missing in one arm)"
            records.append({**base, "arms": [a, b], "design": "paired", **res, "excluded": excluded})
    return [{k: r.get(k) for k in RECORD_KEYS} for r in records]


def time_to_quality(points: Sequence[tuple[float, float, float]], target: float) -> Optional[tuple[float, float]]:
    """Training wall-clock and CPU seconds at which a held-out curve first reaches ``target``.

    Args:
        points: ``(time, cpu_time, loss)`` per evaluation, in training order (time = training
            seconds so far, evaluation excluded).
        target: the loss to reach (lower is better).

    Returns:
        ``(time, cpu_time)`` linearly interpolated between the last evaluation above the
        target and the first at or below it (the first evaluation's times when it is already
        there); None when the curve never reaches it.
    """
    prev = None
    for t, c, loss in points:
        if not (_finite(t) and _finite(loss)):
            continue
        c = c if _finite(c) else math.nan
        if loss <= target:
            if prev is None or prev[2] == loss:
                return float(t), float(c)
            frac = (prev[2] - target) / (prev[2] - loss)
            return float(prev[0] + frac * (t - prev[0])), float(prev[1] + frac * (c - prev[1]))
        prev = (t, c, loss)
    return None


def _clean(x):
    """JSON-safe: NaN and infinities become null (``json`` would write invalid ``NaN``)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, np.generic):
        return _clean(x.item())
    return x


def check_record(rec: dict) -> list[str]:
    """What is wrong with one record (empty when it follows the contract)."""
    bad = [f"missing {k}" for k in RECORD_KEYS if k not in rec]
    if rec.get("design") not in DESIGNS:
        bad.append(f"design {rec.get('design')!r}")
    arms = rec.get("arms")
    if not isinstance(arms, list) or len(arms) != (2 if rec.get("design") == "paired" else 1):
        bad.append(f"arms {arms!r}")
    if rec.get("resolved") and not (_finite(rec.get("ci_low")) and _finite(rec.get("ci_high"))):
        bad.append("resolved without an interval")
    if _finite(rec.get("ci_low")) and _finite(rec.get("ci_high")) and rec["ci_low"] > rec["ci_high"]:
        bad.append("ci_low > ci_high")
    return bad


def write_stats(path: str | Path, records: list[dict]) -> Path:
    """Write ``stats.json`` (a JSON list of records) atomically.

    Raises:
        ValueError: a record breaks the contract (:func:`check_record`).
    """
    import json

    for r in records:
        bad = check_record(r)
        if bad:
            raise ValueError(f"stats record {r.get('metric')} {r.get('arms')}: {'; '.join(bad)}")
    return atomic_write(path, json.dumps(_clean(records), indent=1, allow_nan=False) + "\n")


def read_stats(path: str | Path) -> list[dict]:
    """Read ``stats.json``; records that break the contract raise.

    Raises:
        ValueError: not a JSON list, or a record breaks the contract.
    """
    import json

    data = json.loads(Path(path).read_text())
    if not isinstance(data, list):
        raise ValueError(f"{path}: stats.json is not a JSON list")
    for r in data:
        bad = check_record(r) if isinstance(r, dict) else ["not a mapping"]
        if bad:
            raise ValueError(f"{path}: record {r!r:.80}: {'; '.join(bad)}")
    return data


# ----------------------------------------------------------------------------- headline table

HEADLINE_PAIRS = (("interleaved", "none"), ("interleaved", "none_cm"), ("top", "interleaved"),
                  ("middle", "interleaved"), ("top", "none"), ("middle", "none"), ("none_cm", "none"))


def headline_markdown(records: list[dict], sweep: str, metric: str, reference: str = "none",
                      pairs: tuple = HEADLINE_PAIRS, digits: int = 4) -> str:
    """A markdown table of the paired records of ``sweep`` on ``metric`` (README, issue
    notes): estimate, 95% CI, its half-width as a percentage of ``reference``'s mean, p,
    resolved. Only records present in ``records`` are listed; nothing is computed here.
    """
    ref = next((r for r in records if r.get("sweep") == sweep and r["metric"] == metric
                and r["design"] == "mean" and r["arms"] == [reference]), None)
    lines = [f"| {metric}: first - second | n | estimate | 95% CI | half-width / {reference} mean | p | resolved |",
             "| --- | ---: | ---: | --- | ---: | ---: | --- |"]

    def f(x):
        return "n/a" if x is None else f"{x:+.{digits}f}"

    for a, b in pairs:
        r = next((r for r in records if r.get("sweep") == sweep and r["metric"] == metric
                  and r["design"] == "paired" and r["arms"] == [a, b]), None)
        if r is None:
            continue
        rel = "n/a" if (r["half_width"] is None or not ref or not ref["estimate"]) else \
            f"{100 * r['half_width'] / abs(ref['estimate']):.2f} %"
        p = "n/a" if r["p"] is None else f"{r['p']:.3g}"
        lines.append(f"| {a} - {b} | {r['n']} | {f(r['estimate'])} | [{f(r['ci_low'])}, {f(r['ci_high'])}] | {rel} | "
                     f"{p} | {'yes' if r['resolved'] else 'not resolved'} |")
    if ref:
        lines.append("")
        lines.append(f"{reference}: mean {ref['estimate']:.{digits}f} (n = {ref['n']}).")
    return "\n".join(lines)
