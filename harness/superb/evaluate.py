"""Score one upstream on SUPERB tasks: extract features once, train each task's head.

``evaluate(upstream, tasks, corpus_dir, out_path)`` is the whole protocol:

1. resolve the upstream (a student run folder, a teacher spec, or ``fbank``);
2. check that every split the tasks read exists (one-line error naming the missing one);
3. per task: take the cached features of its splits (extracted on first use, once per
   upstream and split, fp16, see :mod:`harness.superb.cache`), train the head with the
   learned layer weights, select on dev, score test (:mod:`harness.superb.train`);
   a failing task is recorded with its error and the others still run;
4. optionally the SUPERB score against fbank and a reference (:mod:`harness.superb.score`);
5. write ``superb.json`` and, for a run folder, merge the numbers into ``summary.json``
   (all under the run folder's lock, :mod:`harness.locks`: one writer at a time).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Callable

import torch

from harness import locks, runs, safeload
from harness.config import RunConfig
from harness.errors import HarnessError
from harness.progress import Progress
from harness.provenance import git_commit, hardware
from harness.registry import RegistryError
from harness.superb import score as scoring
from harness.superb.cache import corpus_tag, split_features
from harness.superb.data import CLASS_SEED, check_splits, keep_classes, read_split, subsample
from harness.superb.tasks import Task, parse_tasks
from harness.superb.train import train_task
from harness.teachers.base import TEACHERS, load_teacher

DEFAULT_CACHE = Path(os.environ.get("HARNESS_CACHE", "cache")) / "superb"


class UpstreamError(ValueError, HarnessError):
    """The upstream cannot be loaded (corrupt checkpoint, bad spec); one line."""


def _oneline(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


# ----------------------------------------------------------------------------- upstreams


_NO_CONFIG = runs.StoredConfig(RunConfig(), frozenset())  # an upstream that is not a run folder


def _read_config(run_dir: Path) -> runs.StoredConfig:
    try:
        return runs.read_config(run_dir) or _NO_CONFIG
    except runs.RunFormatError as err:
        raise UpstreamError(_oneline(err)) from None


def load_upstream(source: str | Path, device: str | torch.device = "cpu"):
    """Build the upstream named by ``source``.

    Args:
        source: a run folder (holding ``student.ckpt``), a ``.ckpt`` file, ``fbank``, or a
            teacher spec (``dummy``, ``embedded:PATH``, ``s3prl:hubert:PATH``, ``hf:DIR``; its ``KIND:``
            prefix decides, so ``embedded:x/teacher.ckpt`` is a teacher, not a student file).
        device: where it runs.

    Returns:
        ``(upstream, run_dir or None, run config)``: the run folder's typed
        ``config.yaml`` (:class:`harness.runs.StoredConfig`; its ``get`` is None for a
        key the file does not set, and for every key when there is no run folder).

    Raises:
        FileNotFoundError: a folder without ``student.ckpt``, or a missing checkpoint.
        UpstreamError: a corrupt checkpoint or a spec that fails to load (one line).
        UnsafeCheckpointError: a checkpoint that needs pickle, without ``--trust-checkpoint``.
        RegistryError: an unknown teacher kind.
    """
    path = Path(str(source))
    run_dir, ckpt = None, None
    if _is_spec(str(source)):  # the prefix decides: embedded:/x/student.ckpt is a teacher spec
        pass
    elif path.is_dir():
        run_dir, ckpt = path, path / "student.ckpt"
        if not ckpt.is_file():
            raise FileNotFoundError(f"{path} is not a run folder: it has no student.ckpt")
    elif path.suffix == ".ckpt":
        ckpt = path
        if not ckpt.is_file():
            raise FileNotFoundError(f"checkpoint {ckpt} does not exist")
    if ckpt is not None:
        try:
            from harness.student import load_student
        except ImportError as err:
            raise UpstreamError(f"cannot load {ckpt}: harness.student is unavailable ({_oneline(err)})") from None
        try:  # weights_only: a crafted pickle is refused (UnsafeCheckpointError), never run
            upstream = load_student(ckpt, device)
        except (FileNotFoundError, safeload.UnsafeCheckpointError):
            raise
        except safeload.CorruptCheckpointError as err:  # its message names the file
            raise UpstreamError(f"corrupt checkpoint {_oneline(err)}") from None
        except Exception as err:
            raise UpstreamError(f"corrupt checkpoint {ckpt}: {_oneline(err)}") from None
        return _frozen(upstream), run_dir, _read_config(run_dir) if run_dir else _NO_CONFIG
    try:
        upstream = load_teacher(str(source), device)
    except (FileNotFoundError, RegistryError, safeload.UnsafeCheckpointError):
        raise
    except Exception as err:
        raise UpstreamError(f"cannot load upstream {str(source)!r}: {_oneline(err)}") from None
    return _frozen(upstream), None, _NO_CONFIG


def _is_spec(source: str) -> bool:
    """A teacher spec: ``KIND:ARG`` with a registered teacher kind (``embedded:PATH``,
    ``s3prl:hubert:PATH``, ``hf:DIR``), whatever its path ends in."""
    kind, sep, _ = source.partition(":")
    return bool(sep) and kind in TEACHERS


def _frozen(upstream):
    if isinstance(upstream, torch.nn.Module):
        upstream.eval()
        for p in upstream.parameters():
            p.requires_grad_(False)
    return upstream


# ----------------------------------------------------------------------------- evaluation


def evaluate(
    upstream: str | Path,
    tasks: str | list[str],
    corpus_dir: str | Path | None = None,
    out_path: str | Path | None = None,
    *,
    profile: str | None = None,
    device: str = "cpu",
    cache_dir: str | Path | None = None,
    seed: int = 0,
    options: dict[str, dict] | None = None,
    baselines: str | dict | None = "auto",
    ref: str | None = None,
    threads: int = 1,
    log: Callable[[str], None] | None = print,
) -> dict:
    """Score ``upstream`` on ``tasks``; write ``superb.json``.

    Args:
        upstream: run folder, ``.ckpt`` file, ``fbank`` or teacher spec.
        tasks: ``"ks,ic,sid,er,pr,asr"`` or a list of names.
        corpus_dir: corpus folder with the task manifests; default: the run's
            ``data.corpus`` for a run folder.
        out_path: where to write ``superb.json``; default ``<run>/superb.json`` for a run
            folder, else nothing is written.
        profile: ``tiny``, ``embedded`` or ``paper``; default the run's profile, else
            ``embedded``.
        device: ``cpu`` / ``cuda``.
        cache_dir: feature store root (default ``$HARNESS_CACHE/superb`` or ``cache/superb``).
        seed: subsets, head init and batch order.
        options: per-task option overrides, ``{"ks": {"steps": 100}}``.
        baselines: ``"auto"``: compute the SUPERB score against fbank and ``ref`` (the
            published table in ``paper``; ``fbank`` and the reference upstream scored here
            with the same settings otherwise, memoised under the cache); a dict
            ``{"fbank": {task: value}, "ref": {task: value}, "ref_name": str}``; or None
            (no score).
        ref: reference upstream for the score outside ``paper`` (default: the run's
            ``teacher.spec``); a spec, run folder, or a ``superb.json`` path.
        threads: torch intra-op threads while scoring (restored after; 0 = leave as is).
            Default 1: measured here on the shared 2-core machine, the embedded teacher
            ran 6x faster in wall-clock with 1 thread than with 2 (0.77 s vs 5.0 s for 32 s
            of audio) and sweeps run several trials side by side anyway.
        log: progress printer (None = silent).

    Returns:
        The ``superb.json`` payload: ``{"upstream", "upstream_id", "profile", "corpus",
        "tasks": {name: {"status", "metric", "direction", "value", "n", "dev_value",
        "layer_weights", ...}}, "score": {...} or None, ...}``.

    Raises:
        RegistryError: unknown task name. FileNotFoundError: missing corpus or split.
        UpstreamError: the upstream cannot be loaded.
        FolderLocked: ``upstream`` is a run folder another process writes (a distill, a
            sweep trial, another evaluate: :mod:`harness.locks`); one line naming it.
    """
    # a run folder is read (student.ckpt) and written (superb.json, summary.json) under its
    # lock, so a distill or sweep trial writing it meanwhile is refused, or refuses this
    # (re-entrant: a sweep trial scoring its own run already holds it)
    folder = Path(str(upstream))
    held = (locks.hold(folder, f"harness evaluate {folder.name}", log)
            if not _is_spec(str(upstream)) and folder.is_dir() else contextlib.nullcontext())
    previous = torch.get_num_threads()
    with held:
        if threads:
            torch.set_num_threads(threads)
        try:
            return _evaluate(upstream, tasks, corpus_dir, out_path, profile, device, cache_dir, seed,
                             options, baselines, ref, threads, log)
        finally:
            torch.set_num_threads(previous)


def _evaluate(upstream, tasks, corpus_dir, out_path, profile, device, cache_dir, seed, options,
              baselines, ref, threads, log) -> dict:
    log = log or (lambda _msg: None)
    t_start, cpu_start = time.perf_counter(), time.process_time()
    up, run_dir, run_cfg = load_upstream(upstream, device)
    profile = profile or run_cfg.get("profile") or "embedded"
    task_list = parse_tasks(tasks, profile)
    opts = options or {}
    for name in opts:
        if name not in {t.name for t in task_list}:
            raise ValueError(f"options given for task {name!r}, which is not being evaluated")
    task_list = [t.replace(**opts.get(t.name, {})) for t in task_list]
    if corpus_dir is None:
        corpus_dir = run_cfg.get("data.corpus")
        if corpus_dir is None:
            raise FileNotFoundError("no corpus folder given (pass --corpus DIR)")
    corpus_dir = Path(corpus_dir)
    check_splits(corpus_dir, sorted({s for t in task_list for s in t.splits}))
    cache_dir = Path(cache_dir) if cache_dir else DEFAULT_CACHE
    log(f"superb: {getattr(up, 'id', upstream)} on {corpus_dir} ({profile}): "
        + ",".join(t.name for t in task_list))

    results: dict[str, dict] = {}
    prog = Progress(len(task_list), "superb", unit="task", tty=False)  # its lines go through log
    for i, task in enumerate(task_list):
        t0 = time.perf_counter()
        try:
            results[task.name] = _run_task(up, task, corpus_dir, cache_dir, device, seed, log)
        except Exception as err:  # one failed task must not lose the others
            results[task.name] = {"status": f"failed: {type(err).__name__}: {_oneline(err)}",
                                  "metric": task.metric, "direction": task.direction,
                                  "value": None, "n": 0}
            log(f"  {task.name}: FAILED ({_oneline(err)})")
        else:
            r = results[task.name]
            log(f"  {task.name}: {task.metric} {r['value']:.4f} (dev {r['dev_value']:.4f}, "
                f"n={r['n']}) in {time.perf_counter() - t0:.1f} s ({prog.tick(i + 1).split('] ', 1)[1]})")
        results[task.name]["task_seconds"] = round(time.perf_counter() - t0, 2)

    payload = {
        "upstream": str(upstream), "upstream_id": getattr(up, "id", str(upstream)),
        "num_layers": getattr(up, "num_layers", None), "width": getattr(up, "width", None),
        "profile": profile, "corpus": str(corpus_dir), "seed": seed, "threads": torch.get_num_threads(),
        "tasks": results, "score": None,
        "seconds": round(time.perf_counter() - t_start, 2),
        "cpu_seconds": round(time.process_time() - cpu_start, 2),
        "git_commit": git_commit(), "hardware": hardware(),
    }
    if baselines is not None:
        try:
            payload["score"] = _score(payload, baselines, ref, run_cfg, task_list, corpus_dir,
                                      profile, device, cache_dir, seed, opts, threads, log)
        except Exception as err:  # the task numbers stay valid without a score
            payload["score"] = {"score": None, "error": _oneline(err)}
            log(f"  score: not computed ({_oneline(err)})")
    # "seconds"/"cpu_seconds": this upstream's tasks; scoring baselines on first use is apart
    payload["score_seconds"] = round(time.perf_counter() - t_start - payload["seconds"], 2)

    if out_path is None and run_dir is not None:
        out_path = run_dir / "superb.json"
    if out_path is not None:
        runs.write_superb(Path(out_path), payload)
    if run_dir is not None:
        merge_summary(run_dir, payload)
    return payload


def _run_task(up, task: Task, corpus_dir: Path, cache_dir: Path, device, seed, log) -> dict:
    records = {split: read_split(corpus_dir, split) for split in task.splits}
    if task.level == "utterance":
        # the class subset does not follow the evaluation seed: every seed scores the same
        # classes (seeds vary the head and the utterance sample, not the task), and the
        # embedded teacher's speaker stage can leave exactly these speakers out
        records = keep_classes(records, task.splits[0], task.max_classes, CLASS_SEED)
    feats = {}
    for split, limit in zip(task.splits, task.max_utts):
        records[split] = subsample(records[split], limit, seed)
        if not records[split]:
            raise ValueError(f"split {split!r} has no utterance of the kept classes")
        feats[split] = split_features(up, records[split], corpus_dir, split, cache_dir,
                                      frames=task.level == "sequence", device=device,
                                      max_seconds=task.max_seconds, log=log)
    out = train_task(task, feats, records, seed=seed, device=device, log=None)
    return {"status": "ok", "title": task.title, "head": task.head, **out,
            "max_utts": list(task.max_utts)}


# ----------------------------------------------------------------------------- score


def _score(payload, baselines, ref, run_cfg, task_list, corpus_dir, profile, device, cache_dir,
           seed, opts, threads, log) -> dict:
    values, dirs = scoring.values_of(payload)
    sizes = None  # published baselines: no test sizes, no significance guard
    if isinstance(baselines, dict):
        fb, rf, ref_name = baselines["fbank"], baselines["ref"], baselines.get("ref_name", "given")
    elif profile == "paper" and ref is None:
        fb, rf, ref_name = scoring.PAPER_FBANK, scoring.PAPER_REFERENCE, "HuBERT Base (published)"
    else:
        ref = ref or run_cfg.get("teacher.spec")
        if not ref:
            raise ValueError("no reference upstream for the SUPERB score (pass --ref SPEC)")
        common = dict(tasks=[t.name for t in task_list], corpus_dir=corpus_dir, profile=profile,
                      device=device, cache_dir=cache_dir, seed=seed, options=opts, threads=threads,
                      log=log)
        fb_res, rf_res = baseline_results("fbank", **common), baseline_results(ref, **common)
        fb, rf = scoring.values_of(fb_res)[0], scoring.values_of(rf_res)[0]
        nf, nr = scoring.sizes_of(fb_res), scoring.sizes_of(rf_res)
        sizes = {t: (nf[t], nr[t]) for t in nf if t in nr}
        ref_name = str(ref)
    out = scoring.superb_score(values, dirs, fb, rf, n=sizes)
    out.update(ref=ref_name, fbank={k: fb.get(k) for k in values}, ref_values={k: rf.get(k) for k in values})
    if profile == "paper" and not isinstance(baselines, dict) and ref is None:
        out["source"] = scoring.PAPER_SOURCE
    if out["score"] is not None:
        log(f"  SUPERB score {out['score']:.1f} (fbank = 0, {ref_name} = 1000)")
    return out


def baseline_results(source: str, tasks, corpus_dir, profile, device, cache_dir, seed, options,
                     threads, log) -> dict:
    """``superb.json`` payload of a baseline (fbank or the reference), memoised on disk.

    ``source`` may be a ``superb.json`` file (read as is). Otherwise the upstream is scored
    with the same tasks, options, corpus and seed, and the result kept under
    ``<cache_dir>/results/`` keyed by all of them, so a sweep scores its baselines once.
    Only a baseline whose every task succeeded is memoised: one with a failed task (a
    missing split file, a full disk) is returned for this score and scored again next time.
    """
    if str(source).endswith(".json") and Path(source).is_file():
        return json.loads(Path(source).read_text())
    up, _, _ = load_upstream(source, device)
    # keyed by the resolved task definitions too, so changing a task's split sizes, steps or
    # head in tasks.py never reuses a baseline scored under the old definition
    opts = options or {}
    defs = [dataclasses.asdict(t.replace(**opts.get(t.name, {}))) for t in parse_tasks(tasks, profile)]
    key = hashlib.sha1(json.dumps(
        [up.id, sorted(tasks), str(Path(corpus_dir).resolve()), corpus_tag(Path(corpus_dir)), profile, seed, options, defs],
        sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = Path(cache_dir) / "results" / f"{key}.json"
    memo = _memoised(path)
    if memo is not None:
        return memo
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent trials: one scores, the others wait and read
        memo = _memoised(path)
        if memo is not None:
            return memo
        if log:
            log(f"  scoring baseline {source} (once; memoised in {path})")
        payload = evaluate(source, tasks, corpus_dir, None, profile=profile, device=device,
                           cache_dir=cache_dir, seed=seed, options=options, baselines=None, threads=threads,
                           log=None)
        failed = sorted(t for t, r in payload["tasks"].items() if r.get("status") != "ok")
        if failed:  # not memoised: the next run scores it again (after the data is fixed)
            if log:
                log(f"  baseline {source}: {', '.join(failed)} failed; not memoised (scored again next time)")
        else:
            runs.write_superb(path, payload)
        return payload


def _memoised(path: Path) -> dict | None:
    """A memoised baseline whose every task succeeded, else None (missing, unreadable, or
    written with a failed task by an older harness: scored again)."""
    data, _ = runs.load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), dict):
        return None
    if any(not isinstance(r, dict) or r.get("status") != "ok" for r in data["tasks"].values()):
        return None
    return data


# ----------------------------------------------------------------------------- files


def merge_summary(run_dir: Path, payload: dict) -> dict:
    """Merge per-task numbers and the SUPERB score into ``<run>/summary.json``.

    Adds ``tasks`` (per task: metric, direction, value, n, status) and ``superb_score``
    (None when not computed); other keys are kept.
    """
    path = Path(run_dir) / runs.SUMMARY
    summary = {}
    if path.is_file():
        summary, why = runs.load_summary(run_dir)
        if summary is None:
            raise UpstreamError(f"{why if why.startswith(str(path)) else f'{path} is {why}'}; not overwriting it")
    summary["tasks"] = {
        name: {k: r.get(k) for k in ("metric", "direction", "value", "n", "status")}
        for name, r in payload["tasks"].items()
    }
    score = payload.get("score") or {}
    summary["superb_score"] = score.get("score")
    summary["superb_ref"] = score.get("ref")
    runs.write_summary(run_dir, summary)
    return summary
