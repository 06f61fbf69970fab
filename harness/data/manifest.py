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

from harness.errors import HarnessError, UserError

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
        ManifestError: if the folder is missing or holds no manifest (one line).
    """
    corpus = Path(corpus)
    if not corpus.is_dir():
        raise ManifestError(f"{corpus}: no such folder (give a corpus folder written by 'harness data build' "
                            "or 'harness data import')")
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


# ----------------------------------------------------------------------------- corpus folders

SYNTHETIC_NAME = "embedded-synthetic"  # corpus.json "name" of a harness.data.synth build


class CorpusFolderError(UserError):
    """An output folder holds another corpus (one line: the folder, what it holds, the fix)."""


def _read_json_dict(path: Path) -> dict | None:
    """``path`` as a dict; None when absent, ``{}`` when unreadable or not a mapping."""
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def read_corpus_meta(folder: str | Path) -> dict | None:
    """``<folder>/corpus.json`` as a dict; None when absent, ``{}`` when unreadable."""
    return _read_json_dict(Path(folder) / "corpus.json")


def read_importing(folder: str | Path) -> dict | None:
    """``<folder>/.importing`` (corpus and source of an import under way or crashed), or None
    (``{}`` when unreadable)."""
    return _read_json_dict(Path(folder) / ".importing")


def describe_corpus(folder: str | Path) -> str | None:
    """What corpus ``folder`` holds, in words (None when it holds none).

    A corpus is a ``corpus.json`` (synthetic build or import), a crashed synthetic build
    (``.building``) or import (``.importing``), or ``<split>.jsonl`` manifests without
    ``corpus.json``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return None
    meta = read_corpus_meta(folder)
    if meta is not None:
        if meta.get("name") == SYNTHETIC_NAME:
            return f"the synthetic {meta.get('profile', '?')} corpus (seed {meta.get('seed', '?')})"
        if meta.get("corpus"):
            return f"{meta['corpus']} imported from {meta.get('source', '?')}"
        return "a corpus (an unreadable corpus.json)"
    if (folder / ".building").exists():
        return "an unfinished synthetic build (.building)"
    importing = read_importing(folder)
    if importing is not None:
        return f"an unfinished import of {importing.get('corpus', '?')} from {importing.get('source', '?')}"
    n = len(list(folder.glob("*.jsonl")))
    return f"{n} manifest(s) (*.jsonl) without corpus.json" if n else None


def clear_corpus(folder: str | Path) -> str:
    """Delete the corpus files in ``folder`` (what :func:`describe_corpus` found), keep the rest.

    Removed: ``corpus.json`` (first, so an interrupted clear is never trusted), every
    ``*.jsonl``, ``.building``/``.importing``, and the audio the corpus generated: ``audio/`` of a
    synthetic build, ``silence/`` of a Speech Commands import (other imports reference
    their audio in place, which is never touched).

    Returns:
        What was removed, e.g. ``"corpus.json, 16 manifest(s), audio/ (492 files)"``.
    """
    import shutil

    folder = Path(folder)
    meta = read_corpus_meta(folder)
    synthetic = (meta or {}).get("name") == SYNTHETIC_NAME or (folder / ".building").exists()
    generated = ["audio"] if synthetic else ["silence"] if (meta or {}).get("corpus") == "speech_commands" else []
    removed = []
    if meta is not None:
        (folder / "corpus.json").unlink(missing_ok=True)
        removed.append("corpus.json")
    manifests = list(folder.glob("*.jsonl")) + list(folder.glob("*.jsonl.tmp"))
    for p in manifests:
        p.unlink()
    if manifests:
        removed.append(f"{len(manifests)} manifest(s)")
    for name in generated:
        sub = folder / name
        if sub.is_dir():
            n = sum(1 for p in sub.rglob("*") if p.is_file())
            shutil.rmtree(sub)
            removed.append(f"{name}/ ({n} files)")
    for marker in (".building", ".importing"):
        if (folder / marker).exists():
            (folder / marker).unlink()
            removed.append(marker)
    return ", ".join(removed) or "nothing"
