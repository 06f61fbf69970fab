"""The SUPERB score: per-task results rescaled between the fbank baseline and a reference.

    score = 1000 / |T| * sum_t (s_t - s_t(fbank)) / (s_t(ref) - s_t(fbank))

fbank scores 0 and the reference 1000; a model better than the reference on a task
scores above 1000 there. The formula is direction-aware: for a lower-is-better metric
(PER, WER) both numerator and denominator are negative when the model beats fbank, so the
ratio is again positive; a reference that is not strictly better than fbank in the
task's direction is an error (the task cannot be normalised).

When the test-set sizes are known (a reference scored by the harness, not published
numbers), a task enters the score only if the reference beats fbank by more than twice the
standard error of their difference, ``2 * sqrt(p_f (1 - p_f) / n_f + p_r (1 - p_r) / n_r)``
(binomial, with ``n`` = test utterances; for PER/WER that is conservative, since errors are
counted over many tokens per utterance). Otherwise the denominator is noise and one task
would swing the score by thousands; the task is left out with the reason in ``skipped``,
and its metric is still reported.

References by profile:

* ``embedded`` (and ``tiny``): the teacher scored by the same harness on the same corpus
  (its ``superb.json``), and fbank scored likewise.
* ``paper``: published numbers, :data:`PAPER_REFERENCE` (HuBERT Base, the paper's
  teacher) and :data:`PAPER_FBANK` (the SUPERB paper's FBANK row).
"""

from __future__ import annotations

import math

from harness.errors import HarnessError

# Published SUPERB numbers, as fractions (accuracy; PER/WER). Source: the SUPERB paper,
# Yang et al., "SUPERB: Speech processing Universal PERformance Benchmark", Interspeech 2021
# (arXiv 2105.01051), Table 3, as reproduced by the SUPERB team's leaderboard code
# (github.com/superbbenchmark/website-react, backend/utils.py, get_leaderboard_default(),
# rows "paper"/"Interspeech2021"; and superbbenchmark.github.io, src/data/public.json):
#   HuBERT Base: PR 5.41 PER, KS 96.30, IC 98.34, SID 81.42, ER 64.92, ASR 6.42 WER (no LM);
#     the same in every version of that code.
#   FBANK: PR 82.01, ASR 23.18 (stable); KS 8.63, IC 9.10, SID 8.5E-4 (percent, i.e. chance),
#     ER 35.39 as first published (leaderboard commit a95dd11, 2021-07). The leaderboard
#     later re-ran FBANK (commit 025458a, 2021-10) and now normalises with KS 41.38,
#     IC 9.65, SID 20.06, ER 48.24 (PR and ASR unchanged); the score here uses the first set.
# Checked against that code, not against the paper's PDF (not readable here).
PAPER_REFERENCE: dict[str, float] = {
    "pr": 0.0541, "ks": 0.9630, "ic": 0.9834, "sid": 0.8142, "er": 0.6492, "asr": 0.0642,
}
PAPER_FBANK: dict[str, float] = {
    "pr": 0.8201, "ks": 0.0863, "ic": 0.0910, "sid": 8.5e-6, "er": 0.3539, "asr": 0.2318,
}
PAPER_SOURCE = ("SUPERB paper (arXiv 2105.01051) Table 3, HuBERT Base and FBANK rows, as in the SUPERB "
                "leaderboard code (superbbenchmark/website-react backend/utils.py)")


class ScoreError(ValueError, HarnessError):
    """A task cannot be normalised (missing baseline, reference not better than fbank)."""


def task_score(value: float, fbank: float, ref: float, direction: str) -> float:
    """``1000 * (value - fbank) / (ref - fbank)`` for one task.

    Raises:
        ScoreError: ``ref`` is not strictly better than ``fbank`` in ``direction``.
    """
    if direction not in ("higher", "lower"):
        raise ScoreError(f"direction must be 'higher' or 'lower', got {direction!r}")
    gain = (ref - fbank) if direction == "higher" else (fbank - ref)
    if not gain > 0:
        raise ScoreError(f"reference {ref:.4g} is not better than fbank {fbank:.4g} "
                         f"({direction} is better)")
    own = (value - fbank) if direction == "higher" else (fbank - value)
    return 1000.0 * own / gain


def resolvable(fbank: float, ref: float, n_fbank: int, n_ref: int) -> tuple[bool, float]:
    """Is the ref-fbank gap larger than 2 standard errors of the difference? -> ``(ok, 2 * se)``."""
    def var(p: float, n: int) -> float:
        p = min(max(p, 0.0), 1.0)
        return p * (1.0 - p) / max(n, 1)

    two_se = 2.0 * math.sqrt(var(fbank, n_fbank) + var(ref, n_ref))
    return abs(ref - fbank) > two_se, two_se


def superb_score(values: dict[str, float], directions: dict[str, str], fbank: dict[str, float],
                 ref: dict[str, float], n: dict[str, tuple[int, int]] | None = None) -> dict:
    """SUPERB score over the tasks of ``values`` that have a baseline and a reference.

    Args:
        values: task -> the model's metric value (fraction).
        directions: task -> ``higher`` / ``lower``.
        fbank: task -> fbank's value on the same task.
        ref: task -> the reference's value.

    Returns:
        ``{"score", "tasks", "per_task", "skipped"}``: the mean of the per-task scores
        (each 0 = fbank, 1000 = reference); ``skipped`` maps each task left out to why.
        ``score`` is None when no task could be scored.
    """
    per_task, skipped = {}, {}
    for task, value in values.items():
        if value is None or (isinstance(value, float) and math.isnan(value)):
            skipped[task] = "no value"
        elif task not in fbank or fbank[task] is None:
            skipped[task] = "no fbank value"
        elif task not in ref or ref[task] is None:
            skipped[task] = "no reference value"
        elif n and task in n and not resolvable(fbank[task], ref[task], *n[task])[0]:
            skipped[task] = (f"reference {ref[task]:.4g} is not clearly better than fbank {fbank[task]:.4g} "
                             f"(gap {abs(ref[task] - fbank[task]):.3g} <= 2 standard errors "
                             f"{resolvable(fbank[task], ref[task], *n[task])[1]:.3g}); reported, not scored")
        else:
            try:
                per_task[task] = task_score(value, fbank[task], ref[task], directions[task])
            except ScoreError as err:
                skipped[task] = str(err)
    return combine(per_task, skipped)


def combine(per_task: dict[str, float], skipped: dict[str, str]) -> dict:
    """The SUPERB score of per-task scores: their mean (None when no task was scored).

    Args:
        per_task: task -> its score (0 = fbank, 1000 = reference).
        skipped: task -> why it was left out.

    Returns:
        ``{"score", "tasks", "per_task", "skipped"}`` as :func:`superb_score` returns.
    """
    score = sum(per_task.values()) / len(per_task) if per_task else None
    return {"score": score, "tasks": sorted(per_task), "per_task": per_task, "skipped": skipped}


def sizes_of(superb: dict) -> dict[str, int]:
    """Test-set sizes ``n`` of a ``superb.json`` payload's scored tasks."""
    return {name: int(res["n"]) for name, res in superb.get("tasks", {}).items() if res.get("n")}


def values_of(superb: dict) -> tuple[dict[str, float], dict[str, str]]:
    """Task values and directions of a ``superb.json`` payload (failed tasks left out)."""
    values, dirs = {}, {}
    for name, res in superb.get("tasks", {}).items():
        if res.get("status", "ok") == "ok" and res.get("value") is not None:
            values[name], dirs[name] = float(res["value"]), res["direction"]
    return values, dirs
