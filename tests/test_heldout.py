"""The held-out evaluation (ARCHITECTURE.md "Held-out quality"): a fixed set never trained
on, deterministic metrics every ``eval_every`` steps and at the end, excluded from the
training clock; and the compute-matched ``none`` arm."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from harness import heldout
from harness.config import ConfigError, load_run_config
from harness.distill import load_data, run_distill, setup
from harness.stacking import plan_stages, theoretical_speedup

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "sweeps" / "base" / "tiny.yaml"


@pytest.fixture(scope="module")
def corpus(fake_corpus):
    """24 distill utterances of tone 'phones' with phone alignments."""
    return fake_corpus("teacher", n_distill=24)


def cfg_for(corpus, *overrides):
    return load_run_config(TINY, [
        f"data.corpus={corpus}", f"teacher.cache_dir={corpus / 'cache'}", "data.max_seconds=1.0",
        "data.heldout=6", "train.steps=20", "train.log_every=5", "train.eval_every=10", "train.threads=1",
        "train.device=cpu", *overrides,
    ])


def test_split_keeps_the_first_utterances_out_of_training(corpus):
    cfg = cfg_for(corpus)
    held, train_ids = load_data(cfg, corpus / "distill.jsonl", cached=True)
    assert held == [f"distill_{i}" for i in range(6)]
    assert len(train_ids) == 18 and not set(held) & set(train_ids)
    # with max_utterances the held-out set is still the split's first utterances
    held2, train2 = load_data(cfg_for(corpus, "data.max_utterances=10"), corpus / "distill.jsonl", cached=True)
    assert held2 == held and len(train2) == 4
    with pytest.raises(ConfigError, match="data.heldout: 24 held-out utterances leave none"):
        heldout.split_ids([f"u{i}" for i in range(24)], 24)
    with pytest.raises(ConfigError, match="heldout .* must be < max_utterances"):
        cfg_for(corpus, "data.max_utterances=6")
    with pytest.raises(ConfigError, match="eval_every must be 0 .* multiple of log_every"):
        cfg_for(corpus, "train.eval_every=7")


def test_run_writes_heldout_curve_and_block(corpus, tmp_path):
    out = tmp_path / "run"
    summary = run_distill(cfg_for(corpus), out)
    assert summary["status"] == "ok"
    rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    evaluated = [r["step"] for r in rows if "heldout_loss" in r]
    assert evaluated == [10, 20]
    h = json.loads((out / "summary.json").read_text())["heldout"]
    assert h["utterances"] == 6 and h["criterion"] == "mse" and h["teacher_layer"] == 4
    assert [p["step"] for p in h["curve"]] == [10, 20]
    assert h["curve"][-1]["output_loss"] == h["output_loss"] == rows[-1]["heldout_loss"]
    assert h["output_loss"] > 0 and 0.0 <= h["probe_best"] <= 1.0
    assert set(h["probe"]) == {f"layer_{k}" for k in range(5)}  # state 0 + 4 layers
    assert h["probe_best"] == max(h["probe"].values()) and h["probe"][h["probe_best_layer"]] == h["probe_best"]
    # the fixed layer map: the grown student's layers keep the shallow model's targets
    assert [x["student_layer"] for x in h["layer_loss"]] == [1, 2, 3, 4]
    assert all(1 <= x["teacher_layer"] <= 4 for x in h["layer_loss"]) and h["layer_loss"][-1]["teacher_layer"] == 4
    # the top layer's own loss is the output loss (l2l: the top layer matches the teacher's top)
    assert h["layer_loss"][-1]["loss"] == pytest.approx(h["output_loss"])
    assert h["eval_seconds"] > 0
    # the evaluation is not training time: the curve's clock is the training clock
    # (an evaluation counted in the clock would add its seconds after the last curve point)
    assert 0 <= summary["train_seconds"] - h["curve"][-1]["time"] < 0.25 * h["eval_seconds"]
    s = json.loads((out / "summary.json").read_text())
    assert s["arm"] == "interleaved" and s["compute_matched"] is None
    assert s["data_per_step"]["arrays"] == ["frontend", "layer_1", "layer_2", "layer_3", "layer_4"]


def test_evaluation_is_deterministic_and_leaves_train_mode(corpus, tmp_path):
    run = setup(cfg_for(corpus, "student.dropout=0.3"), tmp_path / "r", None, "now")
    run.student.train()
    a = heldout.evaluate(run.student, run.teacher, run.holdout, run.device)
    b = heldout.evaluate(run.student, run.teacher, run.holdout, run.device)
    assert run.student.training
    assert a["output_loss"] == b["output_loss"] and a["probe"] == b["probe"]  # no dropout, no sampling
    assert a["frames"] == run.holdout.frames == sum(len(x) for x in run.holdout.labels)
    # each held-out utterance is cut to the training crop (data.max_seconds = 1.0 s at 50 Hz)
    assert max(len(x) for x in run.holdout.labels) == int(1.0 * run.teacher.frame_rate)


def test_probe_reads_labels_it_is_given():
    """Features that are the one-hot labels themselves probe at 100 %; noise near chance."""
    rng = np.random.default_rng(0)
    labels = [rng.integers(0, 4, size=50) for _ in range(8)]
    hs = heldout.HeldoutSet([f"u{i}" for i in range(8)], [], labels, 4, 400)
    onehot = [np.eye(4, dtype=np.float32)[lab] + 0.01 * rng.standard_normal((50, 4)).astype(np.float32)
              for lab in labels]
    noise = [rng.standard_normal((50, 4)).astype(np.float32) for _ in labels]
    res = heldout.phone_probe([onehot, noise], hs)
    assert res["probe"]["layer_0"] == 1.0 and res["probe"]["layer_1"] < 0.5
    assert res["probe_best_layer"] == "layer_0" and res["probe_frames"] == {"fit": 200, "test": 200}


def test_output_index_is_the_top_target():
    assert heldout.output_index([4, 8]) == 1
    assert heldout.output_index([2, 4, 4]) == 2
    assert heldout.output_index([4, 8, 12]) == 2


def test_compute_matched_none_trains_the_schedules_compute(corpus, tmp_path):
    cfg = cfg_for(corpus, "stacking.variant=none", "train.compute_matched=true", "train.steps=40")
    summary = run_distill(cfg, tmp_path / "cm")
    assert summary["status"] == "ok" and summary["arm"] == "none_cm"
    cm = summary["compute_matched"]
    grown = plan_stages(cfg_for(corpus, "train.steps=40"))
    assert cm["of_steps"] == 40 and cm["schedule_depths"] == grown.depths and cm["schedule_steps"] == grown.steps
    assert 1.0 < cm["speedup"] < 4.0
    assert summary["steps"] == cm["steps"] == round(40 / cm["speedup"])
    # the matched run's FLOPs equal the schedule's, up to rounding one step
    model = summary["cost_model"]
    assert summary["theoretical_speedup"] == pytest.approx(1.0)
    from harness.stacking import CostModel
    per_step = CostModel(**model).per_step(grown.depths[-1])
    sched = sum(n * CostModel(**model).per_step(d) for d, n in zip(grown.depths, grown.steps))
    assert abs(summary["flops"] - sched) <= per_step
    assert theoretical_speedup(grown.depths, grown.steps, CostModel(**model)) == pytest.approx(cm["speedup"])
    with pytest.raises(ConfigError, match="compute_matched: only for stacking.variant none"):
        cfg_for(corpus, "train.compute_matched=true")


def test_every_arm_reads_the_same_arrays(corpus, tmp_path):
    """The data cost per step does not depend on the variant or the stage."""
    from harness.distill import stage_batches

    run = setup(cfg_for(corpus), tmp_path / "r", None, "now")
    shallow = next(iter(stage_batches(run, range(0, 1))))
    assert sorted(shallow["targets"]) == [1, 2, 3, 4]  # depth 1 matches one layer but reads all
    assert len(run.student.targets) == 1
    none = setup(cfg_for(corpus, "stacking.variant=none"), tmp_path / "n", None, "now")
    full = next(iter(stage_batches(none, range(0, 1))))
    assert sorted(full["targets"]) == sorted(shallow["targets"])
    assert torch.equal(full["feats"], shallow["feats"])  # same seed and step: the same batch


def _tb(folder):
    """Scalars (tag -> steps) and text events (tag -> steps) of a TensorBoard folder, read
    with tensorboard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    scalars = {t: [e.step for e in acc.Scalars(t)] for t in tags["scalars"]}
    texts = {t: [e.step for e in acc.Tensors(t)] for t in tags["tensors"]}
    return scalars, texts


def test_tensorboard_events_by_default_and_kept_across_a_resume(corpus, tmp_path):
    """Every run writes TensorBoard events (losses, lr, depth, the held-out curve, growth
    events); a killed run resumed from its checkpoint keeps the earlier events and does
    not duplicate the redone steps."""
    from harness.distill import RunInterrupted

    out = tmp_path / "tb-run"
    cfg = cfg_for(corpus, "stacking.variant=interleaved", "train.ckpt_every=10")
    assert cfg.train.tensorboard and cfg.stacking.stages > 1

    def stop(row):
        if row["step"] == 15:
            raise RunInterrupted("kill")

    with pytest.raises(RunInterrupted):
        run_distill(cfg, out, on_log=stop)
    scalars, _ = _tb(out / "tensorboard")
    assert scalars["loss"] == [5, 10, 15]
    assert run_distill(cfg, out)["status"] == "ok"  # resumes from step 10
    scalars, texts = _tb(out / "tensorboard")
    assert scalars["loss"] == [5, 10, 15, 20]  # 15 redone once, not twice
    assert scalars["heldout_loss"] == [10, 20] and {"lr", "depth"} <= set(scalars)
    growth = [t for t in texts if t.startswith("growth")]
    assert growth and texts[growth[0]]


def test_heldout_seconds_sets_the_heldout_crop_apart_from_the_training_crop(corpus, tmp_path):
    """``data.heldout_seconds`` cuts the held-out utterances (0 = the training crop, max_seconds)."""
    frames = {}
    for sec in (0.0, 0.5):
        run = setup(cfg_for(corpus, f"data.heldout_seconds={sec}"), tmp_path / f"r{sec}", None, "now")
        rate = run.teacher.frame_rate
        lengths = [int(n) for b in run.holdout.batches for n in b["frame_lengths"]]
        frames[sec] = lengths
        assert max(lengths) <= int((sec or 1.0) * rate)  # the crop: max_seconds=1.0 unless set
    assert sum(frames[0.5]) < sum(frames[0.0])
    with pytest.raises(ConfigError, match="heldout_seconds must be >= 0"):
        cfg_for(corpus, "data.heldout_seconds=-1")
