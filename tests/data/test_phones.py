import pytest

from harness.data import espeak, phones, text
from harness.data.synth import ACCENTS


def test_phone_set_is_fixed():
    assert len(phones.PHONES) == 41 == len(set(phones.PHONES))
    assert phones.PHONES[-2:] == ("sil", "spn")
    assert phones.PHONE_INDEX["aa"] == 0
    for mapped in phones.IPA_TO_PHONES.values():
        assert all(p in phones.PHONE_INDEX for p in mapped)


@pytest.mark.parametrize(
    "ipa, expected",
    [
        ("ˈaɪ", ("ay",)), ("tʃ", ("ch",)), ("ˌoʊ", ("ow",)), ("ɡ", ("g",)), ("ɾ", ("t",)),
        ("ˈɔːɹ", ("ao", "r")), ("ˈaɪə", ("ay", "ah")), ("əl", ("ah", "l")), ("t̪", ("t",)),
        ("ˈa:", ("aa",)), ("", ("sil",)), ("_", ("sil",)), ("ǂ", ("spn",)), ("ˈʊɹ", ("uh", "r")),
    ],
)
def test_map_ipa(ipa, expected):
    assert phones.map_ipa(ipa) == expected


def test_split_span_and_tiling():
    assert phones.split_span(("ay", "ah"), 100, 201) == [("ay", 100, 150), ("ah", 150, 201)]
    unknown = {}
    rows = phones.events_to_phones([("h", 10, 20), ("ˈaɪə", 20, 40), ("ǂ", 50, 60), ("", 60, 70)], 80, unknown)
    assert rows == [
        ["sil", 0, 10], ["hh", 10, 20], ["ay", 20, 30], ["ah", 30, 40], ["sil", 40, 50], ["spn", 50, 60], ["sil", 60, 80],
    ]
    assert unknown == {"ǂ": 1}


def test_every_accent_maps_without_unknowns():
    """All symbols eSpeak produces for the corpus vocabulary, in every accent, are known."""
    words = sorted(text.vocabulary())
    sample = " ".join(words)
    unknown = {}
    for accent in ACCENTS:
        syn = espeak.synthesize(sample, accent, rate=400)
        rows = phones.events_to_phones([(p.ipa, p.start, p.end) for p in syn.phones], len(syn.audio), unknown)
        assert rows[0][1] == 0 and rows[-1][2] == len(syn.audio)
        assert all(a[2] == b[1] for a, b in zip(rows, rows[1:]))
    assert unknown == {}
