"""Task metrics: accuracy, word error rate (WER) and phone error rate (PER).

Error rates are corpus-level, as in SUPERB: total edits (substitutions + deletions +
insertions) over total reference tokens, computed by ``jiwer`` on whitespace-separated
tokens (words for WER, phone symbols for PER). Fractions, not percent.

Text normalisation for ASR (applied to references and, implicitly, to the character
vocabulary, so hypotheses are already normal): Unicode NFKC, lower case, every character
that is not a letter, a digit or an apostrophe becomes a space, runs of spaces collapse,
leading/trailing spaces are stripped. ``"Hello, World!  It's"`` -> ``"hello world it's"``.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Sequence

import jiwer

_NON_WORD = re.compile(r"[^\w']+|_")


def normalize_text(text: str) -> str:
    """Normalise a transcript for WER (see the module docstring)."""
    text = unicodedata.normalize("NFKC", text).lower()
    return " ".join(_NON_WORD.sub(" ", text).split())


def error_rate(refs: Sequence[Sequence[str]], hyps: Sequence[Sequence[str]]) -> dict:
    """Corpus-level token error rate of token sequences.

    Args:
        refs: reference token lists (words or phones); none may be empty.
        hyps: hypothesis token lists, same length as ``refs`` (may be empty).

    Returns:
        ``{"rate", "substitutions", "deletions", "insertions", "ref_tokens"}``.

    Raises:
        ValueError: different lengths, no utterance, or an empty reference.
    """
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    if not refs:
        raise ValueError("no utterance to score")
    for i, ref in enumerate(refs):
        if not ref:
            raise ValueError(f"reference {i} is empty")
    for tok in (t for seq in list(refs) + list(hyps) for t in seq):
        if not tok or any(c.isspace() for c in tok):
            raise ValueError(f"token {tok!r} is empty or contains whitespace")
    out = jiwer.process_words([" ".join(r) for r in refs], [" ".join(h) for h in hyps])
    n = sum(len(r) for r in refs)
    return {
        "rate": (out.substitutions + out.deletions + out.insertions) / n,
        "substitutions": out.substitutions,
        "deletions": out.deletions,
        "insertions": out.insertions,
        "ref_tokens": n,
    }


def wer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Word error rate of transcripts, after :func:`normalize_text` on both sides."""
    return error_rate(
        [normalize_text(r).split() for r in refs], [normalize_text(h).split() for h in hyps]
    )["rate"]


def per(refs: Sequence[Sequence[str]], hyps: Sequence[Sequence[str]]) -> float:
    """Phone error rate of phone-symbol sequences."""
    return error_rate(refs, hyps)["rate"]


def accuracy(labels: Sequence[int], preds: Sequence[int]) -> float:
    """Fraction of predictions equal to the label."""
    if len(labels) != len(preds) or not labels:
        raise ValueError(f"accuracy needs equal, non-empty lists ({len(labels)} vs {len(preds)})")
    return sum(int(a == b) for a, b in zip(labels, preds)) / len(labels)
