"""``harness <subcommand>``: a thin command line over the library.

Each subcommand parses its arguments and calls one library function; every user-facing
error is a one-line message on stderr and exit status 2 (no traceback), because bad input
(a misspelled key, a missing file) is expected, not exceptional.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.config import ConfigError
from harness.registry import RegistryError

EPILOG_MAIN = """examples:
  harness data build --profile tiny --out data/tiny
  harness data stats data/tiny
  harness validate sweeps/base/tiny.yaml
  harness ls
"""


class UserError(Exception):
    """An error caused by input; printed as one line, exit status 2."""


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


# ----------------------------------------------------------------------------- validate / ls


def cmd_validate(args: argparse.Namespace) -> int:
    from harness.validate import validate_file

    for path in args.files:
        kind = validate_file(Path(path))
        print(f"ok  {path}  ({kind})")
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    from harness.registries import all_registries

    regs = all_registries()
    wanted = args.what or list(regs)
    for name in wanted:
        if name not in regs:
            raise UserError(f"unknown registry {name!r}; choose from {', '.join(regs)}")
        reg = regs[name]
        print(f"{name} ({reg.kind}):")
        for item in reg.names():
            print(f"  {item}")
    return 0


# ----------------------------------------------------------------------------- data


def cmd_data_build(args: argparse.Namespace) -> int:
    from harness.data.synth import build_corpus

    build_corpus(args.profile, Path(args.out), seed=args.seed, workers=args.workers)
    return 0


def cmd_data_stats(args: argparse.Namespace) -> int:
    from harness.data.manifest import corpus_stats, format_stats

    print(format_stats(corpus_stats(Path(args.dir))))
    return 0


def cmd_data_import(args: argparse.Namespace) -> int:
    from harness.data.importers import import_corpus

    import_corpus(args.corpus, Path(args.src), Path(args.out), force=args.force)
    return 0


# ----------------------------------------------------------------------------- evaluate (SUPERB)


def _superb_options(items: list[str]) -> dict[str, dict]:
    """``["ks.steps=100", "asr.max_utts=[200,50,50]"]`` -> ``{"ks": {"steps": 100}, ...}``."""
    import yaml

    out: dict[str, dict] = {}
    for item in items:
        key, sep, value = item.partition("=")
        task, dot, field = key.partition(".")
        if not sep or not dot or not task or not field:
            raise UserError(f"bad --set {item!r}; expected TASK.OPTION=VALUE (e.g. ks.steps=100)")
        out.setdefault(task, {})[field] = yaml.safe_load(value)
    return out


def cmd_evaluate(args: argparse.Namespace) -> int:
    from harness.superb.data import DataError
    from harness.superb.evaluate import UpstreamError, evaluate

    if args.as_baseline:
        return _evaluate_as_baseline(args)
    try:
        res = evaluate(
            args.upstream, args.tasks, args.corpus, args.out, profile=args.profile,
            device=args.device, cache_dir=args.cache_dir, seed=args.seed,
            options=_superb_options(args.set), baselines=None if args.no_score else "auto",
            ref=args.ref, threads=args.threads, log=None if args.quiet else print,
        )
    except (UpstreamError, DataError, ValueError) as err:
        raise UserError(str(err).splitlines()[0]) from None
    print(f"{'task':<5} {'metric':<9} {'value':>8} {'dev':>8} {'n':>6}  status")
    for name, r in res["tasks"].items():
        value = "-" if r.get("value") is None else f"{r['value']:.4f}"
        dev = "-" if r.get("dev_value") is None else f"{r['dev_value']:.4f}"
        print(f"{name:<5} {r['metric']:<9} {value:>8} {dev:>8} {r.get('n', 0):>6}  {r['status']}")
    score = (res.get("score") or {}).get("score")
    if score is not None:
        print(f"SUPERB score: {score:.1f} (fbank = 0, {res['score']['ref']} = 1000)")
    failed = [n for n, r in res["tasks"].items() if r["status"] != "ok"]
    return 1 if failed else 0


def _evaluate_as_baseline(args: argparse.Namespace) -> int:
    """Score an upstream as a SUPERB baseline into the memo that trials read (one line out)."""
    from harness.superb.evaluate import DEFAULT_CACHE, UpstreamError, baseline_results
    from harness.superb.tasks import parse_tasks

    if not args.corpus:
        raise UserError("--as-baseline needs --corpus DIR")
    profile = args.profile or "embedded"
    try:
        tasks = [t.name for t in parse_tasks(args.tasks, profile)]
        res = baseline_results(args.upstream, tasks, Path(args.corpus), profile, args.device or "cpu",
                               Path(args.cache_dir) if args.cache_dir else DEFAULT_CACHE, args.seed,
                               _superb_options(args.set) or {}, args.threads, None if args.quiet else print)
    except (UpstreamError, ValueError) as err:
        raise UserError(str(err).splitlines()[0]) from None
    vals = ", ".join(f"{n} {r['value']:.4f}" for n, r in res["tasks"].items() if r.get("value") is not None)
    print(f"baseline {args.upstream}: {vals}")
    return 0


# ----------------------------------------------------------------------------- sweep


def cmd_sweep(args: argparse.Namespace) -> int:
    from harness.sweep import dry_run, run_sweep

    extra = {"seeds": args.seeds, "overrides": args.set, "suffix": args.suffix,
             "tasks": [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None}
    if args.dry_run:
        print(dry_run(Path(args.file), **extra))
        return 0
    run_sweep(Path(args.file), resume=args.resume, address=args.address, local=args.local, **extra)
    return 0


# ----------------------------------------------------------------------------- teacher pretrain / probe


def cmd_teacher_pretrain(args: argparse.Namespace) -> int:
    from harness.teachers.pretrain import pretrain, profile_config, with_overrides

    data = Path(args.data or f"data/{args.profile}")
    if not (data / "distill.jsonl").is_file():
        raise FileNotFoundError(f"{data / 'distill.jsonl'}: no distill manifest (build it: harness data build --profile {args.profile} --out {data})")
    if args.iter2_init not in (None, "continue", "scratch"):
        raise UserError(f"--iter2-init must be continue or scratch, got {args.iter2_init!r}")
    cfg = with_overrides(
        profile_config(args.profile), minutes1=args.minutes1, minutes2=args.minutes2, steps1=args.steps1,
        steps2=args.steps2, iterations=args.iterations, iter2_layer=args.iter2_layer, iter2_init=args.iter2_init,
        k1=args.k1, k2=args.k2, lr=args.lr, batch_seconds=args.batch_seconds, unmasked_weight=args.unmasked_weight, threads=args.threads, seed=args.seed, max_utts=args.max_utts,
        phone_minutes=args.phone_minutes, phone_steps=args.phone_steps, phone_max_utts=args.phone_max_utts, init=args.init,
        utt_minutes=args.utt_minutes, utt_steps=args.utt_steps, utt_layer=args.utt_layer, utt_weight=args.utt_weight,
        utt_positives=args.utt_positives,
        post_ln=None if args.pre_ln is None else not args.pre_ln, iter2_cmvn=None if args.no_cmvn is None else not args.no_cmvn,
    )
    pretrain(cfg, data, Path(args.out), log_fn=lambda m: print(m, flush=True))
    return 0


def cmd_teacher_probe(args: argparse.Namespace) -> int:
    from harness.teachers.probe import probe_teacher

    seeds = tuple(range(args.seeds))
    if not seeds:
        raise UserError("--seeds must be at least 1")
    probe_teacher(
        args.teacher, Path(args.data), Path(args.out), seeds=seeds, twin=not args.no_twin,
        max_utts=args.max_utts, max_frames=args.max_frames, threads=args.threads, speaker_utts=args.speaker_utts,
    )
    return 0


def add_teacher_pretrain_probe(teacher) -> None:
    """``teacher pretrain`` and ``teacher probe`` (embedded SFM) under the ``teacher`` group
    (``teacher`` = the group's subparsers action, from :func:`teacher_subparsers`)."""
    p = teacher.add_parser(
        "pretrain", help="HuBERT-style pretraining of the embedded SFM (MFCC, feature k-means, then phone targets)",
        epilog="examples:\n  harness teacher pretrain --profile tiny --out /tmp/teacher_tiny.pt\n"
        "  nice -n 5 harness teacher pretrain --profile embedded --data data/embedded --out harness/assets/teacher_embedded.pt",
        formatter_class=_formatter,
    )
    p.add_argument("--profile", choices=("tiny", "embedded"), required=True, help="model size and time budget preset")
    p.add_argument("--out", required=True, help="checkpoint file (fp16); logs go next to it (.log.tsv, .json)")
    p.add_argument("--data", help="corpus folder with distill.jsonl (default data/<profile>)")
    p.add_argument("--minutes1", type=float, help="wall-clock budget of iteration 1 (MFCC targets)")
    p.add_argument("--minutes2", type=float, help="wall-clock budget of iteration 2 (feature targets)")
    p.add_argument("--steps1", type=int, help="step budget of iteration 1 (0 = time only)")
    p.add_argument("--steps2", type=int, help="step budget of iteration 2 (0 = time only)")
    p.add_argument("--iterations", type=int, choices=(0, 1, 2), help="k-means iterations (0 only with --init)")
    p.add_argument("--phone-minutes", type=float, help="wall-clock budget of the phone iteration (corpus phone alignments as targets; 0 = none)")
    p.add_argument("--phone-steps", type=int, help="step budget of the phone iteration (0 = time only)")
    p.add_argument("--phone-max-utts", type=int, help="distill utterances for the phone iteration (0 = all)")
    p.add_argument("--utt-minutes", type=float, help="wall-clock budget of the utterance iteration (phone targets + self-supervised utterance-level contrastive loss; 0 = none)")
    p.add_argument("--utt-steps", type=int, help="step budget of the utterance iteration (0 = time only)")
    p.add_argument("--utt-layer", type=int, help="hidden state whose segment mean is contrasted in the utterance iteration")
    p.add_argument("--utt-positives", choices=("halves", "speaker"), help="utterance iteration positives: halves of one utterance (self-supervised) or two utterances of one speaker (SID-scored speakers left out)")
    p.add_argument("--utt-weight", type=float, help="weight of the contrastive loss in the utterance iteration")
    p.add_argument("--init", help="start from this embedded checkpoint (with --iterations 0: add the phone and/or utterance iteration to it)")
    p.add_argument("--iter2-layer", type=int, help="hidden state of the iteration-1 model clustered for iteration 2")
    p.add_argument("--iter2-init", help="continue (from iteration-1 weights) or scratch")
    p.add_argument("--no-cmvn", action="store_true", default=None, help="no per-utterance CMVN before the 2nd clustering")
    p.add_argument("--pre-ln", action="store_true", default=None, help="pre-LN transformer layers (default post-LN)")
    p.add_argument("--k1", type=int, help="k-means clusters, iteration 1")
    p.add_argument("--k2", type=int, help="k-means clusters, iteration 2")
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--batch-seconds", type=float, help="audio seconds per batch")
    p.add_argument("--unmasked-weight", type=float, help="loss weight on unmasked frames (0 = masked only)")
    p.add_argument("--max-utts", type=int, help="use at most this many distill utterances (0 = all)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default 2)")
    p.add_argument("--seed", type=int)
    p.set_defaults(func=cmd_teacher_pretrain)

    p = teacher.add_parser(
        "probe", help="layer-wise phone/speaker linear probes + CKA between layers, vs a random-init twin",
        epilog="examples:\n  harness teacher probe --teacher embedded --data data/embedded --out results/probe_embedded\n"
        "  harness teacher probe --teacher embedded:/tmp/t.pt --data data/tiny --out /tmp/probe --seeds 2",
        formatter_class=_formatter,
    )
    p.add_argument("--teacher", required=True, help="teacher spec (embedded, embedded:PATH, s3prl:..., hf:DIR)")
    p.add_argument("--data", required=True, help="corpus folder with asr_{train,test} (phones) and sid_{train,test}")
    p.add_argument("--out", required=True, help="output folder for probe.json and probe.png")
    p.add_argument("--seeds", type=int, default=3, help="probe repetitions per layer (run-to-run noise)")
    p.add_argument("--max-utts", type=int, default=400, help="utterances per phone split")
    p.add_argument("--speaker-utts", type=int, default=0, help="sid_train utterances (test: half as many; 0 = all)")
    p.add_argument("--max-frames", type=int, default=30000, help="training frames of the phone probe")
    p.add_argument("--no-twin", action="store_true", help="skip the random-init twin")
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=cmd_teacher_probe)
# ----------------------------------------------------------------------------- distill / bench


def cmd_distill(args: argparse.Namespace) -> int:
    from harness.config import load_run_config
    from harness.distill import run_distill

    from harness.data.audio import AudioError
    from harness.data.manifest import ManifestError

    cfg = load_run_config(args.config, args.overrides)
    try:
        summary = run_distill(cfg, Path(args.out), resume=not args.restart)
    except (ManifestError, AudioError) as err:  # bad data: one line naming the file
        raise UserError(str(err)) from None
    losses = summary.get("final_losses") or {}
    loss = f"{losses['loss']:.4f}" if "loss" in losses else "n/a"
    print(f"{summary['status']}  {args.out}  {summary['steps']} steps  "
          f"{summary['train_seconds']:.1f} s  loss {loss}")
    return 0 if summary["status"] == "ok" else 1


def cmd_bench_stacking(args: argparse.Namespace) -> int:
    from harness.bench import VARIANTS, bench_stacking

    variants = tuple(args.variants.split(",")) if args.variants else VARIANTS
    bench_stacking(args.profile, Path(args.out), variants=variants, overrides=args.overrides,
                   repeats=args.repeats, live=args.live)
    return 0


def cmd_bench_teacher_cache(args: argparse.Namespace) -> int:
    from harness.bench import bench_teacher_cache

    bench_teacher_cache(args.profile, Path(args.out), overrides=args.overrides)
    return 0


def _add_distill_and_bench(sub) -> None:
    p = sub.add_parser(
        "distill", help="one distillation run (stacking, L2L losses) into a run folder",
        epilog="examples:\n  harness distill --config sweeps/base/tiny.yaml --out results/tiny-demo\n"
        "  harness distill --config sweeps/base/tiny.yaml stacking.variant=top train.steps=40 --out /tmp/r\n"
        "  harness distill --config sweeps/base/embedded.yaml --out results/emb   # rerun resumes",
        formatter_class=_formatter,
    )
    p.add_argument("--config", required=True, help="run config YAML (e.g. sweeps/base/tiny.yaml)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides")
    p.add_argument("--out", required=True, help="run folder (its name is the run id)")
    p.add_argument("--restart", action="store_true", help="ignore a checkpoint in --out and start over")
    p.set_defaults(func=cmd_distill)

    bench = sub.add_parser("bench", help="benchmarks: stacking speedup vs theory, teacher cache, throughput, GPU").add_subparsers(
        dest="bench_command", metavar="BENCH_COMMAND"
    )
    bench.required = True
    p = bench.add_parser(
        "stacking", help="every variant side by side, teacher cached: speedup vs theory, time-to-quality",
        epilog="examples:\n  harness bench stacking --profile tiny --out results/bench/stacking-tiny.json\n"
        "  harness bench stacking --profile embedded --out results/bench/stacking-embedded.json --repeats 3\n"
        "  harness bench stacking --profile tiny --out /tmp/s.json --live train.threads=1",
        formatter_class=_formatter,
    )
    p.add_argument("--profile", choices=("tiny", "embedded"), required=True)
    p.add_argument("--out", required=True, help="JSON file")
    p.add_argument("--variants", default="", help="comma-separated (default: all; none is always run)")
    p.add_argument("--repeats", type=int, default=1, help="runs per variant, round-robin; medians reported")
    p.add_argument("--live", action="store_true", help="also compare the variants with the live teacher")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="changes to sweeps/base/<profile>.yaml")
    p.set_defaults(func=cmd_bench_stacking)
    p = bench.add_parser(
        "teacher-cache", help="distillation step time with a live teacher vs the feature cache",
        epilog="examples:\n  harness bench teacher-cache --profile tiny --out results/bench/cache-tiny.json",
        formatter_class=_formatter,
    )
    p.add_argument("--profile", choices=("tiny", "embedded"), required=True)
    p.add_argument("--out", required=True, help="JSON file")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="changes to sweeps/base/<profile>.yaml")
    p.set_defaults(func=cmd_bench_teacher_cache)
    add_bench_throughput_parsers(bench)  # bench throughput, bench gpu
# ----------------------------------------------------------------------------- asr (ASKD track)


def cmd_asr_train_teacher(args: argparse.Namespace) -> int:
    from harness.asr.train import train_teacher

    corpus = Path(args.corpus or f"data/{args.profile}")
    train_teacher(args.profile, Path(args.out), corpus, steps=args.steps, seed=args.seed, threads=args.threads)
    return 0


def cmd_asr_distill(args: argparse.Namespace) -> int:
    from harness.asr.train import load_asr_config, run_asr_distill

    cfg = load_asr_config(Path(args.config), args.overrides)
    s = run_asr_distill(cfg, Path(args.out))
    print(f"WER {s['wer']['greedy']['wer']:.4f} (teacher {s['teacher_wer']['greedy']['wer']:.4f}), "
          f"speedup x{s['speedup']:.2f}, {s['student_params']['total']} params -> {args.out}")
    return 0


def cmd_asr_evaluate(args: argparse.Namespace) -> int:
    import json as _json

    from harness.asr.data import AsrSplit
    from harness.asr.evaluate import count_params, evaluate_wer, measure_latency
    from harness.asr.teacher import load_asr_model

    model = load_asr_model(Path(args.checkpoint))
    split = AsrSplit(Path(args.corpus) / f"{args.split}.jsonl", model)
    res = {"checkpoint": args.checkpoint, "params": count_params(model),
           "greedy": evaluate_wer(model, split, "greedy", max_utterances=args.max_utterances)}
    if args.beam:
        res["beam"] = evaluate_wer(model, split, "beam", beam=args.beam, max_utterances=args.max_utterances)
    models = {"model": model}
    if args.teacher:
        models = {"teacher": load_asr_model(Path(args.teacher)), "model": model}
    if args.latency:
        res["latency"] = measure_latency(models, split, args.latency)
        if args.teacher:
            res["speedup"] = res["latency"]["teacher"]["latency_s"] / res["latency"]["model"]["latency_s"]
    print(_json.dumps(res, indent=2))
    if args.json:
        Path(args.json).write_text(_json.dumps(res, indent=2))
    return 0


def add_asr_commands(sub) -> None:
    """``harness asr train-teacher | distill | evaluate``."""
    asr = sub.add_parser("asr", help="ASR track: Whisper-style teacher, distilled students, ASKD").add_subparsers(
        dest="asr_command", metavar="ASR_COMMAND"
    )
    asr.required = True
    p = asr.add_parser(
        "train-teacher", help="train the profile's small character-level Whisper on <corpus>/asr_train",
        epilog="examples:\n  harness asr train-teacher --profile tiny --out results/asr-teacher-tiny\n"
        "  harness asr train-teacher --profile embedded --corpus data/embedded --out results/asr-teacher",
        formatter_class=_formatter,
    )
    p.add_argument("--profile", choices=("tiny", "embedded"), required=True)
    p.add_argument("--out", required=True, help="checkpoint folder (save_pretrained + tokenizer files)")
    p.add_argument("--corpus", default=None, help="corpus folder (default: data/<profile>)")
    p.add_argument("--steps", type=int, default=0, help="training steps (0 = the profile's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.set_defaults(func=cmd_asr_train_teacher)

    p = asr.add_parser(
        "distill", help="distil one student (ce | kd | askd) and score it against its teacher",
        epilog="examples:\n  harness asr distill --config sweeps/base/asr_embedded.yaml --out results/askd-demo "
        "teacher.path=results/asr-teacher loss.objective=askd",
        formatter_class=_formatter,
    )
    p.add_argument("--config", required=True, help="ASR run config YAML (track: asr)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    p.set_defaults(func=cmd_asr_distill)

    p = asr.add_parser(
        "evaluate", help="WER (greedy, beam) and latency of a Whisper checkpoint folder",
        epilog="examples:\n  harness asr evaluate results/embedded-askd/objective=askd-s0/student --corpus data/embedded "
        "--teacher results/embedded-askd/teacher --latency 24",
        formatter_class=_formatter,
    )
    p.add_argument("checkpoint", help="Whisper checkpoint folder (local; never downloaded)")
    p.add_argument("--corpus", required=True, help="corpus folder with <split>.jsonl")
    p.add_argument("--split", default="asr_test")
    p.add_argument("--beam", type=int, default=0, help="also decode with this beam width")
    p.add_argument("--max-utterances", type=int, default=0)
    p.add_argument("--teacher", default=None, help="time this teacher side by side (speedup)")
    p.add_argument("--latency", type=int, default=0, help="utterances to time (0 = no timing)")
    p.add_argument("--json", default=None, help="also write the result here")
    p.set_defaults(func=cmd_asr_evaluate)


# ----------------------------------------------------------------------------- report


def cmd_report(args: argparse.Namespace) -> int:
    import shlex

    from harness.report.render import render_report

    if Path(sys.argv[0]).name in ("harness", "cli.py") and "report" in sys.argv[1:]:
        words = sys.argv[1:]  # the exact command line
    else:  # called as main([...]) from Python: the equivalent command
        words = ["report", *args.results, "--out", args.out]
        words += ["--probe", args.probe] if args.probe else []
        words += ["--title", args.title] if args.title else []
        words += ["--no-pdf"] if args.no_pdf else []
        words += ["--pdf-engine", args.pdf_engine] if args.pdf_engine != "auto" else []
    command = "harness " + " ".join(shlex.quote(w) for w in words)
    rep = render_report(
        args.results, Path(args.out), probe=args.probe, command=command, title=args.title,
        pdf=not args.no_pdf, pdf_engine=args.pdf_engine,
    )
    failed = sum(p.kind in ("failed", "incomplete", "unreadable") for p in rep.problems)
    print(f"report: {rep.html}")
    if rep.pdf:
        print(f"pdf:    {rep.pdf} ({rep.pdf_pages} pages, {rep.pdf_engine})")
    print(f"tables: {len(rep.tables)}, figures: {len(rep.figures)}"
          + (f" (not drawn: {', '.join(rep.skipped_figures)})" if rep.skipped_figures else ""))
    if failed:
        print(f"note:   {failed} failed / incomplete / unreadable run(s), listed in the report")
    return 0


def add_report_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="HTML + PDF report (tables, frontier, curves, CKA) from results folders",
        epilog="examples:\n  harness report results/main --out reports/main\n"
        "  harness report results/main results/ablation_w --probe results/teacher/probe.json "
        "--out reports/embedded\n"
        "  harness report results/main results/askd --out reports/embedded   # with the ASKD study",
        formatter_class=_formatter,
    )
    p.add_argument("results", nargs="+", metavar="RESULTS_DIR",
                   help="results/<sweep>/ folders (one folder per run), ASKD study folders (with askd.json), "
                   "or results/ itself")
    p.add_argument("--out", required=True, help="report folder, e.g. reports/NAME")
    p.add_argument("--probe", help="teacher probe JSON (per-layer phone/speaker accuracy, layer CKA)")
    p.add_argument("--title", help="page title (default: the --out folder's name)")
    p.add_argument("--no-pdf", action="store_true", help="skip report.pdf")
    p.add_argument("--pdf-engine", choices=("auto", "weasyprint", "matplotlib"), default="auto")
    p.set_defaults(func=cmd_report)


# ----------------------------------------------------------------------------- teacher cache


def parse_layers(tokens: list[str], num_layers: int) -> list[int]:
    """``["all"]``, ``["0,4,8"]``, ``["1-12"]`` or ``["0", "3"]`` -> sorted hidden-state indices."""
    out: set[int] = set()
    for token in tokens:
        for part in filter(None, token.split(",")):
            try:
                if part == "all":
                    out.update(range(num_layers + 1))
                elif "-" in part:
                    lo, hi = (int(x) for x in part.split("-", 1))
                    out.update(range(lo, hi + 1))
                else:
                    out.add(int(part))
            except ValueError:
                raise UserError(f"--layers: {part!r} is not 'all', an index, or a range like 1-12") from None
    bad = sorted(k for k in out if not 0 <= k <= num_layers)
    if bad:
        raise UserError(f"--layers: {bad} out of range; this teacher has hidden states 0..{num_layers}")
    return sorted(out)


def cmd_teacher_cache(args: argparse.Namespace) -> int:
    import torch

    from harness.data.manifest import ManifestError
    from harness.teachers.base import load_teacher
    from harness.teachers.cache import ensure_cache

    if not Path(args.manifest).is_file():
        raise FileNotFoundError(f"--manifest: no such manifest: {args.manifest}")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    teacher = load_teacher(args.teacher, device)
    layers = parse_layers(args.layers, teacher.num_layers)
    try:
        cache = ensure_cache(teacher, Path(args.manifest), layers, frontend=not args.no_frontend,
                             cache_dir=Path(args.out), batch_size=args.batch_size, shard_size=args.shard_size,
                             limit=args.limit)
    except ManifestError as err:
        raise UserError(str(err)) from None
    size = sum(p.stat().st_size for p in cache.root.glob("*.f16"))
    print(f"cache   {cache.root}")
    print(f"teacher {cache.teacher_id}  utterances {len(cache)}  arrays {', '.join(cache.names)}")
    print(f"size    {size / 1e9:.3f} GB fp16  shards built {cache.built_shards}, reused {cache.reused_shards}")
    return 0


def teacher_subparsers(sub: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """The ``harness teacher`` command group (cache, pretrain, probe), created once."""
    if "teacher" in sub.choices:  # another block already made the group: join it
        parser = sub.choices["teacher"]
        return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    parser = sub.add_parser("teacher", help="teachers: pretrain, probe, cache")
    group = parser.add_subparsers(dest="teacher_command", metavar="TEACHER_COMMAND")
    group.required = True
    return group


def add_teacher_cache_parser(sub: argparse._SubParsersAction) -> None:
    p = teacher_subparsers(sub).add_parser(
        "cache", help="compute a teacher's hidden states (and front-end output) once, fp16, memory-mapped",
        epilog="examples:\n  harness teacher cache --teacher dummy --manifest data/tiny/distill.jsonl --out cache/teacher\n"
        "  harness teacher cache --teacher s3prl:hubert:/ckpt/hubert_base_ls960.pt \\\n"
        "      --manifest data/librispeech/distill.jsonl --layers 4,8,12 --out /scratch/cache --device cuda",
        formatter_class=_formatter,
    )
    p.add_argument("--teacher", required=True, help="teacher spec (dummy, embedded:PATH, s3prl:hubert:PATH, hf:DIR)")
    p.add_argument("--manifest", required=True, help="JSONL manifest; every utterance is cached at full length")
    p.add_argument("--layers", nargs="+", default=["all"],
                   help="hidden-state indices: all (default), 0,4,8, 1-12 (0 = pre-encoder features)")
    p.add_argument("--out", required=True, help="cache folder (the cache goes in a hashed subfolder)")
    p.add_argument("--no-frontend", action="store_true", help="do not cache the front-end output")
    p.add_argument("--limit", type=int, default=0, help="cache only the manifest's first N utterances (what a run with data.max_utterances=N reads)")
    p.add_argument("--batch-size", type=int, default=8, help="utterances per teacher forward")
    p.add_argument("--shard-size", type=int, default=256, help="utterances per shard (unit of resumption)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.set_defaults(func=cmd_teacher_cache)


# ----------------------------------------------------------------------------- bench throughput / bench gpu


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


def add_bench_throughput_parsers(bench: argparse._SubParsersAction,
                                 names: tuple[str, str] = ("throughput", "gpu")) -> None:
    """Add ``harness bench throughput`` and ``harness bench gpu`` to the ``bench`` group."""
    p = bench.add_parser(
        names[0], help="training step of our student vs s3prl's DistillerModel at the same shape",
        epilog="examples:\n  harness bench throughput --layers 2 --width 256 --heads 4 --ffn 1024 "
        "--out results/bench/throughput-small.json\n"
        "  harness bench throughput --out results/bench/throughput-paper.json      # 12 x 384, FFN 1536, batch 2, 4 s\n"
        "  harness bench throughput --device cuda --batch 8 --out results/bench/throughput-cuda.json",
        formatter_class=_formatter,
    )
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--width", type=int, default=384)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--ffn", type=int, default=1536)
    p.add_argument("--batch", type=int, default=2, help="utterances per step")
    p.add_argument("--seconds", type=float, default=4.0, help="audio per utterance (all full length)")
    p.add_argument("--steps", type=int, default=2, help="timed steps per repeat")
    p.add_argument("--repeats", type=int, default=5, help="interleaved repeats per model")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per model first")
    p.add_argument("--device", default="cpu", help="cpu, or cuda (bf16 autocast)")
    p.add_argument("--frontend", choices=("frozen", "trainable"), default="frozen")
    p.add_argument("--target", choices=("pred_heads", "l2l"), default="pred_heads",
                   help="DistilHuBERT prediction heads or per-layer L2L projections (loss l1_cos)")
    p.add_argument("--conv-dim", type=int, default=512, help="conv front-end channels")
    p.add_argument("--conv-pos", type=int, default=128, help="positional conv kernel")
    p.add_argument("--conv-pos-groups", type=int, default=16)
    p.add_argument("--teacher-width", type=int, default=768)
    p.add_argument("--pred-layers", type=int, nargs="+", default=[4, 8, 12], help="teacher layers of the heads")
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--adamw", choices=("default", "foreach", "fused"), default="default",
                   help="torch AdamW implementation for our student (same algorithm)")
    p.add_argument("--s3prl-adamw", choices=("default", "foreach", "fused"), default="default",
                   help="the same for s3prl's model")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--no-memory", action="store_true", help="skip the CPU peak-memory subprocesses")
    p.add_argument("--no-cached-row", action="store_true",
                   help="skip ours_cached (the student fed precomputed front-end features, frozen front-end only)")
    p.add_argument("--out", help="JSON file with machine, versions, settings and every figure")
    p.set_defaults(func=cmd_bench_throughput)

    p = bench.add_parser(
        names[1], help="MFU of the student_paper step with a cached teacher; data loader share (CUDA only)",
        epilog="examples:\n  harness bench gpu --out results/bench/gpu.json\n"
        "  harness bench gpu --batch 16 --workers 4 --peak-tflops 989 --out results/bench/gpu-b16.json",
        formatter_class=_formatter,
    )
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--utterances", type=int, default=64, help="fabricated utterances in the cache")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    p.add_argument("--peak-tflops", type=float, default=0.0, help="device peak (0 = from the built-in table)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--work-dir", help="keep the fabricated data and cache here (default: a temporary folder)")
    p.add_argument("--out", help="JSON file")
    p.set_defaults(func=cmd_bench_gpu)
# ----------------------------------------------------------------------------- export


def cmd_export(args: argparse.Namespace) -> int:
    from harness.export import ExportError, describe, export_run

    try:
        result = export_run(Path(args.run_dir), Path(args.out), fmt=args.format, verify=not args.no_verify)
    except (ExportError, ValueError) as err:  # ValueError: not a harness student checkpoint
        raise UserError(f"{args.run_dir}: cannot export to {args.format}: {err}") from None
    print(describe(result))
    return 0


def add_export_parser(sub) -> None:
    p = sub.add_parser(
        "export", help="write a run's student in another toolkit's format (s3prl distiller)",
        epilog="examples:\n  harness export results/tiny/run1 --format s3prl --out distiller.ckpt\n"
        "  # then: S3PRLUpstream('distiller_local', path_or_url='distiller.ckpt')",
        formatter_class=_formatter,
    )
    p.add_argument("run_dir", help="a finished run folder (with student.ckpt), or the checkpoint itself")
    p.add_argument("--format", choices=("s3prl",), default="s3prl")
    p.add_argument("--out", required=True, help="output checkpoint file")
    p.add_argument("--no-verify", action="store_true",
                   help="skip reloading the file through s3prl to compare hidden states")
    p.set_defaults(func=cmd_export)


# ----------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harness",
        description="Benchmark and ablate fast distillation of speech foundation models.",
        epilog=EPILOG_MAIN,
        formatter_class=_formatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser(
        "validate", help="check YAML configs (runs, sweeps, corpora) strictly",
        epilog="examples:\n  harness validate sweeps/base/tiny.yaml\n  harness validate sweeps/**/*.yaml",
        formatter_class=_formatter,
    )
    p.add_argument("files", nargs="+", help="YAML files")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser(
        "ls", help="list the registries (stacking variants, losses, tasks, teachers)",
        epilog="examples:\n  harness ls\n  harness ls stacking", formatter_class=_formatter,
    )
    p.add_argument("what", nargs="*", help="registry names (default: all)")
    p.set_defaults(func=cmd_ls)

    data = sub.add_parser("data", help="build, import and inspect corpora").add_subparsers(
        dest="data_command", metavar="DATA_COMMAND"
    )
    data.required = True
    p = data.add_parser(
        "build", help="synthesise the embedded corpus with eSpeak NG",
        epilog="examples:\n  harness data build --profile tiny --out data/tiny\n"
        "  harness data build --profile embedded --out data/embedded --workers 2",
        formatter_class=_formatter,
    )
    p.add_argument("--profile", choices=("tiny", "embedded"), required=True)
    p.add_argument("--out", required=True, help="output folder (audio + JSONL manifests)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=0, help="processes (0 = all cores)")
    p.set_defaults(func=cmd_data_build)

    p = data.add_parser(
        "stats", help="hours, utterances, speakers and class balance per split",
        epilog="examples:\n  harness data stats data/embedded", formatter_class=_formatter,
    )
    p.add_argument("dir", help="a corpus folder with <split>.jsonl manifests")
    p.set_defaults(func=cmd_data_stats)

    p = data.add_parser(
        "import", help="convert a real corpus' on-disk layout into manifests",
        epilog="examples:\n  harness data import librispeech /data/LibriSpeech --out data/librispeech\n"
        "  harness data import speech_commands /data/speech_commands_v0.01 --out data/ks",
        formatter_class=_formatter,
    )
    p.add_argument(
        "corpus", choices=("librispeech", "speech_commands", "fluent_commands", "voxceleb1", "iemocap")
    )
    p.add_argument("src", help="the corpus' root folder, as distributed")
    p.add_argument("--out", required=True)
    p.add_argument("--force", action="store_true", help="re-import even if <out>/corpus.json says it is done")
    p.set_defaults(func=cmd_data_import)

    p = sub.add_parser(
        "evaluate", help="score an upstream on SUPERB tasks (superb.json, summary.json)",
        epilog="examples:\n  harness evaluate runs/interleaved-s0 --tasks ks,ic,sid,er,pr,asr\n"
        "  harness evaluate embedded:harness/assets/teacher_embedded.pt --corpus data/embedded "
        "--out results/teacher/superb.json\n"
        "  harness evaluate fbank --corpus data/embedded --tasks ks,pr --no-score\n"
        "  harness evaluate runs/x --set asr.steps=300 --set ks.max_utts=[500,100,200]",
        formatter_class=_formatter,
    )
    p.add_argument("upstream", help="run folder, student .ckpt, 'fbank' or a teacher spec")
    p.add_argument("--tasks", default="ks,ic,sid,er,pr,asr", help="comma-separated task names")
    p.add_argument("--corpus", default=None, help="corpus folder (default: the run's data.corpus)")
    p.add_argument("--out", default=None, help="superb.json path (default: <run>/superb.json)")
    p.add_argument("--profile", choices=("tiny", "embedded", "paper"), default=None,
                   help="task settings (default: the run's profile, else embedded)")
    p.add_argument("--ref", default=None,
                   help="reference for the SUPERB score (default: the run's teacher; paper: published)")
    p.add_argument("--as-baseline", action="store_true",
                   help="score UPSTREAM as a SUPERB-score baseline (fbank or the reference) into the "
                        "memo under --cache-dir that sweep trials read, so concurrent trials need not")
    p.add_argument("--no-score", action="store_true", help="skip the SUPERB score (no baselines)")
    p.add_argument("--set", action="append", default=[], metavar="TASK.OPTION=VALUE",
                   help="override a task option (steps, lr, batch_size, max_utts, hidden, ...)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--cache-dir", default=None, help="feature store (default: cache/superb)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (0 = torch's default)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "sweep", help="run a YAML grid of distill + evaluate trials (Ray Tune)",
        epilog="examples:\n  harness sweep sweeps/embedded/main.yaml --dry-run\n"
        "  harness sweep sweeps/embedded/main.yaml\n"
        "  harness sweep sweeps/embedded/main.yaml --resume      # after Ctrl-C or kill -9\n"
        "  ray start --head && harness sweep sweeps/paper/main.yaml --address auto",
        formatter_class=_formatter,
    )
    p.add_argument("file", help="sweep YAML")
    p.add_argument("--resume", action="store_true", help="finish an interrupted sweep (finished trials are kept)")
    p.add_argument("--dry-run", action="store_true", help="list the trials with time and disk estimates")
    p.add_argument("--address", default=None, help="existing Ray cluster (default: $RAY_ADDRESS or a local one)")
    p.add_argument("--local", action="store_true", help="run trials in this process, without Ray")
    p.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=None,
                   help="replace the file's seeds, e.g. 0 or 0,1")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="change every trial's run config (repeatable), e.g. --set train.steps=100")
    p.add_argument("--suffix", default="", help="append to the sweep name (results folder), e.g. -quick")
    p.add_argument("--tasks", default=None, help="replace the sweep's evaluate list, e.g. ks,ic,pr")
    p.set_defaults(func=cmd_sweep)

    add_teacher_cache_parser(sub)
    add_teacher_pretrain_probe(teacher_subparsers(sub))
    add_report_parser(sub)
    add_export_parser(sub)
    _add_distill_and_bench(sub)
    add_asr_commands(sub)

    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``harness`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (UserError, ConfigError, RegistryError, FileNotFoundError) as err:
        print(f"harness: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("harness: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
