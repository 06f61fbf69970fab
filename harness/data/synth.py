"""The embedded corpus: every task's data synthesised locally with eSpeak NG, in minutes.

``build_corpus(profile, out, seed, workers)`` writes, under ``out``:

* ``audio/<split>/<id>.flac``: 16 kHz mono 16-bit FLAC;
* ``<split>.jsonl``: one manifest per split (contract: :mod:`harness.data.manifest`);
* ``corpus.json``: profile, seed, config hash, phone set, speakers, counts, build time.
  Written last: its presence with the same config hash means the build is complete, and
  a rerun with the same config returns at once.

Splits (``label`` is the task's class):

=============== =============================================================================
distill         read sentences (1-3 clauses) of the training speakers; unlabelled use, the
                LibriSpeech stand-in for teacher pretraining and distillation
ks_*            Speech Commands v1 style 1 s clips: 10 keywords, ``_unknown_`` (other words),
                ``_silence_`` (noise only)
ic_*            Fluent Speech Commands style commands; ``slots`` = action/object/location,
                ``label`` = ``"action|object|location"`` (31 intents)
sid_*           read sentences of every speaker; unseen utterances of seen speakers
er_*            a prosody-style PROXY for emotion (not emotional speech): 4 speaking styles
                made from pitch, pitch range, rate, pauses and loudness; ``label`` = style
asr_*           read sentences with ``text`` (words) and ``phones`` (PR and ASR share them)
=============== =============================================================================

Speakers: each is an eSpeak English accent x a stock voice variant, made into its own
variant file with continuous per-speaker parameters (formant scale = vocal-tract length,
per-formant offsets, base pitch in Hz and its span, voicing/consonant strength), plus
eSpeak's speech parameters (pitch, range, rate, volume, word gap) and a playback speed,
each jittered per utterance. KS, IC, ER and ASR hold out their dev and test speakers (the
``dev``/``test`` speaker pools never appear in ``*_train`` nor in ``distill``); SID uses
every speaker in every split. Every utterance then goes through a random channel, one of
six noise types at a random SNR (or none) and a random level (:mod:`harness.data.noise`).

Determinism: the whole job list is drawn from ``seed`` in the parent process; each job
carries its own seed for synthesis and augmentation, and :func:`harness.data.espeak.synthesize`
renders an utterance the same whatever the process rendered before, so manifests and audio
are byte-identical for any number of workers. (Format 2 was not: eSpeak NG's wavegen kept
an automatic gain and a modulation-cycle counter between utterances, and a repeated voice
was not set again; 10 of 492 tiny-profile FLACs differed between 1 and 2 workers.)

Size: over 500 lines on purpose: the split definitions, the speaker/voice model and the
build driver share one RNG plan (see "Determinism" above); splitting it would spread that
plan over several files.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing as mp
import os
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from harness.data import espeak, noise, phones, text
from harness.data.manifest import (
    SYNTHETIC_NAME, CorpusFolderError, clear_corpus, describe_corpus, read_corpus_meta, write_manifest,
)
from harness.errors import UserError
from harness.fsio import atomic_write
from harness.progress import Progress
from harness.provenance import git_commit, now_iso

FORMAT_VERSION = 3  # bump when the content or layout of a build changes (3: audio independent of --workers)
SAMPLE_RATE = espeak.SAMPLE_RATE
KS_SAMPLES = SAMPLE_RATE  # Speech Commands clips are 1 s

ACCENTS = (
    "en", "en-029", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-gb-x-rp", "en-us", "en-us-nyc",
)
"""eSpeak NG's English accents (languages): British, Caribbean, Scottish, Lancastrian,
West Midlands, RP, American, New York City."""

# Stock variants left out: whisper voices rely on breath noise (turned off for
# determinism, see espeak.DETERMINISTIC_VOICE_LINES), the robot/effect voices are not
# speech-like, 'fast' changes the rate, names with spaces cannot be addressed.
EXCLUDED_VARIANTS = {
    "whisper", "whisperf", "Demonic", "UniRobot", "anikaRobot", "announcer", "fast", "Tweaky",
    espeak.BASE_VARIANT,
}
EXCLUDED_PREFIXES = ("robosoft", "RicishayMax")

STYLES = {
    # pitch offset (eSpeak pitch units), range factor, rate factor, level offset (dB),
    # extra pause between words (eSpeak wordgap, 10 ms units)
    "neutral": (0.0, 1.0, 1.0, 0.0, 0),
    "lively": (14.0, 1.8, 1.22, 3.0, 0),  # high, very wide, fast, a bit louder: the "happy" analogue
    "subdued": (-12.0, 0.4, 0.75, -6.0, 0),  # low, nearly monotone, slow, soft: the "sad" analogue
    "forceful": (6.0, 1.3, 0.92, 8.0, 4),  # loud, emphatic: deliberate, pauses between words: "angry"
}
"""ER proxy styles relative to each speaker's own voice. A proxy for emotion built from
prosody only, with per-utterance jitter; loudness competes with the random recording level.
Format 2 widened the styles (format 1: lively 12/1.6/1.12/+3 dB, subdued -10/0.45/0.82/-6 dB,
forceful 4/1.25/1.06/+7 dB, no pauses): with held-out speakers whose own pitch, range and rate
vary more than those shifts, format 1 left every upstream near 0.45 (a linear classifier on
hand-made F0/energy statistics: 0.465; fbank 0.43; teacher 0.46), too flat to rank anything."""

ER_DESCRIPTION = (
    "prosody-style proxy for emotion recognition, not emotional speech: 4 speaking styles "
    "(neutral, lively, subdued, forceful) made by shifting each speaker's pitch, pitch range, "
    "rate, pauses and loudness, with per-utterance jitter and a random recording level"
)


class SynthError(UserError):
    """A build failed for a reason that names a path, a voice or a key (one line)."""


@dataclass(frozen=True)
class Profile:
    """Sizes of one build. Counts per split are (train, dev, test)."""

    name: str
    speakers: int  # corpus speakers in total
    heldout: int  # speakers in each of the dev and test pools (KS/IC/ER/ASR)
    babble_voices: int  # extra voices used only inside babble noise
    babble_utts: int
    distill: int  # utterances
    distill_clauses: int
    ks_per_class: tuple[int, int, int]
    ic_per_intent: tuple[int, int, int]
    sid_per_speaker: tuple[int, int, int]
    er_per_style: tuple[int, int, int]
    asr: tuple[int, int, int]
    variants: int = 0  # size of the base-variant pool (0 = all usable stock variants)
    extra: dict = field(default_factory=dict)


PROFILES = {
    # every split and every class present, small enough for the test suite to build once
    "tiny": Profile(
        name="tiny", speakers=24, heldout=4, babble_voices=4, babble_utts=8, distill=60, distill_clauses=2,
        ks_per_class=(4, 2, 2), ic_per_intent=(2, 1, 1), sid_per_speaker=(2, 1, 1), er_per_style=(8, 3, 3),
        asr=(40, 10, 10), variants=12,
    ),
    # >= 200 speakers, ~10 h of distillation audio, a few thousand labelled utterances per task
    "embedded": Profile(
        name="embedded", speakers=256, heldout=24, babble_voices=24, babble_utts=60, distill=8500,
        distill_clauses=3, ks_per_class=(200, 40, 40), ic_per_intent=(80, 12, 16),
        sid_per_speaker=(8, 2, 2), er_per_style=(400, 80, 100), asr=(3000, 300, 400), variants=36,
    ),
}


# ----------------------------------------------------------------------------- speakers


def _variant_info(name: str) -> dict:
    """Gender, pitch (Hz lo/hi) and formant lines of a stock variant."""
    path = espeak.stock_data_path() / "voices" / "!v" / name
    info = {"gender": "male", "pitch": (82.0, 118.0), "formants": {}}
    for line in path.read_text(errors="replace").splitlines():
        parts = line.split()
        if not parts or parts[0].startswith("#") or parts[0].startswith("//"):
            continue
        try:
            if parts[0] == "gender" and len(parts) > 1:
                info["gender"] = parts[1].lower()
            elif parts[0] == "pitch" and len(parts) >= 3:
                info["pitch"] = (float(parts[1]), float(parts[2]))
            elif parts[0] == "formant" and len(parts) >= 5:
                info["formants"][int(parts[1])] = [float(x) for x in parts[2:5]]
        except ValueError:
            continue
    return info


def usable_variants() -> list[str]:
    """Stock eSpeak variants used as speaker bases (sorted; see EXCLUDED_VARIANTS)."""
    vdir = espeak.stock_data_path() / "voices" / "!v"
    names = sorted(p.name for p in vdir.iterdir() if p.is_file())
    return [
        n for n in names
        if n not in EXCLUDED_VARIANTS and not n.startswith(EXCLUDED_PREFIXES) and re.fullmatch(r"[A-Za-z0-9_]+", n)
    ]


def make_speakers(n: int, rng: np.random.Generator, pool: list[str], prefix: str = "spk") -> list[dict]:
    """Draw ``n`` speakers: accent x base variant x continuous voice parameters.

    Returns:
        One dict per speaker: ``id``, ``accent``, ``base``, ``gender``, ``variant_text``
        (the eSpeak variant file) and ``params`` (eSpeak speech parameters and ``speed``).
    """
    speakers = []
    for i in range(n):
        base = pool[int(rng.integers(len(pool)))]
        info = _variant_info(base)
        accent = ACCENTS[int(rng.integers(len(ACCENTS)))]
        vtl = float(rng.uniform(0.9, 1.1))  # formant scale: shorter tract -> higher formants
        f0 = float(np.exp(rng.normal(0.0, 0.12)))  # base pitch scale
        span = float(np.exp(rng.normal(0.0, 0.15)))
        lo, hi = info["pitch"]
        p_lo, p_hi = lo * f0, lo * f0 + (hi - lo) * span
        lines = ["language variant", f"name {prefix}{i:04d}", f"gender {info['gender']}"]
        base_text = (espeak.stock_data_path() / "voices" / "!v" / base).read_text(errors="replace")
        body = [l for l in base_text.splitlines() if l.split()[:1] not in (["name"], ["language"], ["gender"])]
        lines += body
        for k in range(9):
            fr, h, w = info["formants"].get(k, [100.0, 100.0, 100.0])
            jit = float(rng.normal(0.0, 0.025)) if 1 <= k <= 4 else 0.0
            lines.append(f"formant {k} {fr * vtl * (1 + jit):.0f} {h * float(rng.uniform(0.85, 1.15)):.0f} {w:.0f}")
        lines.append(f"pitch {p_lo:.0f} {max(p_hi, p_lo + 5):.0f}")
        lines.append(f"voicing {float(rng.uniform(80, 120)):.0f}")
        lines.append(f"consonants {float(rng.uniform(80, 120)):.0f} {float(rng.uniform(80, 120)):.0f}")
        params = {
            "pitch": float(rng.uniform(30, 70)),
            "range": float(rng.uniform(25, 75)),
            "rate": float(rng.uniform(140, 230)),
            "volume": float(rng.uniform(80, 120)),
            "wordgap": float(rng.choice([0, 0, 0, 1, 2])),
            "speed": float(rng.uniform(0.95, 1.05)),
        }
        speakers.append({
            "id": f"{prefix}{i:04d}", "accent": accent, "base": base, "gender": info["gender"],
            "vtl": round(vtl, 4), "pitch_hz": [round(p_lo), round(max(p_hi, p_lo + 5))],
            "variant_text": "\n".join(lines) + "\n", "params": {k: round(v, 3) for k, v in params.items()},
        })
    return speakers


# ----------------------------------------------------------------------------- jobs


def _utt_params(spk: dict, rng: np.random.Generator, style: str | None = None) -> dict:
    """A speaker's speech parameters with per-utterance jitter (and an ER style shift)."""
    p = spk["params"]
    dpitch, frange, frate, _, gap = STYLES[style or "neutral"]
    return {
        "pitch": float(np.clip(p["pitch"] + dpitch + rng.normal(0, 4), 0, 99)),
        "range": float(np.clip(p["range"] * frange * np.exp(rng.normal(0, 0.12)), 0, 99)),
        "rate": float(np.clip(p["rate"] * frate * np.exp(rng.normal(0, 0.06)), 80, 450)),
        "volume": float(np.clip(p["volume"] * np.exp(rng.normal(0, 0.08)), 10, 200)),
        "wordgap": p["wordgap"] + gap,
        "speed": float(np.clip(p["speed"] * np.exp(rng.normal(0, 0.012)), 0.9, 1.1)),
    }


def _plan(profile: Profile, seed: int, speakers: list[dict], pools: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """Every split's jobs, drawn in a fixed order from ``seed``."""
    rng = np.random.default_rng([seed, 1])
    jobs: dict[str, list[dict]] = {}
    counter = 0

    def job(split: str, spk: dict | None, kind: str, txt: str, **extra) -> dict:
        nonlocal counter
        counter += 1
        j = {
            "split": split, "id": f"{split}-{len(jobs.setdefault(split, [])):06d}", "kind": kind, "text": txt,
            "speaker": spk["id"] if spk else "none", "voice": f"{spk['accent']}+{spk['id']}" if spk else None,
            "params": _utt_params(spk, rng, extra.get("style")) if spk else None,
            "seed": int(rng.integers(2**31 - 1)),
        }
        j.update(extra)
        jobs[split].append(j)
        return j

    def pick(pool: list[dict]) -> dict:
        return pool[int(rng.integers(len(pool)))]

    names = ("train", "dev", "test")
    for si, part in enumerate(names):
        pool = pools[part]
        # KS
        for _ in range(profile.ks_per_class[si]):
            for cls in text.KS_CLASSES:
                if cls == text.SILENCE_LABEL:
                    job(f"ks_{part}", None, "silence", "", label=cls)
                elif cls == text.UNKNOWN_LABEL:
                    word = text.UNKNOWN_WORDS[int(rng.integers(len(text.UNKNOWN_WORDS)))]
                    job(f"ks_{part}", pick(pool), "word", word, label=cls)
                else:
                    job(f"ks_{part}", pick(pool), "word", cls, label=cls)
        # IC
        for _ in range(profile.ic_per_intent[si]):
            for action, obj, loc in text.INTENTS:
                job(f"ic_{part}", pick(pool), "speech", text.intent_text(rng, action, obj, loc),
                    label=f"{action}|{obj}|{loc}", slots={"action": action, "object": obj, "location": loc})
        # ER
        for _ in range(profile.er_per_style[si]):
            for style in STYLES:
                job(f"er_{part}", pick(pool), "speech", text.sentence(rng, 1), label=style, style=style)
        # ASR / PR
        for _ in range(profile.asr[si]):
            job(f"asr_{part}", pick(pool), "speech", text.sentence(rng, 2))
    # SID: every speaker in every split (unseen utterances of seen speakers)
    for si, part in enumerate(names):
        for _ in range(profile.sid_per_speaker[si]):
            for spk in speakers:
                job(f"sid_{part}", spk, "speech", text.sentence(rng, 2), label=spk["id"])
    for _ in range(profile.distill):
        job("distill", pick(pools["train"]), "speech", text.sentence(rng, profile.distill_clauses))
    return jobs


# ----------------------------------------------------------------------------- workers

_BABBLE: list[np.ndarray] = []
_OUT: Path | None = None


def _synth(job: dict, speed_override: float | None = None) -> tuple[np.ndarray, list[list], dict]:
    """Clean speech (float32) and phone rows for a speech/word job."""
    p = dict(job["params"])
    speed = speed_override or p.pop("speed")
    p.pop("speed", None)
    syn = espeak.synthesize(job["text"], job["voice"], seed=job["seed"], speed=speed, dtype="float32", **p)
    unknown: dict[str, int] = {}
    rows = phones.events_to_phones([(ph.ipa, ph.start, ph.end) for ph in syn.phones], len(syn.audio), unknown)
    return syn.audio, rows, unknown


def _fit_clip(audio: np.ndarray, rows: list[list], rng: np.random.Generator) -> tuple[np.ndarray, list[list]]:
    """Place a word's speech (silence trimmed) at a random offset in a 1 s clip."""
    speech = [r for r in rows if r[0] != phones.SILENCE] or [[phones.SILENCE, 0, len(audio)]]
    s0, s1 = speech[0][1], speech[-1][2]
    seg = audio[s0:s1]
    off = int(rng.integers(0, KS_SAMPLES - len(seg) + 1))
    clip = np.zeros(KS_SAMPLES, np.float32)
    clip[off : off + len(seg)] = seg
    inner = [[p, s - s0 + off, e - s0 + off] for p, s, e in rows if s >= s0 and e <= s1]
    out = []
    if off > 0:
        out.append([phones.SILENCE, 0, off])
    out += inner
    if off + len(seg) < KS_SAMPLES:
        out.append([phones.SILENCE, off + len(seg), KS_SAMPLES])
    return clip, out


def _render(job: dict) -> dict:
    """Synthesise, augment and write one utterance; return its manifest record."""
    import soundfile as sf

    rng = np.random.default_rng([job["seed"], 7])
    unknown: dict[str, int] = {}
    try:
        if job["kind"] == "silence":
            audio, info = noise.noise_clip(KS_SAMPLES, rng, _BABBLE)
            rows = [[phones.SILENCE, 0, KS_SAMPLES]]
        else:
            audio, rows, unknown = _synth(job)
            if job["kind"] == "word":
                speech = [r for r in rows if r[0] != phones.SILENCE]
                length = speech[-1][2] - speech[0][1] if speech else len(audio)
                if length > KS_SAMPLES - 800:  # too long for 1 s: play it faster
                    faster = job["params"]["speed"] * length / (KS_SAMPLES - 1600)
                    audio, rows, unknown = _synth(job, speed_override=min(faster, 2.0))
                audio, rows = _fit_clip(audio, rows, rng)
            level = (-35.0, -15.0)
            if job.get("style"):
                shift = STYLES[job["style"]][3]
                level = (level[0] + shift, level[1] + shift)
            audio, info = noise.augment(audio, rng, _BABBLE, level_db=level)
    except espeak.EspeakError as err:
        raise SynthError(f"{job['id']} (voice {job['voice']}): {err}") from None
    pcm = np.clip(np.round(audio * 32767.0), -32768, 32767).astype(np.int16)
    rel = Path("audio") / job["split"] / f"{job['id']}.flac"
    path = _OUT / rel
    try:
        # encoding into memory then one write is ~2.5x faster than libsndfile writing the file
        buf = io.BytesIO()
        sf.write(buf, pcm, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        path.write_bytes(buf.getvalue())
    except (OSError, RuntimeError) as err:  # soundfile raises RuntimeError/LibsndfileError on write errors
        raise SynthError(f"{path}: cannot write audio ({err})") from None
    rec = {
        "id": job["id"], "path": rel.as_posix(), "num_samples": int(len(pcm)), "sample_rate": SAMPLE_RATE,
        "speaker": job["speaker"], "text": text.transcript(job["text"]), "phones": rows,
    }
    for key in ("label", "slots", "style"):
        if key in job:
            rec[key] = job[key]
    rec["noise"] = info["noise"]
    rec["snr_db"] = info["snr_db"]
    if unknown:
        rec["unknown_ipa"] = unknown
    return rec


def _babble_bank(profile: Profile, seed: int, voices: list[dict]) -> list[np.ndarray]:
    """Clean speech of voices that are not corpus speakers, for babble noise."""
    rng = np.random.default_rng([seed, 2])
    bank = []
    for i in range(profile.babble_utts):
        spk = voices[i % len(voices)]
        p = _utt_params(spk, rng)
        speed = p.pop("speed")
        syn = espeak.synthesize(text.sentence(rng, 3), f"{spk['accent']}+{spk['id']}", seed=int(rng.integers(2**31 - 1)),
                                speed=speed, dtype="float32", **p)
        a = syn.audio
        bank.append(a / (noise.active_rms(a) + 1e-9))
    return bank


# ----------------------------------------------------------------------------- build


def config_hash(profile: Profile, seed: int) -> str:
    """SHA-256 (16 hex) of everything that determines the build's content."""
    blob = json.dumps(
        {"format": FORMAT_VERSION, "profile": asdict(profile), "seed": seed, "espeak": espeak.version(),
         "phones": phones.describe()},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# every split a build plans (``_plan``): one per task and part, and the distillation split
SPLITS = tuple(f"{t}_{p}" for t in ("ks", "ic", "er", "asr", "sid") for p in ("train", "dev", "test")) + ("distill",)


def _in_group(split: str, group: str) -> bool:
    """``split`` is the ``--only`` group ``group``: the split itself, or its task (``ks``
    holds ``ks_train``)."""
    return split == group or split.startswith(group + "_")


def parse_only(spec: str | None) -> dict[str, int | None] | None:
    """``--only`` as ``{group: count or None}``: ``"distill:4500,ks,ic"`` renders the first
    4500 distill utterances and every KS and IC split (a group is a split name, or a task
    prefix: ``ks`` = ``ks_train``, ``ks_dev``, ``ks_test``). ``None``/empty: everything.

    Raises:
        SynthError: an empty name or a count that is not a positive integer.
    """
    if not spec:
        return None
    only: dict[str, int | None] = {}
    for part in spec.split(","):
        name, _, count = part.strip().partition(":")
        if not name or (count and not (count.isdigit() and int(count) > 0)):
            raise SynthError(f"--only {spec!r}: {part.strip()!r} is not SPLIT or SPLIT:N (N >= 1), e.g. distill:4500,ks,ic")
        only[name] = int(count) if count else None
    unknown = [g for g in only if not any(_in_group(sp, g) for sp in SPLITS)]
    if unknown:
        raise SynthError(f"--only {spec!r}: no split or task {', '.join(map(repr, unknown))} "
                         f"(tasks: distill, ks, ic, er, asr, sid; or a split such as ks_train)")
    return only


def _select(jobs: dict[str, list[dict]], only: dict[str, int | None] | None) -> dict[str, list[dict]]:
    """The planned jobs ``only`` asks for (each job is seeded on its own, so a subset's audio
    is byte-identical to the full build's)."""
    if only is None:
        return jobs
    picked = {}
    for sp, js in jobs.items():
        groups = [g for g in only if _in_group(sp, g)]
        if groups:
            n = only[groups[0]]
            picked[sp] = js if n is None else js[:n]
    return picked


def _covers(built: dict | None, only: dict[str, int | None] | None) -> bool:
    """True when a build made with ``--only built`` (``None``: everything) holds all that
    ``only`` asks for."""
    if built is None:
        return True
    if only is None:
        return False

    def held(g: str, n: int | None) -> bool:  # a built group that is g, or g's task
        return any(_in_group(g, b) and (m is None or (n is not None and n <= m)) for b, m in built.items())

    return all(held(g, n) for g, n in only.items())


def is_complete(out: Path, chash: str, only: dict[str, int | None] | None = None) -> bool:
    """True when ``out/corpus.json`` records ``chash``, all its manifests exist, and it holds
    what ``only`` asks for (a full build holds every subset)."""
    meta_path = out / "corpus.json"
    if not meta_path.is_file():
        return False
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    if meta.get("config_hash") != chash or not _covers(meta.get("only"), only):
        return False
    return all((out / f"{split}.jsonl").is_file() for split in meta.get("counts", {}))


def _prepare_out(out: Path, prof: Profile, seed: int, force: bool, verbose: bool) -> None:
    """Clear a previous partial build, or an outdated build of the same profile and seed;
    refuse a folder that holds another corpus (unless ``force``: then clear it) or files
    that are not a corpus."""
    if out.exists() and not out.is_dir():
        raise SynthError(f"{out}: exists and is not a folder; pick another --out")
    if out.is_dir() and any(out.iterdir()):
        holder = describe_corpus(out)
        if holder is None:
            raise SynthError(f"{out}: folder is not empty and holds no corpus (no corpus.json); pick an empty or new --out")
        meta = read_corpus_meta(out)
        ours = (out / ".building").exists() and meta is None  # our own crashed build
        if meta and meta.get("name") == SYNTHETIC_NAME:  # same profile and seed: an older format, rebuilt
            ours = meta.get("profile") == prof.name and meta.get("seed") == seed
        if not ours and not force:
            raise CorpusFolderError(f"{out}: holds another corpus ({holder}); this build is the {prof.name} profile "
                                    f"(seed {seed}): pick another --out, or pass --force to clear it first")
        # corpus.json goes first: from here on no rerun trusts this folder until the end
        removed = clear_corpus(out)
        if verbose and not ours:
            print(f"{out}: --force: cleared {holder}: removed {removed}")
        shutil.rmtree(out / "audio", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / ".building").write_text("a build is in progress or crashed; rerun 'harness data build'\n")


def resolve_profile(profile: str | Profile) -> Profile:
    """A :class:`Profile` from its name (or itself).

    Raises:
        SynthError: unknown profile name (lists the known ones).
    """
    if isinstance(profile, Profile):
        return profile
    if profile not in PROFILES:
        raise SynthError(f"unknown corpus profile {profile!r} (known: {', '.join(PROFILES)})")
    return PROFILES[profile]


def build_corpus(profile: str | Profile, out: str | Path, seed: int = 0, workers: int = 0, verbose: bool = True,
                 force: bool = False, only: str | None = None) -> Path:
    """Synthesise the embedded corpus into ``out`` (a no-op when already built with this config).

    Args:
        profile: ``"tiny"``, ``"embedded"`` or a :class:`Profile`.
        out: output folder (created; must be empty, or a build of this function with the
            same profile and seed: an unfinished or older-format one is rebuilt).
        seed: master seed; the same seed gives identical manifests and audio.
        workers: processes (0 = all CPU cores).
        verbose: print progress and the summary line.
        force: clear a folder that holds another corpus (another profile or seed, an
            imported corpus) first, and print what was removed.
        only: render part of the plan (:func:`parse_only`, e.g. ``"distill:1200,ks,ic"``):
            the same audio as the full build's, in fewer minutes. A folder that holds a
            full build (or a larger subset) is up to date; a smaller one is rebuilt.

    Returns:
        ``out`` as a :class:`~pathlib.Path`.

    Raises:
        SynthError: unknown profile, unwritable or foreign output folder, full disk, or an
            eSpeak failure; the message names the path, key or voice.
        CorpusFolderError: ``out`` holds another corpus and ``force`` is not set.
    """
    prof = resolve_profile(profile)
    if workers < 0:
        raise SynthError(f"--workers must be >= 0 (0 = all cores), not {workers}")
    if seed < 0:
        raise SynthError(f"--seed must be >= 0, not {seed}")
    out = Path(out)
    chash = config_hash(prof, seed)
    subset = parse_only(only)
    if is_complete(out, chash, subset):
        if verbose:
            print(f"{out}: up to date (profile {prof.name}, seed {seed}, config {chash}); nothing to do")
        return out
    t0 = time.time()
    try:
        _prepare_out(out, prof, seed, force, verbose)
    except OSError as err:
        raise SynthError(f"{err.filename or out}: cannot write the output folder ({err.strerror or err})") from None

    rng = np.random.default_rng([seed, 0])
    pool = usable_variants()
    if prof.variants:
        pool = sorted(rng.choice(pool, size=min(prof.variants, len(pool)), replace=False).tolist())
    speakers = make_speakers(prof.speakers, rng, pool, "spk")
    babble_voices = make_speakers(prof.babble_voices, rng, pool, "bab")
    order = rng.permutation(len(speakers))
    h = prof.heldout
    pools = {
        "dev": [speakers[i] for i in sorted(order[:h])],
        "test": [speakers[i] for i in sorted(order[h : 2 * h])],
        "train": [speakers[i] for i in sorted(order[2 * h :])],
    }
    jobs = _select(_plan(prof, seed, speakers, pools), subset)

    global _BABBLE, _OUT
    old_dir = espeak._DATA_DIR
    tmp = Path(tempfile.mkdtemp(prefix="harness-voices-"))
    try:
        variants = {s["id"]: s["variant_text"] for s in speakers + babble_voices}
        espeak.use_data_dir(espeak.make_data_dir(tmp, variants, stock_variants=False, english_only=True))
        _BABBLE = _babble_bank(prof, seed, babble_voices)
        _OUT = out
        for split in jobs:
            (out / "audio" / split).mkdir(parents=True, exist_ok=True)
        flat = [j for split in jobs for j in jobs[split]]
        n_proc = workers or os.cpu_count() or 1
        results: list[dict] = []
        # progress with an ETA (harness.progress): a bar on a terminal, a line per 5 % on a pipe
        prog = Progress(len(flat), "corpus", unit="utterance") if verbose else None
        every = max(1, len(flat) // 20)

        def note(k: int) -> None:
            if prog is not None and ((k + 1) % every == 0 or k + 1 == len(flat)):
                prog.update(k + 1)

        if n_proc == 1:
            for k, j in enumerate(flat):
                results.append(_render(j))
                note(k)
        else:
            ctx = mp.get_context("fork")
            with ctx.Pool(n_proc) as pool_:
                for k, rec in enumerate(pool_.imap(_render, flat, chunksize=16)):
                    results.append(rec)
                    note(k)
        if prog is not None:
            prog.close()
    except OSError as err:
        raise SynthError(f"{err.filename or out}: cannot write ({err.strerror or err})") from None
    except espeak.EspeakError as err:
        raise SynthError(str(err)) from None
    finally:
        espeak.reset(old_dir)
        shutil.rmtree(tmp, ignore_errors=True)
        _BABBLE = []

    by_split: dict[str, list[dict]] = {}
    unknown: dict[str, int] = {}
    for rec in results:
        by_split.setdefault(rec["id"].rsplit("-", 1)[0], []).append(rec)
        for sym, c in rec.pop("unknown_ipa", {}).items():
            unknown[sym] = unknown.get(sym, 0) + c
    try:
        for split, recs in by_split.items():
            write_manifest(out / f"{split}.jsonl", recs)
        meta = _corpus_meta(prof, seed, chash, speakers, pools, babble_voices, by_split, unknown, time.time() - t0)
        meta["only"] = subset  # None: the whole plan
        atomic_write(out / "corpus.json", json.dumps(meta, indent=1))
        (out / ".building").unlink(missing_ok=True)
    except OSError as err:
        raise SynthError(f"{err.filename or out}: cannot write ({err.strerror or err})") from None
    if verbose:
        hours = sum(r["num_samples"] for r in results) / SAMPLE_RATE / 3600
        print(f"{out}: built profile {prof.name} (seed {seed}): {len(results)} utterances, {hours:.2f} h, "
              f"{len(speakers)} speakers, {len(by_split)} splits in {meta['build_seconds']:.1f} s on {n_proc} process(es)")
    return out


def _corpus_meta(prof, seed, chash, speakers, pools, babble_voices, by_split, unknown, seconds) -> dict:
    return {
        "name": SYNTHETIC_NAME,
        "format": FORMAT_VERSION,
        "profile": prof.name,
        "seed": seed,
        "config_hash": chash,
        "config": asdict(prof),
        "sample_rate": SAMPLE_RATE,
        "espeak_version": espeak.version(),
        "phone_set": phones.describe(),
        "unknown_ipa": unknown,
        "tasks": {
            "distill": "read sentences of the train speakers; unlabelled (LibriSpeech stand-in)",
            "ks": f"Speech Commands v1 style: {', '.join(text.KS_CLASSES)}",
            "ic": "Fluent Speech Commands style: 31 (action, object, location) intents",
            "sid": "speaker identification over all speakers; unseen utterances of seen speakers",
            "er": ER_DESCRIPTION,
            "asr": "read sentences with word transcripts and phones (ASR and PR)",
        },
        "er_is_proxy": True,
        "er_styles": {k: dict(zip(("pitch_shift", "range_factor", "rate_factor", "level_db"), v)) for k, v in STYLES.items()},
        "noise_types": list(noise.NOISE_TYPES),
        "speaker_pools": {k: [s["id"] for s in v] for k, v in pools.items()},
        "speakers": {s["id"]: {k: s[k] for k in ("accent", "base", "gender", "vtl", "pitch_hz", "params")} for s in speakers},
        "babble_voices": [s["id"] for s in babble_voices],
        "counts": {k: len(v) for k, v in sorted(by_split.items())},
        "hours": {k: round(sum(r["num_samples"] for r in v) / SAMPLE_RATE / 3600, 4) for k, v in sorted(by_split.items())},
        "build_seconds": round(seconds, 2),
        "git_commit": git_commit(),
        "created": now_iso(),
    }
