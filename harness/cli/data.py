"""``harness data build | stats | import``: corpora (thin wrappers over :mod:`harness.data`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.cli.common import Subparsers, command, group
from harness.data.importers import import_corpus
from harness.data.manifest import corpus_stats, format_stats
from harness.data.synth import build_corpus

CORPORA = ("librispeech", "speech_commands", "fluent_commands", "voxceleb1", "iemocap")


def cmd_data_build(args: argparse.Namespace) -> int:
    build_corpus(args.profile, Path(args.out), seed=args.seed, workers=args.workers, force=args.force,
                 only=args.only)
    return 0


def cmd_data_stats(args: argparse.Namespace) -> int:
    print(format_stats(corpus_stats(Path(args.dir))))
    return 0


def cmd_data_import(args: argparse.Namespace) -> int:
    import_corpus(args.corpus, Path(args.src), Path(args.out), force=args.force)
    return 0


def add_parser(sub: Subparsers) -> None:
    data = group(sub, "data", "build, import and inspect corpora")
    p = command(data, "build", cmd_data_build, "synthesise the embedded corpus with eSpeak NG",
                ["harness data build --profile tiny --out data/tiny",
                 "harness data build --profile embedded --out data/embedded --workers 2",
                 "harness data build --profile embedded --out data/embedded-quick --only distill:1200,ks,ic,asr_test"])
    p.add_argument("--profile", choices=("tiny", "embedded"), required=True,
                   help="corpus size: tiny (492 utterances, tests) or embedded (24 300, every task)")
    p.add_argument("--out", required=True, help="output folder (audio + JSONL manifests)")
    p.add_argument("--seed", type=int, default=0,
                   help="corpus seed: speakers, texts, noises (the same seed gives the same bytes)")
    p.add_argument("--workers", type=int, default=0, help="processes (0 = all cores)")
    p.add_argument("--force", action="store_true",
                   help="clear an --out that holds another corpus (another profile or seed, an import) first")
    p.add_argument("--only", metavar="SPLIT[:N],...",
                   help="render part of the corpus, the same audio as the full build's: a task (ks = ks_train, "
                        "ks_dev, ks_test) or a split, optionally its first N utterances, e.g. distill:1200,ks,ic "
                        "(default: the whole corpus)")

    p = command(data, "stats", cmd_data_stats, "hours, utterances, speakers and class balance per split",
                ["harness data stats data/embedded"])
    p.add_argument("dir", help="a corpus folder with <split>.jsonl manifests")

    p = command(data, "import", cmd_data_import, "convert a real corpus' on-disk layout into manifests",
                ["harness data import librispeech /data/LibriSpeech --out data/librispeech",
                 "harness data import speech_commands /data/speech_commands_v0.01 --out data/ks"])
    p.add_argument("corpus", choices=CORPORA, help="which corpus SRC holds (its layout: README.md, Real corpora)")
    p.add_argument("src", help="the corpus' root folder, as distributed")
    p.add_argument("--out", required=True, help="output folder (JSONL manifests; the audio stays in SRC)")
    p.add_argument("--force", action="store_true",
                   help="re-import even if <out>/corpus.json says it is done; clear an --out that holds another "
                        "corpus first")
