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

    try:
        res = evaluate(
            args.upstream, args.tasks, args.corpus, args.out, profile=args.profile,
            device=args.device, cache_dir=args.cache_dir, seed=args.seed,
            options=_superb_options(args.set), baselines=None if args.no_score else "auto",
            ref=args.ref, log=None if args.quiet else print,
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


# ----------------------------------------------------------------------------- sweep


def cmd_sweep(args: argparse.Namespace) -> int:
    from harness.sweep import dry_run, run_sweep

    if args.dry_run:
        print(dry_run(Path(args.file)))
        return 0
    run_sweep(Path(args.file), resume=args.resume, address=args.address, local=args.local)
    return 0


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
    p.add_argument("--no-score", action="store_true", help="skip the SUPERB score (no baselines)")
    p.add_argument("--set", action="append", default=[], metavar="TASK.OPTION=VALUE",
                   help="override a task option (steps, lr, batch_size, max_utts, hidden, ...)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--cache-dir", default=None, help="feature store (default: cache/superb)")
    p.add_argument("--seed", type=int, default=0)
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
    p.set_defaults(func=cmd_sweep)

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
