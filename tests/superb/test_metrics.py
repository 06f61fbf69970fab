import pytest

from harness.superb.metrics import accuracy, error_rate, normalize_text, per, wer


def test_wer_hand_computed():
    refs = ["the cat sat on the mat", "hello world"]
    hyps = ["the cat sit on mat", "hello big world"]
    # pair 1: sat->sit (1 substitution) + one 'the' deleted; pair 2: 'big' inserted
    # 3 edits over 8 reference words
    assert wer(refs, hyps) == pytest.approx(3 / 8)
    out = error_rate([r.split() for r in refs], [h.split() for h in hyps])
    assert (out["substitutions"], out["deletions"], out["insertions"], out["ref_tokens"]) == (1, 1, 1, 8)


def test_wer_normalisation():
    assert normalize_text("Hello, World!  It's  A-OK.") == "hello world it's a ok"
    assert wer(["Hello, World!"], ["hello world"]) == 0.0
    assert wer(["one two"], [""]) == 1.0  # empty hypothesis: all deletions


def test_per_hand_computed():
    refs = [["a", "b", "c", "d"], ["p", "q"]]
    hyps = [["a", "x", "c"], ["p", "q", "r", "s"]]
    # 1 substitution + 1 deletion, then 2 insertions: 4 edits over 6 phones
    assert per(refs, hyps) == pytest.approx(4 / 6)
    assert per([["aː", "ʃ"]], [["aː", "ʃ"]]) == 0.0  # IPA symbols are single tokens


def test_error_rate_rejects_bad_input():
    with pytest.raises(ValueError, match="empty"):
        per([[]], [["a"]])
    with pytest.raises(ValueError, match="1 references but 2"):
        per([["a"]], [["a"], ["b"]])
    with pytest.raises(ValueError, match="whitespace"):
        per([["a b"]], [["a"]])


def test_accuracy():
    assert accuracy([0, 1, 2, 3], [0, 1, 0, 3]) == 0.75
    with pytest.raises(ValueError):
        accuracy([], [])
