"""The ASKD study end to end on the tone corpus: sweep hook, askd.json/csv, figure, resume."""

import json

import pandas as pd
import pytest

from harness.asr.study import askd_figure, is_asr_sweep
from harness.cli import main
from harness.sweep import dry_run, load_sweep, run_sweep


@pytest.mark.integration
def test_study_end_to_end(tmp_path, fake_corpus, capsys):
    root = fake_corpus("asr_tones", tmp_path / "corpus", n_train=24, n_test=4)
    (tmp_path / "base.yaml").write_text(f"""
track: asr
profile: tiny
data: {{corpus: {root}, batch_size: 8}}
teacher: {{train_steps: 20, shape: {{d_model: 32, ffn: 64, n_mels: 16, max_target_positions: 24}}}}
student: {{decoder_layers: 1}}
train: {{steps: 3, log_every: 3}}
eval: {{beam: 2, beam_utterances: 2, latency_utterances: 2}}
""")
    study = tmp_path / "study.yaml"
    study.write_text(f"name: st\nbase: base.yaml\ngrid: {{loss.objective: [ce, kd, askd]}}\nseeds: [0]\n"
                     f"storage: {tmp_path / 'results'}\nbackend: local\n")
    assert is_asr_sweep(study)
    assert len(load_sweep(study).trials) == 3
    assert "todo" in dry_run(study)
    csv = run_sweep(study, log=lambda m: None)
    df = pd.read_csv(csv)
    assert list(df["objective"]) == ["teacher", "askd", "ce", "kd"]
    assert (df["status"] == "ok").all()
    assert df.loc[0, "speedup"] == 1.0 and df.loc[0, "wer_rel"] == 1.0
    data = json.loads((tmp_path / "results" / "st" / "askd.json").read_text())
    assert set(data["by_objective"]) == {"ce", "kd", "askd"}
    assert data["latency_ratio"] > 0 and data["teacher_trained_here"]
    for r in data["rows"][1:]:
        assert r["wer_delta"] == pytest.approx(r["wer"] - data["teacher"]["wer"])
    assert (tmp_path / "results" / "st" / "askd_wer_speed.png").stat().st_size > 1000
    assert (tmp_path / "results" / "st" / "askd_wer_speed.svg").is_file()
    # a second run refuses without --resume, and with it reruns nothing
    assert main(["sweep", str(study)]) == 2
    msgs = []
    run_sweep(study, resume=True, log=msgs.append)
    assert sum("done already" in m for m in msgs) == 3
    assert main(["validate", str(study), str(tmp_path / "base.yaml")]) == 0
    _quick_pass_and_failures(study, root, tmp_path, capsys)


def _quick_pass_and_failures(study, root, tmp_path, capsys):
    """--seeds, --set, --suffix reach the study (its own folder); a failed run exits 1 with the
    distill sweeps' summary line; --resume reruns what the environment broke; --tasks is refused."""
    teacher = tmp_path / "results" / "st" / "teacher"  # trained above: not again
    argv = ["sweep", str(study), "--seeds", "7", "--suffix=-q", "--set", "train.steps=2",
            "--set", f"teacher.path={teacher}"]
    capsys.readouterr()
    assert main(argv + ["--dry-run"]) == 0
    listed = capsys.readouterr().out
    assert "ASR study st-q: teacher + 3 runs" in listed and "objective=kd-s7" in listed and " 2 steps" in listed
    manifest = root / "asr_train.jsonl"
    manifest.rename(root / "hidden.jsonl")  # the environment breaks: a missing input file
    assert main(argv) == 1
    out = capsys.readouterr().out
    q = tmp_path / "results" / "st-q"
    assert f"[sweep] st-q: 3 of 3 trials failed (3 environment): see {q / 'askd.csv'}" in out
    summary = json.loads((q / "objective=ce-s7" / "summary.json").read_text())
    assert summary["failure"] == "environment" and "no such ASR manifest" in summary["status"]
    (root / "hidden.jsonl").rename(manifest)
    assert main(argv + ["--resume"]) == 0  # environment failures are rerun
    df = pd.read_csv(q / "askd.csv")
    assert (df["status"] == "ok").all() and set(df["seed"].dropna()) == {7}
    assert json.loads((q / "objective=ce-s7" / "summary.json").read_text())["steps"] == 2
    assert len(pd.read_csv(tmp_path / "results" / "st" / "askd.csv")) == 4  # the full study untouched
    capsys.readouterr()
    assert main(argv[:-2] + ["--resume", "--set", "train.steps=3", "--set", f"teacher.path={teacher}"]) == 2
    err = capsys.readouterr().err
    assert "3 of 3 run(s) were run with other settings (train.steps: 2 -> 3)" in err and err.count("\n") == 1
    assert main(["sweep", str(study), "--tasks", "ks", "--dry-run"]) == 2
    assert "--tasks does not apply to an ASR study" in capsys.readouterr().err


def test_figure_from_data(tmp_path):
    data = {"study": "x", "teacher": {"wer": 0.2},
            "rows": [{"objective": "teacher", "status": "ok", "wer": 0.2, "speedup": 1.0},
                     {"objective": "kd", "status": "ok", "wer": 0.25, "speedup": 3.0},
                     {"objective": "kd", "status": "failed: x"}],
            "by_objective": {"kd": {"runs": 1, "wer_mean": 0.25, "wer_std": 0.0, "speedup_mean": 3.0,
                                    "speedup_std": 0.0}}}
    paths = askd_figure(data, tmp_path / "fig")
    assert [p.suffix for p in paths] == [".png", ".svg"] and all(p.stat().st_size > 500 for p in paths)


def test_cli_errors(tmp_path, capsys):
    assert main(["asr", "evaluate", str(tmp_path / "none"), "--corpus", str(tmp_path)]) == 2
    assert "no such Whisper checkpoint folder" in capsys.readouterr().err
    assert main(["asr", "train-teacher", "--profile", "tiny", "--out", str(tmp_path / "t"),
                 "--corpus", str(tmp_path / "nocorpus")]) == 2
    assert "asr_train.jsonl: no such ASR manifest" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["embedded", "paper"])
def test_shipped_studies_load(name):
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "sweeps" / name / "askd.yaml"
    sweep = load_sweep(path)
    seeds = 5 if name == "embedded" else 3  # the embedded study is the committed one: >= 5 paired seeds
    objectives = sorted(t.config.loss.objective for t in sweep.trials)
    assert objectives == sorted(["ce", "kd", "askd"] * seeds)
    assert {t.config.train.seed for t in sweep.trials} == set(range(seeds))
    assert all(t.config.track == "asr" for t in sweep.trials)


def test_shipped_ablation_loads_with_its_reference_first():
    from pathlib import Path

    from harness.asr.study import arm_label

    path = Path(__file__).resolve().parents[2] / "sweeps" / "embedded" / "askd_ablation.yaml"
    sweep = load_sweep(path)
    assert {t.config.loss.objective for t in sweep.trials} == {"askd"} and len(sweep.trials) == 18
    first = sweep.trials[0]
    assert arm_label("askd", {"overrides": first.overrides}) == "askd (decay=cosine, self_teacher=ema)"
    arms = {arm_label("askd", {"overrides": t.overrides}) for t in sweep.trials}
    assert len(arms) == 6


def test_failed_runs_are_classified_and_retried_like_a_sweeps(tmp_path, monkeypatch, capsys):
    """A full disk and a missing file are environment failures (--resume reruns them), a bad
    value a deterministic one (kept until --retry-failed); the sweep exits 1 with the summary line."""
    import errno

    import harness.asr.train as train

    (tmp_path / "base.yaml").write_text(f"track: asr\nprofile: tiny\nteacher: {{path: {tmp_path / 't'}}}\n")
    study = tmp_path / "study.yaml"
    study.write_text(f"name: f\nbase: base.yaml\ngrid: {{loss.objective: [ce, kd, askd]}}\nseeds: [0]\n"
                     f"storage: {tmp_path / 'results'}\nbackend: local\n")
    errors = {"ce": OSError(errno.ENOSPC, "No space left on device"), "kd": ValueError("loss is nan at step 3"),
              "askd": FileNotFoundError("asr_test.jsonl: no such ASR manifest")}
    ran = []

    def fake_run(cfg, run_dir, sweep="", on_log=None):
        ran.append(cfg.loss.objective)
        raise errors[cfg.loss.objective]

    monkeypatch.setattr(train, "run_asr_distill", fake_run)
    assert main(["sweep", str(study)]) == 1
    out = capsys.readouterr().out
    assert f"[sweep] f: 3 of 3 trials failed (2 environment, 1 deterministic): see {tmp_path}/results/f/askd.csv" in out
    assert "deterministic failures (NaN, config) are rerun only with --retry-failed" in out
    ce = json.loads((tmp_path / "results" / "f" / "objective=ce-s0" / "summary.json").read_text())
    assert ce["failure"] == "environment" and ce["status"].startswith("failed: no space left in ")
    assert "free space or point --out elsewhere" in ce["status"]
    ran.clear()
    assert main(["sweep", str(study), "--resume"]) == 1
    assert sorted(ran) == ["askd", "ce"]  # the deterministic one is kept
    assert "objective=kd-s0: kept: failed: ValueError: loss is nan" in capsys.readouterr().out
    ran.clear()
    assert main(["sweep", str(study), "--retry-failed"]) == 1
    assert sorted(ran) == ["askd", "ce", "kd"]


def test_study_stats_pair_seeds_and_state_only_resolved_differences(tmp_path):
    """askd.json's stats: each objective's WER with its 95% interval over its seeds, the
    paired differences over the seeds both ran (a failed run drops its seed from its pairs
    only), each objective minus the teacher, and a verdict per difference that says "not
    resolved" unless the interval excludes zero."""
    import json

    from harness import stats
    from tests.support import fabricate

    study = fabricate.fabricate_askd(tmp_path / "results", seeds=(0, 1, 2, 3, 4), failed=("kd", 2), missing=None)
    data = json.loads((study / "askd.json").read_text())
    st = data["stats"]
    rows = [r for r in data["rows"] if r["objective"] != "teacher" and r["status"] == "ok"]
    for obj in ("ce", "kd", "askd"):
        wers = [r["wer"] for r in rows if r["objective"] == obj]
        assert st["wer"][obj] == stats.mean_ci(wers)
    diffs = {(d["first"], d["second"]): d for d in st["differences"]}
    assert set(diffs) == {("askd", "kd"), ("askd", "ce"), ("kd", "ce"), ("ce", "teacher"), ("kd", "teacher"),
                          ("askd", "teacher")}
    ak = diffs[("askd", "kd")]
    assert ak["seeds"] == [0, 1, 3, 4]  # kd seed 2 failed
    by = {(r["objective"], r["seed"]): r["wer"] for r in rows}
    assert ak == {**ak, **stats.paired({s: by[("askd", s)] for s in (0, 1, 2, 3, 4)},
                                       {s: by[("kd", s)] for s in (0, 1, 3, 4)})}
    assert len(st["verdicts"]) == len(st["differences"])
    for d, v in zip(st["differences"], st["verdicts"]):
        assert ("(resolved)" in v) == d["resolved"] and ("not resolved" in v) == (not d["resolved"])
    # the fabricated objectives are 3-7 WER points apart with ~1 point of seed noise: resolved
    assert diffs[("askd", "ce")]["resolved"] and diffs[("askd", "ce")]["estimate"] < 0


@pytest.mark.integration
def test_study_through_ray_resumes_after_kill_9_without_rerunning_finished_students(tmp_path, fake_corpus):
    """`harness sweep STUDY` runs the students as Ray Tune trials; kill -9 of the sweep (its
    process group: the driver and its Ray workers) mid-study, then --resume: the finished
    students are not rerun (their files untouched) and the study completes."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = fake_corpus("asr_tones", tmp_path / "corpus", n_train=24, n_test=4)
    shape = "{d_model: 32, ffn: 64, n_mels: 16, max_target_positions: 24}"
    (tmp_path / "base.yaml").write_text(f"""
track: asr
profile: tiny
data: {{corpus: {root}, batch_size: 8}}
teacher: {{train_steps: 10, shape: {shape}}}
student: {{decoder_layers: 1}}
train: {{steps: 20, log_every: 5, threads: 1}}
eval: {{beam: 0, latency_utterances: 2}}
""")
    study = tmp_path / "study.yaml"
    study.write_text(f"name: rk\nbase: base.yaml\ngrid: {{loss.objective: [ce, kd, askd]}}\nseeds: [0]\n"
                     f"storage: {tmp_path / 'results'}\nbackend: ray\nresources: {{cpu: 1}}\n")
    out = tmp_path / "results" / "rk"
    root_dir = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "sweep", str(study)], cwd=root_dir,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    try:
        while time.time() < deadline:
            done = [p for p in out.glob("*/summary.json") if '"status": "ok"' in p.read_text()]
            running = [p for p in out.glob("*/summary.json") if '"status": "running"' in p.read_text()]
            if done and running:
                break
            assert proc.poll() is None, "the study ended before it could be killed"
            time.sleep(0.2)
        else:
            raise AssertionError("no finished and running students within 300 s")
    finally:
        from tests.support.procs import kill_tree

        kill_tree(proc.pid)  # kill -9: the driver and every process it started (Ray's workers too)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finished = {p.parent.parent.name: p.stat().st_mtime_ns for p in out.glob("*/student/model.safetensors")
                if '"status": "ok"' in (p.parent.parent / "summary.json").read_text()}
    assert finished and len(finished) < 3
    msgs = []
    csv = run_sweep(study, resume=True, log=msgs.append)
    df = pd.read_csv(csv)
    assert (df["status"] == "ok").all() and len(df) == 4  # the teacher and 3 students
    for run, mtime in finished.items():  # not rerun
        assert (out / run / "student" / "model.safetensors").stat().st_mtime_ns == mtime
    assert sum("done already" in m for m in msgs) == len(finished)
    trial = json.loads((out / "objective=askd-s0" / "trial.json").read_text())
    assert trial.get("node"), "the trial ran as a Ray Tune trial (trial.json names its node)"
