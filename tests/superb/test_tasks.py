import pytest

from harness.registry import RegistryError
from harness.superb import TASKS, get_task, parse_tasks


def test_registry_has_the_six_tasks():
    assert set(TASKS.names()) == {"ks", "ic", "sid", "er", "pr", "asr"}


@pytest.mark.parametrize("profile", ["tiny", "embedded", "paper"])
def test_every_task_declares_its_protocol(profile):
    for name in TASKS.names():
        t = get_task(name, profile)
        assert t.direction == ("lower" if t.metric in ("per", "wer") else "higher")
        assert t.steps > 0 and t.lr > 0 and t.batch_size > 0 and len(t.splits) == 3
        assert t.optimizer in ("adam", "adamw")
    assert get_task("pr", profile).splits == get_task("asr", profile).splits == (
        "asr_train", "asr_dev", "asr_test")
    assert get_task("pr", profile).head == "linear_ctc"
    assert get_task("asr", profile).head == "bilstm_ctc"
    assert get_task("ks", profile).splits == ("ks_train", "ks_dev", "ks_test")


def test_er_is_named_as_a_proxy_outside_paper():
    assert "proxy" in get_task("er", "embedded").title
    assert "proxy" not in get_task("er", "paper").title
    assert get_task("asr", "paper").hidden == 1024  # SUPERB's BiLSTM-1024


def test_parse_tasks_and_errors():
    assert [t.name for t in parse_tasks("ks, pr,ks")] == ["ks", "pr"]
    with pytest.raises(RegistryError, match="'kss'.*ks"):
        parse_tasks("ks,kss")
    with pytest.raises(ValueError, match="no SUPERB task"):
        parse_tasks(" , ")
    with pytest.raises(ValueError, match="no option 'stepz'"):
        get_task("ks", stepz=3)
    with pytest.raises(ValueError, match="unknown SUPERB profile"):
        get_task("ks", "huge")
    assert get_task("ks", steps=7, max_utts=[1, 2, 3]).max_utts == (1, 2, 3)
