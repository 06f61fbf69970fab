"""The fixed phone set of the harness and the mapping from eSpeak NG's IPA to it.

Phone set: the 39 stress-less ARPAbet phones used by CMUdict and by phone recognition on
LibriSpeech/TIMIT (lower case), plus ``sil`` (silence and pauses) and ``spn`` (a symbol
eSpeak produced that the table below does not know: counted, never silently dropped).
:data:`PHONES` fixes the order, so a phone's index is stable across corpora and runs.

=========  =========================================================================
vowels     aa ae ah ao aw ay eh er ey ih iy ow oy uh uw
consonants b ch d dh f g hh jh k l m n ng p r s sh t th v w y z zh
special    sil (silence/pause), spn (unknown eSpeak symbol)
=========  =========================================================================

The labels are *phonetic*: they follow what the accent's eSpeak rules said (a rhotic
"car" is ``k aa r``, a non-rhotic one ``k aa``), so a PR label matches the audio.

Mapping (:func:`map_ipa`): stress marks are removed, then the symbol is looked up in
:data:`IPA_TO_PHONES`; failing that, length marks and combining diacritics are removed
and the lookup retried; then a symbol ending in a rhotic (``ɹ``, ``r``, ``ɚ``) is mapped
as its vowel plus ``r``/``er``; then a greedy longest-match split into known symbols is
tried. Whatever is left maps to ``spn``. One eSpeak event may map to two phones (a
diphthong + schwa such as ``iə``, a syllabic ``əl``); :func:`split_span` then divides the
event's samples equally between them (the only approximate boundaries; every other
boundary is eSpeak's own event position).
"""

from __future__ import annotations

import unicodedata

VOWELS = ("aa", "ae", "ah", "ao", "aw", "ay", "eh", "er", "ey", "ih", "iy", "ow", "oy", "uh", "uw")
CONSONANTS = (
    "b", "ch", "d", "dh", "f", "g", "hh", "jh", "k", "l", "m", "n", "ng", "p", "r", "s", "sh", "t",
    "th", "v", "w", "y", "z", "zh",
)
SILENCE = "sil"
UNKNOWN = "spn"
PHONES: tuple[str, ...] = VOWELS + CONSONANTS + (SILENCE, UNKNOWN)
"""The phone set in its fixed order (41 symbols)."""

PHONE_INDEX = {p: i for i, p in enumerate(PHONES)}

IPA_TO_PHONES: dict[str, tuple[str, ...]] = {
    # consonants
    "p": ("p",), "b": ("b",), "t": ("t",), "d": ("d",), "k": ("k",), "ɡ": ("g",), "g": ("g",),
    "f": ("f",), "v": ("v",), "θ": ("th",), "ð": ("dh",), "s": ("s",), "z": ("z",),
    "ʃ": ("sh",), "ʒ": ("zh",), "h": ("hh",), "tʃ": ("ch",), "dʒ": ("jh",),
    "m": ("m",), "n": ("n",), "ŋ": ("ng",), "l": ("l",), "ɹ": ("r",), "r": ("r",),
    "w": ("w",), "j": ("y",),
    "ɾ": ("t",),  # flap in "water": CMUdict writes T
    "ʔ": ("t",),  # glottal stop for /t/ ("bottle" in some accents)
    "ʍ": ("w",),  # "which" with a voiceless w: CMUdict writes W
    "x": ("k",),  # "loch": CMUdict writes K
    "ɬ": ("l",),
    "ʲ": ("y",),  # palatal off-glide eSpeak emits as its own event in some accents ("new")
    "n̩": ("n",), "m̩": ("m",), "l̩": ("l",),
    "əl": ("ah", "l"),  # syllabic l ("little"): CMUdict AH0 L
    "əm": ("ah", "m"), "ən": ("ah", "n"),
    # monophthongs
    "ə": ("ah",), "ɐ": ("ah",), "ʌ": ("ah",), "ɜ": ("er",), "ɜː": ("er",), "ɚ": ("er",), "ɝ": ("er",),
    "ɪ": ("ih",), "ᵻ": ("ih",), "ɨ": ("ih",), "i": ("iy",), "iː": ("iy",),
    "ɛ": ("eh",), "e": ("eh",), "eː": ("ey",),  # Scottish/Northern "lazy": one long vowel for FACE
    "æ": ("ae",), "a": ("ae",),  # TRAP written a in British accents
    "aː": ("aa",), "ɑ": ("aa",), "ɑː": ("aa",), "ɒ": ("aa",),  # LOT/PALM: CMUdict AA
    "ɔ": ("ao",), "ɔː": ("ao",), "o": ("ow",), "oː": ("ow",),
    "ʊ": ("uh",), "u": ("uw",), "uː": ("uw",), "ʉ": ("uw",), "ʉː": ("uw",),
    # diphthongs
    "eɪ": ("ey",), "ei": ("ey",), "aɪ": ("ay",), "əɪ": ("ay",), "ɑe": ("ay",), "ɑɪ": ("ay",),
    "aʊ": ("aw",), "æʊ": ("aw",), "ʌʉ": ("aw",), "ɐʊ": ("aw",),
    "oʊ": ("ow",), "əʊ": ("ow",), "əu": ("ow",), "ʌʊ": ("ow",),  # GOAT in West Midlands
    "ɔɪ": ("oy",), "oɪ": ("oy",),
    # centring diphthongs / triphthongs of non-rhotic accents
    "iə": ("ih", "ah"), "ɪə": ("ih", "ah"), "eə": ("eh", "ah"), "ɛə": ("eh", "ah"),
    "ʊə": ("uh", "ah"), "oə": ("ao", "ah"), "ɑə": ("aa", "ah"),
    "aɪə": ("ay", "ah"), "aʊə": ("aw", "ah"), "aɪɚ": ("ay", "er"), "aʊɚ": ("aw", "er"),
}
"""IPA symbols (stress removed) as eSpeak NG's English voices name them -> phones."""

_STRESS = "ˈˌ"
_RHOTIC_ENDINGS = {"ɹ": "r", "r": "r", "ɚ": "er"}


def _plain(sym: str) -> str:
    """Drop length marks (ː, ASCII ':') and combining diacritics."""
    sym = unicodedata.normalize("NFD", sym)
    return "".join(c for c in sym if c not in "ː:ˑ" and not unicodedata.combining(c))


def _lookup(sym: str) -> tuple[str, ...] | None:
    if sym in IPA_TO_PHONES:
        return IPA_TO_PHONES[sym]
    plain = _plain(sym)
    if plain in IPA_TO_PHONES:
        return IPA_TO_PHONES[plain]
    return None


def map_ipa(ipa: str) -> tuple[str, ...]:
    """Map one eSpeak phoneme name (IPA, maybe with stress) to 1-2 phones of :data:`PHONES`.

    Args:
        ipa: the phoneme event's name, e.g. ``"ˈaɪ"``, ``"tʃ"``, ``"ˈɔːɹ"``; empty or
            ``"_"`` (eSpeak's pause) is silence.

    Returns:
        A tuple of 1 or 2 phones; ``("spn",)`` when the symbol is unknown (see
        :func:`unknown_symbols` for what a corpus met).
    """
    sym = ipa.strip().replace("ˈ", "").replace("ˌ", "").replace(":", "ː")  # eSpeak sometimes writes ASCII ":"
    if sym in ("", "_", "||", "|"):
        return (SILENCE,)
    found = _lookup(sym)
    if found is not None:
        return found
    for end, phone in _RHOTIC_ENDINGS.items():
        if sym.endswith(end) and len(sym) > len(end):
            head = _lookup(sym[: -len(end)])
            if head is not None:
                return head + (phone,)
    # greedy longest-match split, e.g. an unseen vowel + consonant cluster
    out: list[str] = []
    i = 0
    while i < len(sym):
        for j in range(len(sym), i, -1):
            part = _lookup(sym[i:j])
            if part is not None:
                out.extend(part)
                i = j
                break
        else:
            return (UNKNOWN,)
    return tuple(out) if out else (UNKNOWN,)


def split_span(phones: tuple[str, ...], start: int, end: int) -> list[tuple[str, int, int]]:
    """Divide the span ``[start, end)`` (samples) equally between ``phones``."""
    k = len(phones)
    bounds = [start + (end - start) * i // k for i in range(k + 1)]
    return [(p, bounds[i], bounds[i + 1]) for i, p in enumerate(phones) if bounds[i + 1] > bounds[i]]


def events_to_phones(
    events: list[tuple[str, int, int]], num_samples: int, unknown: dict[str, int] | None = None
) -> list[list]:
    """Turn eSpeak phoneme spans into ``[phone, start, end]`` rows tiling ``[0, num_samples)``.

    Leading audio before the first event and any gap are ``sil``; adjacent ``sil`` rows
    are merged; spans are clipped to the audio.

    Args:
        events: ``(ipa, start_sample, end_sample)`` in time order.
        num_samples: audio length in samples.
        unknown: if given, counts of IPA symbols that mapped to ``spn`` are added here.

    Returns:
        Rows ``[phone, start, end]`` (ints, end exclusive), contiguous from 0 to
        ``num_samples``.
    """
    rows: list[list] = []

    def add(phone: str, s: int, e: int) -> None:
        s, e = max(s, 0), min(e, num_samples)
        if e <= s:
            return
        if rows and rows[-1][2] < s:
            add_gap = [SILENCE, rows[-1][2], s]
            if rows[-1][0] == SILENCE:
                rows[-1][2] = s
            else:
                rows.append(add_gap)
        if phone == SILENCE and rows and rows[-1][0] == SILENCE:
            rows[-1][2] = e
        else:
            rows.append([phone, s, e])

    if not events or events[0][1] > 0:
        add(SILENCE, 0, events[0][1] if events else num_samples)
    for ipa, s, e in events:
        mapped = map_ipa(ipa)
        if unknown is not None and UNKNOWN in mapped:
            unknown[ipa] = unknown.get(ipa, 0) + 1
        for phone, ps, pe in split_span(mapped, s, e):
            add(phone, ps, pe)
    if rows and rows[-1][2] < num_samples:
        add(SILENCE, rows[-1][2], num_samples)
    return rows


def describe() -> dict:
    """The phone set as stored in ``corpus.json``: order, classes, and the IPA table."""
    return {
        "name": "arpabet39+sil+spn",
        "phones": list(PHONES),
        "vowels": list(VOWELS),
        "consonants": list(CONSONANTS),
        "silence": SILENCE,
        "unknown": UNKNOWN,
        "ipa_map": {k: list(v) for k, v in sorted(IPA_TO_PHONES.items())},
    }
