"""The ASKD study: a teacher and ``{ce, kd, askd} x seeds`` students, one table, one figure.

A study file is a sweep file (:mod:`harness.sweep`'s schema: ``name``, ``base``,
``overrides``, ``grid``, ``seeds``, ``storage``) whose base config declares ``track:
asr`` and is an :class:`~harness.asr.train.AsrRunConfig`. ``harness sweep FILE`` hands
such files to :func:`run_asr_study` (``--seeds``, ``--set``, ``--suffix`` apply as to a
distillation sweep; ``--tasks`` is refused: there are no SUPERB tasks), which

1. trains the teacher into ``<storage>/<name>/teacher`` when the base config's
   ``teacher.path`` is empty (skipped when already trained);
2. runs every unfinished trial as a sweep runs its trials (:func:`study_payloads` ->
   :func:`harness.sweep.trials.run_trial`): through Ray Tune (``backend: ray``, the
   study's ``resources`` per trial; ``--address`` joins a cluster) or in this process
   (``backend: local`` or ``--local``). Each run measures its latencies itself, teacher and
   student interleaved on the same utterances, batch 1, one thread, so concurrent trials on
   other cores slow both sides of a ratio alike. With ``--resume`` it skips trials whose
   ``summary.json`` says ``ok`` and reruns those that failed because of the environment
   (a killed worker included: :mod:`harness.failures`; ``--retry-failed``: every failed
   one), and refuses a folder whose runs were made with other settings;
3. writes ``askd.json`` and ``askd.csv`` (:func:`write_study_table`) and the figure
   ``askd_wer_speed.{png,svg}`` (:func:`askd_figure`).

``askd.csv`` columns (one row per model; the teacher first):

=============== =====================================================================
model           ``teacher`` or the run id
objective       ``teacher`` | ``ce`` | ``kd`` | ``askd``; in a study whose grid varies other
                keys too (an ablation), the arm: ``askd (decay=step, self_teacher=ema)``
seed            training seed of the student (empty for the teacher)
status          ``ok`` or ``failed: reason``
wer             corpus WER on the test split, greedy decoding (fraction)
wer_beam        the same with beam search (fraction; on ``eval.beam_utterances``)
wer_delta       ``wer - teacher wer`` (fraction; negative = better than the teacher)
wer_rel         ``wer / teacher wer`` (1.0 = the teacher's WER)
speedup         teacher latency / student latency, measured in the same process on the
                same utterances (batch 1, greedy; 1.0 for the teacher)
token_speedup   student decoded tokens/s / teacher tokens/s (the same timing, per token:
                independent of how long each model's transcripts are)
latency_s       mean seconds per utterance (features + encoder + greedy decoding)
rtf             real-time factor (processing seconds / audio seconds)
params          parameters (total)
decoder_layers  decoder depth
train_seconds   student training wall-clock (teacher: its own training)
n               test utterances scored (greedy)
=============== =====================================================================

``askd.json`` = ``{"study", "machine", "teacher": {...}, "rows": [the CSV rows],
"by_objective": {objective: {"runs", "wer_mean", "wer_std", "wer_rel_mean",
"speedup_mean", "speedup_std", "token_speedup_mean", "params"}}, "latency_ratio" (mean
speedup over ok runs), "token_latency_ratio" (mean token_speedup),
"wall_seconds" (the whole study, teacher included), "teacher_trained_here", "reference"
(an ablation's reference arm: the first grid point), "stats"
(:func:`study_stats`: each objective's WER mean with its 95% interval over seeds, the
paired differences with ``resolved`` and one verdict each)}``.
"""

from __future__ import annotations

import copy
import json
import statistics
import time
from pathlib import Path
from typing import Callable

from harness import failures, runs
from harness.config import ConfigError, blame_override, from_dict, load_yaml, to_dict
from harness.provenance import hardware
from harness.sweep.grid import Sweep, SweepConfig, base_data, expand_grid
from harness.sweep.tracks import track_of


def is_asr_sweep(path: str | Path) -> bool:
    """True when a sweep file's base config declares ``track: asr``."""
    return track_of(path) == "asr"


def load_study(
    path: str | Path,
    seeds: list[int] | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    suffix: str = "",
    tasks: list[str] | None = None,
):
    """Load an ASR study file strictly into a :class:`harness.sweep.grid.Sweep` of ASR trials.

    Args:
        path: the study file.
        seeds, overrides, suffix: as in :func:`harness.sweep.load_sweep` (``--seeds``,
            ``--set``, ``--suffix``: a quick pass into its own folder).
        tasks: must be None: a study scores WER on its own test split, not SUPERB tasks.

    Raises:
        ConfigError: one line naming the file and key (a ``--set`` of a grid key or of
            ``train.seed`` included), or ``--tasks`` given.
    """
    from harness.asr.train import AsrRunConfig
    path = Path(path)
    if tasks is not None:
        raise ConfigError(f"{path}: --tasks does not apply to an ASR study (track: asr): it scores WER on its "
                          "own test split, not SUPERB tasks; drop --tasks")
    cfg = from_dict(SweepConfig, load_yaml(path), source=path)
    if seeds:
        cfg.seeds = list(seeds)
    if suffix:
        cfg.name += suffix
    base, base_path = base_data(cfg, path, overrides, AsrRunConfig)
    # checked with the study's and the command line's changes applied, as a distill sweep's
    try:
        from_dict(AsrRunConfig, base, source=base_path)
    except ConfigError as err:
        raise blame_override(err, overrides or (), base_path, "--set") from None
    return Sweep(cfg, path, expand_grid(cfg, base, path, AsrRunConfig))


def run_asr_study(
    path: str | Path,
    resume: bool = False,
    log: Callable[[str], None] = print,
    seeds: list[int] | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    suffix: str = "",
    tasks: list[str] | None = None,
    retry_failed: bool = False,
    address: str | None = None,
    local: bool = False,
) -> Path:
    """Run an ASR study (see the module docstring); returns the path of ``askd.csv``.

    A failed run is recorded (``status: failed: ...`` and its ``failure`` class,
    :mod:`harness.failures`) and the study goes on; ``resume`` reruns the runs that failed
    because of the environment, ``retry_failed`` every failed run. ``harness sweep``
    (:func:`harness.sweep.run_sweep`) then prints the failure summary and exits 1.

    Args:
        seeds, overrides, suffix, tasks: as in :func:`load_study`.

    Raises:
        ConfigError: a bad study file; its folder already holds runs and ``resume`` is off;
            or it holds runs made with other settings (the keys are named).
    """
    from harness.asr.train import train_teacher
    from harness.sweep.run import run_payloads

    t0 = time.perf_counter()
    sweep = load_study(path, seeds=seeds, overrides=overrides, suffix=suffix, tasks=tasks)
    out = sweep.out_dir
    if out.is_dir() and list(out.glob("*/trial.json")) and not resume:
        raise ConfigError(f"{out} already holds runs of study {sweep.config.name!r}: pass --resume to finish it, "
                          "or remove the folder to start over")
    first = sweep.trials[0].config
    teacher_path = first.teacher.path or str(out / "teacher")
    trained_here = not first.teacher.path
    _check_same_settings(sweep, teacher_path)
    out.mkdir(parents=True, exist_ok=True)
    if trained_here:
        train_teacher(first.profile, teacher_path, first.data.corpus, steps=first.teacher.train_steps,
                      seed=0, batch_size=first.data.batch_size, lr=first.teacher.train_lr,
                      threads=first.train.threads, log=log, **first.teacher.shape)
    retry = "all" if retry_failed else failures.ENVIRONMENT
    payloads = study_payloads(sweep, teacher_path, retry)
    _prepare(payloads, out, log)
    todo = [p for p in payloads if not runs.trial_done(Path(p["run_dir"]), [], retry=retry)]
    for p in payloads:
        if p not in todo:
            status = (runs.read_summary(Path(p["run_dir"])) or {}).get("status")
            log(f"[asr] {p['run_id']}: done already" if status == "ok" else
                f"[asr] {p['run_id']}: kept: {status} (--retry-failed reruns it)")
    backend = "local" if local or sweep.config.backend == "local" else "ray"
    log(f"[asr] study {sweep.config.name}: {len(payloads)} runs, {len(payloads) - len(todo)} done, "
        f"{len(todo)} to run ({backend}) -> {out}")

    # the first grid point is the reference setting an ablation's arms are compared with
    reference = arm_label(first.loss.objective, {"overrides": sweep.trials[0].overrides})

    def after_each(p: dict, summary: dict) -> None:
        _log_run(p["run_id"], summary, log)
        _table_now(out, teacher_path, t0, trained_here, reference)  # an interrupted study keeps its finished rows

    run_payloads(sweep, todo, sweep.config.resources.resolve(), address, local, log, after_each)
    try:
        csv = write_study_table(out, teacher_path, wall_seconds=time.perf_counter() - t0, trained_here=trained_here,
                                reference=reference)
    except OSError as err:
        if not failures.is_no_space(err):
            raise
        raise failures.NoSpaceError(f"{failures.no_space_message(out)} (askd.csv not written)") from None
    try:
        askd_figure(out / "askd.json", out / "askd_wer_speed")
    except Exception as err:  # a figure problem must not lose the table
        log(f"[asr] figure not written: {type(err).__name__}: {err}")
    log(f"[asr] wrote {csv}")
    return csv


def _prepare(payloads: list[dict], out: Path, log) -> None:
    """The teacher's shared results (logit cache, test WER) computed once here, before the
    runs start, rather than by two concurrent runs at once."""
    from harness.asr.train import AsrRunConfig, prepare_teacher

    cfgs = sorted((p["config"] for p in payloads), key=lambda c: c["loss"]["objective"] == "ce")
    if not cfgs:
        return
    try:  # a kd/askd run's config first: it needs the cache
        prepare_teacher(from_dict(AsrRunConfig, cfgs[0], source=out / "trial.json"), out, log=log)
    except (OSError, ValueError) as err:  # each run tries again, and records its own failure
        log(f"[asr] the teacher's shared results were not prepared ({err}); each run will try")


def study_payloads(sweep: Sweep, teacher_path: str, retry: str) -> list[dict]:
    """Each run of an ASR study as the plain payload :func:`harness.sweep.trials.run_trial`
    takes (``track: asr``; it crosses to Ray workers as a distillation trial's does). One
    thread per run unless ``train.threads`` says otherwise: latencies are measured batch 1,
    greedy, on one thread, teacher and student interleaved in the same process."""
    out = []
    for t in sweep.trials:
        cfg = copy.deepcopy(t.config)
        cfg.teacher.path = teacher_path  # relative to the payload's cwd, like the corpus
        out.append({"track": "asr", "sweep": sweep.config.name, "run_id": t.run_id,
                    "run_dir": str(sweep.out_dir / t.run_id), "config": to_dict(cfg), "overrides": t.overrides,
                    "evaluate": [], "threads": cfg.train.threads or 1, "cwd": str(Path.cwd()), "retry": retry})
    return out


def _log_run(run_id: str, s: dict, log) -> None:
    if s.get("status") == "ok":
        log(f"[asr] {run_id}: WER {s['wer']['greedy']['wer']:.3f} (teacher {s['teacher_wer']['greedy']['wer']:.3f}), "
            f"speedup x{s['speedup']:.2f}")
    else:
        log(f"[asr] {run_id}: {s.get('status', 'no result')}")


def _table_now(out: Path, teacher_path: str, t0: float, trained_here: bool, reference: str | None) -> None:
    try:
        write_study_table(out, teacher_path, wall_seconds=time.perf_counter() - t0, trained_here=trained_here,
                          reference=reference)
    except OSError as err:  # a full disk: the next run's failure says so; the final table raises
        if not failures.is_no_space(err):
            raise


def _check_same_settings(sweep: Sweep, teacher_path: str) -> None:
    """Refuse to resume a study whose run folders hold runs made with other settings (a
    ``--set`` that changed them): their rows would pass for the new settings'."""
    from harness.asr.train import AsrRunConfig

    def parse(data, path):
        return to_dict(from_dict(AsrRunConfig, data, source=path))

    changed = {}
    for t in sweep.trials:
        want = copy.deepcopy(t.config)
        want.teacher.path = teacher_path
        diff = runs.config_changes(sweep.out_dir / t.run_id, to_dict(want), parse=parse)
        if diff:
            changed[t.run_id] = diff
    runs.refuse_changed(sweep.out_dir, changed, len(sweep.trials), noun="run")


def study_dry_run(path: str | Path, **kwargs) -> str:
    """List a study's runs and whether each is done (no training, no estimate invented:
    finished runs' measured seconds are shown when present); ``kwargs`` as in
    :func:`load_study`."""
    sweep = load_study(path, **kwargs)
    lines = [f"ASR study {sweep.config.name}: teacher + {len(sweep.trials)} runs -> {sweep.out_dir}"]
    for t in sweep.trials:
        s = runs.read_summary(sweep.out_dir / t.run_id) or {}
        state = s.get("status", "todo")
        secs = f"{s['train_seconds']:.0f} s train" if s.get("train_seconds") else ""
        lines.append(f"  {t.run_id:<40} {t.config.loss.objective:<5} {t.config.train.steps:>6} steps  {state:<8} {secs}")
    return "\n".join(lines)


def arm_label(objective, trial: dict | None) -> str | None:
    """A run's arm in the study table: its objective, plus the other grid settings of its
    trial when the study's grid has any (an ablation: ``askd (decay=step, self_teacher=ema)``)."""
    extra = {k: v for k, v in ((trial or {}).get("overrides") or {}).items()
             if k not in ("loss.objective", "train.seed")}
    if objective is None or not extra:
        return objective
    return f"{objective} (" + ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in sorted(extra.items())) + ")"


def _rows(study_dir: Path, teacher_path: str) -> tuple[dict, list[dict]]:
    tmeta_path = Path(teacher_path) / "harness_asr.json"
    tmeta = json.loads(tmeta_path.read_text()) if tmeta_path.is_file() else {}
    rows, teacher = [], None
    for summ_path in sorted(study_dir.glob(f"*/{runs.SUMMARY}")):
        s = runs.read_summary(summ_path.parent)
        if s is None or s.get("track") != "asr":  # a malformed one: read_askd lists the run as missing
            continue
        row = {"model": s.get("run_id", summ_path.parent.name),
               "objective": arm_label(s.get("objective"), runs.read_trial(summ_path.parent)),
               "seed": s.get("seed"), "status": s.get("status")}
        if s.get("status") == "ok":
            tw = s["teacher_wer"]["greedy"]["wer"]
            w = s["wer"]["greedy"]["wer"]
            row.update(
                wer=w, wer_beam=(s["wer"].get("beam") or {}).get("wer"), wer_delta=w - tw,
                wer_rel=(w / tw) if tw > 0 else None, speedup=s["speedup"],
                token_speedup=s["latency"]["student"]["tokens_per_s"] / s["latency"]["teacher"]["tokens_per_s"],
                latency_s=s["latency"]["student"]["latency_s"], rtf=s["latency"]["student"]["rtf"],
                params=s["student_params"]["total"], decoder_layers=s.get("decoder_layers"),
                train_seconds=s.get("train_seconds"), n=s["wer"]["greedy"]["n"],
            )
            if teacher is None:
                teacher = {"model": "teacher", "objective": "teacher", "seed": None, "status": "ok", "wer": tw,
                           "wer_beam": (s["teacher_wer"].get("beam") or {}).get("wer"), "wer_delta": 0.0,
                           "wer_rel": 1.0, "speedup": 1.0, "token_speedup": 1.0, "params": s["teacher_params"]["total"],
                           "decoder_layers": None, "train_seconds": tmeta.get("train_seconds"),
                           "n": s["teacher_wer"]["greedy"]["n"], "latencies": []}
            teacher["latencies"].append((s["latency"]["teacher"]["latency_s"], s["latency"]["teacher"]["rtf"]))
        rows.append(row)
    if teacher is not None:
        lat = teacher.pop("latencies")
        teacher["latency_s"] = statistics.mean(a for a, _ in lat)
        teacher["rtf"] = statistics.mean(b for _, b in lat)
        teacher["decoder_layers"] = tmeta.get("decoder_layers")
    return teacher or {}, rows


COLUMNS = ["model", "objective", "seed", "status", "wer", "wer_beam", "wer_delta", "wer_rel", "speedup",
           "token_speedup",
           "latency_s", "rtf", "params", "decoder_layers", "train_seconds", "n"]


def write_study_table(study_dir: str | Path, teacher_path: str, wall_seconds: float | None = None,
                      trained_here: bool = False, reference: str | None = None) -> Path:
    """Write ``askd.json`` and ``askd.csv`` from the run folders (see the module docstring);
    ``reference``: an ablation's reference arm (:func:`study_stats`)."""
    study_dir = Path(study_dir)
    teacher, rows = _rows(study_dir, teacher_path)
    if teacher:
        try:
            from transformers import AutoConfig

            teacher["decoder_layers"] = AutoConfig.from_pretrained(teacher_path, local_files_only=True).decoder_layers
        except Exception:
            pass
    by_obj: dict = {}
    for obj in sorted({r["objective"] for r in rows if r["status"] == "ok"}):
        ok = [r for r in rows if r["objective"] == obj and r["status"] == "ok"]
        sd = (lambda xs: statistics.stdev(xs) if len(xs) > 1 else 0.0)
        by_obj[obj] = {
            "runs": len(ok), "wer_mean": statistics.mean(r["wer"] for r in ok), "wer_std": sd([r["wer"] for r in ok]),
            "wer_rel_mean": statistics.mean(r["wer_rel"] for r in ok if r["wer_rel"] is not None)
            if any(r["wer_rel"] is not None for r in ok) else None,
            "wer_beam_mean": statistics.mean(r["wer_beam"] for r in ok) if all(r["wer_beam"] is not None for r in ok) else None,
            "speedup_mean": statistics.mean(r["speedup"] for r in ok), "speedup_std": sd([r["speedup"] for r in ok]),
            "token_speedup_mean": statistics.mean(r["token_speedup"] for r in ok),
            "params": ok[0]["params"],
        }
    ok_rows = [r for r in rows if r["status"] == "ok"]
    data = {
        "study": study_dir.name, "machine": hardware(), "teacher": {**teacher, "path": teacher_path},
        "rows": ([teacher] if teacher else []) + rows, "by_objective": by_obj,
        "latency_ratio": statistics.mean(r["speedup"] for r in ok_rows) if ok_rows else None,
        "token_latency_ratio": statistics.mean(r["token_speedup"] for r in ok_rows) if ok_rows else None,
        "wall_seconds": wall_seconds, "teacher_trained_here": trained_here, "reference": reference,
        "stats": study_stats(rows, teacher.get("wer"), reference),
    }
    runs.write_json(study_dir / "askd.json", data)
    return runs.write_table(study_dir / "askd.csv", data["rows"], COLUMNS, extra=False)


# the paired differences a study reports (first minus second), when both objectives ran
DIFFERENCES = (("askd", "kd"), ("askd", "ce"), ("kd", "ce"))


def study_stats(rows: list[dict], teacher_wer, reference: str | None = None) -> dict:
    """The study's statistics (as the stacking study's, :mod:`harness.stats`): each
    objective's greedy WER, mean and 95% t-interval over its seeds; the paired differences
    of :data:`DIFFERENCES` over the seeds both ran, and each objective minus the teacher
    (the teacher is one fixed model: the interval is that of the student's WER, shifted);
    a difference is ``resolved`` only when its interval excludes zero. ``verdicts``: one
    sentence per difference, saying "not resolved" with the interval otherwise. In an
    ablation (arms labelled by :func:`arm_label`) every arm is also compared with
    ``reference``, the arm of the base config's own settings.
    """
    from harness import stats

    by_obj: dict[str, dict[int, float]] = {}
    for r in rows:
        if r["status"] == "ok" and r.get("wer") is not None and r.get("seed") is not None:
            by_obj.setdefault(r["objective"], {})[int(r["seed"])] = float(r["wer"])
    out: dict = {"level": stats.LEVEL, "wer": {o: stats.mean_ci(v.values()) for o, v in sorted(by_obj.items())},
                 "differences": [], "verdicts": []}
    pairs = [(a, b) for a, b in DIFFERENCES if a in by_obj and b in by_obj]
    ref = reference if reference in by_obj else None  # an ablation: every arm against its reference setting
    pairs += [(a, ref) for a in sorted(by_obj) if ref and a != ref and (a, ref) not in pairs]
    if teacher_wer is not None:
        pairs += [(o, "teacher") for o in sorted(by_obj)]
    for a, b in pairs:
        second = by_obj[b] if b != "teacher" else {sd: float(teacher_wer) for sd in by_obj[a]}
        rec = {"first": a, "second": b, "metric": "wer", **stats.paired(by_obj[a], second)}
        out["differences"].append(rec)
        out["verdicts"].append(_verdict(rec))
    return out


def _verdict(rec: dict) -> str:
    """One sentence: the difference in WER points with its interval, resolved or not."""
    a, b = rec["first"], rec["second"]
    if rec["estimate"] is None:
        return f"{a} - {b}: no run of both"
    est = 100 * rec["estimate"]
    if rec["ci_low"] is None:
        return f"{a} - {b}: {est:+.2f} WER points from {rec['n']} seed(s): no interval (not resolved)"
    ci = f"[{100 * rec['ci_low']:+.2f}, {100 * rec['ci_high']:+.2f}]"
    if not rec["resolved"]:
        return f"{a} - {b}: {est:+.2f} WER points, 95% CI {ci} over {rec['n']} seeds: not resolved"
    word = "lower" if est < 0 else "higher"
    return f"{a} - {b}: {est:+.2f} WER points, 95% CI {ci} over {rec['n']} seeds: {a}'s WER is {word} (resolved)"


def askd_figure(askd_json: str | Path | dict, out_stem: str | Path) -> list[Path]:
    """WER vs inference speedup: every run (small markers), each objective's mean (large),
    the teacher at speedup 1 (drawn by :func:`harness.report.figures.draw_askd`, the same
    picture the report shows). Writes ``<out_stem>.png`` and ``<out_stem>.svg``.

    Args:
        askd_json: the ``askd.json`` path or its loaded content.
        out_stem: output path without extension.

    Returns:
        The two written paths.
    """
    import matplotlib.pyplot as plt

    from harness.report.figures import draw_askd  # one drawing, shared with `harness report`

    data = json.loads(Path(askd_json).read_text()) if not isinstance(askd_json, dict) else askd_json
    fig = draw_askd(data)
    if fig is None:
        raise ValueError("askd.json has no finished run and no teacher WER: nothing to draw")
    fig.axes[0].set_title(f"ASKD study {data.get('study', '')}: WER vs speed", fontsize=9)
    out_stem = Path(out_stem)
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [out_stem.with_suffix(".png"), out_stem.with_suffix(".svg")]
    fig.savefig(paths[0], dpi=150, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    plt.close(fig)
    return paths
