"""``harness teacher cache | pretrain | probe``: teachers (:mod:`harness.teachers`).

``teacher pretrain`` reads its recipe like ``harness distill`` reads a run: the profile's
:class:`~harness.teachers.pretrain_config.PretrainConfig`, then ``--config FILE``, then dotted
``key=value`` overrides, all checked strictly. The teacher modules are imported inside the
commands: they pull in torch.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.cli.common import Subparsers, add_trust_option, apply_trust, command, group
from harness.errors import UserError


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

    from harness.teachers.base import load_teacher
    from harness.teachers.cache import ensure_cache

    if not Path(args.manifest).is_file():
        raise FileNotFoundError(f"--manifest: no such manifest: {args.manifest}")
    apply_trust(args)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    teacher = load_teacher(args.teacher, device)
    layers = parse_layers(args.layers, teacher.num_layers)
    cache = ensure_cache(teacher, Path(args.manifest), layers, frontend=not args.no_frontend,
                         cache_dir=Path(args.out), batch_size=args.batch_size, shard_size=args.shard_size,
                         limit=args.limit, max_seconds=args.max_seconds)
    size = sum(p.stat().st_size for p in cache.root.glob("*.f16"))
    print(f"cache   {cache.root}")
    print(f"teacher {cache.teacher_id}  utterances {len(cache)}  arrays {', '.join(cache.names)}")
    print(f"size    {size / 1e9:.3f} GB fp16  shards built {cache.built_shards}, reused {cache.reused_shards}")
    return 0


def cmd_teacher_pretrain(args: argparse.Namespace) -> int:
    from harness.teachers import pretrain as pretraining
    from harness.teachers.pretrain_config import load_pretrain_config

    cfg = load_pretrain_config(args.profile, args.config, args.overrides)
    data = Path(args.data or f"data/{args.profile}")
    if not (data / "distill.jsonl").is_file():
        raise FileNotFoundError(f"{data / 'distill.jsonl'}: no distill manifest (build it: harness data build --profile {args.profile} --out {data})")
    pretraining.pretrain(cfg, data, Path(args.out), log_fn=lambda m: print(m, flush=True))
    return 0


def cmd_teacher_probe(args: argparse.Namespace) -> int:
    from harness.teachers.probe import probe_teacher

    apply_trust(args)
    seeds = tuple(range(args.seeds))
    if not seeds:
        raise UserError("--seeds must be at least 1")
    probe_teacher(
        args.teacher, Path(args.data), Path(args.out), seeds=seeds, twin=not args.no_twin,
        max_utts=args.max_utts, max_frames=args.max_frames, threads=args.threads, speaker_utts=args.speaker_utts,
    )
    return 0


def add_parser(sub: Subparsers) -> None:
    teacher = group(sub, "teacher", "teachers: pretrain, probe, cache")
    p = command(teacher, "cache", cmd_teacher_cache,
                "compute a teacher's hidden states (and front-end output) once, fp16, memory-mapped", [
                    "harness teacher cache --teacher dummy --manifest data/tiny/distill.jsonl --out cache/teacher",
                    "harness teacher cache --teacher s3prl:hubert:/ckpt/hubert_base_ls960.pt \\",
                    "    --manifest data/librispeech/distill.jsonl --layers 4,8,12 --out /scratch/cache --device cuda",
                ])
    p.add_argument("--teacher", required=True, help="teacher spec (dummy, embedded:PATH, s3prl:hubert:PATH, hf:DIR)")
    p.add_argument("--manifest", required=True, help="JSONL manifest; every utterance is cached at full length "
                   "(run in pieces of --max-seconds)")
    p.add_argument("--layers", nargs="+", default=["all"],
                   help="hidden-state indices: all (default), 0,4,8, 1-12 (0 = pre-encoder features)")
    p.add_argument("--out", required=True, help="cache folder (the cache goes in a hashed subfolder)")
    p.add_argument("--no-frontend", action="store_true", help="do not cache the front-end output")
    p.add_argument("--limit", type=int, default=0, help="cache only the manifest's first N utterances (what a run with data.max_utterances=N reads)")
    p.add_argument("--batch-size", type=int, default=8, help="utterances per teacher forward")
    p.add_argument("--max-seconds", type=float, default=40.0,
                   help="longest audio of one forward (default 40 s, harness.teachers.cache.MAX_SECONDS): longer "
                        "utterances run in pieces, their frames still cached whole; bounds the forward's memory")
    p.add_argument("--shard-size", type=int, default=256, help="utterances per shard (unit of resumption)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    add_trust_option(p)

    p = command(teacher, "pretrain", cmd_teacher_pretrain,
                "HuBERT-style pretraining of the embedded SFM (MFCC, feature k-means, then phone targets)", [
                    "harness teacher pretrain --profile tiny --out /tmp/teacher_tiny.pt",
                    "harness teacher pretrain --profile tiny --out /tmp/t.pt steps1=40 minutes1=0 model.post_ln=false",
                    "nice -n 5 harness teacher pretrain --config harness/assets/pretrain_embedded.yaml "
                    "--data data/embedded --out harness/assets/teacher_embedded.pt",
                    "harness teacher pretrain --data data/embedded --out t.pt init=teacher.pt iterations=0 phone_minutes=32",
                ])
    p.add_argument("--profile", choices=("tiny", "embedded"), default="embedded",
                   help="the base recipe: model size and time budgets (default embedded)")
    p.add_argument("--config", help="pretraining YAML on top of the profile (keys of PretrainConfig, e.g. "
                   "harness/assets/pretrain_embedded.yaml, the shipped teacher's recipe; default: the profile's "
                   "settings alone)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="dotted overrides, e.g. minutes1=2 k1=50 model.post_ln=false init=CKPT threads=1")
    p.add_argument("--out", required=True, help="checkpoint file (fp16); logs go next to it (.log.tsv, .json)")
    p.add_argument("--data", help="corpus folder with distill.jsonl (default data/<profile>)")

    p = command(teacher, "probe", cmd_teacher_probe,
                "layer-wise phone/speaker linear probes + CKA between layers, vs a random-init twin", [
                    "harness teacher probe --teacher embedded --data data/embedded --out results/probe_embedded",
                    "harness teacher probe --teacher embedded:/tmp/t.pt --data data/tiny --out /tmp/probe --seeds 2",
                ])
    p.add_argument("--teacher", required=True, help="teacher spec (embedded, embedded:PATH, s3prl:..., hf:DIR)")
    p.add_argument("--data", required=True, help="corpus folder with asr_{train,test} (phones) and sid_{train,test}")
    p.add_argument("--out", required=True, help="output folder for probe.json and probe.png")
    p.add_argument("--seeds", type=int, default=3, help="probe repetitions per layer (run-to-run noise)")
    p.add_argument("--max-utts", type=int, default=400, help="utterances per phone split")
    p.add_argument("--speaker-utts", type=int, default=0, help="sid_train utterances (test: half as many; 0 = all)")
    p.add_argument("--max-frames", type=int, default=30000, help="training frames of the phone probe")
    p.add_argument("--no-twin", action="store_true", help="skip the random-init twin")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    add_trust_option(p)
