"""The run-folder format: typed read/write of every file of a run folder, atomic writes.

One module owns ``docs/architecture.md``'s "Result files" contract; every writer and
reader of a run folder goes through it (distill, the ASR track, sweeps, SUPERB scoring,
the layer analysis, the report, the test fabricator). A run folder
``<storage>/<sweep>/<run_id>/`` holds:

================ ============================================================================
``config.yaml``  the fully resolved run config (:class:`harness.config.RunConfig`, or the
                 ASR track's ``AsrRunConfig``); read back typed by :func:`read_config`
``summary.json`` the run's summary (schema :data:`SCHEMA`, keys below); ``schema`` = version
``metrics.jsonl`` one JSON object per logged step (``step`` first)
``student.ckpt`` the final student (:func:`harness.student.save_student`)
``superb.json``  SUPERB scoring: ``{"upstream", "profile", "tasks": {task: {...}}, "score",
                 "seconds", ...}`` (:mod:`harness.superb.evaluate`)
``analysis.json`` CKA student x teacher / x self (:func:`harness.analysis.analyse_run`)
``trial.json``   the sweep's trial: ``{"sweep", "run_id", "overrides", "evaluate"}`` (plus
                 ``reused_from`` for a copied run)
================ ============================================================================

and the sweep folder holds ``runs.csv`` (:data:`RUN_COLUMNS`, one row per run x task).

``summary.json`` (schema 1) keys every track writes: ``schema``, ``run_id``, ``sweep``,
``seed``, ``status`` (``running`` | ``ok`` | ``failed: <reason>``), ``started`` (ISO 8601,
UTC; ``ended`` when finished); a failed run adds ``failure`` (``environment`` |
``deterministic``, :mod:`harness.failures`). Distillation runs add ``variant``, ``schedule``, ``stages``,
``train_seconds``, ``flops``, ``final_losses``, ``hardware``, ``git_commit``, ``config``,
``tasks`` (per task ``metric``, ``direction``, ``value``, ``n``, ``status``) and
``superb_score``; ASR runs add ``track: asr``, ``objective``, ``wer``, ``latency``...
A summary without ``schema`` is read as schema 1 (folders written before the field existed;
their ASR runs spelled the times ``start_time``/``end_time``, read as ``started``/``ended``);
a newer schema is refused with one line.

Size: just over 500 lines on purpose: it is the one owner of every run-folder file; split
up, a format and its reader could drift apart again.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, TextIO

import yaml

from harness import failures, locks
from harness.config import ConfigError, RunConfig, from_dict, to_dict
from harness.fsio import atomic_write

SCHEMA = 1  # summary.json's schema version

CONFIG = "config.yaml"
SUMMARY = "summary.json"
METRICS = "metrics.jsonl"
STUDENT = "student.ckpt"
SUPERB = "superb.json"
ANALYSIS = "analysis.json"
TRIAL = "trial.json"
RUNS_CSV = "runs.csv"

TRIAL_KEYS = ("sweep", "run_id", "overrides", "evaluate")
# old spelling -> the one spelling (ASR runs before schema 1 was stamped)
_RENAMED = {"start_time": "started", "end_time": "ended"}


class RunFormatError(ConfigError):
    """A run-folder file that cannot be used (unknown schema, malformed): one line."""


def write_json(path: str | Path, data: Any, indent: Optional[int] = 2, fsync: bool = False) -> Path:
    """Write JSON atomically (values JSON cannot hold are written as ``str``)."""
    return atomic_write(path, json.dumps(data, indent=indent, default=str) + "\n", fsync=fsync)


def load_json(path: str | Path) -> tuple[Any, Optional[str]]:
    """``(data, None)``, or ``(None, a one-line reason)`` for a missing or malformed file."""
    path = Path(path)
    if not path.is_file():
        return None, "missing"
    try:
        return json.loads(path.read_text()), None
    except json.JSONDecodeError as err:
        return None, f"not valid JSON (line {err.lineno}: {err.msg})"
    except (OSError, UnicodeDecodeError) as err:
        return None, f"unreadable ({err})"


def read_json(path: str | Path) -> Optional[dict]:
    """A JSON mapping, or None when the file is missing, malformed or not a mapping."""
    data, _ = load_json(path)
    return data if isinstance(data, dict) else None


def flatten(d: dict, prefix: str = "", json_lists: bool = False) -> dict[str, Any]:
    """Nested mappings as dotted keys: ``{"a": {"b": 1}} -> {"a.b": 1}``.

    Args:
        d: the mapping.
        prefix: put before every key.
        json_lists: lists and tuples become JSON text (hashable and comparable in a table,
            as the report wants); otherwise they are kept as lists (dotted overrides).
    """
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + ".", json_lists))
        elif json_lists and isinstance(v, (list, tuple)):
            out[key] = json.dumps(list(v))
        else:
            out[key] = v
    return out


# ----------------------------------------------------------------------------- config.yaml


@dataclass
class StoredConfig:
    """A run's ``config.yaml`` read back.

    Attributes:
        config: the typed config (defaults filled for keys the file leaves out).
        given: the dotted keys the file itself sets (a hand-written partial config says
            less than its defaults: :meth:`get` tells the two apart).
    """

    config: Any
    given: frozenset

    def get(self, dotted: str, default: Any = None) -> Any:
        """The typed value of ``dotted`` when the file sets it, else ``default``."""
        if dotted not in self.given:
            return default
        node = self.config
        for part in dotted.split("."):
            node = getattr(node, part)
        return node


def write_config(run_dir: str | Path, cfg: Any) -> Path:
    """Write the fully resolved config as ``<run_dir>/config.yaml`` (atomically)."""
    return atomic_write(Path(run_dir) / CONFIG, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def config_from_dict(data: Any, source: str | Path, cls: type = RunConfig) -> StoredConfig:
    """Type a config mapping (``config.yaml``'s, or the copy in ``summary.json``).

    Raises:
        RunFormatError: not a mapping, or a key or value the config does not accept.
    """
    if not isinstance(data, dict):
        raise RunFormatError(f"{source}: top level is {type(data).__name__}, not a mapping")
    try:
        cfg = from_dict(cls, data, source=source)
    except ConfigError as err:
        raise RunFormatError(str(err)) from None
    return StoredConfig(cfg, frozenset(flatten(data)) | _prefixes(data))


def _prefixes(data: dict, prefix: str = "") -> frozenset:
    out = set()
    for k, v in data.items():
        if isinstance(v, dict):
            out.add(prefix + str(k))
            out |= _prefixes(v, f"{prefix}{k}.")
    return frozenset(out)


def read_config(path: str | Path, cls: type = RunConfig) -> Optional[StoredConfig]:
    """Read ``config.yaml`` (a run folder or the file) typed as ``cls``.

    Returns:
        The :class:`StoredConfig`, or None when there is no ``config.yaml``.

    Raises:
        RunFormatError: malformed YAML, or a config ``cls`` does not accept (one line).
    """
    path = Path(path)
    if path.is_dir():
        path = path / CONFIG
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise RunFormatError(f"cannot read {path}: {first}") from None
    return config_from_dict({} if data is None else data, path, cls)


# ----------------------------------------------------------------------------- summary.json


def write_summary(run_dir: str | Path, summary: dict) -> dict:
    """Stamp ``summary["schema"]`` (in place) and write ``<run_dir>/summary.json`` atomically.

    Returns:
        ``summary`` itself, as written.
    """
    summary["schema"] = SCHEMA
    write_json(Path(run_dir) / SUMMARY, summary)
    return summary


def check_summary(summary: dict, source: str | Path) -> dict:
    """Check a summary's schema and bring old spellings to the current ones (in place).

    Raises:
        RunFormatError: a schema version this code does not know.
    """
    version = summary.get("schema", 1)
    if version != SCHEMA:
        raise RunFormatError(f"{source}: summary schema {version!r} is not supported (this harness reads "
                             f"schema {SCHEMA}); use the harness version that wrote it")
    for old, new in _RENAMED.items():
        if old in summary:
            summary.setdefault(new, summary.pop(old))
    return summary


def load_summary(run_dir: str | Path) -> tuple[Optional[dict], Optional[str]]:
    """``(summary, None)``, or ``(None, a one-line reason)``: missing, malformed, not a
    mapping, or an unknown schema. Never raises (the report lists the reason)."""
    path = Path(run_dir) / SUMMARY
    data, why = load_json(path)
    if data is None:
        return None, why
    if not isinstance(data, dict):
        return None, f"top level is {type(data).__name__}, not a mapping"
    try:
        return check_summary(data, path), None
    except RunFormatError as err:
        return None, str(err)


def read_summary(run_dir: str | Path) -> Optional[dict]:
    """The checked summary, or None when it is missing or malformed.

    Raises:
        RunFormatError: an unknown schema version (one line).
    """
    path = Path(run_dir) / SUMMARY
    data = read_json(path)
    return None if data is None else check_summary(data, path)


# ----------------------------------------------------------------------------- metrics.jsonl


def open_metrics(run_dir: str | Path, keep_until_step: int = 0) -> TextIO:
    """Open ``metrics.jsonl`` for appending, first dropping (atomically) the lines past
    ``keep_until_step`` (a resumed run logs them again, identically)."""
    path = Path(run_dir) / METRICS
    rows, _ = read_metrics(path)  # a line cut off by a kill is dropped with the rest
    atomic_write(path, "".join(json.dumps(r) + "\n" for r in rows if r["step"] <= keep_until_step))
    return path.open("a")


def append_metrics(fh: TextIO, row: dict) -> None:
    """One logged step as a line of ``metrics.jsonl`` (flushed: a kill loses nothing logged)."""
    fh.write(json.dumps(row) + "\n")
    fh.flush()


def read_metrics(path: str | Path) -> tuple[list[dict], int]:
    """The logged lines of a ``metrics.jsonl`` (a run folder or the file), and how many lines
    were not JSON objects. A missing file is ``([], 0)``."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS
    rows, bad = [], 0
    if not path.is_file():
        return rows, bad
    with open(path) as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                bad += 1
                continue
            if isinstance(row, dict):
                rows.append(row)
            else:
                bad += 1
    return rows, bad


# ----------------------------------------------------------------------------- superb / analysis / trial


def write_superb(path: str | Path, payload: dict) -> Path:
    """Write a ``superb.json`` payload (a run folder's, or a memoised baseline's file)."""
    path = Path(path)
    return write_json(path / SUPERB if path.is_dir() else path, payload)


def load_superb(run_dir: str | Path) -> tuple[Any, Optional[str]]:
    """``superb.json`` as written (``(data, None)``) or ``(None, reason)``."""
    return load_json(Path(run_dir) / SUPERB)


def write_analysis(run_dir: str | Path, data: dict) -> Path:
    """Write ``<run_dir>/analysis.json`` (CKA matrices; compact indentation)."""
    return write_json(Path(run_dir) / ANALYSIS, data, indent=1)


def load_analysis(run_dir: str | Path) -> tuple[Any, Optional[str]]:
    """``analysis.json`` as written (``(data, None)``) or ``(None, reason)``."""
    return load_json(Path(run_dir) / ANALYSIS)


def write_trial(run_dir: str | Path, trial: dict, **extra: Any) -> dict:
    """Write ``<run_dir>/trial.json``: the trial's :data:`TRIAL_KEYS` plus ``extra``."""
    data = {**{k: trial[k] for k in TRIAL_KEYS}, **extra}
    write_json(Path(run_dir) / TRIAL, data)
    return data


def read_trial(run_dir: str | Path) -> Optional[dict]:
    """``trial.json``, or None when missing or malformed."""
    return read_json(Path(run_dir) / TRIAL)


# ----------------------------------------------------------------------------- trial bookkeeping


def trial_done(run_dir: str | Path, tasks: Iterable[str], retry: Optional[str] = None) -> bool:
    """True when the run folder holds a finished run (ok or failed) with every task scored.

    Args:
        retry: failed runs that count as not done (to be rerun): ``"environment"`` (what
            the environment broke: :mod:`harness.failures`), ``"all"``, or None (none).
    """
    tasks = list(tasks)
    summary = read_summary(run_dir)
    if not summary or "status" not in summary or summary.get("status") == "running":
        return False
    failure = failures.failure_of(summary)
    if failure and (retry == "all" or (retry == failures.ENVIRONMENT and failure == failures.ENVIRONMENT)):
        return False
    if summary["status"] != "ok" or not tasks:
        return True
    scored = summary.get("tasks") or {}
    return all(t in scored for t in tasks)


def config_changes(run_dir: str | Path, want: dict, limit: int = 6,
                   parse: Optional[Callable[[Any, Path], dict]] = None) -> list[str]:
    """The settings in which the run in ``run_dir`` differs from the config ``want``.

    Args:
        run_dir: a run folder (its ``config.yaml``; a folder without one differs in nothing).
        want: the resolved config (as :func:`harness.config.to_dict` gives it).
        limit: at most this many keys are described (then ``... N more``).
        parse: ``(yaml data, path) -> resolved dict`` for another track's config (the ASR
            study's); default: a distillation run's, and ``want`` is normalised by it too.

    Returns:
        ``["train.steps: 20 -> 40", ...]`` (the folder's value first); empty when equal.
    """
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        return []
    try:
        data = yaml.safe_load(path.read_text())
        old = (parse or _parse_run_config)({} if data is None else data, path)
    except (OSError, yaml.YAMLError, ConfigError, TypeError, ValueError, AttributeError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        return [f"its {CONFIG} is not one this harness reads ({first})"]
    new = want if parse else _normalised_config(want, path)
    if new is None:
        return ["the new config is not valid"]
    a, b = flatten(old, json_lists=True), flatten(new, json_lists=True)
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    out = [f"{k}: {a.get(k)} -> {b.get(k)}" for k in keys[:limit]]
    if len(keys) > limit:
        out.append(f"... {len(keys) - limit} more")
    return out


def refuse_changed(out_dir: Path, changed: dict[str, list[str]], total: int, noun: str = "trial") -> None:
    """Raise the one-line refusal of a resume whose run folders (``changed``: run id ->
    :func:`config_changes`) hold runs made with other settings."""
    if changed:
        first = next(iter(changed.values()))
        raise ConfigError(
            f"{out_dir}: {len(changed)} of {total} {noun}(s) were run with other settings "
            f"({', '.join(first)}); use a new --suffix, or remove the folder (or those {noun}s' folders) to rerun them"
        )


def _parse_run_config(data: Any, source: Path) -> dict:
    return to_dict(config_from_dict(data, source).config)


def _normalised_config(data: Any, source: Path) -> Optional[dict]:
    try:
        return _parse_run_config(data, source)
    except (ConfigError, TypeError, ValueError):
        return None


def reuse_identical_run(trial: dict, sources: list[Path], log: Callable[[str], None] = print) -> bool:
    """Copy a finished run of another sweep whose resolved config equals this trial's.

    Args:
        trial: the trial payload (``run_id``, ``run_dir``, ``config``, ``sweep``,
            ``overrides``, ``evaluate``).
        sources: sweep folders to look in (``reuse:`` of the sweep file).

    Returns:
        True when a run was copied to ``trial["run_dir"]`` (marked ``reused_from``): the
        source ran every task this trial scores; extra tasks are trimmed away (and the
        SUPERB score recomputed over the kept ones).
    """
    want = _normalised_config(trial["config"], Path(trial["run_dir"]))
    tasks = list(trial.get("evaluate") or [])
    for sweep_dir in sources:
        for cfg_path in sorted(sweep_dir.glob(f"*/{CONFIG}")):
            src = cfg_path.parent
            summary = read_summary(src) or {}
            if summary.get("status") != "ok" or summary.get("reused_from") or not trial_done(src, tasks):
                continue
            try:
                got = _normalised_config(yaml.safe_load(cfg_path.read_text()), cfg_path)
            except (OSError, yaml.YAMLError):
                continue
            if got is None or got != want:
                continue
            dst = Path(trial["run_dir"])
            if dst.exists():
                shutil.rmtree(dst)
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns(locks.LOCK))
            summary.update(run_id=trial["run_id"], sweep=trial["sweep"], reused_from=str(src))
            if tasks and set(summary.get("tasks") or {}) - set(tasks):
                keep_tasks(dst, summary, tasks)
            write_summary(dst, summary)
            write_trial(dst, trial, reused_from=str(src))
            log(f"[sweep] {trial['run_id']}: same config as {src}, reused")
            return True
    return False


def keep_tasks(run_dir: Path, summary: dict, tasks: list[str]) -> None:
    """Trim a copied run to ``tasks``; its SUPERB score becomes the score over those tasks'
    per-task scores (as if it had been scored on them only), by :mod:`harness.superb.score`."""
    from harness.superb.score import combine

    keep = set(tasks)
    summary["tasks"] = {k: v for k, v in (summary.get("tasks") or {}).items() if k in keep}
    superb = read_json(Path(run_dir) / SUPERB) or {}
    if superb:
        superb["tasks"] = {k: v for k, v in (superb.get("tasks") or {}).items() if k in keep}
    score = superb.get("score") if superb else None
    if isinstance(score, dict) and isinstance(score.get("per_task"), dict):
        per = {k: v for k, v in score["per_task"].items() if k in keep}
        score.update(combine(per, {k: v for k, v in (score.get("skipped") or {}).items() if k in keep}))
        summary["superb_score"] = score["score"]
    if superb:
        write_superb(Path(run_dir) / SUPERB, superb)
    summary["tasks_trimmed_to"] = sorted(keep)


def record_failure(run_dir: str | Path, run_id: str, sweep: str, reason: str, traceback: str = "",
                   failure: str = failures.DETERMINISTIC) -> dict:
    """Make sure a failed trial leaves a summary saying why (the run may have written one).

    Returns:
        The failed summary (as written, or as it would have been when writing it fails:
        a full disk raises ``OSError`` after the summary is built, so the caller still has it).
    """
    summary = read_summary(run_dir) or {}
    if str(summary.get("status", "")).startswith("failed"):
        summary.setdefault("failure", failures.failure_of(summary))
        return summary
    summary.update(run_id=run_id, sweep=sweep, status=reason[:500], failure=failure, traceback=traceback[-4000:])
    try:
        write_summary(run_dir, summary)
    except OSError as err:
        err.summary = summary  # the caller reports it from memory
        raise
    return summary


# ----------------------------------------------------------------------------- runs.csv

RUN_COLUMNS = [
    "sweep", "run_id", "run_dir", "variant", "seed", "status", "failure", "train_seconds", "student_params",
    "superb_score", "task", "metric", "direction", "value", "n",
]


def collect_rows(sweep_dir: str | Path, known: Optional[dict[str, dict]] = None) -> list[dict]:
    """One tidy row per run x task (one row with empty task for an unscored or failed run),
    rebuilt from the run folders; grid keys appear as ``grid.<dotted key>`` columns.

    Args:
        known: run id -> ``{"trial": payload, "summary": failed summary}`` of trials whose
            failure could not be written (a full disk): they are listed from memory.
    """
    sweep_dir = Path(sweep_dir)
    known = dict(known or {})
    rows = []
    entries = [(f.parent, read_json(f) or {}, None) for f in sorted(sweep_dir.glob(f"*/{TRIAL}"))]
    on_disk = {d.name for d, _, _ in entries}
    entries += [(sweep_dir / rid, {k: v.get("trial", {}).get(k) for k in TRIAL_KEYS}, v["summary"])
                for rid, v in sorted(known.items()) if rid not in on_disk]
    for run_dir, trial, memo in entries:
        summary = known[run_dir.name]["summary"] if run_dir.name in known else memo
        if summary is None:
            summary, _ = load_summary(run_dir)
        summary = summary or {"status": "failed: no summary.json", "failure": failures.ENVIRONMENT}
        cfg = summary.get("config") or {}
        base = {
            "sweep": trial.get("sweep", sweep_dir.name),
            "run_id": run_dir.name,
            "run_dir": str(run_dir),
            "variant": summary.get("variant", (trial.get("overrides") or {}).get("stacking.variant", cfg)),
            "seed": summary.get("seed", (trial.get("overrides") or {}).get("train.seed")),
            "status": summary.get("status"),
            "failure": failures.failure_of(summary),
            "train_seconds": summary.get("train_seconds"),
            "student_params": summary.get("student_params"),
            "superb_score": summary.get("superb_score"),
        }
        for key, value in sorted((trial.get("overrides") or {}).items()):
            base[f"grid.{key}"] = json.dumps(value) if isinstance(value, (list, dict)) else value
        tasks = summary.get("tasks") or {}
        if not tasks:
            rows.append({**base, "task": "", "metric": "", "direction": "", "value": None, "n": None})
        for task, t in sorted(tasks.items()):
            rows.append({
                **base, "task": task, "metric": t.get("metric"), "direction": t.get("direction"),
                "value": t.get("value"), "n": t.get("n"),
            })
    return rows


def write_table(path: str | Path, rows: list[dict], columns: list[str], extra: bool = True) -> Path:
    """Write rows as CSV atomically: ``columns`` first, then (``extra``) any other keys sorted."""
    import pandas as pd

    df = pd.DataFrame(rows)
    more = sorted(c for c in df.columns if c not in columns) if extra else []
    df = df.reindex(columns=list(columns) + more)
    return atomic_write(path, lambda tmp: df.to_csv(tmp, index=False))


def write_runs_csv(sweep_dir: str | Path, known: Optional[dict[str, dict]] = None) -> Path:
    """Rebuild ``<sweep_dir>/runs.csv`` from the run folders (atomically); ``known`` as in
    :func:`collect_rows`."""
    sweep_dir = Path(sweep_dir)
    return write_table(sweep_dir / RUNS_CSV, collect_rows(sweep_dir, known), RUN_COLUMNS)
