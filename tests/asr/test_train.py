"""Seeded short runs lower the loss for each objective; a run folder and its summary."""

import json

import pytest

from harness.asr.data import AsrSplit
from harness.asr.student import shrink
from harness.asr.train import (
    AsrLossConfig, AsrOptimConfig, fit, load_asr_config, run_asr_distill, train_teacher,
)
from harness.asr.teacher import load_asr_model
from harness.config import ConfigError


@pytest.mark.parametrize("objective", ["ce", "kd", "askd"])
def test_short_run_lowers_loss(tone, objective):
    root, teacher_dir = tone
    teacher = load_asr_model(teacher_dir)
    student = shrink(teacher, decoder_layers=1)
    split = AsrSplit(root / "asr_train.jsonl", teacher)
    loss = AsrLossConfig(objective=objective)
    res = fit(student, split, 12, loss, AsrOptimConfig(lr=3e-3, warmup_frac=0.1), batch_size=8, seed=0,
              teacher=teacher, log_every=4)
    assert res["final"]["total"] < 0.95 * res["first"]["total"], res
    assert res["final"]["ce"] < res["first"]["ce"]
    if objective == "askd":
        assert res["first"]["self"] == pytest.approx(0.0, abs=1e-6)  # the EMA starts as the student
    if objective == "kd":  # seeded: the same run twice gives the same losses
        again = fit(shrink(teacher, decoder_layers=1), split, 12, loss, AsrOptimConfig(lr=3e-3, warmup_frac=0.1),
                    batch_size=8, seed=0, teacher=teacher, log_every=4)
        assert again["final"]["total"] == pytest.approx(res["final"]["total"], rel=1e-5)


def test_teacher_trained_and_skipped(tone):
    root, teacher_dir = tone
    meta = json.loads((teacher_dir / "harness_asr.json").read_text())
    assert meta["final_loss"]["ce"] < 3.5 and meta["steps"] == 30 and meta["ctc_weight"] == 0.5
    assert meta["final_loss"]["total"] == pytest.approx(meta["final_loss"]["ce"] + 0.5 * meta["final_loss"]["ctc"], rel=1e-4)
    lines = (teacher_dir / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["step"] == 30
    msgs = []
    train_teacher("tiny", teacher_dir, root, steps=30, log=msgs.append)
    assert "already trained" in msgs[0]


def test_run_folder_with_pseudo_labels(tone, tmp_path):
    root, teacher_dir = tone
    cfg = load_asr_config(None, [
        f"data.corpus={root}", f"teacher.path={teacher_dir}", "loss.objective=kd", "loss.pseudo_labels=true",
        "train.steps=4", "train.log_every=2", "data.batch_size=8", "student.decoder_layers=1",
        "eval.beam=2", "eval.beam_utterances=3", "eval.latency_utterances=2",
    ])
    s = run_asr_distill(cfg, tmp_path / "run")
    assert s["status"] == "ok" and s["decoder_layers"] == 1
    assert (tmp_path / "run" / "student" / "config.json").is_file()
    assert (tmp_path / "run" / "config.yaml").is_file()
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 2
    assert s["wer"]["greedy"]["n"] == 6 and s["wer"]["beam"]["n"] == 3
    assert s["student_params"]["total"] < s["teacher_params"]["total"]
    assert s["speedup"] == pytest.approx(s["latency"]["teacher"]["latency_s"] / s["latency"]["student"]["latency_s"])
    # the teacher scored once, memoised in the run folder (never written into the teacher's folder)
    assert json.loads((tmp_path / "run" / "teacher_eval.json").read_text())
    assert not (teacher_dir / "eval.json").exists() and not (teacher_dir / "teacher_eval.json").exists()
    assert s["teacher_logits"] is None  # pseudo-labels need the live teacher
    assert load_asr_model(tmp_path / "run" / "student").model.config.decoder_layers == 1


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="loss.objective"):
        load_asr_config(None, ["loss.objective=mse"])
    with pytest.raises(ConfigError, match="unknown key 'student.decoder_layer'"):
        load_asr_config(None, ["student.decoder_layer=2"])
    with pytest.raises(ConfigError, match="teacher.shape: unknown key 'width'"):
        load_asr_config(None, ["teacher.shape={width: 3}"])
    with pytest.raises(ConfigError, match="teacher.path must name"):
        run_asr_distill(load_asr_config(None), tmp_path / "r")


def test_growth_inside_fit(tone):
    root, teacher_dir = tone
    teacher = load_asr_model(teacher_dir)
    student = shrink(teacher, decoder_layers=1)
    split = AsrSplit(root / "asr_train.jsonl", teacher)
    res = fit(student, split, 4, AsrLossConfig(objective="askd"), AsrOptimConfig(), batch_size=8,
              teacher=teacher, log_every=2, grow_at={2: [0, 0]})
    assert student.model.config.decoder_layers == 2 and len(student.model.model.decoder.layers) == 2
    assert res["final"]["total"] > 0


def test_growth_plan_from_config():
    from harness.asr.train import AsrStudentConfig

    assert AsrStudentConfig(decoder_layers=2).growth(100) == (2, {})
    cfg = AsrStudentConfig(decoder_layers=3, grow_variant="top", grow_stages=3, grow_add=1)
    try:
        import harness.stacking  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="needs harness.stacking"):
            cfg.growth(90)
        return
    first, at = cfg.growth(90)
    assert first == 1 and sorted(at) == [30, 60] and [len(p) for p in at.values()] == [2, 3]


def test_hybrid_ctc_teacher_training(tone):
    root, teacher_dir = tone
    teacher = load_asr_model(teacher_dir)
    split = AsrSplit(root / "asr_train.jsonl", teacher)
    n_params = sum(p.numel() for p in teacher.model.parameters())
    res = fit(teacher, split, 12, AsrLossConfig(objective="ce"), AsrOptimConfig(lr=3e-3, warmup_frac=0.1),
              batch_size=8, seed=0, freeze_encoder=False, log_every=4, ctc_weight=0.3)
    assert res["first"]["ctc"] > 0 and res["final"]["ctc"] < res["first"]["ctc"], res
    assert res["first"]["total"] == pytest.approx(res["first"]["ce"] + 0.3 * res["first"]["ctc"], rel=1e-5)
    assert sum(p.numel() for p in teacher.model.parameters()) == n_params  # the CTC head is training-only
    with pytest.raises(ValueError, match="trainable encoder"):
        fit(teacher, split, 1, AsrLossConfig(objective="ce"), AsrOptimConfig(), ctc_weight=0.3)


def test_no_logit_cache_for_a_student_that_reads_the_live_teacher(tone, tmp_path):
    """prepare_teacher builds the logit cache only when fit will read it: not for a student
    sharing the teacher's frozen encoder (fit runs the live teacher then), nor for ce."""
    from harness.asr.train import prepare_teacher

    root, teacher_dir = tone
    base = [f"data.corpus={root}", f"teacher.path={teacher_dir}", "data.batch_size=8"]
    shared = load_asr_config(None, base + ["loss.objective=kd", "student.freeze_encoder=true"])
    assert prepare_teacher(shared, tmp_path / "a", log=lambda m: None)[3] is None
    ce = load_asr_config(None, base + ["loss.objective=ce", "student.freeze_encoder=false"])
    assert prepare_teacher(ce, tmp_path / "b", log=lambda m: None)[3] is None
    own = load_asr_config(None, base + ["loss.objective=kd", "student.freeze_encoder=false"])
    cache = prepare_teacher(own, tmp_path / "c", log=lambda m: None)[3]
    assert cache is not None and cache.path.parent == tmp_path / "c"
