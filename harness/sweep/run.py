"""Load and run a distillation sweep: every unfinished trial, in-process or through Ray, then
``runs.csv`` (the module docstring of :mod:`harness.sweep` describes the sweep file)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from harness import failures, locks, runs
from harness.config import ConfigError, RunConfig, blame_override, from_dict, load_yaml
from harness.errors import HarnessError
from harness.progress import eta
from harness.provenance import git_commit, load_average, now_iso
from harness.sweep import tracks
from harness.sweep.grid import Sweep, SweepConfig, base_data, expand_grid
from harness.sweep.ray_adapter import run_ray
from harness.sweep.trials import run_trial, trial_payloads


def load_sweep(
    path: str | Path,
    seeds: list[int] | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    suffix: str = "",
    tasks: list[str] | None = None,
) -> Sweep:
    """Load a sweep YAML strictly and expand it into trials, validating every trial's config.

    Args:
        path: the sweep YAML.
        seeds: replace the file's seeds (e.g. ``[0]`` for a quick pass).
        overrides: extra ``key=value`` changes applied to every trial (after the file's).
        tasks: replace the file's ``evaluate`` task list (e.g. fewer tasks for a quick pass).
        suffix: appended to the sweep name (its results folder), so a quick pass never
            mixes with the full study.

    Raises:
        ConfigError: one line naming the file and the key (``grid.stacking.varaint``
            -> nearest valid key), or the base file.
    """
    path = Path(path)
    track = tracks.track_of(path)
    if track != tracks.DISTILL:
        return tracks.entry(track, "load")(path, seeds=seeds, overrides=overrides, suffix=suffix, tasks=tasks)
    cfg: SweepConfig = from_dict(SweepConfig, load_yaml(path), source=path)
    if seeds:
        cfg.seeds = list(seeds)
    if suffix:
        cfg.name += suffix
        cfg.reuse = [r + suffix for r in cfg.reuse]
    if tasks is not None:
        cfg.evaluate = list(tasks)
    base, base_path = base_data(cfg, path, overrides)
    # The base is checked with the sweep's and the command line's changes applied, so a
    # placeholder in it (the paper profile's checkpoint path) can be filled by --set; an
    # error a --set caused names that --set, not the base file
    try:
        from_dict(RunConfig, base, source=base_path)
    except ConfigError as err:
        raise blame_override(err, overrides or (), base_path, "--set") from None
    if cfg.evaluate:
        _check_tasks(cfg.evaluate, path)

    return Sweep(cfg, path, expand_grid(cfg, base, path, RunConfig))


def _check_tasks(tasks: list[str], path: Path) -> None:
    try:
        from harness.superb import TASKS
    except ModuleNotFoundError as err:
        if err.name != "harness.superb":
            raise
        return  # scoring not installed: the trial will say so
    for task in tasks:
        if task not in TASKS:
            from harness.registry import did_you_mean

            raise ConfigError(f"{path}: evaluate: unknown task {task!r}{did_you_mean(task, TASKS.names())}")


def run_sweep(
    path: str | Path,
    resume: bool = False,
    address: str | None = None,
    local: bool = False,
    log: Callable[[str], None] = print,
    seeds: list[int] | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    suffix: str = "",
    tasks: list[str] | None = None,
    retry_failed: bool = False,
    check: bool = False,
) -> Path:
    """Run every trial of a sweep (Ray Tune, or in-process with ``local``) and write runs.csv.

    The sweep holds its results folder's lock (:mod:`harness.locks`) throughout; each
    trial holds its run folder's.

    Args:
        path: the sweep YAML.
        resume: continue an interrupted sweep (finished trials are kept, not rerun; trials
            that failed because of the environment, :mod:`harness.failures`, are rerun).
        address: an existing Ray cluster (``ray start --head`` on the head node; also
            taken from ``RAY_ADDRESS``); None starts a local Ray instance.
        local: run trials one by one in this process, without Ray.
        seeds, overrides, suffix, tasks: as in :func:`load_sweep` (an ASR study takes the
            first three and refuses ``tasks``: :func:`harness.asr.study.load_study`).
        retry_failed: with ``resume``, rerun every failed trial (deterministic failures too).
        check: raise :class:`TrialsFailed` (after writing runs.csv) when any trial failed.

    Returns:
        The path of ``runs.csv`` (an ASR study: ``askd.csv``).

    Raises:
        ConfigError: a bad sweep file; the sweep folder already holds runs and ``resume``
            was not given; or it holds runs made with other settings (the keys are named).
        FolderLocked: another sweep writes the same results folder.
        TrialsFailed: ``check`` and some trial failed (one summary line).
    """
    track = tracks.track_of(path)
    extra = {"seeds": seeds, "overrides": overrides, "suffix": suffix, "tasks": tasks}
    if track != tracks.DISTILL:  # the ASR track: its own runner, under the same folder lock
        study = tracks.entry(track, "load")(path, **extra)
        with locks.hold(study.out_dir, f"harness sweep {study.config.name}", log):
            table = tracks.entry(track, "run")(path, resume=resume, log=log, retry_failed=retry_failed,
                                                  address=address, local=local, **extra)
            payloads = [{"run_id": t.run_id, "run_dir": str(study.out_dir / t.run_id), "sweep": study.config.name}
                        for t in study.trials]
            _report_failures(_failure_line(study, payloads, {}, table), check, log)
        return table
    sweep = load_sweep(path, seeds=seeds, overrides=overrides, suffix=suffix, tasks=tasks)
    out = sweep.out_dir
    with locks.hold(out, f"harness sweep {sweep.config.name}", log):
        return _run_locked(sweep, resume, address, local, log, retry_failed, check)


class TrialsFailed(HarnessError):
    """Some trials of a sweep failed; the message is the one summary line."""


def _run_locked(sweep: Sweep, resume: bool, address, local: bool, log, retry_failed: bool, check: bool) -> Path:
    out = sweep.out_dir
    existing = [p for p in out.glob("*/trial.json")]
    if existing and not resume:
        raise ConfigError(
            f"{out} already holds {len(existing)} run(s) of sweep {sweep.config.name!r}: "
            "pass --resume to finish it, or remove the folder to start over"
        )
    if local and sweep.config.resources.workers > 1:
        raise ConfigError(f"{sweep.path}: resources.workers > 1 (data-parallel trials) runs through Ray Train, "
                          "not in-process: drop --local")
    res = sweep.config.resources.resolve()
    threads = max(1, int(res["cpu"]))
    retry = "all" if retry_failed else failures.ENVIRONMENT
    payloads = trial_payloads(sweep, threads, retry)
    _check_same_settings(sweep, payloads)
    _note_other_code(sweep, payloads, log)
    todo = [p for p in payloads if not runs.trial_done(Path(p["run_dir"]), p["evaluate"], retry=retry)]
    if sweep.config.reuse:
        sources = [out.parent / name for name in sweep.config.reuse]
        todo = [p for p in todo if not runs.reuse_identical_run(p, sources, log)]
    log(f"[sweep] {sweep.config.name}: {len(payloads)} trials, {len(payloads) - len(todo)} already done, "
        f"{len(todo)} to run -> {out}")
    t0, started, load0 = time.time(), now_iso(), load_average()
    known = run_payloads(sweep, todo, res, address, local, log)
    _log_invocation(out, {"started": started, "ended": now_iso(), "seconds": round(time.time() - t0, 1),
                          "trials": len(payloads), "ran": len(todo), "resources": res,
                          "backend": "local" if local or sweep.config.backend == "local" else "ray",
                          "address": address, "load": {"start": load0, "end": load_average()},
                          "git_commit": git_commit()}, log)
    line = _failure_line(sweep, payloads, known)
    try:
        csv = runs.write_runs_csv(out, known)
    except OSError as err:
        if not failures.is_no_space(err):
            raise
        if line:
            log(line)
        raise failures.NoSpaceError(f"{failures.no_space_message(out)} (runs.csv not written)") from None
    log(f"[sweep] wrote {csv}")
    _report_failures(line, check, log)
    return csv


SWEEP_LOG = "sweep_log.jsonl"


def _log_invocation(out: Path, entry: dict, log: Callable) -> None:
    """Append one line per sweep invocation to ``<sweep>/sweep_log.jsonl``: its wall-clock,
    trials run, resources and load (what ``--dry-run``'s estimate is checked against)."""
    try:
        with open(out / SWEEP_LOG, "a") as fh:
            fh.write(json.dumps(entry, sort_keys=True) + "\n")
    except OSError as err:
        log(f"[sweep] {out / SWEEP_LOG} not written ({err.strerror or err})")


def run_payloads(sweep: Sweep, todo: list[dict], res: dict, address: str | None, local: bool, log: Callable,
                 after_each: Callable[[dict, dict], None] | None = None) -> dict[str, dict]:
    """Run trial payloads (:func:`harness.sweep.trials.run_trial`) one by one in this
    process (``local``, or the sweep's ``backend: local``) or as Ray Tune trials; a
    distillation sweep and an ASR study both run theirs here.

    Args:
        res: per-trial resources (``ResourcesConfig.resolve()``), for Ray.
        after_each: called with ``(payload, summary)`` after each trial (after all of them
            with Ray, in order); ``summary`` is the run folder's, or the failure that could
            not be written there.

    Returns:
        ``{run_id: {"trial", "summary"}}`` for the failures that could not be written to
        their run folders (a full disk), reported from memory.
    """
    known: dict[str, dict] = {}

    def finished(p: dict, result: dict) -> None:
        if "summary" in result:
            known[p["run_id"]] = {"trial": p, "summary": result["summary"]}
        if after_each:
            after_each(p, result.get("summary") or runs.read_summary(Path(p["run_dir"])) or {})

    if local or sweep.config.backend == "local":
        spent = 0.0
        for i, p in enumerate(todo):
            left = f", ETA {eta(spent / i * (len(todo) - i))}" if i else ""
            log(f"[sweep] started {p['run_id']} ({i}/{len(todo)} done{left})")
            t0 = time.time()
            result = run_trial(p)
            spent += time.time() - t0
            left = f", ETA {eta(spent / (i + 1) * (len(todo) - i - 1))}" if i + 1 < len(todo) else ""
            log(f"[sweep] {p['run_id']}: {result['status']} ({time.time() - t0:.0f} s; {i + 1}/{len(todo)} done{left})")
            finished(p, result)
    elif todo:
        for p, result in zip(todo, run_ray(sweep, todo, res, address, log)):
            finished(p, result)
    return known


def _report_failures(line: str, check: bool, log) -> None:
    """Log the failure summary line (and what reruns which); raise it with ``check``."""
    if not line:
        return
    log(line)
    if "deterministic" in line:
        log("[sweep] deterministic failures (NaN, config) are rerun only with --retry-failed; "
            "environment ones (disk, memory, input files, killed) with --resume")
    if check:
        raise TrialsFailed(line)


def _check_same_settings(sweep: Sweep, payloads: list[dict]) -> None:
    """Refuse to resume a sweep whose run folders hold runs made with other settings."""
    changed = {p["run_id"]: runs.config_changes(p["run_dir"], p["config"]) for p in payloads}
    runs.refuse_changed(sweep.out_dir, {k: v for k, v in changed.items() if v}, len(payloads))


def _note_other_code(sweep: Sweep, payloads: list[dict], log) -> None:
    """Say when finished trials were run by another code version (kept: their config is the
    same; ``summary.json`` ``git_commit`` says which)."""
    from harness.provenance import git_commit

    now, other = git_commit(), {}
    for p in payloads:
        try:
            summary = runs.read_summary(p["run_dir"]) or {}
        except runs.RunFormatError:
            continue
        commit = summary.get("git_commit")
        if summary.get("status") == "ok" and commit and commit != now:
            other[commit] = other.get(commit, 0) + 1
    if other:
        listed = ", ".join(f"{n} at {c[:12]}" for c, n in sorted(other.items()))
        log(f"[sweep] {sweep.config.name}: finished trials run by other code versions are kept ({listed}; "
            f"now {now[:12]}); remove their folders to rerun them")


def _failure_line(sweep: Sweep, payloads: list[dict], known: dict[str, dict], table: Path | None = None) -> str:
    """``[sweep] NAME: 2 of 10 trials failed (1 environment, 1 deterministic): see runs.csv``, or ""
    (``table``: the table named instead of ``runs.csv``, an ASR study's ``askd.csv``).

    A trial that started but left no result (its process was killed: a Ray worker out of
    memory) is added to ``known`` as an environment failure; its folder stays ``running``,
    so that ``--resume`` continues it from its checkpoint.
    """
    counts = {failures.ENVIRONMENT: 0, failures.DETERMINISTIC: 0}
    for p in payloads:
        if p["run_id"] in known:
            summary = known[p["run_id"]]["summary"]
        else:
            try:
                summary = runs.read_summary(p["run_dir"])
            except runs.RunFormatError:
                summary = None
        if (summary is None or summary.get("status") == "running") and (Path(p["run_dir"]) / runs.TRIAL).is_file():
            summary = {"run_id": p["run_id"], "sweep": p["sweep"], "failure": failures.ENVIRONMENT,
                       "status": "failed: killed (the trial's process ended before it finished; --resume continues it)"}
            known[p["run_id"]] = {"trial": p, "summary": summary}
        failure = failures.failure_of(summary or {})
        if failure:
            counts[failure] += 1
    n = sum(counts.values())
    if not n:
        return ""
    parts = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
    return (f"[sweep] {sweep.config.name}: {n} of {len(payloads)} trials failed ({parts}): "
            f"see {table or sweep.out_dir / runs.RUNS_CSV}")
