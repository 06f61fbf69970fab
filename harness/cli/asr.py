"""``harness asr train-teacher | distill | evaluate``: the ASR (ASKD) track (:mod:`harness.asr`).

The track's modules are imported inside the commands: they pull in torch and transformers.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from harness.errors import UserError
from harness.cli.common import Subparsers, command, group


def cmd_asr_train_teacher(args: argparse.Namespace) -> int:
    from harness.asr.train import train_teacher

    from harness.asr.teacher import TEACHER_PRESETS
    from harness.config import yaml_load

    corpus = Path(args.corpus or f"data/{args.profile}")
    shape = {}
    for item in args.shape:
        key, sep, raw = item.partition("=")
        if not sep or key not in TEACHER_PRESETS[args.profile]:
            raise UserError(f"--shape {item!r}: expected KEY=VALUE with KEY one of {', '.join(TEACHER_PRESETS[args.profile])}")
        shape[key] = yaml_load(raw)
    train_teacher(args.profile, Path(args.out), corpus, steps=args.steps, seed=args.seed, threads=args.threads,
                  split=args.split, lr=args.lr, ctc_weight=args.ctc_weight, batch_size=args.batch_size, **shape)
    return 0


def cmd_asr_distill(args: argparse.Namespace) -> int:
    from harness.asr.train import load_asr_config, run_asr_distill

    from harness.progress import Progress

    cfg = load_asr_config(Path(args.config), args.overrides)
    prog = Progress(cfg.train.steps, "asr", start=0)
    try:
        s = run_asr_distill(cfg, Path(args.out), on_log=lambda r: prog.update(
            r["step"], loss=r.get("total"), alpha=r.get("alpha") if cfg.loss.objective == "askd" else None))
    finally:
        prog.close()
    print(f"WER {s['wer']['greedy']['wer']:.4f} (teacher {s['teacher_wer']['greedy']['wer']:.4f}), "
          f"speedup x{s['speedup']:.2f}, {s['student_params']['total']} params -> {args.out}")
    return 0


def cmd_asr_evaluate(args: argparse.Namespace) -> int:
    from harness.asr.evaluate import evaluate_checkpoint

    res = evaluate_checkpoint(args.checkpoint, args.corpus, args.split, beam=args.beam,
                              max_utterances=args.max_utterances, teacher=args.teacher, latency=args.latency)
    print(json.dumps(res, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return 0


def add_parser(sub: Subparsers) -> None:
    asr = group(sub, "asr", "ASR track: Whisper-style teacher, distilled students, ASKD")
    p = command(asr, "train-teacher", cmd_asr_train_teacher,
                "train the profile's small character-level Whisper on <corpus>/asr_train", [
                    "harness asr train-teacher --profile tiny --out results/asr-teacher-tiny",
                    "harness asr train-teacher --profile embedded --corpus data/embedded --out results/asr-teacher",
                ])
    p.add_argument("--profile", choices=("tiny", "embedded"), required=True,
                   help="the teacher's size and recipe, and the default corpus data/<profile>")
    p.add_argument("--out", required=True, help="checkpoint folder (save_pretrained + tokenizer files)")
    p.add_argument("--corpus", default=None, help="corpus folder (default: data/<profile>)")
    p.add_argument("--steps", type=int, default=0, help="training steps (0 = the profile's default)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initialisation and the batch order")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--split", default="asr", help="split family read: <split>_{train,dev,test} (asr: read "
                   "sentences; ic: spoken commands)")
    p.add_argument("--shape", nargs="*", default=[], metavar="KEY=VALUE",
                   help="changes to the profile's model preset (d_model, encoder_layers, decoder_layers, heads, ffn, "
                   "n_mels, hop_length, max_target_positions, chunk_seconds, dropout) (default: none: the preset)")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    p.add_argument("--ctc-weight", type=float, default=0.5, help="weight of the auxiliary CTC loss on the encoder")
    p.add_argument("--batch-size", type=int, default=16, help="utterances per step")

    p = command(asr, "distill", cmd_asr_distill, "distil one student (ce | kd | askd) and score it against its teacher", [
        "harness asr distill --config sweeps/base/asr_embedded.yaml --out results/askd-demo "
        "teacher.path=results/asr-teacher loss.objective=askd",
    ])
    p.add_argument("--config", required=True, help="ASR run config YAML (track: asr)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides")

    p = command(asr, "evaluate", cmd_asr_evaluate, "WER (greedy, beam) and latency of a Whisper checkpoint folder", [
        "harness asr evaluate results/embedded-askd/objective=askd-s0/student --corpus data/embedded "
        "--teacher results/embedded-askd/teacher --latency 24",
    ])
    p.add_argument("checkpoint", help="Whisper checkpoint folder (local; never downloaded)")
    p.add_argument("--corpus", required=True, help="corpus folder with <split>.jsonl")
    p.add_argument("--split", default="asr_test", help="the split decoded, <corpus>/<split>.jsonl")
    p.add_argument("--beam", type=int, default=0, help="also decode with this beam width")
    p.add_argument("--max-utterances", type=int, default=0, help="decode the first N utterances (0 = all)")
    p.add_argument("--teacher", default=None, help="time this teacher side by side (speedup; default: none)")
    p.add_argument("--latency", type=int, default=0, help="utterances to time (0 = no timing)")
    p.add_argument("--json", default=None, help="also write the result here (default: print it only)")
