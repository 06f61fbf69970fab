"""``harness evaluate``: score an upstream on SUPERB tasks (:mod:`harness.superb.evaluate`).

The library is imported inside the command functions: it pulls in torch, and ``harness
--help`` should not wait for it.
"""

from __future__ import annotations

import argparse
import re
import sys
import typing
from pathlib import Path

import yaml

from harness.cli.common import Subparsers, add_trust_option, apply_trust, command
from harness.config import DEVICE_NAMES, SEED_MAX, convert, yaml_load
from harness.errors import UserError
from harness.registry import did_you_mean

# Task fields a --set may change, with the smallest valid value ((value, exclusive)); the
# others (name, metric, level, ...) define what the task is
SET_OPTIONS = {
    "optimizer": None, "lr": (0, True), "steps": (1, False), "batch_size": (1, False),
    "eval_every": (1, False), "hidden": (0, False), "max_utts": (0, False), "max_seconds": (0, False),
    "max_classes": (0, False), "downsample": (1, False), "normalize": None, "splits": None,
}


def superb_options(items: list[str]) -> dict[str, dict]:
    """``["ks.steps=100", "asr.max_utts=[200,50,50]"]`` -> ``{"ks": {"steps": 100}, ...}``.

    Each value is read as YAML (``lr=1e-3`` is a number) and checked against the type and
    range of the task option it sets, so a wrong value is one line here rather than a
    failed task after the features were extracted.

    Raises:
        UserError: a malformed item, an unknown task or option, or a value of the wrong
            type or out of range, naming the ``--set`` item.
    """
    from harness.superb.tasks import TASKS, Task

    hints = typing.get_type_hints(Task)
    out: dict[str, dict] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        task, dot, field = key.partition(".")
        if not sep or not dot or not task or not field:
            raise UserError(f"bad --set {item!r}; expected TASK.OPTION=VALUE (e.g. ks.steps=100)")
        if task not in TASKS:
            raise UserError(f"--set {item!r}: unknown SUPERB task {task!r}{did_you_mean(task, TASKS.names())} "
                            f"(tasks: {', '.join(TASKS.names())})")
        if field not in SET_OPTIONS:
            raise UserError(f"--set {item!r}: no task option {field!r}{did_you_mean(field, list(SET_OPTIONS))} "
                            f"(options: {', '.join(SET_OPTIONS)})")
        try:
            value = yaml_load(raw) if raw.strip() else ""
        except yaml.YAMLError as err:
            raise UserError(f"--set {item!r}: the value is not valid YAML ({getattr(err, 'problem', err)})") from None
        value = convert(value, hints[field], f"--set {key}")
        _check_range(key, field, value)
        out.setdefault(task, {})[field] = value
    return out


def _check_range(key: str, field: str, value: object) -> None:
    values = value if isinstance(value, tuple) else (value,)
    if field in ("max_utts", "splits") and len(values) != 3:
        raise UserError(f"--set {key}: expected 3 values (train, dev, test), got {list(values)}")
    if SET_OPTIONS[field] is None:
        return
    low, exclusive = SET_OPTIONS[field]
    if any(v < low or (exclusive and v == low) for v in values):
        what = f"> {low}" if exclusive else f">= {low}"
        raise UserError(f"--set {key}: must be {what}, got {value if not isinstance(value, tuple) else list(value)}")


def check_args(args: argparse.Namespace) -> None:
    """``--device``, ``--seed`` and ``--threads`` in range, before an upstream is loaded.

    Raises:
        UserError: one line naming the option and its valid values.
    """
    if args.device is not None and (args.device == "auto" or not re.fullmatch(DEVICE_NAMES, args.device)):
        raise UserError(f"--device {args.device!r}: use cpu, cuda, cuda:N (N = GPU index) or mps")
    if not 0 <= args.seed <= SEED_MAX:
        raise UserError(f"--seed {args.seed}: a seed must be in [0, 2**32 - 1]")
    if args.threads < 0:
        raise UserError(f"--threads {args.threads}: must be >= 0 (0 = torch's default)")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from harness.superb.data import DataError
    from harness.superb.evaluate import UpstreamError, evaluate

    check_args(args)
    apply_trust(args)
    if args.as_baseline:
        return _evaluate_as_baseline(args)
    try:
        res = evaluate(
            args.upstream, args.tasks, args.corpus, args.out, profile=args.profile,
            device=args.device, cache_dir=args.cache_dir, seed=args.seed,
            options=superb_options(args.set), baselines=None if args.no_score else "auto",
            ref=args.ref, threads=args.threads, log=None if args.quiet else print,
        )
    except (UpstreamError, DataError, ValueError) as err:  # first line only: no traceback text
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
    """Score an upstream as a SUPERB baseline into the memo that trials read (one line out).

    Returns:
        0, or 1 when a task failed (one line on stderr naming the failed tasks; nothing of
        this baseline is memoised then).
    """
    from harness.superb.evaluate import DEFAULT_CACHE, UpstreamError, baseline_results
    from harness.superb.tasks import parse_tasks

    if not args.corpus:
        raise UserError("--as-baseline needs --corpus DIR")
    profile = args.profile or "embedded"
    try:
        tasks = [t.name for t in parse_tasks(args.tasks, profile)]
        res = baseline_results(args.upstream, tasks, Path(args.corpus), profile, args.device or "cpu",
                               Path(args.cache_dir) if args.cache_dir else DEFAULT_CACHE, args.seed,
                               superb_options(args.set) or {}, args.threads, None if args.quiet else print)
    except (UpstreamError, ValueError) as err:
        raise UserError(str(err).splitlines()[0]) from None
    vals = ", ".join(f"{n} {r['value']:.4f}" for n, r in res["tasks"].items() if r.get("value") is not None)
    failed = {n: r.get("status", "failed") for n, r in res["tasks"].items() if r.get("status") != "ok"}
    if failed:  # not memoised (baseline_results): trials would score it again, or drop the task
        first = next(iter(failed.values())).removeprefix("failed: ")
        print(f"baseline {args.upstream}: {', '.join(failed)} failed ({first}); not memoised: fix it and "
              f"rerun{f' (scored: {vals})' if vals else ''}", file=sys.stderr)
        return 1
    print(f"baseline {args.upstream}: {vals}")
    return 0


def add_parser(sub: Subparsers) -> None:
    p = command(sub, "evaluate", cmd_evaluate, "score an upstream on SUPERB tasks (superb.json, summary.json)", [
        "harness evaluate runs/interleaved-s0 --tasks ks,ic,sid,er,pr,asr",
        "harness evaluate embedded:harness/assets/teacher_embedded.pt --corpus data/embedded "
        "--out results/teacher/superb.json",
        "harness evaluate fbank --corpus data/embedded --tasks ks,pr --no-score",
        "harness evaluate runs/x --set asr.steps=300 --set ks.max_utts=[500,100,200]",
    ])
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
                   help="override a task option (steps, lr, batch_size, max_utts, hidden, ...); "
                        "type and range are checked before anything runs (repeatable; default: the profile's "
                        "task settings)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")
    p.add_argument("--cache-dir", default=None, help="feature store (default: cache/superb)")
    p.add_argument("--seed", type=int, default=0, help="seed of the task subsets, head init and batch order")
    p.add_argument("--threads", type=int, default=1, help="torch threads (0 = torch's default)")
    p.add_argument("--quiet", action="store_true", help="print only the result, not each task's progress")
    add_trust_option(p)
