"""Read results folders into tidy pandas tables, tolerating missing and broken runs.

A results folder ``results/<sweep>/`` holds one folder per run (``docs/architecture.md``,
"Result files"): ``config.yaml``, ``summary.json``, ``metrics.jsonl``, ``student.ckpt``, and
optionally ``superb.json`` (per task: metric, direction, value, n, dev_value,
layer_weights) and ``analysis.json``::

    {"cka_teacher": [[...]],   # (L+1, T+1) linear CKA, student hidden state x teacher's
     "cka_self": [[...]],      # (L+1, L+1) student x student
     "probes": {"phone": [...], "speaker": [...]}}   # per student hidden state

A folder holding ``askd.json`` is an ASR-track ASKD study (:mod:`harness.asr.study`):
it is read as one :class:`AskdStudy` (the study table as written, its failed rows and run
folders missing from the table as problems), never as stacking runs.

Nothing is dropped silently: a failed run is a row with ``ok=False`` and its status, a
missing or malformed ``summary.json`` is a row whose status says so, a missing optional
file is a :class:`Problem` listed in the report, and values that are absent stay NaN
(shown as n/a).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from harness import runs
from harness.config import ConfigError, to_dict
from harness.provenance import oversubscribed
from harness.report.heldout import HELDOUT_COLUMNS, arm_of, curve_rows, row_fields


# Comparison arms in report order: the stacking variants, with the compute-matched none
# (variant none trained for the stacking schedule's compute, summary.json's ``arm``) after none.
VARIANT_ORDER = ("none", "none_cm", "top", "bottom", "middle", "interleaved")
# Config keys that differ between runs without being part of the design.
IGNORED_KEYS = ("train.seed", "train.device", "train.threads", "data.num_workers", "teacher.cache_dir",
                "data.corpus", "teacher.cache")


@dataclass
class Problem:
    """Something the reader must know about: a failed run, a missing or unreadable file."""

    path: str
    kind: str  # failed | incomplete | unreadable | missing | eval_error | task_failed
    detail: str


@dataclass
class AskdStudy:
    """One ASKD study folder: ``askd.json`` as written by
    :func:`harness.asr.study.write_study_table`, plus what the table leaves out.

    Attributes:
        name: the study's name (``askd.json``'s ``study``, else the folder name).
        path: the study folder.
        data: ``askd.json``'s content (``{}`` when unreadable: a problem says why).
        missing: run folders (``trial.json`` written) that have no row in ``askd.json``:
            ``{"model", "objective", "seed", "status"}`` each (never started or interrupted).
        problems: failed rows, missing runs, an unreadable ``askd.json``.
    """

    name: str
    path: str
    data: dict
    missing: list[dict] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def rows(self) -> list[dict]:
        """Every model of the study: ``askd.json``'s rows (teacher first), then the missing runs."""
        return [r for r in self.data.get("rows") or [] if isinstance(r, dict)] + self.missing


@dataclass
class Results:
    """Everything a report shows, as tidy tables.

    Attributes:
        runs: one row per run folder: ``key`` (``<sweep>/<run_id>``), ``sweep``, ``run_id``,
            ``run_dir``, ``status``, ``ok``, ``variant``, ``arm`` (``summary.json``'s comparison arm:
            the variant, or ``none_cm``; the variant for older runs), ``seed``, ``schedule``, ``teacher``,
            ``profile``, ``student_params``, ``train_seconds`` (s), ``eval_seconds`` (s, SUPERB
            scoring, from ``superb.json``), ``flops``,
            ``superb_score``, ``train_cpu_seconds``, ``theoretical_speedup``,
            ``heldout_output_loss``, ``heldout_probe_best``, ``heldout_utterances``,
            ``heldout_frames``, ``compute_matched_steps`` / ``_of_steps`` (NaN when absent),
            ``git_commit``, ``start_time``, ``end_time``, ``device``,
            ``cpu_count``, ``torch``, ``threads``, ``oversubscribed`` (its load average was
            above the cores at its start or end), and ``cfg.<dotted key>`` for every resolved config value.
        tasks: one row per run x task: ``key``, ``sweep``, ``variant``, ``seed``, ``task``,
            ``metric``, ``direction``, ``value``, ``n``, ``dev_value``.
        curves: the ``metrics.jsonl`` lines with ``key``, ``sweep``, ``variant``, ``seed``.
        heldout: the held-out curve of each run (``summary.json``'s ``heldout.curve``, else the
            ``metrics.jsonl`` lines carrying ``heldout_loss``): ``key``, ``sweep``, ``arm``,
            ``seed``, ``step``, ``time`` (training s so far), ``cpu_time``, ``output_loss``,
            ``probe_best``. Empty for runs written before the held-out evaluation existed.
        stages: per run and stage: ``key``, ``stage``, ``depth``, ``steps``, ``seconds``.
        layer_weights: ``{key: {task: [w_0..w_L]}}`` from ``superb.json``.
        analysis: ``{key: analysis.json contents}``.
        probe: the teacher probe file's contents, or None.
        problems: what is failed, missing or unreadable, for the report to list.
        sources: the results folders read.
        askd: the ASKD studies (ASR track) among the folders, in the order given.
    """

    runs: pd.DataFrame
    tasks: pd.DataFrame
    curves: pd.DataFrame
    stages: pd.DataFrame
    heldout: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=HELDOUT_COLUMNS))
    layer_weights: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    analysis: dict[str, dict] = field(default_factory=dict)
    probe: dict | None = None
    problems: list[Problem] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    askd: list[AskdStudy] = field(default_factory=list)

    def sweeps(self) -> list[str]:
        """Sweep names in the order their folders were given."""
        return list(dict.fromkeys(self.runs["sweep"]))

    def ok_runs(self, sweep: str | None = None) -> pd.DataFrame:
        runs = self.runs[self.runs["ok"]]
        return runs if sweep is None else runs[runs["sweep"] == sweep]


# ----------------------------------------------------------------------------- readers


def _num(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return math.nan
    return v


def _run_dirs(results_dir: Path) -> list[Path]:
    """Run folders below ``results_dir`` (or the folder itself when it is one run)."""
    markers = ("summary.json", "config.yaml", "trial.json")
    if any((results_dir / m).exists() for m in markers):
        return [results_dir]
    return sorted(d for d in results_dir.iterdir() if d.is_dir() and any((d / m).exists() for m in markers))


RunRead = tuple[dict, list[dict], list[dict], list[dict], dict, "dict | None", list[Problem], list[dict]]


def read_run(run_dir: Path, default_sweep: str) -> RunRead:
    """Read one run folder; never raises for a broken run (the problems say what broke).

    Returns:
        (run row, task rows, curve rows, stage rows, layer weights {task: list},
        analysis dict or None, problems, held-out curve rows).
    """
    problems: list[Problem] = []
    summary, status = _read_summary(run_dir, problems)
    cfg = _read_config(run_dir, summary, problems)
    trial, _ = runs.load_json(run_dir / "trial.json")
    overrides = (trial or {}).get("overrides") or {} if isinstance(trial, dict) else {}

    ok = status == "ok"
    if status.startswith("failed"):
        problems.append(Problem(str(run_dir), "failed", status.removeprefix("failed:").strip() or status))
    elif not ok and not problems:
        problems.append(Problem(str(run_dir), "incomplete", status))
    if summary.get("eval_error"):
        problems.append(Problem(str(run_dir), "eval_error", str(summary["eval_error"])))

    row = _run_row(run_dir, summary, status, cfg, trial, overrides, default_sweep)
    tasks = _task_rows(run_dir, summary, row, problems)
    curves: list[dict] = []
    lines: list[dict] = []
    if (run_dir / "metrics.jsonl").is_file():
        lines, bad = runs.read_metrics(run_dir / "metrics.jsonl")
        if bad:
            problems.append(Problem(str(run_dir / "metrics.jsonl"), "unreadable", f"{bad} malformed lines skipped"))
        curves = [{"key": row["key"], "sweep": row["sweep"], "variant": row["variant"], "seed": row["seed"], **ln}
                  for ln in lines]
    elif ok:
        problems.append(Problem(str(run_dir / "metrics.jsonl"), "missing", "no training curve"))
    stages = [
        {"key": row["key"], "stage": s.get("stage", i), "depth": _num(s.get("depth")), "steps": _num(s.get("steps")),
         "seconds": _num(s.get("seconds"))}
        for i, s in enumerate(summary.get("stages") or []) if isinstance(s, dict)
    ]
    weights = _read_superb(run_dir, row, tasks, problems)
    analysis, why = runs.load_analysis(run_dir)
    if not isinstance(analysis, dict):
        if ok:
            problems.append(Problem(str(run_dir / "analysis.json"), "missing" if why == "missing" else "unreadable",
                                    "no CKA / probes" if why == "missing" else (why or "not a mapping")))
        analysis = None
    heldout = curve_rows(summary, lines, {k: row[k] for k in ("key", "sweep", "arm", "seed")})
    return row, tasks, curves, stages, weights, analysis, problems, heldout


def _read_summary(run_dir: Path, problems: list[Problem]) -> tuple[dict, str]:
    """``(summary or {}, status)``; an unreadable or missing summary is a problem."""
    summary, why = runs.load_summary(run_dir)
    if not isinstance(summary, dict):
        status = f"unreadable: summary.json {why}" if why != "missing" else "incomplete: no summary.json"
        problems.append(Problem(str(run_dir / "summary.json"), "unreadable" if why != "missing" else "incomplete", why))
        return {}, status
    return summary, str(summary.get("status") or "incomplete: summary.json has no status")


def _read_config(run_dir: Path, summary: dict, problems: list[Problem]) -> dict:
    """The typed config.yaml as plain data (for the ``cfg.<dotted key>`` columns), else the
    config distill embeds in summary.json, else ``{}``."""
    cfg: dict = {}
    try:
        stored = runs.read_config(run_dir)
        cfg = to_dict(stored.config) if stored is not None else {}
    except runs.RunFormatError as err:
        problems.append(Problem(str(run_dir / runs.CONFIG), "unreadable", str(err).splitlines()[0]))
    if not cfg and isinstance(summary.get("config"), dict):
        try:
            cfg = to_dict(runs.config_from_dict(summary["config"], run_dir / runs.SUMMARY).config)
        except runs.RunFormatError:
            cfg = summary["config"]  # shown as written: the report must not lose the run
    return cfg


def _run_row(run_dir: Path, summary: dict, status: str, cfg: dict, trial: Any, overrides: dict,
             default_sweep: str) -> dict:
    """The run's row of the runs table (identity, status, timings, hardware, ``cfg.*``)."""
    hw = summary.get("hardware") or {}
    stack = cfg.get("stacking") or {}
    run_id = str(summary.get("run_id") or run_dir.name)
    sweep = str(summary.get("sweep") or (trial or {}).get("sweep") or default_sweep)
    seed = summary.get("seed", (cfg.get("train") or {}).get("seed", overrides.get("train.seed")))
    row = {
        "key": f"{sweep}/{run_id}", "sweep": sweep, "run_id": run_id, "run_dir": str(run_dir), "status": status,
        "ok": status == "ok",
        "variant": str(summary.get("variant") or stack.get("variant") or overrides.get("stacking.variant") or "?"),
        "arm": None,
        "seed": int(seed) if isinstance(seed, (int, float)) and not isinstance(seed, bool) else -1,
        "schedule": json.dumps(summary["schedule"]) if isinstance(summary.get("schedule"), list)
        else summary.get("schedule", stack.get("schedule")),
        "teacher": summary.get("teacher") or (cfg.get("teacher") or {}).get("spec"),
        "profile": cfg.get("profile") or summary.get("profile"),
        "student_params": _num(summary.get("student_params")),
        "train_seconds": _num(summary.get("train_seconds")),
        "flops": _num(summary.get("flops")),
        "superb_score": _num(summary.get("superb_score")),
        "git_commit": summary.get("git_commit"),
        "start_time": summary.get("started"),  # runs.load_summary reads the old spellings too
        "end_time": summary.get("ended"),
        "superb_ref": summary.get("superb_ref"),
        "eval_seconds": math.nan,
        "device": hw.get("device"), "cpu_count": hw.get("cpu_count"), "torch": hw.get("torch"),
        # the load average above the cores at the run's start or end (harness.provenance.run_load):
        # it shared the machine's cores with more work than they hold
        "oversubscribed": oversubscribed(summary.get("load")),
        "threads": (summary.get("load") or {}).get("threads", hw.get("torch_threads")),
        **row_fields(summary),
    }
    row["arm"] = arm_of(summary, row["variant"])
    if isinstance(row["schedule"], list):
        row["schedule"] = json.dumps(row["schedule"])
    for k, v in runs.flatten(cfg, json_lists=True).items():
        row[f"cfg.{k}"] = v
    for k, v in overrides.items():  # a run that failed before writing config.yaml
        row.setdefault(f"cfg.{k}", json.dumps(v) if isinstance(v, (list, dict)) else v)
    return row


def _task_rows(run_dir: Path, summary: dict, row: dict, problems: list[Problem]) -> list[dict]:
    """One row per scored task of the summary; a failed task is a problem."""
    tasks = []
    for task, t in (summary.get("tasks") or {}).items():
        if not isinstance(t, dict):
            continue
        if str(t.get("status", "ok")).startswith("failed"):
            problems.append(Problem(str(run_dir), "task_failed", f"{task}: {t['status']}"))
        tasks.append({
            "key": row["key"], "sweep": row["sweep"], "variant": row["variant"], "seed": row["seed"], "ok": row["ok"],
            "task": task, "metric": t.get("metric", "?"), "direction": t.get("direction", "higher"),
            "value": _num(t.get("value")), "n": _num(t.get("n")), "dev_value": _num(t.get("dev_value")),
        })
    return tasks


def _read_superb(run_dir: Path, row: dict, tasks: list[dict], problems: list[Problem]) -> dict[str, list[float]]:
    """Layer weights per task from superb.json; fills the row's scoring time and score
    coverage and the task rows' dev values (they live in superb.json only)."""
    weights: dict[str, list[float]] = {}
    superb, why = runs.load_superb(run_dir)
    if isinstance(superb, dict) and "seconds" in superb:
        row["eval_seconds"] = _num(superb["seconds"])  # SUPERB scoring wall-clock
    score = superb.get("score") if isinstance(superb, dict) else None
    if isinstance(score, dict):  # which tasks the SUPERB score covers, and which it left out
        row["superb_tasks"] = ",".join(score.get("tasks") or [])
        row["superb_skipped"] = ",".join(sorted(score.get("skipped") or {}))
    if isinstance(superb, dict) and isinstance(superb.get("tasks"), dict):
        superb = superb["tasks"]  # {"tasks": {...}, "superb_score": ...} layout
    if isinstance(superb, dict):
        for task, t in superb.items():
            if isinstance(t, dict) and isinstance(t.get("layer_weights"), list):
                weights[task] = [float(w) for w in t["layer_weights"]]
            for trow in tasks:
                if trow["task"] == task and isinstance(t, dict) and math.isnan(trow["dev_value"]):
                    trow["dev_value"] = _num(t.get("dev_value"))
    elif row["ok"] and not (why == "missing" and _not_scored_by_design(run_dir)):
        problems.append(Problem(str(run_dir / "superb.json"), "missing" if why == "missing" else "unreadable",
                                "no layer weights" if why == "missing" else why))
    return weights


def _not_scored_by_design(run_dir: Path) -> bool:
    """The sweep asked this trial for no SUPERB task (``evaluate_seeds`` left its seed out):
    no superb.json is expected, so none is missing."""
    trial = runs.read_trial(run_dir)
    return isinstance(trial, dict) and trial.get("evaluate") == []


def read_probe(path: str | Path) -> dict:
    """A teacher probe file: ``{"phone": [...], "speaker": [...], "cka": [[...]]}`` per layer.

    Raises:
        FileNotFoundError: the file does not exist.
        ConfigError: it is not a JSON mapping with at least one per-layer list.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such probe file (written by the layer analysis)")
    data, why = runs.load_json(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: probe file is {why or 'not a JSON mapping'}")
    def has_list(d: dict) -> bool:
        return any(isinstance(v, list) or (isinstance(v, dict) and has_list(v)) for v in d.values())

    if not has_list(data):
        raise ConfigError(f"{path}: probe file has no per-layer lists (expected keys like 'phone', 'speaker')")
    return data


def is_askd_study(folder: Path) -> bool:
    """True for an ASKD study folder (it holds the study table ``askd.json``)."""
    return (folder / "askd.json").is_file()


def read_askd(folder: str | Path) -> AskdStudy:
    """Read an ASKD study folder; never raises for a broken study (the problems say what broke).

    Rows of ``askd.json`` whose status is not ``ok`` become ``failed`` / ``incomplete``
    problems; run folders with a ``trial.json`` but no row (the study was interrupted
    before them, or they never wrote ``summary.json``) are added as ``missing`` rows.
    """
    folder = Path(folder)
    problems: list[Problem] = []
    data, why = runs.load_json(folder / "askd.json")
    if not isinstance(data, dict):
        problems.append(Problem(str(folder / "askd.json"), "unreadable", why or "not a JSON mapping"))
        data = {}
    study = AskdStudy(name=str(data.get("study") or folder.name), path=str(folder), data=data)
    seen = set()
    for r in study.rows():
        seen.add(str(r.get("model")))
        status = str(r.get("status") or "incomplete: no status")
        if status == "ok":
            continue
        where = str(folder / str(r.get("model")))
        if status.startswith("failed"):
            problems.append(Problem(where, "failed", status.removeprefix("failed:").strip() or status))
        else:
            problems.append(Problem(where, "incomplete", status))
    for run_dir in sorted(d for d in folder.iterdir() if d.is_dir() and (d / "trial.json").is_file()):
        if run_dir.name in seen:
            continue
        trial, _ = runs.load_json(run_dir / "trial.json")
        over = (trial or {}).get("overrides") or {} if isinstance(trial, dict) else {}
        summary, _ = runs.load_summary(run_dir)
        status = (summary or {}).get("status") if isinstance(summary, dict) else None
        status = (f"missing from askd.json (summary.json says {status})" if status
                  else "missing: no summary.json (never run, or interrupted)")
        study.missing.append({"model": run_dir.name, "objective": over.get("loss.objective", "?"),
                              "seed": over.get("train.seed"), "status": status})
        problems.append(Problem(str(run_dir), "incomplete", status))
    study.problems = problems
    return study


RUN_COLUMNS = ["key", "sweep", "run_id", "run_dir", "status", "ok", "variant", "arm", "seed", "schedule", "teacher",
               "profile", "student_params", "train_seconds", "flops", "superb_score", "git_commit", "start_time",
               "end_time", "superb_ref", "eval_seconds", "device", "cpu_count", "torch"]


def collect(results_dirs: list[str | Path], probe: str | Path | None = None) -> Results:
    """Read every run under ``results_dirs`` into :class:`Results`.

    Args:
        results_dirs: ``results/<sweep>/`` folders, single run folders, ASKD study folders
            (holding ``askd.json``), or a storage root (``results/``) whose subfolders are
            any of these.
        probe: optional teacher probe file.

    Raises:
        FileNotFoundError: a folder does not exist or holds no run folder.
    """
    rows, tasks, curves, stages, problems, heldout = [], [], [], [], [], []
    weights, analysis = {}, {}
    studies: list[AskdStudy] = []
    for d in results_dirs:
        d = Path(d)
        if not d.is_dir():
            raise FileNotFoundError(f"{d}: no such results folder")
        if is_askd_study(d):
            studies.append(read_askd(d))
            continue
        found = [(rd, d.name) for rd in _run_dirs(d)]
        if not found:  # a storage root (results/) holding several sweep (or ASKD study) folders
            subs = sorted(x for x in d.iterdir() if x.is_dir())
            studies += [read_askd(sd) for sd in subs if is_askd_study(sd)]
            found = [(rd, sd.name) for sd in subs if not is_askd_study(sd) for rd in _run_dirs(sd)]
            if not found and any(is_askd_study(sd) for sd in subs):
                continue
        if not found:
            raise FileNotFoundError(f"{d}: no run folders in it (each needs a summary.json or config.yaml; "
                                    "an ASKD study folder needs askd.json)")
        for rd, default_sweep in found:
            row, t, c, s, w, a, p, h = read_run(rd, default_sweep=default_sweep)
            if any(r["key"] == row["key"] for r in rows):
                # Two folders claiming the same run id: keep both, visibly.
                row["key"] = f"{row['key']}@{rd}"
                for x in t + c + s + h:
                    x["key"] = row["key"]
            rows.append(row)
            tasks += t
            curves += c
            stages += s
            heldout += h
            problems += p
            # Only finished runs feed figures; a failed run's leftovers would mix into means.
            if w and row["ok"]:
                weights[row["key"]] = w
            if a is not None and row["ok"]:
                analysis[row["key"]] = a
    for st in studies:
        problems += st.problems
    runs = pd.DataFrame(rows) if rows else pd.DataFrame(columns=RUN_COLUMNS)
    order = {v: i for i, v in enumerate(VARIANT_ORDER)}
    sweeps = {s: i for i, s in enumerate(dict.fromkeys(runs["sweep"]))}
    runs["_sweep"] = runs["sweep"].map(sweeps)
    runs["_order"] = runs["arm"].map(lambda v: order.get(v, len(order)))
    runs = (runs.sort_values(["_sweep", "_order", "arm", "seed"], kind="stable")
            .drop(columns=["_sweep", "_order"]).reset_index(drop=True))
    return Results(
        runs=runs,
        tasks=pd.DataFrame(tasks, columns=["key", "sweep", "variant", "seed", "ok", "task", "metric", "direction",
                                           "value", "n", "dev_value"]),
        curves=pd.DataFrame(curves) if curves else pd.DataFrame(columns=["key", "sweep", "variant", "seed", "step",
                                                                         "stage", "loss", "time"]),
        stages=pd.DataFrame(stages, columns=["key", "stage", "depth", "steps", "seconds"]),
        heldout=pd.DataFrame(heldout, columns=HELDOUT_COLUMNS),
        layer_weights=weights, analysis=analysis,
        probe=read_probe(probe) if probe else None,
        problems=problems, sources=[str(d) for d in results_dirs], askd=studies,
    )


def varying_keys(runs: pd.DataFrame) -> list[str]:
    """Config keys (``cfg.`` columns, without the prefix) that take more than one value.

    Seeds, devices and paths are not part of a study's design and are left out; keys that
    only vary together with the comparison arm (``stacking.variant``, or ``none_cm``: e.g.
    the number of stages of ``none``, the steps of the compute-matched ``none``) are folded
    into the arm.
    """
    out = []
    arm = "arm" if "arm" in runs else "variant"
    multi_variant = runs[arm].nunique() > 1
    for col in runs.columns:
        if not col.startswith("cfg.") or col[4:] in IGNORED_KEYS or col == "cfg.stacking.variant":
            continue
        vals = runs[col].dropna().astype(str)
        if vals.nunique() <= 1:
            continue
        per_variant = runs.dropna(subset=[col]).astype({col: str}).groupby(arm)[col].nunique()
        if multi_variant and (per_variant <= 1).all():
            continue
        out.append(col[4:])
    return out


def tasks_in_order(results: Results) -> list[str]:
    """Task names, SUPERB order first (pr, ks, ic, sid, er, asr), then the rest."""
    known = ["pr", "asr", "ks", "ic", "sid", "er", "sf"]
    names = list(dict.fromkeys(results.tasks["task"]))
    return [t for t in known if t in names] + sorted(t for t in names if t not in known)
