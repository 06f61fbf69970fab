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

    import_corpus(args.corpus, Path(args.src), Path(args.out))
    return 0


# ----------------------------------------------------------------------------- sweep


def cmd_sweep(args: argparse.Namespace) -> int:
    from harness.sweep import dry_run, run_sweep

    if args.dry_run:
        print(dry_run(Path(args.file)))
        return 0
    run_sweep(Path(args.file), resume=args.resume, address=args.address, local=args.local)
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
        max_utts=args.max_utts, max_frames=args.max_frames, threads=args.threads,
    )
    return 0


def add_teacher_pretrain_probe(teacher) -> None:
    """``teacher pretrain`` and ``teacher probe`` (embedded SFM) under the ``teacher`` group."""
    p = teacher.add_parser(
        "pretrain", help="HuBERT-style pretraining of the embedded SFM (MFCC then feature k-means targets)",
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
    p.add_argument("--iterations", type=int, choices=(1, 2))
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
    p.add_argument("--max-utts", type=int, default=400, help="utterances per phone split (speaker: twice as many)")
    p.add_argument("--max-frames", type=int, default=30000, help="training frames of the phone probe")
    p.add_argument("--no-twin", action="store_true", help="skip the random-init twin")
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=cmd_teacher_probe)


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
    p.set_defaults(func=cmd_data_import)

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
    p.set_defaults(func=cmd_sweep)

    # teacher pretrain / probe (embedded SFM); the "teacher" group is shared with other commands
    teacher_group = next((a for a in sub.choices if a == "teacher"), None)
    teacher = (
        sub.choices["teacher"]._subparsers._group_actions[0] if teacher_group
        else sub.add_parser("teacher", help="teachers: pretrain, probe, cache").add_subparsers(dest="teacher_command", metavar="TEACHER_COMMAND")
    )
    teacher.required = True
    add_teacher_pretrain_probe(teacher)

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
