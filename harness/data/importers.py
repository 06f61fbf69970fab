"""Real-corpus importers: each corpus' on-disk layout, as distributed -> JSONL manifests.

One pure ``prepare_<corpus>(src, out, skips=None, notes=None) -> {split: [records]}``
function per corpus (lhotse style) reads the layout and returns manifest records (see
:mod:`harness.data.manifest` for the fields); :func:`import_corpus` runs one, writes the
manifests atomically and ``<out>/corpus.json`` last, and prints a summary with every
skipped file. ``harness data import CORPUS SRC --out DIR`` is a thin wrapper.

Splits follow the SUPERB conventions:

=============== ==================================================================
corpus           splits
=============== ==================================================================
librispeech      ``distill`` (all train-* subsets present), ``asr_train``
                 (train-clean-100), ``asr_dev`` (dev-clean), ``asr_test`` (test-clean)
speech_commands  ``ks_{train,dev,test}`` by ``validation_list.txt``/``testing_list.txt``
fluent_commands  ``ic_{train,dev,test}`` from ``data/{train,valid,test}_data.csv``
voxceleb1        ``sid_{train,dev,test}`` from ``iden_split.txt`` (1/2/3)
iemocap          ``er_fold<k>_{train,dev,test}`` (test = Session k), ``er_*`` = fold 1
=============== ==================================================================

Audio is referenced in place by absolute path (nothing is copied), except the
``_silence_`` clips of Speech Commands, which are generated under ``<out>/silence/`` and
referenced relative to ``<out>``. ``num_samples``/``sample_rate`` come from the file
header (:func:`harness.data.audio.check_audio`, no full decode except float WAVs). A file
that cannot be opened, is empty or truncated, has another sample rate than 16 kHz or more
than one channel, holds NaN or infinite samples, is shorter than
:data:`~harness.data.audio.MIN_SAMPLES` (25 ms: no 50 Hz frame), or lacks its
transcript/label, is a counted skip listed in the summary, never a crash. A source folder that is not the expected layout fails with one line naming the path
and the layout expected.

Text is normalised by :func:`normalize_text`: bracketed annotations removed (IEMOCAP's
``[LAUGHTER]``), lower-cased, every character other than ``a-z``, ``0-9`` and the
apostrophe replaced by a space, whitespace collapsed ("HE'S TWENTY-ONE." -> "he's twenty
one").

Size: over 500 lines on purpose: one short ``prepare_<corpus>`` per corpus (five) plus the
shared skip accounting; lhotse keeps one file per corpus, and this module is the next one to
split that way when a sixth corpus arrives.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from harness.data.audio import MIN_SAMPLES, SAMPLE_RATE, AudioError, check_audio, load_audio, write_wav
from harness.data.manifest import (
    CorpusFolderError, SkipLog, clear_corpus, describe_corpus, read_corpus_meta, read_importing, write_manifest,
)
from harness.errors import UserError
from harness.fsio import atomic_write
from harness.provenance import git_commit, now_iso
from harness.registry import Registry

FORMAT_VERSION = 1  # bump when records change, so an old import is not trusted as current

IMPORTERS: Registry[Callable[..., dict]] = Registry("corpus importer")

KS_KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
ER_CLASSES = ("neu", "hap", "ang", "sad")

LAYOUTS = {
    "librispeech": "<src>/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac plus "
    "<speaker>-<chapter>.trans.txt, <subset> among train-clean-100, train-clean-360, "
    "train-other-500, dev-clean, test-clean (the folder named LibriSpeech in the tarballs)",
    "speech_commands": "<src>/<word>/<hash>_nohash_<n>.wav, <src>/validation_list.txt, "
    "<src>/testing_list.txt, <src>/_background_noise_/*.wav (speech_commands_v0.01)",
    "fluent_commands": "<src>/data/{train,valid,test}_data.csv with columns path, speakerId, "
    "transcription, action, object, location; audio under <src>/wavs/speakers/",
    "voxceleb1": "<src>/wav/<speaker>/<video>/<nnnnn>.wav and <src>/iden_split.txt with "
    "lines '1 id10001/1zcIwhmdeo4/00001.wav'",
    "iemocap": "<src>/Session{1..5}/sentences/wav/<dialog>/<utt>.wav and "
    "<src>/Session{1..5}/dialog/EmoEvaluation/<dialog>.txt (IEMOCAP_full_release)",
}


class LayoutError(UserError):
    """The source folder is not the corpus' expected layout (one line: path + layout)."""


def _layout_error(corpus: str, path: Path, problem: str) -> LayoutError:
    return LayoutError(f"{path}: {problem}; expected the {corpus} layout: {LAYOUTS[corpus]}")


def normalize_text(text: str) -> str:
    """Lower-case, strip annotations and punctuation (keeps a-z, 0-9, apostrophes)."""
    text = re.sub(r"\[[^\]]*\]|<[^>]*>", " ", text)
    text = text.lower().replace("\u2019", "'")
    text = re.sub(r"[^a-z0-9' ]+", " ", text)
    return " ".join(text.split())


def _workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def _probe(items: list[tuple[dict, Path]], skips: SkipLog) -> list[dict]:
    """Fill ``num_samples``/``sample_rate`` from each file's header; bad files -> skips.

    Args:
        items: ``(record without audio fields, audio path)`` pairs.
        skips: where unusable files are counted.

    Returns:
        The usable records, in input order, each with ``path`` (absolute str),
        ``num_samples`` (samples) and ``sample_rate`` (Hz).
    """

    def one(item: tuple[dict, Path]) -> dict:
        rec, path = item
        try:
            frames = check_audio(path, SAMPLE_RATE)
        except AudioError as err:
            return {"_skip": (path, str(err).removeprefix(f"{path}: "))}
        if frames < MIN_SAMPLES:
            return {"_skip": (path, f"too short: {frames} samples ({1000 * frames / SAMPLE_RATE:.1f} ms), "
                                    f"fewer than {MIN_SAMPLES} ({1000 * MIN_SAMPLES // SAMPLE_RATE} ms, one 50 Hz frame)")}
        return {**rec, "path": str(path), "num_samples": frames, "sample_rate": SAMPLE_RATE}

    # libsndfile calls release the GIL, so threads overlap the file-system latency
    with ThreadPoolExecutor(_workers()) as pool:
        results = list(pool.map(one, items))
    out = []
    for res in results:
        if "_skip" in res:
            skips.add(*res["_skip"])
        else:
            out.append(res)
    return out


def _hash_order(ids: list[str]) -> list[str]:
    """Ids sorted by a stable hash: a seed-free, reproducible shuffle."""
    return sorted(ids, key=lambda i: hashlib.sha1(i.encode()).hexdigest())


# ----------------------------------------------------------------------------- LibriSpeech

LIBRI_SUBSETS = (
    "train-clean-100", "train-clean-360", "train-other-500",
    "dev-clean", "dev-other", "test-clean", "test-other",
)


@IMPORTERS.register("librispeech")
def prepare_librispeech(src: Path, out: Path, skips: SkipLog | None = None, notes: dict | None = None) -> dict:
    """LibriSpeech -> ``distill``, ``asr_train``, ``asr_dev``, ``asr_test``.

    ``distill`` holds every ``train-*`` subset present (960 h with all three),
    ``asr_train`` = train-clean-100, ``asr_dev`` = dev-clean, ``asr_test`` = test-clean
    (SUPERB ASR); dev-other and test-other are not written. Records carry ``text``
    (normalised, see :func:`normalize_text`) but no ``phones``: LibriSpeech ships no
    phone alignment, so PR on real data needs a lexicon/aligner the user supplies.

    Args:
        src: the LibriSpeech root (holding the subset folders).
        out: the corpus folder (unused: nothing is generated for LibriSpeech).
        skips: receives unusable files (bad audio, audio without transcript line,
            transcript line without audio).
        notes: receives ``subsets`` (those found).

    Returns:
        ``{split: [record]}``; records have id (``<spk>-<chapter>-<utt>``), path,
        num_samples, sample_rate, speaker, text.

    Raises:
        LayoutError: no known subset folder under ``src``.
    """
    skips = skips if skips is not None else SkipLog()
    notes = notes if notes is not None else {}
    present = [s for s in LIBRI_SUBSETS if (src / s).is_dir()]
    if not present:
        hint = " (pointed at a subset? use its parent)" if list(src.glob("*/*/*.trans.txt")) else ""
        if (src / "LibriSpeech").is_dir():
            hint = f" (did you mean {src / 'LibriSpeech'}?)"
        raise _layout_error("librispeech", src, "no LibriSpeech subset folder" + hint)
    notes["subsets"] = present
    by_subset: dict[str, list[dict]] = {}
    for subset in present:
        items: list[tuple[dict, Path]] = []
        for chapter_dir in sorted(p for p in (src / subset).glob("*/*") if p.is_dir()):
            spk, chapter = chapter_dir.parent.name, chapter_dir.name
            trans_path = chapter_dir / f"{spk}-{chapter}.trans.txt"
            texts: dict[str, str] = {}
            if trans_path.is_file():
                for line in trans_path.read_text(encoding="utf-8", errors="replace").splitlines():
                    if line.strip():
                        utt, _, text = line.strip().partition(" ")
                        texts[utt] = text
            flacs = {p.stem: p for p in sorted(chapter_dir.glob("*.flac"))}
            for utt, path in flacs.items():
                if utt not in texts:
                    why = "no transcript line in" if trans_path.is_file() else "missing transcript file"
                    skips.add(path, f"{why} {trans_path}")
                    continue
                items.append(({"id": utt, "speaker": spk, "text": normalize_text(texts[utt])}, path))
            for utt in texts.keys() - flacs.keys():
                skips.add(chapter_dir / f"{utt}.flac", f"listed in {trans_path.name} but the audio file is missing")
        by_subset[subset] = _probe(items, skips)
    splits = {
        "distill": [r for s in present if s.startswith("train-") for r in by_subset[s]],
        "asr_train": by_subset.get("train-clean-100", []),
        "asr_dev": by_subset.get("dev-clean", []),
        "asr_test": by_subset.get("test-clean", []),
    }
    return {k: v for k, v in splits.items() if v}


# ----------------------------------------------------------------------------- Speech Commands

SILENCE_CLIP = SAMPLE_RATE  # 1 s clips, the length of a Speech Commands utterance


@IMPORTERS.register("speech_commands")
def prepare_speech_commands(src: Path, out: Path, skips: SkipLog | None = None, notes: dict | None = None) -> dict:
    """Speech Commands v1 (v0.01) -> ``ks_train``, ``ks_dev``, ``ks_test`` (SUPERB KS).

    12 classes in ``label``: the 10 keywords (yes no up down left right on off stop go),
    ``_unknown_`` (every other word) and ``_silence_``. The split follows the list files:
    a file named in ``validation_list.txt`` -> dev, in ``testing_list.txt`` -> test, any
    other -> train. (SUPERB scores on the separate ``speech_commands_test_set_v0.01``
    archive; ``ks_test`` here is the ``testing_list.txt`` split of the main archive.)

    ``_silence_``: each ``_background_noise_/*.wav`` is cut into consecutive,
    non-overlapping 1 s clips written as 16-bit WAV under ``<out>/silence/``; per noise
    file, the last 10 % of its clips (at least one) go to test, the 10 % before to dev,
    the rest to train, so no stretch of noise is shared between splits.

    Args:
        src: the archive root (word folders plus the two list files).
        out: the corpus folder (silence clips are written under it).
        skips: receives unusable files.
        notes: receives ``silence_clips`` and a ``warning`` when there is no noise folder.

    Returns:
        ``{split: [record]}``; records have id (``<word>_<hash>_nohash_<n>``), path,
        num_samples, sample_rate, speaker (the hash), text (the word, or "" for silence),
        label.

    Raises:
        LayoutError: a list file or every word folder is missing.
    """
    skips = skips if skips is not None else SkipLog()
    notes = notes if notes is not None else {}
    for name in ("validation_list.txt", "testing_list.txt"):
        if not (src / name).is_file():
            raise _layout_error("speech_commands", src, f"no {name}")
    generated = (Path(out) / "silence").resolve()  # --out inside src must not become a word
    words = sorted(
        p.name for p in src.iterdir()
        if p.is_dir() and not p.name.startswith("_") and p.resolve() != generated
    )
    if not words:
        raise _layout_error("speech_commands", src, "no word folders")
    listed = {}
    for split, name in (("ks_dev", "validation_list.txt"), ("ks_test", "testing_list.txt")):
        for line in (src / name).read_text().splitlines():
            if line.strip():
                listed[line.strip()] = split
    items: dict[str, list[tuple[dict, Path]]] = {"ks_train": [], "ks_dev": [], "ks_test": []}
    seen = set()
    for word in words:
        label = word if word in KS_KEYWORDS else "_unknown_"
        for path in sorted((src / word).glob("*.wav")):
            rel = f"{word}/{path.name}"
            seen.add(rel)
            spk = path.stem.split("_nohash_")[0]
            rec = {"id": f"{word}_{path.stem}", "speaker": spk, "text": word, "label": label}
            items[listed.get(rel, "ks_train")].append((rec, path))
    for rel in sorted(listed.keys() - seen):
        skips.add(src / rel, "listed in a split file but the audio file is missing")
    splits = {split: _probe(its, skips) for split, its in items.items()}
    noise_dir = src / "_background_noise_"
    if noise_dir.is_dir():
        n_clips = 0
        for split, rec in _silence_clips(noise_dir, out, skips):
            splits[split].append(rec)
            n_clips += 1
        notes["silence_clips"] = n_clips
    else:
        notes["warning"] = f"{noise_dir} missing: no _silence_ class"
    return {k: v for k, v in splits.items() if v}


def _silence_clips(noise_dir: Path, out: Path, skips: SkipLog):
    """Yield ``(split, record)`` for the 1 s noise clips written under ``<out>/silence``."""
    for noise in sorted(noise_dir.glob("*.wav")):
        try:
            wav = load_audio(noise, SAMPLE_RATE)
        except AudioError as err:
            skips.add(noise, str(err).removeprefix(f"{noise}: "))
            continue
        n = len(wav) // SILENCE_CLIP
        if n == 0:
            skips.add(noise, f"shorter than one {SILENCE_CLIP}-sample silence clip")
            continue
        n_eval = max(1, n // 10) if n >= 3 else 0
        for i in range(n):
            split = "ks_test" if i >= n - n_eval else "ks_dev" if i >= n - 2 * n_eval else "ks_train"
            rel = Path("silence") / f"{noise.stem}_{i:04d}.wav"
            write_wav(out / rel, wav[i * SILENCE_CLIP:(i + 1) * SILENCE_CLIP])
            yield split, {
                "id": f"silence_{noise.stem}_{i:04d}", "path": rel.as_posix(),
                "num_samples": SILENCE_CLIP, "sample_rate": SAMPLE_RATE,
                "speaker": f"noise_{noise.stem}", "text": "", "label": "_silence_",
            }


# ----------------------------------------------------------------------------- Fluent Speech Commands

FSC_COLUMNS = ("path", "speakerId", "transcription", "action", "object", "location")


@IMPORTERS.register("fluent_commands")
def prepare_fluent_commands(src: Path, out: Path, skips: SkipLog | None = None, notes: dict | None = None) -> dict:
    """Fluent Speech Commands -> ``ic_train``, ``ic_dev``, ``ic_test`` (SUPERB IC).

    Splits are the corpus' own ``train``/``valid``/``test`` CSVs. ``slots`` =
    ``{"action", "object", "location"}``; ``label`` = ``"action|object|location"``.

    Args:
        src: the corpus root (``fluent_speech_commands_dataset``).
        out: the corpus folder (unused).
        skips: receives unusable files (bad audio, rows whose audio is missing).
        notes: unused.

    Returns:
        ``{split: [record]}``; records have id (``<speakerId>_<wav stem>``), path,
        num_samples, sample_rate, speaker, text (normalised transcription), slots, label.

    Raises:
        LayoutError: a CSV is missing or lacks one of the columns.
    """
    skips = skips if skips is not None else SkipLog()
    splits = {}
    for split, name in (("ic_train", "train"), ("ic_dev", "valid"), ("ic_test", "test")):
        csv_path = src / "data" / f"{name}_data.csv"
        if not csv_path.is_file():
            raise _layout_error("fluent_commands", src, f"no data/{name}_data.csv")
        with open(csv_path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in FSC_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise _layout_error("fluent_commands", csv_path, f"lacks column(s) {', '.join(missing)}")
            items = []
            for row in reader:
                path = src / row["path"]
                if not path.is_file():
                    skips.add(path, f"listed in {csv_path.name} but the audio file is missing")
                    continue
                slots = {k: row[k] for k in ("action", "object", "location")}
                items.append(({
                    "id": f"{row['speakerId']}_{path.stem}", "speaker": row["speakerId"],
                    "text": normalize_text(row["transcription"]), "slots": slots,
                    "label": "|".join(slots.values()),
                }, path))
        splits[split] = _probe(items, skips)
    return {k: v for k, v in splits.items() if v}


# ----------------------------------------------------------------------------- VoxCeleb1


@IMPORTERS.register("voxceleb1")
def prepare_voxceleb1(src: Path, out: Path, skips: SkipLog | None = None, notes: dict | None = None) -> dict:
    """VoxCeleb1 -> ``sid_train``, ``sid_dev``, ``sid_test`` (SUPERB SID, 1,251 speakers).

    ``iden_split.txt`` assigns each file to 1 = train, 2 = dev, 3 = test; ``label`` =
    ``speaker`` = the VoxCeleb id (``id10001``). SID tests unseen utterances of seen
    speakers. ``wav/`` must hold the dev and test archives merged, as SUPERB expects.

    Args:
        src: the root holding ``wav/`` and ``iden_split.txt`` (also looked up in
            ``meta/``).
        out: the corpus folder (unused).
        skips: receives unusable files (bad audio, listed files that are missing).
        notes: unused.

    Returns:
        ``{split: [record]}``; records have id (``<speaker>-<video>-<nnnnn>``), path,
        num_samples, sample_rate, speaker, text (""), label.

    Raises:
        LayoutError: ``wav/`` or ``iden_split.txt`` is missing, or a split line is malformed.
    """
    skips = skips if skips is not None else SkipLog()
    if not (src / "wav").is_dir():
        raise _layout_error("voxceleb1", src, "no wav/ folder")
    split_file = next((p for p in (src / "iden_split.txt", src / "meta" / "iden_split.txt") if p.is_file()), None)
    if split_file is None:
        raise _layout_error("voxceleb1", src, "no iden_split.txt")
    names = {"1": "sid_train", "2": "sid_dev", "3": "sid_test"}
    items: dict[str, list] = {v: [] for v in names.values()}
    for lineno, line in enumerate(split_file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or parts[0] not in names or parts[1].count("/") != 2:
            raise _layout_error(
                "voxceleb1", split_file,
                f"line {lineno} is {line.strip()!r}, not '<1|2|3> <id>/<video>/<nnnnn>.wav'",
            )
        rel = parts[1]
        path = src / "wav" / rel
        if not path.is_file():
            skips.add(path, f"listed in {split_file.name} but the audio file is missing")
            continue
        spk, video, utt = rel.split("/")
        items[names[parts[0]]].append(({
            "id": f"{spk}-{video}-{Path(utt).stem}", "speaker": spk, "text": "", "label": spk,
        }, path))
    splits = {split: _probe(its, skips) for split, its in items.items()}
    return {k: v for k, v in splits.items() if v}


# ----------------------------------------------------------------------------- IEMOCAP

ER_DEV_FRACTION = 0.2  # SUPERB ER: 20 % of the four training sessions validate
_EMO_LINE = re.compile(r"^\[\s*[\d.]+\s*-\s*[\d.]+\s*\]\t(\S+)\t(\S+)\t")
_TRANS_LINE = re.compile(r"^(\S+) \[[^\]]*\]:\s*(.*)$")


@IMPORTERS.register("iemocap")
def prepare_iemocap(src: Path, out: Path, skips: SkipLog | None = None, notes: dict | None = None) -> dict:
    """IEMOCAP -> ``er_fold<k>_{train,dev,test}`` (k = session) and ``er_*`` = fold 1.

    SUPERB ER: four classes in ``label``: ``neu``, ``hap`` (``exc`` merged into it),
    ``ang``, ``sad``; utterances with any other label are dropped (counted in
    ``notes["dropped_labels"]``, not skips: they are valid data outside the task).
    Leave-one-session-out folds: fold k tests on Session k; its dev set is a fixed 20 %
    of the other sessions' utterances, chosen by a SHA-1 hash of the utterance id (so it
    is reproducible without a seed; SUPERB draws 20 % at random), the rest trains.
    ``er_{train,dev,test}`` repeat the lowest-numbered fold (fold 1 on the full corpus).
    ``speaker`` is the session plus the utterance speaker's gender (``Ses01F``,
    ``Ses01M``: IEMOCAP has one female and one male actor per session); ``text`` is the
    normalised transcription when ``dialog/transcriptions`` has it, else "".

    Args:
        src: ``IEMOCAP_full_release`` (holding ``Session1`` .. ``Session5``).
        out: the corpus folder (unused).
        skips: receives unusable files (bad audio, labelled utterances without audio).
        notes: receives ``sessions`` and ``dropped_labels`` ({label: count}).

    Returns:
        ``{split: [record]}``; records have id (utterance name), path, num_samples,
        sample_rate, speaker, text, label, session (int).

    Raises:
        LayoutError: fewer than two sessions with ``sentences/wav`` and
            ``dialog/EmoEvaluation`` folders.
    """
    skips = skips if skips is not None else SkipLog()
    notes = notes if notes is not None else {}
    sessions = [
        k for k in range(1, 6)
        if (src / f"Session{k}" / "sentences" / "wav").is_dir()
        and (src / f"Session{k}" / "dialog" / "EmoEvaluation").is_dir()
    ]
    if len(sessions) < 2:
        raise _layout_error(
            "iemocap", src, f"found {len(sessions)} complete Session folder(s), need at least 2 for folds"
        )
    notes["sessions"] = sessions
    dropped: dict[str, int] = {}
    items = []
    for k in sessions:
        sess = src / f"Session{k}"
        texts: dict[str, str] = {}
        for tpath in sorted((sess / "dialog" / "transcriptions").glob("*.txt")):
            for line in tpath.read_text(encoding="utf-8", errors="replace").splitlines():
                m = _TRANS_LINE.match(line.strip())
                if m:
                    texts[m.group(1)] = normalize_text(m.group(2))
        for epath in sorted((sess / "dialog" / "EmoEvaluation").glob("*.txt")):
            for line in epath.read_text(encoding="utf-8", errors="replace").splitlines():
                m = _EMO_LINE.match(line)
                if not m:
                    continue
                utt, emo = m.group(1), m.group(2)
                emo = "hap" if emo == "exc" else emo
                if emo not in ER_CLASSES:
                    dropped[emo] = dropped.get(emo, 0) + 1
                    continue
                dialog = utt.rsplit("_", 1)[0]
                path = sess / "sentences" / "wav" / dialog / f"{utt}.wav"
                if not path.is_file():
                    skips.add(path, f"labelled in {epath.name} but the audio file is missing")
                    continue
                speaker = utt[:5] + utt.rsplit("_", 1)[1][:1]  # Ses01 + F/M
                items.append(({
                    "id": utt, "speaker": speaker, "text": texts.get(utt, ""), "label": emo, "session": k,
                }, path))
    notes["dropped_labels"] = dict(sorted(dropped.items()))
    records = _probe(items, skips)
    splits: dict[str, list[dict]] = {}
    for k in sessions:
        test = [r for r in records if r["session"] == k]
        pool = [r for r in records if r["session"] != k]
        n_dev = round(ER_DEV_FRACTION * len(pool)) if len(pool) >= 2 else 0
        dev_ids = set(_hash_order([r["id"] for r in pool])[:max(n_dev, 1 if len(pool) >= 2 else 0)])
        splits[f"er_fold{k}_train"] = [r for r in pool if r["id"] not in dev_ids]
        splits[f"er_fold{k}_dev"] = [r for r in pool if r["id"] in dev_ids]
        splits[f"er_fold{k}_test"] = test
    first = sessions[0]
    for part in ("train", "dev", "test"):
        splits[f"er_{part}"] = splits[f"er_fold{first}_{part}"]
    return {k: v for k, v in splits.items() if v}


# ----------------------------------------------------------------------------- driver


def _dedupe(records: list[dict], skips: SkipLog) -> list[dict]:
    """Drop records whose id repeats an earlier one in the split (counted as skips)."""
    seen: set[str] = set()
    out = []
    for r in records:
        if r["id"] in seen:
            skips.add(r["path"], f"duplicate utterance id {r['id']!r} in the split")
            continue
        seen.add(r["id"])
        out.append(r)
    return out


def _summary_line(split: str, recs: list[dict]) -> str:
    hours = sum(r["num_samples"] / r["sample_rate"] for r in recs) / 3600.0
    return f"  {split:<18}{len(recs):>8} utts {hours:>9.2f} h {len({r['speaker'] for r in recs}):>7} speakers"


def import_corpus(corpus: str, src: str | Path, out: str | Path, force: bool = False) -> Path:
    """Import a real corpus: run ``prepare_<corpus>``, write manifests, then ``corpus.json``.

    A rerun with an existing ``corpus.json`` for the same corpus, source and format is a
    no-op (delete ``corpus.json`` or pass ``force`` to re-import). ``corpus.json`` is
    removed first and written last, and each manifest is written atomically, so an
    interrupted import never leaves a folder a rerun would trust. A folder holding another
    corpus (a synthetic build, another corpus or source, manifests without ``corpus.json``)
    is refused, so two corpora never mix; ``force`` clears it first
    (:func:`harness.data.manifest.clear_corpus`) and prints what it removed.

    Args:
        corpus: importer name (``librispeech``, ``speech_commands``, ``fluent_commands``,
            ``voxceleb1``, ``iemocap``).
        src: the corpus' root folder, as distributed.
        out: the corpus folder to write (``<split>.jsonl`` + ``corpus.json``).
        force: re-import even when ``corpus.json`` says it is done; clear a folder that
            holds another corpus first.

    Returns:
        ``out``.

    Raises:
        RegistryError: unknown corpus.
        LayoutError: ``src`` is missing or not the corpus' layout, or holds no usable audio.
        CorpusFolderError: ``out`` holds another corpus and ``force`` is not set.
    """
    prepare = IMPORTERS.get(corpus)
    src = Path(src).expanduser().resolve()
    out = Path(out).expanduser().resolve()
    if not src.is_dir():
        raise _layout_error(corpus, src, "no such folder")
    meta_path = out / "corpus.json"
    old = read_corpus_meta(out) or read_importing(out) or {}
    holder = describe_corpus(out)
    same = old.get("corpus") == corpus and old.get("source") == str(src)
    if holder and not same and not force:
        raise CorpusFolderError(f"{out}: holds another corpus ({holder}); pick another --out, "
                                f"or pass --force to clear it first")
    if holder and force:
        print(f"{out}: --force: cleared {holder}: removed {clear_corpus(out)}")
        old = {}
    if meta_path.is_file():
        if (
            not force
            and old.get("corpus") == corpus
            and old.get("source") == str(src)
            and old.get("format") == FORMAT_VERSION
            and all((out / f"{s}.jsonl").is_file() for s in old.get("splits", {}))
        ):
            print(f"{out}: {corpus} already imported from {src} (delete corpus.json or use --force to redo)")
            return out
    out.mkdir(parents=True, exist_ok=True)
    # marks the folder as this import's until corpus.json is written (a crashed rerun is ours)
    atomic_write(out / ".importing", json.dumps({"corpus": corpus, "source": str(src)}) + "\n")
    meta_path.unlink(missing_ok=True)
    t0 = time.time()
    skips, notes = SkipLog(), {}
    splits = {split: _dedupe(recs, skips) for split, recs in prepare(src, out, skips=skips, notes=notes).items()}
    if not splits:
        first = f"; first skip: {skips.items[0][0]}: {skips.items[0][1]}" if skips.items else ""
        raise _layout_error(corpus, src, f"no usable audio ({len(skips)} file(s) skipped{first})")
    out.mkdir(parents=True, exist_ok=True)
    for split in old.get("splits", {}):  # splits a previous import wrote but this one did not
        if split not in splits:
            (out / f"{split}.jsonl").unlink(missing_ok=True)
    for split, recs in splits.items():
        write_manifest(out / f"{split}.jsonl", recs)
    meta = {
        "corpus": corpus,
        "source": str(src),
        "format": FORMAT_VERSION,
        "created": now_iso(),
        "git_commit": git_commit(),
        "seconds": round(time.time() - t0, 2),
        "splits": {
            s: {
                "utterances": len(r),
                "hours": round(sum(x["num_samples"] for x in r) / SAMPLE_RATE / 3600.0, 4),
                "speakers": len({x["speaker"] for x in r}),
            }
            for s, r in splits.items()
        },
        "notes": notes,
        "skipped": len(skips),
        "skips": [list(item) for item in skips.items],
    }
    atomic_write(meta_path, json.dumps(meta, indent=1) + "\n")
    (out / ".importing").unlink(missing_ok=True)
    print(f"imported {corpus} from {src} into {out} in {meta['seconds']:.1f} s")
    for split, recs in splits.items():
        print(_summary_line(split, recs))
    for key, value in notes.items():
        print(f"  {key}: {value}")
    print(skips.summary())
    return out
