import pytest

from harness.superb.score import (PAPER_FBANK, PAPER_REFERENCE, ScoreError, superb_score,
                                  task_score, values_of)


def test_task_score_higher_is_better():
    assert task_score(0.9, fbank=0.1, ref=0.9, direction="higher") == pytest.approx(1000)
    assert task_score(0.5, fbank=0.1, ref=0.9, direction="higher") == pytest.approx(500)
    assert task_score(0.1, fbank=0.1, ref=0.9, direction="higher") == pytest.approx(0)
    assert task_score(0.05, fbank=0.1, ref=0.9, direction="higher") == pytest.approx(-62.5)


def test_task_score_lower_is_better():
    # WER: fbank 0.30, reference 0.10; a model at 0.20 is halfway, at 0.05 beats the reference
    assert task_score(0.20, fbank=0.30, ref=0.10, direction="lower") == pytest.approx(500)
    assert task_score(0.05, fbank=0.30, ref=0.10, direction="lower") == pytest.approx(1250)
    assert task_score(0.40, fbank=0.30, ref=0.10, direction="lower") == pytest.approx(-500)


def test_reference_must_beat_fbank():
    with pytest.raises(ScoreError, match="not better than fbank"):
        task_score(0.2, fbank=0.1, ref=0.3, direction="lower")
    with pytest.raises(ScoreError):
        task_score(0.5, fbank=0.5, ref=0.5, direction="higher")


def test_superb_score_hand_made():
    values = {"ks": 0.5, "pr": 0.20, "asr": 0.3}
    dirs = {"ks": "higher", "pr": "lower", "asr": "lower"}
    fbank = {"ks": 0.1, "pr": 0.30, "asr": 0.3}
    ref = {"ks": 0.9, "pr": 0.10}  # no asr reference: asr is skipped
    out = superb_score(values, dirs, fbank, ref)
    # ks: 1000 * 0.4 / 0.8 = 500; pr: 1000 * 0.1 / 0.2 = 500 -> mean 500 over 2 tasks
    assert out["score"] == pytest.approx(500)
    assert out["tasks"] == ["ks", "pr"]
    assert out["skipped"] == {"asr": "no reference value"}
    values["pr"] = 0.05  # 1250 -> (500 + 1250) / 2
    assert superb_score(values, dirs, fbank, ref)["score"] == pytest.approx(875)
    assert superb_score({}, {}, fbank, ref)["score"] is None


def test_paper_tables_are_consistent():
    # every published reference beats the published fbank in its direction
    dirs = {"ks": "higher", "ic": "higher", "sid": "higher", "er": "higher", "pr": "lower", "asr": "lower"}
    out = superb_score(PAPER_REFERENCE, dirs, PAPER_FBANK, PAPER_REFERENCE)
    assert out["score"] == pytest.approx(1000) and not out["skipped"]


def test_values_of_ignores_failed_tasks():
    payload = {"tasks": {"ks": {"status": "ok", "value": 0.5, "direction": "higher"},
                         "ic": {"status": "failed: boom", "value": None, "direction": "higher"}}}
    assert values_of(payload) == ({"ks": 0.5}, {"ks": "higher"})


def test_a_task_the_reference_does_not_clearly_beat_is_reported_not_scored():
    from harness.superb.score import resolvable, superb_score

    ok, two_se = resolvable(0.435, 0.4425, 400, 400)  # the embedded ER proxy: a 0.0075 gap
    assert not ok and two_se == pytest.approx(2 * ((0.435 * 0.565 + 0.4425 * 0.5575) / 400) ** 0.5)
    assert resolvable(0.235, 0.702, 480, 480)[0]
    res = superb_score({"ks": 0.5, "er": 0.40}, {"ks": "higher", "er": "higher"},
                       {"ks": 0.235, "er": 0.435}, {"ks": 0.702, "er": 0.4425},
                       n={"ks": (480, 480), "er": (400, 400)})
    assert res["tasks"] == ["ks"] and "not clearly better" in res["skipped"]["er"]
    assert res["score"] == pytest.approx(1000 * (0.5 - 0.235) / (0.702 - 0.235))
    # without sizes (published baselines) every task with a better reference is scored
    assert superb_score({"er": 0.44}, {"er": "higher"}, {"er": 0.435}, {"er": 0.4425})["tasks"] == ["er"]
