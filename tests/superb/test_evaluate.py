import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from harness.cli import main
from harness.registry import RegistryError
from harness.superb.evaluate import UpstreamError, evaluate, load_upstream
from harness.teachers.base import TEACHERS
from tests.support.modules import ToyUpstream

if "toy" not in TEACHERS.names():
    TEACHERS.register("toy")(lambda arg, device="cpu": ToyUpstream(int(arg or 0)))

FAST = {t: {"steps": 30, "eval_every": 15} for t in ("ks", "ic", "sid", "er", "pr", "asr")}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, fake_corpus):
    return fake_corpus("superb", tmp_path_factory.mktemp("superb") / "corpus")


def _opts(tasks):
    return {t: FAST[t] for t in tasks}


def test_evaluate_teacher_spec_writes_superb_json(corpus, tmp_path):
    out = tmp_path / "superb.json"
    res = evaluate("toy:0", "ks,pr,asr", corpus, out, profile="tiny", cache_dir=tmp_path / "c",
                   options=_opts(["ks", "pr", "asr"]), baselines=None, log=None)
    saved = json.loads(out.read_text())
    assert saved["tasks"].keys() == {"ks", "pr", "asr"}
    for name, r in saved["tasks"].items():
        assert r["status"] == "ok"
        assert {"metric", "direction", "value", "n", "dev_value", "layer_weights"} <= r.keys()
        assert len(r["layer_weights"]) == 3 and abs(sum(r["layer_weights"]) - 1) < 1e-5
        assert r["n"] == 8
    # tone classes are linearly separable from the toy upstream's band energies
    assert saved["tasks"]["ks"]["value"] > 0.5
    assert saved["tasks"]["pr"]["direction"] == "lower"
    assert 0 <= saved["tasks"]["asr"]["cer"] and "cer" not in saved["tasks"]["pr"]
    assert res["upstream_id"] == "toy-0"
    # features were stored once per split: asr_* with frames, ks_* pooled only
    stores = sorted(p.name.split("-")[0] for p in (tmp_path / "c" / "toy-0").iterdir())
    assert stores == ["asr_dev", "asr_test", "asr_train", "ks_dev", "ks_test", "ks_train"]


def test_fbank_is_a_one_state_upstream(corpus, tmp_path):
    res = evaluate("fbank", "ks", corpus, None, profile="tiny", cache_dir=tmp_path,
                   options=_opts(["ks"]), baselines=None, log=None)
    assert res["tasks"]["ks"]["layer_weights"] == [1.0]
    assert res["num_layers"] == 0 and res["width"] == 80


def test_one_failed_task_keeps_the_others(corpus, tmp_path, fake_corpus):
    broken = fake_corpus("superb", tmp_path / "broken", tasks=("ks", "ic"))
    (broken / "audio" / "ic_test_003.flac").write_bytes(b"not a flac")
    out = tmp_path / "superb.json"
    res = evaluate("toy:0", "ic,ks", broken, out, profile="tiny", cache_dir=tmp_path / "c",
                   options=_opts(["ks", "ic"]), baselines=None, log=None)
    saved = json.loads(out.read_text())
    assert saved["tasks"]["ic"]["status"].startswith("failed")
    assert "ic_test_003.flac" in saved["tasks"]["ic"]["status"]
    assert saved["tasks"]["ic"]["value"] is None
    assert saved["tasks"]["ks"]["status"] == "ok" and saved["tasks"]["ks"]["value"] is not None
    assert res == saved or res["tasks"].keys() == saved["tasks"].keys()


def test_missing_split_unknown_task(corpus, tmp_path, fake_corpus):
    partial = fake_corpus("superb", tmp_path / "partial", tasks=("ks",))
    (partial / "ks_dev.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match="missing split 'ks_dev'"):
        evaluate("toy:0", "ks", partial, None, cache_dir=tmp_path, baselines=None, log=None)
    with pytest.raises(RegistryError, match="'kz'"):
        evaluate("toy:0", "ks,kz", corpus, None, cache_dir=tmp_path, baselines=None, log=None)


def test_cli_errors_are_one_line(corpus, tmp_path, capsys, fake_corpus):
    partial = fake_corpus("superb", tmp_path / "partial", tasks=("ks",))
    (partial / "ks_test.jsonl").unlink()
    run = tmp_path / "run"
    run.mkdir()
    (run / "student.ckpt").write_bytes(b"\x00garbage, not a torch checkpoint")
    cases = [
        (["evaluate", "toy:0", "--corpus", str(partial), "--tasks", "ks"], "ks_test"),
        (["evaluate", "toy:0", "--corpus", str(corpus), "--tasks", "ks,sidd"], "sidd"),
        (["evaluate", str(run), "--corpus", str(corpus), "--tasks", "ks"], "student.ckpt"),
        (["evaluate", str(tmp_path), "--corpus", str(corpus)], "no student.ckpt"),
    ]
    for argv, needle in cases:
        assert main(argv + ["--cache-dir", str(tmp_path / "c")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and needle in err, err


def test_corrupt_checkpoint_names_the_file(tmp_path):
    ckpt = tmp_path / "student.ckpt"
    torch.save({"weights": torch.zeros(3)}, ckpt)
    ckpt.write_bytes(ckpt.read_bytes()[:40])  # truncated
    with pytest.raises(UpstreamError, match="corrupt checkpoint .*student.ckpt"):
        load_upstream(tmp_path)


def test_run_folder_superb_json_and_summary_merge(corpus, tmp_path, monkeypatch):
    # a stand-in for harness.student.load_student (the real one lives in the core branch)
    fake = types.ModuleType("harness.student")
    fake.load_student = lambda path, device="cpu": ToyUpstream(2)
    monkeypatch.setitem(sys.modules, "harness.student", fake)
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"Config": {}, "Distiller": {}}, run / "student.ckpt")
    (run / "config.yaml").write_text(f"profile: tiny\nteacher:\n  spec: toy:0\ndata:\n  corpus: {corpus}\n")
    (run / "summary.json").write_text(json.dumps({"run_id": "r1", "status": "ok"}))
    res = evaluate(run, "ks,er", None, None, cache_dir=tmp_path / "c", options=_opts(["ks", "er"]),
                   baselines={"fbank": {"ks": 0.0, "er": 0.0}, "ref": {"ks": 2.0, "er": 2.0},
                              "ref_name": "hand"}, log=None)
    saved = json.loads((run / "superb.json").read_text())
    assert saved["profile"] == "tiny" and saved["tasks"]["ks"]["status"] == "ok"
    expected = 1000 * (saved["tasks"]["ks"]["value"] + saved["tasks"]["er"]["value"]) / 2 / 2.0
    assert saved["score"]["score"] == pytest.approx(expected)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["run_id"] == "r1" and summary["superb_score"] == pytest.approx(expected)
    assert summary["tasks"]["er"] == {k: saved["tasks"]["er"][k]
                                      for k in ("metric", "direction", "value", "n", "status")}
    assert res["score"]["ref"] == "hand"


def test_auto_baselines_are_memoised(corpus, tmp_path):
    common = dict(profile="tiny", cache_dir=tmp_path / "c", options=_opts(["ks"]), ref="toy:1", log=None)
    first = evaluate("toy:0", "ks", corpus, None, **common)
    assert first["score"]["ref"] == "toy:1" and set(first["score"]["fbank"]) == {"ks"}
    memo = sorted((tmp_path / "c" / "results").glob("*.json"))
    assert len(memo) == 2  # fbank and toy:1, each scored once
    stamp = [p.stat().st_mtime_ns for p in memo]
    second = evaluate("toy:2", "ks", corpus, None, **common)
    assert [p.stat().st_mtime_ns for p in memo] == stamp
    assert second["score"]["fbank"] == first["score"]["fbank"]


def test_real_student_run_folder_with_auto_baselines(corpus, tmp_path):
    """A student saved by harness.student, scored against fbank and its teacher (dummy)."""
    student_mod = pytest.importorskip("harness.student")
    pytest.importorskip("harness.teachers.dummy")
    from harness.config import StudentConfig
    from harness.teachers.base import load_teacher

    teacher = load_teacher("dummy", "cpu")
    student = student_mod.build_student(StudentConfig(preset="student_tiny", layers=2), teacher)
    run = tmp_path / "run"
    run.mkdir()
    student_mod.save_student(student, run / "student.ckpt", {"run_id": "r"})
    (run / "config.yaml").write_text(f"profile: tiny\nteacher:\n  spec: dummy\ndata:\n  corpus: {corpus}\n")
    assert main(["evaluate", str(run), "--tasks", "ks,pr", "--quiet", "--set", "ks.steps=20",
                 "--set", "pr.steps=20", "--cache-dir", str(tmp_path / "c")]) in (0, 1)
    saved = json.loads((run / "superb.json").read_text())
    assert saved["num_layers"] == 2 and len(saved["tasks"]["ks"]["layer_weights"]) == 3
    assert saved["score"]["ref"] == "dummy"
    assert set(saved["score"]["fbank"]) == {"ks", "pr"}  # baselines scored on the same tasks
    summary = json.loads((run / "summary.json").read_text())
    assert summary["tasks"]["pr"]["metric"] == "per" and "superb_score" in summary


def test_as_baseline_fills_the_memo_trials_read(corpus, tmp_path, monkeypatch, capsys):
    import harness.superb.evaluate as ev

    cache = tmp_path / "c"
    assert main(["evaluate", "fbank", "--as-baseline", "--corpus", str(corpus), "--tasks", "ks",
                 "--set", "ks.steps=20", "--cache-dir", str(cache), "--quiet"]) == 0
    assert "baseline fbank: ks" in capsys.readouterr().out
    assert len(list((cache / "results").glob("*.json"))) == 1

    def boom(*a, **k):
        raise AssertionError("the memoised baseline was scored again")

    monkeypatch.setattr(ev, "evaluate", boom)
    res = ev.baseline_results("fbank", ["ks"], corpus, "embedded", "cpu", cache, 0, {"ks": {"steps": 20}}, 1, None)
    assert res["tasks"]["ks"]["status"] == "ok"
    assert main(["evaluate", "fbank", "--as-baseline", "--tasks", "ks"]) == 2  # needs --corpus


def test_a_failed_baseline_is_not_memoised_and_is_scored_again(corpus, tmp_path, monkeypatch):
    """A baseline task that fails (its data broken) is not kept: once the data is fixed the
    next score computes it, instead of silently dropping that task from the SUPERB score."""
    import harness.superb.evaluate as ev

    cache, real = tmp_path / "c", ev._run_task
    args = ("fbank", ["ks"], corpus, "embedded", "cpu", cache, 0, {"ks": {"steps": 20}}, 1, None)

    def broken(up, task, *a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ev, "_run_task", broken)
    res = ev.baseline_results(*args)
    assert res["tasks"]["ks"]["status"].startswith("failed: OSError")
    assert not list((cache / "results").glob("*.json"))  # nothing memoised
    # an older harness memoised a failed one: it is not trusted either
    (cache / "results").mkdir(parents=True, exist_ok=True)
    key_file = cache / "results" / "planted.json"
    key_file.write_text(json.dumps(res))
    assert ev._memoised(key_file) is None
    monkeypatch.setattr(ev, "_run_task", real)
    res = ev.baseline_results(*args)
    assert res["tasks"]["ks"]["status"] == "ok"
    memo = [p for p in (cache / "results").glob("*.json") if p.name != "planted.json"]
    assert len(memo) == 1 and json.loads(memo[0].read_text())["tasks"]["ks"]["status"] == "ok"


def test_a_rebuilt_corpus_gets_fresh_features_and_baselines(tmp_path, fake_corpus):
    """Same utterance ids and paths, another build (corpus.json config_hash): nothing reused."""
    from harness.superb.cache import corpus_tag

    corpus = fake_corpus("superb", tmp_path / "corpus", tasks=("ks",))
    assert corpus_tag(corpus) == "" and corpus_tag(tmp_path / "nowhere") == ""
    common = dict(profile="tiny", cache_dir=tmp_path / "c", options=_opts(["ks"]), ref="toy:1", log=None)
    evaluate("toy:0", "ks", corpus, None, **common)
    stores = lambda: sorted(p.name for p in (tmp_path / "c" / "toy-0").iterdir())
    memo = lambda: sorted(p.name for p in (tmp_path / "c" / "results").glob("*.json"))
    first_stores, first_memo = stores(), memo()
    evaluate("toy:0", "ks", corpus, None, **common)
    assert stores() == first_stores and memo() == first_memo  # same build: all reused
    (corpus / "corpus.json").write_text(json.dumps({"config_hash": "format2"}))
    assert corpus_tag(corpus) == "format2"
    evaluate("toy:0", "ks", corpus, None, **common)
    assert len(stores()) == 2 * len(first_stores) and len(memo()) == 2 * len(first_memo)


def test_a_teacher_spec_ending_in_ckpt_is_a_teacher(tmp_path, capsys):
    """The spec's prefix decides: ``embedded:/x/student.ckpt`` is the embedded teacher in that
    file, not a student checkpoint path (which would be "checkpoint ... does not exist")."""
    from harness.teachers.embedded import EmbeddedSFM, save_embedded, teacher_tiny

    torch.manual_seed(0)
    path = save_embedded(EmbeddedSFM(teacher_tiny()).eval(), tmp_path / "x" / "student.ckpt")
    up, run_dir, _ = load_upstream(f"embedded:{path}")
    assert up.id.startswith("embedded-") and run_dir is None
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):  # a missing one: the teacher loader's line
        load_upstream(f"embedded:{tmp_path / 'nope.ckpt'}")


def test_as_baseline_with_a_failed_task_exits_1(tmp_path, fake_corpus, capsys):
    """run_all.sh scores its baselines with --as-baseline (two in parallel, `wait $pid`): a
    failed task must stop it with one line naming the task, not exit 0 with a partial memo."""
    broken = fake_corpus("superb", tmp_path / "broken", tasks=("ks", "ic"))
    (broken / "audio" / "ic_test_003.flac").write_bytes(b"not a flac")
    cache = tmp_path / "c"
    assert main(["evaluate", "fbank", "--as-baseline", "--corpus", str(broken), "--tasks", "ks,ic",
                 "--set", "ks.steps=20", "--set", "ic.steps=20", "--cache-dir", str(cache), "--quiet"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1, err
    assert err.startswith("baseline fbank: ic failed (") and "not memoised" in err and "scored: ks" in err
    assert not list((cache / "results").glob("*.json"))


HOLDER = """
import sys, time
from harness import locks
try:
    with locks.hold(sys.argv[1], "test writer"):
        print("held", flush=True)
        time.sleep(60)
except locks.FolderLocked as err:
    print(err, flush=True)
"""


def _writer(run):
    """Another process taking ``run``'s lock (a distill or sweep trial would): its first line."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE, text=True, env=env)
    return p, p.stdout.readline().strip()


def test_evaluate_holds_the_run_folder_lock(corpus, tmp_path, monkeypatch, capsys):
    """`harness evaluate RUN` takes RUN's lock around the scoring: refused (one line naming the
    holder) while another process writes the run, and a writer is refused while it scores."""
    import harness.superb.evaluate as ev
    from harness.config import StudentConfig
    from harness.student import build_student, save_student
    from harness.teachers.base import load_teacher

    run = tmp_path / "run"
    run.mkdir()
    save_student(build_student(StudentConfig(preset="student_tiny", layers=2), load_teacher("dummy")),
                 run / "student.ckpt", {"run_id": "r"})
    argv = ["evaluate", str(run), "--corpus", str(corpus), "--tasks", "ks", "--no-score", "--quiet",
            "--set", "ks.steps=5", "--cache-dir", str(tmp_path / "c")]
    p, line = _writer(run)
    try:
        assert line == "held"
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{run} is being written by pid {p.pid} on " in err and "test writer" in err
        assert not (run / "superb.json").exists()
    finally:
        p.kill()
        p.wait()
    seen = []
    real = ev._evaluate

    def scoring(*a, **k):  # while the scoring runs, another writer tries the folder
        q, line = _writer(run)
        q.wait()
        seen.append(line)
        return real(*a, **k)

    monkeypatch.setattr(ev, "_evaluate", scoring)
    assert main(argv) == 0
    assert seen[0].startswith(f"{run} is being written by pid {os.getpid()} ") and "harness evaluate run" in seen[0]
    assert json.loads((run / "superb.json").read_text())["tasks"]["ks"]["status"] == "ok"
    assert main(argv) == 0  # released after: a second evaluate takes it again
