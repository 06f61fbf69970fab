"""Safe loading: every checkpoint is read with weights_only=True, so a crafted pickle planted
in a run folder or named as a teacher runs nothing; --trust-checkpoint (or
HARNESS_TRUST_CHECKPOINT=1) is the one way to unpickle, and each refusal is one line.

The payload is real: each test also shows that a trusted load does run it (the marker file
appears), so "no marker" means the loader refused, not that the plant was inert.
"""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from harness import safeload
from harness.cli import main
from harness.student import CKPT_FORMAT

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "sweeps" / "base" / "tiny.yaml"


class Payload:
    """Unpickling this creates ``marker``: what a crafted checkpoint's code would do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def plant(path: Path, marker: Path, **fields) -> Path:
    """A torch checkpoint at ``path`` holding ``fields`` and the payload."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({**fields, "payload": Payload(marker)}, path)
    return path


@pytest.fixture(autouse=True)
def untrusted(monkeypatch):
    """No trust from the environment; restored after a test whose CLI call sets it."""
    monkeypatch.delenv(safeload.TRUST_ENV, raising=False)


@pytest.fixture(scope="module")
def corpus(fake_corpus):
    return fake_corpus("tones")


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    return err


# ----------------------------------------------------------------------------- the loader


def test_load_refuses_a_pickle_and_runs_it_only_when_trusted(tmp_path):
    marker = tmp_path / "MARKER"
    evil = plant(tmp_path / "evil.pt", marker, weights=torch.zeros(2))
    with pytest.raises(safeload.UnsafeCheckpointError, match=r"evil.pt: not a safe checkpoint .*"
                       r"--trust-checkpoint \(or set HARNESS_TRUST_CHECKPOINT=1\)") as err:
        safeload.load(evil)
    assert "\n" not in str(err.value) and not marker.exists()
    assert safeload.load(evil, trust=True)["weights"].shape == (2,)
    assert marker.exists()  # the plant is live: trusting it runs its code


def test_damaged_files_are_one_line_and_run_nothing(tmp_path):
    good = tmp_path / "good.pt"
    safeload.save({"w": torch.ones(3)}, good)
    cases = {"empty.pt": b"", "text.pt": b"step: 3\n", "random.pt": bytes(range(256)) * 4,
             "truncated.pt": good.read_bytes()[:60]}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(safeload.CorruptCheckpointError, match=f"{name}: not a loadable checkpoint") as err:
            safeload.load(tmp_path / name)
        assert "\n" not in str(err.value)
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        safeload.load(tmp_path / "nope.pt")


def test_writers_store_only_plain_data(tmp_path):
    @dataclasses.dataclass
    class Cfg:
        lr: float = 1.0

    ok = {"w": torch.zeros(2), "cfg": {"lr": 1.0, "betas": (0.9, 0.99), "names": ["a"]}, 3: None}
    safeload.save(ok, tmp_path / "ok.pt")
    assert torch.load(tmp_path / "ok.pt", weights_only=True)["cfg"]["betas"] == (0.9, 0.99)
    for bad, where in [({"cfg": Cfg()}, "cfg"), ({"out": Path("x")}, "out"), ({"seed": np.int64(3)}, "seed"), ({"loss": np.float64(0.5)}, "loss"),
                       ({"rng": np.random.get_state()}, "rng")]:
        with pytest.raises(TypeError, match=f"bad.pt\\['{where}'\\].*weights_only=True"):
            safeload.save(bad, tmp_path / "bad.pt")
        assert not (tmp_path / "bad.pt").exists()


# ----------------------------------------------------------------------------- every path


def finished_run(corpus, tmp_path) -> Path:
    """A real (2-step) tiny run folder."""
    from harness.config import load_run_config
    from harness.distill import run_distill

    cfg = load_run_config(TINY, [f"data.corpus={corpus}", f"teacher.cache_dir={corpus / 'cache'}",
                                 "data.max_seconds=1.0", "train.steps=4", "train.threads=1", "train.device=cpu",
                                 "data.heldout=0", "stacking.variant=none"])
    run = tmp_path / "run"
    assert run_distill(cfg, run)["status"] == "ok"
    return run


def test_every_checkpoint_the_harness_writes_loads_weights_only(corpus, tmp_path):
    from harness.config import load_run_config
    from harness.distill import RunInterrupted, run_distill
    from harness.export import export_run

    run = finished_run(corpus, tmp_path)
    export_run(run, tmp_path / "s3prl.ckpt", verify=False)
    cfg = load_run_config(run / "config.yaml", ["train.ckpt_every=2", "train.log_every=1", "loss.objective=askd_l2l"])

    def kill(row):
        if row["step"] == 3:
            raise RunInterrupted("kill")

    with pytest.raises(RunInterrupted):
        run_distill(cfg, tmp_path / "killed", on_log=kill)
    for path in (run / "student.ckpt", tmp_path / "s3prl.ckpt", tmp_path / "killed" / "train.pt"):
        torch.load(path, weights_only=True)  # raises if anything in it needs pickle


def test_evaluate_a_planted_run_folder(corpus, tmp_path, capsys):
    run = tmp_path / "run"
    marker = tmp_path / "MARKER"
    plant(run / "student.ckpt", marker, format=CKPT_FORMAT)
    ckpt = run / "student.ckpt"
    teacher = plant(tmp_path / "teacher.pt", marker)
    for upstream in (run, ckpt, f"embedded:{teacher}", f"s3prl:hubert:{teacher}"):
        assert main(["evaluate", str(upstream), "--corpus", str(corpus), "--tasks", "ks", "--no-score"]) == 2
        err = one_line_error(capsys)
        assert "not a safe checkpoint" in err and "--trust-checkpoint" in err
        assert not marker.exists()
    assert main(["evaluate", str(run), "--corpus", str(corpus), "--tasks", "ks", "--trust-checkpoint"]) == 2
    assert marker.exists()  # the flag reaches the loader
    one_line_error(capsys)


def test_export_a_planted_run_folder(tmp_path, capsys):
    run = tmp_path / "run"
    marker = tmp_path / "MARKER"
    plant(run / "student.ckpt", marker, format=CKPT_FORMAT)
    assert main(["export", str(run), "--out", str(tmp_path / "x.ckpt"), "--no-verify"]) == 2
    err = one_line_error(capsys)
    assert "student.ckpt: not a safe checkpoint" in err and "--trust-checkpoint" in err
    assert not marker.exists() and not (tmp_path / "x.ckpt").exists()
    assert main(["export", str(run), "--out", str(tmp_path / "x.ckpt"), "--no-verify", "--trust-checkpoint"]) == 2
    assert marker.exists()
    one_line_error(capsys)


@pytest.mark.parametrize("spec", ["s3prl:hubert", "s3prl:wav2vec2", "s3prl:wavlm", "embedded"])
def test_teacher_cache_with_a_planted_teacher(corpus, tmp_path, capsys, spec):
    marker = tmp_path / "MARKER"
    evil = plant(tmp_path / "hubert_base_ls960.pt", marker, model={}, cfg={})
    argv = ["teacher", "cache", "--teacher", f"{spec}:{evil}", "--manifest", str(corpus / "distill.jsonl"),
            "--out", str(tmp_path / "cache"), "--device", "cpu"]
    assert main(argv) == 2
    err = one_line_error(capsys)
    assert "hubert_base_ls960.pt: not a safe checkpoint" in err and "--trust-checkpoint" in err
    assert not marker.exists() and not (tmp_path / "cache").exists()
    assert main(argv + ["--trust-checkpoint"]) == 2  # runs the payload, then: not a loadable checkpoint
    assert marker.exists()
    assert "hubert_base_ls960.pt" in one_line_error(capsys)


def test_distill_resume_from_a_planted_train_pt(corpus, tmp_path, capsys):
    run = tmp_path / "run"
    marker = tmp_path / "MARKER"
    plant(run / "train.pt", marker, step=2, stage=0, student={}, optimizer={})
    argv = ["distill", "--config", str(TINY), "--out", str(run), f"data.corpus={corpus}",
            f"teacher.cache_dir={corpus / 'cache'}", "data.max_seconds=1.0", "train.steps=4", "train.threads=1",
            "train.device=cpu", "data.heldout=0"]
    assert main(argv) == 2
    err = one_line_error(capsys)
    assert "train.pt: not a safe checkpoint" in err and "--trust-checkpoint" in err
    assert not marker.exists()
    assert json.loads((run / "summary.json").read_text())["status"].startswith("failed: UnsafeCheckpointError")
    assert main(argv + ["--trust-checkpoint"]) == 2  # runs the payload, then: not this run's checkpoint
    assert marker.exists()
    one_line_error(capsys)


def test_foreign_and_damaged_student_checkpoints_are_one_line(tmp_path, capsys):
    """`export` of a corrupt checkpoint, and an `embedded:` teacher file that is not one."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "student.ckpt").write_bytes(b"\x00" * 100)
    assert main(["export", str(run), "--out", str(tmp_path / "x.ckpt")]) == 2
    assert "student.ckpt: not a loadable student checkpoint (not a torch checkpoint)" in one_line_error(capsys)
    torch.save({"format": CKPT_FORMAT, "shape": {"layers": 2}}, run / "student.ckpt")  # safe but damaged
    assert main(["export", str(run), "--out", str(tmp_path / "x.ckpt")]) == 2
    assert "damaged student checkpoint" in one_line_error(capsys)
    torch.save({"w": torch.zeros(1)}, tmp_path / "t.pt")
    (tmp_path / "m.jsonl").write_text("")
    for path in (run / "student.ckpt", tmp_path / "t.pt"):
        assert main(["teacher", "cache", "--teacher", f"embedded:{path}", "--manifest", str(tmp_path / "m.jsonl"),
                     "--out", str(tmp_path / "cache")]) == 2
        assert f"{path}: not an embedded-teacher checkpoint" in one_line_error(capsys)


def test_sweep_with_a_planted_teacher(corpus, tmp_path, capsys):
    """`harness sweep --trust-checkpoint` reaches the trials' loader (as the other commands' flag)."""
    marker = tmp_path / "MARKER"
    evil = plant(tmp_path / "teacher.pt", marker)
    sweep = tmp_path / "s.yaml"
    sweep.write_text(f"name: evil\nbase: {TINY}\ngrid: {{stacking.variant: [none]}}\nseeds: [0]\n"
                     f"storage: {tmp_path / 'results'}\nbackend: local\n")
    argv = ["sweep", str(sweep), "--set", f"teacher.spec=embedded:{evil}", "--set", f"data.corpus={corpus}",
            "--set", f"teacher.cache_dir={tmp_path / 'cache'}", "--set", "train.steps=4",
            "--set", "train.device=cpu", "--set", "data.heldout=0"]
    assert main(argv) == 1  # the trial failed: the summary line
    status = json.loads((tmp_path / "results" / "evil" / "variant=none-s0" / "summary.json").read_text())["status"]
    assert "not a safe checkpoint" in status and not marker.exists()
    assert main(argv + ["--retry-failed", "--trust-checkpoint"]) == 1  # runs the payload, then: not a teacher
    assert marker.exists()
    assert "1 of 1 trials failed" in capsys.readouterr().out
