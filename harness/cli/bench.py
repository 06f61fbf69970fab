"""``harness bench stacking | curve | teacher-cache | posconv | throughput | gpu | estimate | ddp``
(:mod:`harness.bench`, :mod:`harness.bench.curve`, :mod:`harness.bench.posconv`,
:mod:`harness.bench.throughput`, :mod:`harness.bench.gpu`, :mod:`harness.bench.estimate`,
:mod:`harness.bench.ddp`).

The benchmark modules are imported inside the commands: they pull in torch (and s3prl).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.cli.common import Subparsers, command, group
from harness.errors import UserError


def cmd_bench_stacking(args: argparse.Namespace) -> int:
    from harness.bench.stacking import VARIANTS, StackingSettings, bench_stacking

    variants = tuple(v.strip() for v in args.variants.split(",") if v.strip()) if args.variants else VARIANTS
    settings = StackingSettings(variants=variants, repeats=args.repeats, cost_steps=args.cost_steps,
                                cost_warmup=args.cost_warmup, live=args.live)
    try:
        settings.validate()
    except ValueError as err:
        raise UserError(f"bench stacking: {err}") from None
    bench_stacking(args.profile, Path(args.out), settings, overrides=args.overrides, work_dir=args.work_dir)
    return 0


def cmd_bench_curve(args: argparse.Namespace) -> int:
    from harness.bench.curve import bench_curve

    bench_curve(args.profile, Path(args.out), steps=args.steps, eval_every=args.eval_every, variant=args.variant,
                overrides=args.overrides)
    return 0


def cmd_bench_teacher_cache(args: argparse.Namespace) -> int:
    from harness.bench import bench_teacher_cache

    bench_teacher_cache(args.profile, Path(args.out), overrides=args.overrides)
    return 0


def cmd_bench_posconv(args: argparse.Namespace) -> int:
    from harness.bench.posconv import bench_posconv

    try:
        bench_posconv(Path(args.out) if args.out else None, repeats=args.repeats, n=args.calls, threads=args.threads)
    except ValueError as err:
        raise UserError(f"bench posconv: {err}") from None
    return 0


def cmd_bench_throughput(args: argparse.Namespace) -> int:
    from harness.bench.throughput import ThroughputSettings, bench_throughput

    s = ThroughputSettings(
        layers=args.layers, width=args.width, heads=args.heads, ffn=args.ffn, batch=args.batch,
        seconds=args.seconds, steps=args.steps, repeats=args.repeats, warmup=args.warmup,
        device=args.device, frontend=args.frontend, target=args.target, conv_dim=args.conv_dim,
        conv_pos=args.conv_pos, conv_pos_groups=args.conv_pos_groups, teacher_width=args.teacher_width,
        pred_layers=args.pred_layers, dropout=args.dropout, memory=not args.no_memory, threads=args.threads,
        cached_row=not args.no_cached_row, adamw=args.adamw, s3prl_adamw=args.s3prl_adamw,
    )
    try:
        s.validate()
    except ValueError as err:
        raise UserError(f"bench throughput: {err}") from None
    bench_throughput(s, Path(args.out) if args.out else None)
    return 0


def cmd_bench_paper_smoke(args: argparse.Namespace) -> int:
    from harness.bench.papersmoke import bench_paper_smoke, format_paper_smoke

    counts = dict(zip(("train-clean-100", "dev-clean", "test-clean"), args.utterances))
    try:
        res = bench_paper_smoke(args.out, work_dir=args.work_dir, steps=args.steps, counts=counts,
                          seconds=tuple(args.seconds), task_steps=args.task_steps, threads=args.threads,
                          overrides=args.overrides)
    except (ValueError, RuntimeError) as err:
        raise UserError(str(err)) from None
    print(format_paper_smoke(res))
    return 0


def cmd_bench_ddp(args: argparse.Namespace) -> int:
    from harness.bench.ddp import bench_ddp

    try:
        bench_ddp(args.profile, Path(args.out), ranks=[int(x) for x in args.ranks.split(",")],
                  threads=[int(x) for x in args.threads.split(",")], repeats=args.repeats,
                  overrides=args.overrides, work_dir=args.work_dir)
    except (ValueError, RuntimeError) as err:
        raise UserError(str(err)) from None
    return 0


def cmd_bench_estimate(args: argparse.Namespace) -> int:
    from harness.bench.estimate import bench_estimate
    from harness.sweep.grid import check_suffix

    check_suffix(args.suffix)
    res = bench_estimate(Path(args.file), Path(args.out), overrides=args.set, suffix=args.suffix, run=args.run)
    return 0 if not args.run or res.get("within_tolerance") else 1


def cmd_bench_gpu(args: argparse.Namespace) -> int:
    import torch

    from harness.bench.gpu import GpuSettings, bench_gpu

    if not torch.cuda.is_available():
        raise UserError("bench gpu: needs a CUDA device and this machine has none; run it where a GPU is lent")
    g = GpuSettings(batch=args.batch, seconds=args.seconds, utterances=args.utterances, steps=args.steps,
                    warmup=args.warmup, num_workers=args.workers, peak_tflops=args.peak_tflops, device=args.device)
    try:
        bench_gpu(g, Path(args.out) if args.out else None, work_dir=args.work_dir)
    except ValueError as err:
        raise UserError(str(err)) from None
    return 0


def add_parser(sub: Subparsers) -> None:
    bench = group(sub, "bench", "benchmarks: stacking speedup vs theory, teacher cache, throughput, GPU")
    p = command(bench, "stacking", cmd_bench_stacking,
                "per-depth step costs and their fit, every variant end to end: speedup vs FLOP and fitted theory", [
                    "harness bench stacking --profile tiny --out results/bench/stacking-tiny.json",
                    "harness bench stacking --profile embedded --repeats 3 "
                    "--out docs/benchmarks/stacking-embedded-cpu.json train.steps=120",
                    "harness bench stacking --profile tiny --out /tmp/s.json --variants interleaved --live",
                ])
    p.add_argument("--profile", choices=("tiny", "embedded"), required=True,
                   help="the base config sweeps/base/<profile>.yaml (and its corpus)")
    p.add_argument("--out", required=True, help="JSON file")
    p.add_argument("--variants", default="", help="comma-separated (default: all; none is always run)")
    p.add_argument("--repeats", type=int, default=3,
                   help="end-to-end runs per variant (round-robin) and rounds of the step costs; medians reported")
    p.add_argument("--cost-steps", type=int, default=8, help="timed steps per depth and round (step costs)")
    p.add_argument("--cost-warmup", type=int, default=3, help="untimed steps per depth first")
    p.add_argument("--live", action="store_true", help="also run the variants end to end with the live teacher")
    p.add_argument("--work-dir", help="keep the run folders here (default: a temporary folder)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="changes to sweeps/base/<profile>.yaml")

    p = command(bench, "teacher-cache", cmd_bench_teacher_cache,
                "distillation step time with a live teacher vs the feature cache",
                ["harness bench teacher-cache --profile tiny --out results/bench/cache-tiny.json"])
    p.add_argument("--profile", choices=("tiny", "embedded"), required=True,
                   help="the base config sweeps/base/<profile>.yaml (and its corpus)")
    p.add_argument("--out", required=True, help="JSON file")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="changes to sweeps/base/<profile>.yaml")

    _add_curve(bench)
    p = command(bench, "posconv", cmd_bench_posconv,
                "the student's positional conv: its channels-last conv2d path vs F.conv1d, forward + backward",
                ["harness bench posconv --out docs/benchmarks/posconv-cpu.json"])
    p.add_argument("--repeats", type=int, default=7, help="interleaved repeats per path and shape")
    p.add_argument("--calls", type=int, default=5, help="calls per repeat")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--out", help="JSON file (default: print the results only)")

    _add_throughput(bench)
    _add_gpu(bench)
    _add_estimate(bench)
    _add_ddp(bench)
    _add_paper_smoke(bench)


def _add_paper_smoke(bench: Subparsers) -> None:
    p = command(bench, "paper-smoke", cmd_bench_paper_smoke,
                "the paper profile end to end at its real shapes on CPU: fabricated LibriSpeech, random HuBERT Base, "
                "cache, 12 x 384 grown 3->6->9->12, export, PR + ASR, report", [
                    "harness bench paper-smoke --out docs/benchmarks/paper-smoke-cpu.json",
                    "harness bench paper-smoke --steps 4 --utterances 8 4 4 --seconds 2 4 --out /tmp/ps.json "
                    "data.batch_size=2 data.max_seconds=2",
                ])
    p.add_argument("--out", help="JSON file (default: none: the result is printed only)")
    p.add_argument("--steps", type=int, default=8, help="distillation steps (>= 4: every stage trains) (default: 8)")
    p.add_argument("--utterances", type=int, nargs=3, default=[48, 8, 8], metavar=("TRAIN", "DEV", "TEST"),
                   help="fabricated utterances in train-clean-100, dev-clean, test-clean (default: 48 8 8)")
    p.add_argument("--seconds", type=float, nargs=2, default=[8.0, 16.0], metavar=("MIN", "MAX"),
                   help="length range of the fabricated utterances (default: 8 16, LibriSpeech-like)")
    p.add_argument("--task-steps", type=int, default=4, help="PR and ASR head steps (default: 4)")
    p.add_argument("--threads", type=int, default=0, help="torch threads per command (default: 0 = every core)")
    p.add_argument("--work-dir", help="keep the fabricated corpus, caches and run here (default: a temporary folder)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="changes to sweeps/base/paper.yaml (default: none: the paper's batch and crop)")


def _add_curve(bench: Subparsers) -> None:
    p = command(bench, "curve", cmd_bench_curve,
                "the held-out learning curve of one long reference run (what the default steps are sized on)", [
                    "harness bench curve --profile embedded --steps 1200 --eval-every 100 "
                    "--out docs/benchmarks/curve-embedded-none.json train.threads=1",
                    "harness bench curve --profile tiny --steps 200 --eval-every 20 --out /tmp/curve.json",
                ])
    p.add_argument("--profile", choices=("tiny", "embedded"), required=True,
                   help="the base config sweeps/base/<profile>.yaml (and its corpus)")
    p.add_argument("--steps", type=int, required=True, help="training steps of the reference run")
    p.add_argument("--eval-every", type=int, required=True, help="held-out evaluation every N steps")
    p.add_argument("--variant", default="none", help="stacking variant of the run (default: none)")
    p.add_argument("--out", required=True, help="JSON file (a .png of the curve is written beside it)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="changes to sweeps/base/<profile>.yaml")


def _add_throughput(bench: Subparsers) -> None:
    p = command(bench, "throughput", cmd_bench_throughput,
                "training step of our student vs s3prl's DistillerModel at the same shape", [
                    "harness bench throughput --layers 2 --width 256 --heads 4 --ffn 1024 "
                    "--out results/bench/throughput-small.json",
                    "harness bench throughput --out results/bench/throughput-paper.json      "
                    "# 12 x 384, FFN 1536, batch 2, 4 s",
                    "harness bench throughput --device cuda --batch 8 --out results/bench/throughput-cuda.json",
                ])
    p.add_argument("--layers", type=int, default=12, help="transformer layers of both models")
    p.add_argument("--width", type=int, default=384, help="model width")
    p.add_argument("--heads", type=int, default=12, help="attention heads")
    p.add_argument("--ffn", type=int, default=1536, help="feed-forward width")
    p.add_argument("--batch", type=int, default=2, help="utterances per step")
    p.add_argument("--seconds", type=float, default=4.0, help="audio per utterance (all full length)")
    p.add_argument("--steps", type=int, default=2, help="timed steps per repeat")
    p.add_argument("--repeats", type=int, default=5, help="interleaved repeats per model")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per model first")
    p.add_argument("--device", default="cpu", help="cpu, or cuda (bf16 autocast)")
    p.add_argument("--frontend", choices=("frozen", "trainable"), default="frozen",
                   help="whether the conv front-end is trained (frozen: no gradient through it)")
    p.add_argument("--target", choices=("pred_heads", "l2l"), default="pred_heads",
                   help="DistilHuBERT prediction heads or per-layer L2L projections (loss l1_cos)")
    p.add_argument("--conv-dim", type=int, default=512, help="conv front-end channels")
    p.add_argument("--conv-pos", type=int, default=128, help="positional conv kernel")
    p.add_argument("--conv-pos-groups", type=int, default=16, help="positional conv groups")
    p.add_argument("--teacher-width", type=int, default=768, help="width of the teacher layers the heads predict")
    p.add_argument("--pred-layers", type=int, nargs="+", default=[4, 8, 12], help="teacher layers of the heads")
    p.add_argument("--dropout", type=float, default=0.0, help="dropout of both models")
    p.add_argument("--adamw", choices=("default", "foreach", "fused"), default="default",
                   help="torch AdamW implementation for our student (same algorithm)")
    p.add_argument("--s3prl-adamw", choices=("default", "foreach", "fused"), default="default",
                   help="the same for s3prl's model")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--no-memory", action="store_true", help="skip the CPU peak-memory subprocesses")
    p.add_argument("--no-cached-row", action="store_true",
                   help="skip ours_cached (the student fed precomputed front-end features, frozen front-end only)")
    p.add_argument("--out", help="JSON file with machine, versions, settings and every figure "
                   "(default: print the results only)")


def _add_ddp(bench: Subparsers) -> None:
    p = command(bench, "ddp", cmd_bench_ddp,
                "step time of one run by rank count (1 process vs torchrun ranks, the same global batch): "
                "scaling efficiency", [
                    "harness bench ddp --profile embedded --out docs/benchmarks/ddp-embedded-cpu.json "
                    "train.steps=60 data.heldout=0",
                ])
    p.add_argument("--profile", choices=("tiny", "embedded"), required=True,
                   help="the base config sweeps/base/<profile>.yaml (and its corpus)")
    p.add_argument("--out", required=True, help="JSON file")
    p.add_argument("--ranks", default="2", help="comma-separated rank counts of one thread each (default: 2)")
    p.add_argument("--threads", default="1", help="comma-separated thread counts of the 1-process runs "
                   "(default: 1; add the core count for the all-cores single process)")
    p.add_argument("--repeats", type=int, default=3, help="runs per arrangement, interleaved (default: 3)")
    p.add_argument("--work-dir", help="keep the run folders here (default: a temporary folder)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="changes to sweeps/base/<profile>.yaml")


def _add_estimate(bench: Subparsers) -> None:
    p = command(bench, "estimate", cmd_bench_estimate,
                "a sweep's --dry-run time estimate, written before the sweep runs; with --run, the sweep's "
                "measured wall-clock beside it (exit 1 when it is off by more than 30 percent)", [
                    "harness bench estimate sweeps/embedded/main.yaml --set teacher.spec=embedded --run "
                    "--out docs/benchmarks/estimate-embedded-main.json",
                ])
    p.add_argument("file", help="sweep YAML")
    p.add_argument("--out", required=True, help="JSON file")
    p.add_argument("--run", action="store_true", help="then run the sweep and record its wall-clock (default: estimate only)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="change every trial's run config (repeatable; default: none)")
    p.add_argument("--suffix", default="", help="append to the sweep name (its results folder; default: none)")


def _add_gpu(bench: Subparsers) -> None:
    p = command(bench, "gpu", cmd_bench_gpu,
                "MFU of the student_paper step with a cached teacher; data loader share (CUDA only)", [
                    "harness bench gpu --out results/bench/gpu.json",
                    "harness bench gpu --batch 16 --workers 4 --peak-tflops 989 --out results/bench/gpu-b16.json",
                ])
    p.add_argument("--batch", type=int, default=8, help="utterances per step")
    p.add_argument("--seconds", type=float, default=4.0, help="audio per utterance (all the same length)")
    p.add_argument("--utterances", type=int, default=64, help="fabricated utterances in the cache")
    p.add_argument("--steps", type=int, default=50, help="timed steps")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    p.add_argument("--peak-tflops", type=float, default=0.0, help="device peak (0 = from the built-in table)")
    p.add_argument("--device", default="cuda", help="a CUDA device: cuda or cuda:N")
    p.add_argument("--work-dir", help="keep the fabricated data and cache here (default: a temporary folder)")
    p.add_argument("--out", help="JSON file (default: print the results only)")
