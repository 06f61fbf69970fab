"""The throughput benchmark: a tiny run writes both models' figures and the ratio; our
student and s3prl's DistillerModel have the same parameters at the same shape; the CPU
memory probe and the GPU benchmark's code path run; the CLI refuses bad input in one line.

No timing assertions: speed claims live in the benchmark output only.
"""

from __future__ import annotations

import json
import sys

import pytest
import torch

from harness.bench.gpu import GpuSettings, bench_gpu, peak_tflops
from harness.bench.memory import cpu_peak_memory
from harness.bench.models import MODELS, ThroughputSettings, build_ours, build_s3prl, param_counts
from harness.bench.throughput import bench_throughput, throughput_markdown
from harness.cli import main


pytestmark = pytest.mark.usefixtures("one_thread")

def tiny(**kw) -> ThroughputSettings:
    base = dict(layers=2, width=32, heads=4, ffn=64, batch=2, seconds=0.5, steps=1, repeats=2, warmup=1,
                conv_dim=16, conv_pos=8, conv_pos_groups=4, teacher_width=24, teacher_layers=4,
                pred_layers=[2, 4], memory=False, threads=1)
    base.update(kw)
    return ThroughputSettings(**base)


def test_tiny_run_writes_both_models_and_the_ratio(tmp_path):
    out = tmp_path / "bench" / "throughput.json"
    report = bench_throughput(tiny(), out, log=lambda msg: None)
    data = json.loads(out.read_text())
    assert data == json.loads(json.dumps(report, default=str))
    assert data["benchmark"] == "throughput"
    assert set(data["models"]) == set(MODELS) | {"ours_cached"}  # frozen front-end: the cached row too
    assert data["models"]["ours_cached"]["params"]["trainable"] == data["models"]["ours"]["params"]["trainable"]
    assert data["ratio"]["s3prl_over_ours_cached_step"] > 0
    for name in MODELS:
        m = data["models"][name]
        assert len(m["step_seconds"]["runs"]) == 2 and m["step_seconds"]["median"] > 0
        assert m["samples_per_second"]["median"] == pytest.approx(2 / m["step_seconds"]["median"])
        assert m["last_loss"] == m["last_loss"]  # finite, not NaN
    ratio = data["models"]["s3prl"]["step_seconds"]["median"] / data["models"]["ours"]["step_seconds"]["median"]
    assert data["ratio"]["s3prl_over_ours_step"] == pytest.approx(ratio)
    assert len(data["ratio"]["per_repeat"]["runs"]) == 2
    assert data["machine"]["cpu_count"] >= 1 and "torch" in data["versions"] and "s3prl" in data["versions"]
    assert data["settings"]["frames"] == 24  # 0.5 s -> 24 frames of the 320-hop conv stack
    assert data["settings"]["layers"] == 2 and data["load_average"]["before"] is not None
    table = throughput_markdown(data).splitlines()
    assert [ln.split("|")[1].strip() for ln in table[2:5]] == ["ours", "s3prl", "ours_cached"]


def test_l2l_target_and_trainable_frontend_run(tmp_path):
    report = bench_throughput(tiny(target="l2l", frontend="trainable", repeats=1, adamw="fused", s3prl_adamw="foreach"),
                              None, log=lambda msg: None)
    assert "ours: fused, s3prl: foreach" in report["settings"]["optimizer"]
    assert set(report["models"]) == set(MODELS)  # no cached row: a trainable front-end cannot be cached
    for name in MODELS:
        p = report["models"][name]["params"]
        assert p["trainable"] == p["total"]  # trainable front-end: everything is trained


@pytest.mark.parametrize("target", ["pred_heads", "l2l"])
@pytest.mark.parametrize("frontend", ["frozen", "trainable"])
def test_same_parameter_count_at_the_same_shape(target, frontend):
    s = tiny(target=target, frontend=frontend, layers=3, width=48, heads=4, ffn=96, conv_pos_groups=8)
    ours, ref = param_counts(build_ours(s)), param_counts(build_s3prl(s))
    assert ours == ref
    if frontend == "frozen":  # the conv front-end (no bias; one GroupNorm) is not trained
        fe = sum(d * (i * k) for (d, k, i) in [(16, 10, 1)] + [(16, 3, 16)] * 4 + [(16, 2, 16)] * 2) + 2 * 16
        assert ours["total"] - ours["trainable"] == fe


def test_documented_difference_when_frontend_dim_equals_width():
    # s3prl drops post_extract_proj when C == width; the student always has it
    s = tiny(conv_dim=32, width=32)
    ours, ref = param_counts(build_ours(s)), param_counts(build_s3prl(s))
    assert ours["total"] - ref["total"] == 32 * 32 + 32


def test_paper_shape_parameter_count_matches_s3prl():
    s = ThroughputSettings(memory=False)  # 12 x 384, FFN 1536, 12 heads, 3 heads to 768
    ours, ref = param_counts(build_ours(s)), param_counts(build_s3prl(s))
    assert ours == ref
    assert ours["total"] > 20_000_000


def test_cpu_memory_probe_reports_the_childs_own_peak():
    mem = cpu_peak_memory("ours", tiny(seconds=2.0))
    assert mem["peak_rss"] >= mem["base_rss"] > 0
    assert mem["delta_rss"] == mem["peak_rss"] - mem["base_rss"]
    if sys.platform == "linux":
        # VmHWM, not ru_maxrss (which a child inherits from its parent across exec)
        assert mem["source"].startswith("VmHWM")
        assert mem["delta_rss"] > 0  # activations, gradients and AdamW moments


def test_gpu_bench_code_path_on_cpu(tmp_path):
    g = GpuSettings(batch=2, seconds=0.5, utterances=4, steps=2, warmup=1, num_workers=0, teacher_layers=2,
                    teacher_width=24, conv_dim=16, peak_tflops=1.0, device="cpu")
    report = bench_gpu(g, tmp_path / "gpu.json", work_dir=tmp_path / "work", allow_cpu=True, log=lambda m: None)
    r = json.loads((tmp_path / "gpu.json").read_text())["results"]
    assert r["frames_per_utterance"] == 24 and r["flops_per_step"] > 0
    assert 0.0 <= r["loader_share"] <= 1.0
    assert r["mfu_step"] == pytest.approx(r["flops_per_step"] / r["step_seconds"]["median"] / 1e12)
    assert report["settings"]["student"] == "student_paper"


def test_gpu_bench_refuses_a_cpu_device():
    with pytest.raises(ValueError, match="not a GPU"):
        bench_gpu(GpuSettings(device="cpu"), log=lambda m: None)


def test_peak_table():
    assert peak_tflops("NVIDIA H100 80GB HBM3") == pytest.approx(989.4)
    assert peak_tflops("NVIDIA H100 PCIe") == pytest.approx(756.0)
    assert peak_tflops("Some Other GPU") is None


def test_cli_bad_shape_is_one_line(capsys):
    assert main(["bench", "throughput", "--width", "30", "--heads", "4"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--heads 4 must divide --width 30" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
def test_cli_gpu_refuses_without_cuda(capsys):
    assert main(["bench", "gpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "needs a CUDA device" in err


def test_cli_tiny_run_writes_json(tmp_path, capsys):
    out = tmp_path / "t.json"
    rc = main(["bench", "throughput", "--layers", "1", "--width", "32", "--heads", "4", "--ffn", "64",
               "--seconds", "0.5", "--steps", "1", "--repeats", "1", "--warmup", "0", "--conv-dim", "16",
               "--conv-pos", "8", "--conv-pos-groups", "4", "--teacher-width", "24", "--pred-layers", "12",
               "--threads", "1", "--no-memory", "--out", str(out)])
    assert rc == 0
    assert "s3prl / ours step time" in capsys.readouterr().out
    assert set(json.loads(out.read_text())["models"]) == {"ours", "s3prl", "ours_cached"}


def test_adamw_implementations_agree():
    from harness.bench.models import ADAMW_IMPLS, make_adamw

    torch.manual_seed(0)
    w0, grads = torch.randn(5, 3), [torch.randn(5, 3) for _ in range(3)]
    out = {}
    for impl in ADAMW_IMPLS:
        w = torch.nn.Parameter(w0.clone())
        opt = make_adamw([w], 1e-2, impl)
        for g in grads:
            w.grad = g.clone()
            opt.step()
        out[impl] = w.detach()
    assert torch.allclose(out["default"], out["fused"], atol=1e-6)
    assert torch.allclose(out["default"], out["foreach"], atol=1e-6)
