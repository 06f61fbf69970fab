"""A small ctypes binding to eSpeak NG (the shared library shipped by ``espeakng-loader``).

What it gives the corpus builder:

* :func:`synthesize`: text -> 16 kHz mono audio (eSpeak's 22 050 Hz output resampled) (``int16`` or ``float32``) for a voice
  (``"<language>+<variant>"``, e.g. ``"en-us+f3"``) and the speech parameters eSpeak
  exposes (rate, pitch, pitch range, volume, word gap), together with the phoneme events:
  one :class:`Phone` per phoneme with its IPA symbol and exact start/end **sample**
  positions in the returned audio (eSpeak reports the sample index of each event when it
  is initialised with phoneme events on; a phone ends where the next event starts).
* :func:`phonemize`: text -> IPA string from eSpeak's own phonemizer
  (``espeak_TextToPhonemes``), the same front-end the synthesiser uses.
* :func:`list_variants`: the voice variants installed with the library.

eSpeak keeps global state, so this module initialises the library once per process
(lazily, on first use) and is not thread-safe; the corpus builder uses processes.
The output of :func:`synthesize` does not depend on what the process synthesised before
(needed for byte-identical corpora for any number of workers): each call reseeds both
random generators eSpeak NG draws from (its own, and the C library's ``rand()`` in the
Klatt voices; ``seed`` argument), sets the voice again, and first renders a short quiet
utterance that brings wavegen's automatic gain back to unity (:meth:`_Engine.settle`);
the voice lines :data:`DETERMINISTIC_VOICE_LINES` switch off the features whose state
survives between messages.
"""

from __future__ import annotations

import ctypes
import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.data.audio import SAMPLE_RATE  # noqa: F401  (the output rate of this module, Hz)
from harness.errors import HarnessError
NATIVE_RATE = 22050  # eSpeak NG's own output rate (Hz); resampled to SAMPLE_RATE

# speak_lib.h constants
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_PHONEME_EVENTS = 0x0001
_INIT_PHONEME_IPA = 0x0002
_INIT_DONT_EXIT = 0x8000
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
_EVENT_END = 5
_EVENT_MSG_TERMINATED = 6
_EVENT_PHONEME = 7
_PHONEMES_IPA = 0x02

PARAMETERS = {"rate": 1, "volume": 2, "pitch": 3, "range": 4, "wordgap": 7}
"""eSpeak parameter ids (``espeak_PARAMETER``) by name.

rate: words per minute (80..450); volume: 0..200 (100 = default amplitude); pitch: base
pitch 0..99 (voice-relative); range: pitch range 0..99 (0 = monotone); wordgap: extra
pause between words in units of 10 ms at the default rate.
"""

PARAMETER_LIMITS = {"rate": (80, 450), "volume": (0, 200), "pitch": (0, 99), "range": (0, 99), "wordgap": (0, 50)}


# Appended to every variant file in the private data folder. These voice features keep
# state across utterances inside eSpeak (flutter phase, echo buffer, the pitch-cycle
# counter of amplitude modulation) or draw from a generator that espeak_ng_SetRandSeed
# does not reset (breath noise), so with them the same call gives different audio
# depending on what the process synthesised before. "roughness 8" (not 0): wavegen looks
# the modulation up in a table with 8 rows (N_ROUGHNESS), and row 0 still modulates the
# trill phonemes (Scottish /r/) every 2nd or 4th cycle of a process-wide counter; 8 is
# past the table, no modulation at all. Measured: with "roughness 0", "tree" in
# en-gb-scotland alternated between two renderings on repeated calls; with these lines
# every stock variant gives byte-identical audio on repeated calls (without them 27 of
# 104 do not).
DETERMINISTIC_VOICE_LINES = "flutter 0\nroughness 8\necho 0 0\nbreath 0\n"
BASE_VARIANT = "base"  # a neutral variant (eSpeak defaults + the lines above)
SETTLE_TEXT = "mamama"  # voiced throughout: ~0.4 s, 9000 samples of wavegen cycles (see _Engine.settle)
SETTLE_PARAMS = {"rate": 175, "pitch": 50, "range": 0, "volume": 20, "wordgap": 0}
_MAX_VOICE_FILES = 349  # eSpeak NG's N_VOICES_LIST - 1: voice files beyond it are dropped

_DATA_DIR: Path | None = None


class EspeakError(RuntimeError, HarnessError):
    """eSpeak could not be loaded or failed to synthesise; the message names what."""


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # milliseconds
        ("sample", ctypes.c_int),  # sample index since the start of the message
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass(frozen=True)
class Phone:
    """One phoneme event: IPA symbol (as eSpeak names it) and its span in samples."""

    ipa: str
    start: int  # first sample (inclusive)
    end: int  # last sample (exclusive)


@dataclass
class Synthesis:
    """The result of :func:`synthesize`.

    Attributes:
        audio: ``(S,)`` int16 or float32 (in [-1, 1]) at :data:`SAMPLE_RATE` (16 kHz).
        phones: phoneme spans in order; pauses (eSpeak's ``_``) included as ``"_"``.
        words: ``(text_position, start_sample)`` of each word event.
    """

    audio: np.ndarray
    phones: list[Phone]
    words: list[tuple[int, int]]


class _Engine:
    """The process-wide eSpeak state (library handle, callback buffers)."""

    def __init__(self) -> None:
        import espeakng_loader

        lib_path = espeakng_loader.get_library_path()
        data_path = str(data_dir())
        try:
            lib = ctypes.CDLL(lib_path)
        except OSError as err:
            raise EspeakError(f"{lib_path}: cannot load eSpeak NG ({err})") from None
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
            ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.restype = ctypes.c_int
        lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
        lib.espeak_TextToPhonemes.restype = ctypes.c_void_p
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_ng_SetRandSeed.restype = None
        lib.espeak_Info.argtypes = [ctypes.POINTER(ctypes.c_char_p)]
        lib.espeak_Info.restype = ctypes.c_char_p
        rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(),
            _INIT_PHONEME_EVENTS | _INIT_PHONEME_IPA | _INIT_DONT_EXIT,
        )
        if rate != NATIVE_RATE:
            raise EspeakError(f"{lib_path}: espeak_Initialize returned {rate} (expected {NATIVE_RATE} Hz); data {data_path}")
        self.lib = lib
        self.data_path = Path(data_path)
        self.libc = ctypes.CDLL(None)
        self.version = lib.espeak_Info(None).decode()
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, int, int, str]] = []
        # keep a reference: ctypes would free the thunk otherwise
        self._cb = _CALLBACK(self._callback)
        lib.espeak_SetSynthCallback(self._cb)
        self._voice: str | None = None

    def _callback(self, wav, numsamples, events) -> int:
        if numsamples > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(numsamples,)).copy())
        i = 0
        while True:
            ev = events[i]
            if ev.type == _EVENT_LIST_TERMINATED:
                break
            if ev.type == _EVENT_PHONEME:
                name = ev.id.string.decode("utf-8", "replace")
                self._events.append((_EVENT_PHONEME, ev.sample, ev.text_position, name))
            elif ev.type in (_EVENT_WORD, _EVENT_END, _EVENT_MSG_TERMINATED):
                self._events.append((ev.type, ev.sample, ev.text_position, ""))
            i += 1
        return 0

    def set_voice(self, voice: str) -> None:
        # Set every time, even when it is the voice already in use: espeak_SetVoiceByName
        # also resets wavegen's echo buffer, amplitude and pitch formants, and skipping it
        # for a repeated voice let the previous utterance change the next one (measured).
        if "+" not in voice:
            # the stock default voice has flutter on (not deterministic): use our neutral variant
            voice = f"{voice}+{BASE_VARIANT}"
        variant = voice.split("+", 1)[1]
        if not (self.data_path / "voices" / "!v" / variant).is_file():
            # eSpeak would silently fall back to its default voice
            raise EspeakError(f"eSpeak voice variant {variant!r} not found in {self.data_path / 'voices' / '!v'}")
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise EspeakError(f"eSpeak voice {voice!r} not found (see harness.data.espeak.list_variants() and {self.data_path / 'lang'})")
        self._voice = voice

    def set_params(self, params: dict[str, int]) -> None:
        for key, value in params.items():
            if key not in PARAMETERS:
                raise EspeakError(f"unknown eSpeak parameter {key!r} (known: {', '.join(PARAMETERS)})")
            lo, hi = PARAMETER_LIMITS[key]
            value = int(round(min(max(value, lo), hi)))
            if self.lib.espeak_SetParameter(PARAMETERS[key], value, 0) != 0:
                raise EspeakError(f"eSpeak rejected parameter {key}={value}")

    def settle(self) -> None:
        """Bring the synthesiser's automatic gain control back to unity.

        Why: eSpeak's wavegen lowers a process-wide gain (``agc``, a static in
        ``Wavegen()``) when a sample would overflow and raises it again by 1/256 every 8
        voiced samples; neither a voice change nor ``espeak_Terminate`` resets it, so an
        utterance rendered right after a loud one started quieter (measured on the tiny
        profile: samples at 0.73x of a fresh process' for the first ~550 samples of the
        next utterance; 14 of 492 utterances differed from one-process-per-utterance
        renders). Rendering :data:`SETTLE_TEXT` quietly (no overflow; ~10 000 voiced
        samples, more than the ~2 300 the gain needs to climb from 0 to unity) always
        ends with the gain at unity. Costs one short synthesis per call.
        """
        self.set_voice(f"en+{BASE_VARIANT}")
        self.set_params(SETTLE_PARAMS)
        self.synth(SETTLE_TEXT, 0)

    def synth(self, text: str, seed: int) -> tuple[np.ndarray, list]:
        self._chunks, self._events = [], []
        self.lib.espeak_ng_SetRandSeed(ctypes.c_long(seed & 0x7FFFFFFF))
        self.libc.srand(ctypes.c_uint(seed & 0xFFFFFFFF))
        data = text.encode("utf-8") + b"\0"
        buf = ctypes.create_string_buffer(data)
        err = self.lib.espeak_Synth(buf, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if err != 0:
            raise EspeakError(f"espeak_Synth failed (error {err}) for {text[:40]!r}")
        self.lib.espeak_Synchronize()
        audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        return audio.astype(np.int16, copy=False), list(self._events)

    def phonemize(self, text: str) -> str:
        buf = ctypes.create_string_buffer(text.encode("utf-8") + b"\0")
        ptr = ctypes.c_void_p(ctypes.addressof(buf))
        out = []
        # espeak_TextToPhonemes returns one clause per call and advances the pointer
        while ptr.value:
            res = self.lib.espeak_TextToPhonemes(ctypes.byref(ptr), _CHARS_UTF8, _PHONEMES_IPA)
            if res:
                out.append(ctypes.string_at(res).decode("utf-8", "replace"))
        return " ".join(s for s in out if s)


_ENGINE: _Engine | None = None
_ENGINE_PID: int | None = None


def stock_data_path() -> Path:
    """The ``espeak-ng-data`` folder shipped in the ``espeakng-loader`` wheel."""
    try:
        import espeakng_loader
    except ImportError as err:  # pragma: no cover - dependency of the package
        raise EspeakError(f"espeakng-loader is not installed ({err}); pip install espeakng-loader") from None
    return Path(espeakng_loader.get_data_path())


def make_data_dir(
    root: str | Path, variants: dict[str, str] | None = None, stock_variants: bool = True, english_only: bool = False
) -> Path:
    """Create a private eSpeak data folder: the stock data plus our own voice variants.

    Every stock file is symlinked except ``voices/!v``, which holds the stock variants
    (if ``stock_variants``) with :data:`DETERMINISTIC_VOICE_LINES` appended, a neutral
    :data:`BASE_VARIANT`, and ``variants`` (name -> variant file text, e.g. one per
    synthetic speaker). eSpeak lists at most 349 voice files (languages + variants) and
    silently drops the rest, so many custom variants need ``english_only=True`` (only the
    English language files, 11 instead of 141) and ``stock_variants=False``.

    Args:
        root: folder to create ``espeak-ng-data`` in (created if missing).
        variants: extra variant files; their text gets the deterministic lines too.
        stock_variants: include eSpeak's own variants (``m3``, ``f1``, ``klatt2``...).
        english_only: keep only the English language definitions (``lang/gmw/en*``).

    Returns:
        The ``espeak-ng-data`` path, for :func:`use_data_dir`.

    Raises:
        EspeakError: if the folder cannot be written (names the path), or the voice
            files would exceed eSpeak's list limit.
    """
    src = stock_data_path()
    dst = Path(root) / "espeak-ng-data"
    vdir = dst / "voices" / "!v"
    files: dict[str, str] = {}
    if stock_variants:
        files = {p.name: p.read_text(errors="replace") for p in (src / "voices" / "!v").iterdir() if p.is_file()}
    files[BASE_VARIANT] = f"language variant\nname {BASE_VARIANT}\n"
    files.update(variants or {})
    n_lang = 11 if english_only else sum(1 for p in (src / "lang").rglob("*") if p.is_file())
    if len(files) + n_lang > _MAX_VOICE_FILES:
        raise EspeakError(
            f"{dst}: {len(files)} variants + {n_lang} languages exceed eSpeak's limit of {_MAX_VOICE_FILES} voice files "
            "(use english_only=True, stock_variants=False, or fewer speakers)"
        )
    try:
        vdir.mkdir(parents=True, exist_ok=True)
        for p in src.iterdir():
            link = dst / p.name
            if p.name == "voices" or link.exists() or link.is_symlink():
                continue
            if p.name == "lang" and english_only:
                (link / "gmw").mkdir(parents=True, exist_ok=True)
                for q in (p / "gmw").iterdir():
                    if q.name.startswith("en") and q.name != "en-Shaw" and not (link / "gmw" / q.name).exists():
                        os.symlink(q, link / "gmw" / q.name)
                continue
            os.symlink(p, link)
        for name, text in files.items():
            (vdir / name).write_text(text.rstrip("\n") + "\n" + DETERMINISTIC_VOICE_LINES)
    except OSError as err:
        raise EspeakError(f"{dst}: cannot write the eSpeak data folder ({err.strerror or err})") from None
    return dst


def use_data_dir(path: str | Path) -> None:
    """Make this process (and processes it forks later) use the data folder ``path``."""
    global _DATA_DIR, _ENGINE
    path = Path(path)
    if not (path / "phontab").exists():
        raise EspeakError(f"{path}: not an eSpeak data folder (no phontab); make one with make_data_dir()")
    if _DATA_DIR != path:
        if _ENGINE is not None and _ENGINE_PID == os.getpid():
            _ENGINE.lib.espeak_Terminate()
        _DATA_DIR, _ENGINE = path, None


def reset(path: str | Path | None = None) -> None:
    """Terminate this process's engine and go back to the data folder ``path`` (None = default)."""
    global _DATA_DIR, _ENGINE
    if _ENGINE is not None and _ENGINE_PID == os.getpid():
        _ENGINE.lib.espeak_Terminate()
    _DATA_DIR, _ENGINE = (Path(path) if path else None), None


def data_dir() -> Path:
    """The data folder in use; a private temporary one is made on first need."""
    global _DATA_DIR
    if _DATA_DIR is None:
        import atexit
        import shutil
        import tempfile

        tmp = tempfile.mkdtemp(prefix="harness-espeak-")
        owner = os.getpid()
        atexit.register(lambda: os.getpid() == owner and shutil.rmtree(tmp, ignore_errors=True))
        _DATA_DIR = make_data_dir(tmp)
    return _DATA_DIR


def engine() -> _Engine:
    """The process's eSpeak engine (initialised on first use, again after a fork)."""
    global _ENGINE, _ENGINE_PID
    if _ENGINE is None or _ENGINE_PID != os.getpid():
        _ENGINE = _Engine()
        _ENGINE_PID = os.getpid()
    return _ENGINE


@functools.lru_cache(maxsize=1)
def version() -> str:
    """eSpeak NG's version string (read without initialising the engine: cheap)."""
    import espeakng_loader

    lib_path = espeakng_loader.get_library_path()
    try:
        lib = ctypes.CDLL(lib_path)
    except OSError as err:
        raise EspeakError(f"{lib_path}: cannot load eSpeak NG ({err})") from None
    lib.espeak_Info.argtypes = [ctypes.POINTER(ctypes.c_char_p)]
    lib.espeak_Info.restype = ctypes.c_char_p
    return lib.espeak_Info(None).decode()


def list_variants() -> list[str]:
    """Names of the voice variants in the data folder in use (``voices/!v``), sorted."""
    vdir = data_dir() / "voices" / "!v"
    return sorted(p.name for p in vdir.iterdir() if p.is_file())


def phonemize(text: str, voice: str = "en-us") -> str:
    """IPA for ``text`` from eSpeak's phonemizer (words separated by spaces).

    Args:
        text: plain text.
        voice: the language/accent whose rules are used (e.g. ``"en-gb-scotland"``).
    """
    eng = engine()
    eng.set_voice(voice)
    return eng.phonemize(text)


def resample_ratio(speed: float = 1.0) -> tuple[int, int]:
    """Polyphase ``(up, down)`` taking eSpeak's 22 050 Hz to 16 kHz played ``speed`` x faster.

    ``down`` is rounded to an integer, so the realised speed is ``441 * ... / 441``: within
    0.12 % of the request for speeds near 1.
    """
    if not 0.5 <= speed <= 2.0:
        raise EspeakError(f"speed must be within 0.5..2.0, not {speed}")
    return 320, int(round(441 * speed))


@functools.lru_cache(maxsize=256)
def _lowpass(up: int, down: int) -> np.ndarray:
    """The anti-aliasing FIR that ``scipy.signal.resample_poly`` would design (cached: the
    design costs as much as the filtering for a short utterance)."""
    from scipy.signal import firwin

    max_rate = max(up, down)
    return firwin(2 * 10 * max_rate + 1, 1.0 / max_rate, window=("kaiser", 5.0)).astype(np.float32)


def synthesize(
    text: str,
    voice: str = "en-us",
    *,
    rate: float = 175,
    pitch: float = 50,
    range: float = 50,  # noqa: A002 - eSpeak's own name for the parameter
    volume: float = 100,
    wordgap: float = 0,
    speed: float = 1.0,
    seed: int = 0,
    dtype: str = "int16",
) -> Synthesis:
    """Synthesise ``text`` at 16 kHz and return audio with exact phone spans.

    eSpeak renders at 22 050 Hz; the audio is resampled (polyphase, anti-aliased) to
    16 kHz, optionally with a speed factor (a tape-speed change: tempo, pitch and formants
    all scale by ``speed``, like Kaldi's speed perturbation), and every event position is
    mapped through the same ratio.

    Args:
        text: plain text (UTF-8).
        voice: ``"<language>"`` or ``"<language>+<variant>"`` (e.g. ``"en-gb-x-rp+m3"``).
        rate: speaking rate in words per minute (clipped to 80..450).
        pitch: base pitch 0..99 (relative to the voice's own range).
        range: pitch range 0..99 (0 = monotone).
        volume: amplitude 0..200 (100 = eSpeak default).
        wordgap: extra pause between words, units of 10 ms.
        speed: playback speed factor in 0.5..2.0 (1 = none).
        seed: seed for the C ``rand()`` used by Klatt voices' noise source.
        dtype: ``"int16"`` or ``"float32"`` (scaled to [-1, 1)).

    Returns:
        :class:`Synthesis` with ``audio`` ``(S,)`` at 16 kHz and ``phones`` whose spans
        tile the audio from the first phoneme event to the end of the message.

    Raises:
        EspeakError: unknown voice, rejected parameter, or a synthesis failure.
    """
    from scipy.signal import resample_poly

    if dtype not in ("int16", "float32"):
        raise EspeakError(f"dtype must be 'int16' or 'float32', not {dtype!r}")
    up, down = resample_ratio(speed)
    eng = engine()
    eng.settle()  # the audio must not depend on what this process synthesised before
    eng.set_voice(voice)
    eng.set_params({"rate": rate, "pitch": pitch, "range": range, "volume": volume, "wordgap": wordgap})
    native, events = eng.synth(text, seed)
    if len(native) == 0:
        raise EspeakError(f"eSpeak produced no audio for {text[:40]!r} (voice {voice!r})")
    audio = resample_poly(native.astype(np.float32) / 32768.0, up, down, window=_lowpass(up, down)).astype(np.float32)
    n = len(audio)

    def pos(sample_22k: int) -> int:
        return min(max(int(round(sample_22k * up / down)), 0), n)

    phones: list[Phone] = []
    words = [(tp, pos(s)) for kind, s, tp, _ in events if kind == _EVENT_WORD]
    marks = [(pos(s), name) for kind, s, _, name in events if kind == _EVENT_PHONEME]
    for i, (start, name) in enumerate(marks):
        end = marks[i + 1][0] if i + 1 < len(marks) else n
        if end > start and name:
            phones.append(Phone(name, start, end))
    if dtype == "int16":
        audio = np.clip(np.round(audio * 32768.0), -32768, 32767).astype(np.int16)
    return Synthesis(audio, phones, words)
