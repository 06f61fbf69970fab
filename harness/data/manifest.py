"""JSONL manifests: one record per utterance, the single format every corpus is turned into.

A corpus folder holds ``<split>.jsonl`` files (``distill``, ``ks_train``, ``ks_dev``,
``ks_test``, ``ic_*``, ``sid_*``, ``er_*``, ``asr_*`` ...) and a ``corpus.json`` with
what built it. Record fields (every split):

========== ============================================================================
id          unique utterance id (str)
path        audio file, relative to the corpus folder or absolute (str)
num_samples length in samples (int)
sample_rate Hz, always 16000 after import/synthesis (int)
speaker     speaker id (str)
text        transcript ("" when the corpus has none) (str)
========== ============================================================================

Optional fields: ``phones`` (list of ``[phone, start_sample, end_sample]`` in the fixed
phone set of :mod:`harness.data.phones`), ``label`` (the utterance-level class of the
split's task: keyword, intent, speaker, style), ``slots`` (IC: action/object/location),
``style`` (ER proxy), ``duration`` (seconds).

Manifests are written atomically (temporary file + rename), so a crash never leaves a
half-written manifest that a rerun would trust.
"""

from __future__ import annotations

import collections
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from harness.errors import HarnessError

REQUIRED_FIELDS = ("id", "path", "num_samples", "sample_rate", "speaker", "text")


class ManifestError(ValueError, HarnessError):
    """A manifest that cannot be read; the message names the file and line."""


def write_manifest(path: str | Path, records: Iterable[dict]) -> int:
    """Write records as JSONL atomically; returns the number written.

    Raises:
        ManifestError: if a record lacks a required field.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    with open(tmp, "w") as fh:
        for rec in records:
            missing = [k for k in REQUIRED_FIELDS if k not in rec]
            if missing:
                raise ManifestError(f"{path}: record {rec.get('id', n)!r} lacks {', '.join(missing)}")
            fh.write(json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n")
            n += 1
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)
    return n


def read_manifest(path: str | Path) -> list[dict]:
    """Read a JSONL manifest.

    Raises:
        ManifestError: for a missing file, a malformed line or a record without the
            required fields (naming the file and line).
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: no such manifest (build the corpus with 'harness data build' or import one)")
    out = []
    with open(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise ManifestError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
            missing = [k for k in REQUIRED_FIELDS if k not in rec]
            if missing:
                raise ManifestError(f"{path}:{lineno}: record lacks {', '.join(missing)}")
            out.append(rec)
    return out


def audio_path(record: dict, root: str | Path) -> Path:
    """The absolute audio path of a record whose ``path`` is relative to ``root``."""
    p = Path(record["path"])
    return p if p.is_absolute() else Path(root) / p


def list_splits(corpus: str | Path) -> list[str]:
    """Split names (manifest stems) in a corpus folder, sorted."""
    return sorted(p.stem for p in Path(corpus).glob("*.jsonl"))


@dataclass
class SkipLog:
    """Counted skips: bad inputs that are left out, each listed with its path and reason."""

    items: list[tuple[str, str]] = field(default_factory=list)

    def add(self, path: str | Path, reason: str) -> None:
        self.items.append((str(path), reason))

    def __len__(self) -> int:
        return len(self.items)

    def summary(self, limit: int = 50) -> str:
        """A human summary: the count, then one line per skipped file (first ``limit``)."""
        if not self.items:
            return "skipped: 0 files"
        lines = [f"skipped: {len(self.items)} file(s)"]
        for path, reason in self.items[:limit]:
            lines.append(f"  {path}: {reason}")
        if len(self.items) > limit:
            lines.append(f"  ... and {len(self.items) - limit} more")
        return "\n".join(lines)


def corpus_stats(corpus: str | Path) -> dict:
    """Per split: utterances, hours, speakers and the class balance of ``label``.

    Records whose speaker is ``"none"`` or empty (noise-only clips such as KS
    ``_silence_``) are not counted as a speaker.

    Returns:
        ``{split: {"utterances", "hours", "speakers", "labels": {label: count}}}``.

    Raises:
        ManifestError: if the folder holds no manifest.
    """
    corpus = Path(corpus)
    splits = list_splits(corpus)
    if not splits:
        raise ManifestError(f"{corpus}: no <split>.jsonl manifests here (is this a corpus folder?)")
    stats = {}
    for split in splits:
        recs = read_manifest(corpus / f"{split}.jsonl")
        labels = collections.Counter(str(r["label"]) for r in recs if "label" in r)
        stats[split] = {
            "utterances": len(recs),
            "hours": sum(r["num_samples"] / r["sample_rate"] for r in recs) / 3600.0,
            "speakers": len({r["speaker"] for r in recs} - {"none", ""}),
            "labels": dict(sorted(labels.items())),
        }
    return stats


def format_stats(stats: dict, max_labels: int = 12) -> str:
    """Render :func:`corpus_stats` as a plain-text table with a balance line per split."""
    lines = [f"{'split':<14}{'utts':>8}{'hours':>9}{'speakers':>10}{'classes':>9}  balance (min/max per class)"]
    for split, s in stats.items():
        labels = s["labels"]
        if labels:
            counts = list(labels.values())
            bal = f"{min(counts)}/{max(counts)}"
        else:
            bal = "-"
        lines.append(
            f"{split:<14}{s['utterances']:>8}{s['hours']:>9.2f}{s['speakers']:>10}{len(labels):>9}  {bal}"
        )
    total_utts = sum(s["utterances"] for s in stats.values())
    total_hours = sum(s["hours"] for s in stats.values())
    lines.append(f"{'total':<14}{total_utts:>8}{total_hours:>9.2f}")
    for split, s in stats.items():
        labels = s["labels"]
        if labels and len(labels) <= max_labels:
            lines.append(f"{split}: " + ", ".join(f"{k}={v}" for k, v in labels.items()))
    return "\n".join(lines)
