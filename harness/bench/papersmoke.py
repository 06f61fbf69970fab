"""``harness bench paper-smoke``: the paper profile end to end at its real shapes, on CPU.

What a user with GPUs and real checkpoints runs, proven on fabricated inputs with a step
limit, through the same commands they would type:

1. a **LibriSpeech-layout folder** of synthetic FLACs (eSpeak NG sentences, several per
   utterance, so lengths are LibriSpeech-like: ``--seconds``, default 8-16 s) in
   ``train-clean-100``, ``dev-clean`` and ``test-clean`` with ``*.trans.txt`` files;
   ``harness data import librispeech`` reads it. LibriSpeech ships no phone alignment, so
   the fabricated corpus adds the phones it knows (eSpeak's) to the ``asr_*`` manifests,
   which PR needs (with real LibriSpeech that takes a lexicon or an aligner);
2. a **HuBERT-Base-sized teacher**: ``transformers.HubertConfig()`` (12 x 768, 95M
   parameters), randomly initialised and saved with ``save_pretrained`` (no download);
   ``hf:`` loads it like a real checkpoint;
3. ``harness teacher cache`` over the distill split (every layer + the front-end, fp16):
   seconds, bytes, bytes per hour of audio;
4. ``harness distill --config sweeps/base/paper.yaml``: the 12 x 384 student grown
   3 -> 6 -> 9 -> 12 (interleaved, proportional schedule) for ``--steps`` steps at the
   paper's batch and crop unless overridden; the step time per stage from its summary;
5. ``harness export`` to s3prl's distiller format (loaded back and compared);
6. ``harness evaluate`` PR and ASR with the paper's heads on the fabricated splits, their
   steps limited (``--task-steps``);
7. ``harness report`` over the run.

Each command runs in its own process; its wall-clock and peak resident memory (the
process' own ``VmHWM`` at exit, written by ``python -m harness.cli.peak``: ``ru_maxrss`` would also count
the pages of the parent it was forked from) are recorded. The JSON also carries the measured step times
and the **extrapolated** cost of the paper's study (arithmetic from the CPU step time, one
device's worth, labelled as such until ``harness bench gpu`` measures a GPU).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from harness.bench.common import report_header, scratch
from harness.runs import write_json

ROOT = Path(__file__).resolve().parents[2]
SUBSETS = {"train-clean-100": "train", "dev-clean": "dev", "test-clean": "test"}
PAPER_STEPS = 200_000  # DistilHuBERT / the paper profile's steps per run
PAPER_RUNS = 5 * 7  # the main study's arms x seeds (sweeps/paper/main.yaml)
LIBRISPEECH_HOURS = {"train-clean-100": 100.6, "960 h": 961.1}
A100_BF16_TFLOPS = 312.0  # harness.bench.gpu.PEAK_BF16_TFLOPS
ASSUMED_MFU = (0.1, 0.4)  # a bracket, not a measurement: `harness bench gpu` measures it


def fabricate_librispeech(root: Path, counts: dict[str, int], seconds: tuple[float, float] = (8.0, 16.0),
                          seed: int = 0) -> dict[str, list[list]]:
    """Write a LibriSpeech-layout folder of eSpeak sentences; return each utterance's phone
    rows (``[phone, start, end]``, the corpus' own phone set) by utterance id.

    Args:
        root: the LibriSpeech root to create (``<subset>/<spk>/<chapter>/...``).
        counts: utterances per subset (``train-clean-100``, ``dev-clean``, ``test-clean``).
        seconds: each utterance gets sentences until eSpeak's audio reaches a length drawn
            uniformly from this range.
    """
    import soundfile as sf

    from harness.data import espeak, phones, text
    from harness.data.synth import usable_variants

    rng = np.random.default_rng(seed)
    variants = usable_variants()[:6] or [""]
    out: dict[str, list[list]] = {}
    for s_i, (subset, n) in enumerate(counts.items()):
        for u in range(n):
            spk, chapter = 100 * (s_i + 1) + u % 4, 10 + u % 2
            voice = f"en-us+{variants[(s_i * 4 + u % 4) % len(variants)]}".rstrip("+")
            target = float(rng.uniform(*seconds))
            sentences: list[str] = []
            audio = np.zeros(0, np.float32)
            rows: list[list] = []
            while len(audio) < target * 16000 and len(sentences) < 12:
                sentences.append(text.sentence(rng))
                syn = espeak.synthesize(". ".join(sentences), voice, seed=int(seed + u), dtype="float32",
                                        rate=float(rng.uniform(150, 200)) if len(sentences) == 1 else 175)
                audio = syn.audio
                rows = phones.events_to_phones([(p.ipa, p.start, p.end) for p in syn.phones], len(audio), {})
            uid = f"{spk}-{chapter}-{u:04d}"
            folder = root / subset / str(spk) / str(chapter)
            folder.mkdir(parents=True, exist_ok=True)
            sf.write(folder / f"{uid}.flac", audio, 16000, subtype="PCM_16")
            words = text.transcript(". ".join(sentences)).upper()
            with open(folder / f"{spk}-{chapter}.trans.txt", "a", encoding="utf-8") as fh:
                fh.write(f"{uid} {words}\n")
            out[uid] = rows
    return out


def add_phones(corpus: Path, rows_by_id: dict[str, list[list]]) -> int:
    """Write the fabricated phones into the imported ``asr_*`` manifests; returns the count."""
    from harness.data.manifest import read_manifest, write_manifest

    n = 0
    for split in ("asr_train", "asr_dev", "asr_test"):
        path = corpus / f"{split}.jsonl"
        if not path.is_file():
            continue
        recs = read_manifest(path)
        for r in recs:
            r["phones"] = rows_by_id[r["id"]]
            n += 1
        write_manifest(path, recs)
    return n


def save_hubert_base(path: Path, seed: int = 0) -> int:
    """A randomly initialised HuBERT Base (``HubertConfig()``'s defaults) saved with
    ``save_pretrained``; returns its parameter count."""
    import torch
    import transformers

    torch.manual_seed(seed)
    model = transformers.HubertModel(transformers.HubertConfig())
    model.save_pretrained(path)
    return sum(p.numel() for p in model.parameters())


def timed(args: Sequence[str], log: Callable[[str], None], env: Optional[dict] = None) -> dict:
    """Run ``harness ARGS...`` in its own process: its wall-clock seconds and peak RSS (MiB).

    Raises:
        RuntimeError: the command failed (its last output lines in the message).
    """
    import tempfile

    shown = "harness " + " ".join(shlex.quote(c) for c in args)
    log(f"  $ {shown}")
    with tempfile.NamedTemporaryFile("r", suffix=".peak") as peak:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "harness.cli.peak", peak.name, *args],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, **(env or {})}, cwd=ROOT)
        seconds = time.perf_counter() - t0
        kib = peak.read().strip()
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.strip().splitlines()[-8:])
        raise RuntimeError(f"paper smoke: `{shown[:80]} ...` exited {proc.returncode}:\n{tail}")
    return {"command": shown, "seconds": round(seconds, 2),
            "peak_rss_mib": round(int(kib) / 1024, 1) if kib.isdigit() else None,
            "output_tail": proc.stdout.strip().splitlines()[-3:]}


def _harness(*args: str) -> list[str]:
    return list(args)


def bench_paper_smoke(out: Optional[str | Path], work_dir: Optional[str | Path] = None, steps: int = 8,
                      counts: Optional[dict[str, int]] = None, seconds: tuple[float, float] = (8.0, 16.0),
                      task_steps: int = 4, threads: int = 0, overrides: Sequence[str] = (),
                      log: Callable[[str], None] = print) -> dict:
    """Run the paper profile's whole path at its real shapes (module docstring); returns
    (and writes to ``out``) the bench JSON.

    Args:
        steps: distillation steps (>= 4: every stage of 3 -> 6 -> 9 -> 12 trains).
        counts: utterances per LibriSpeech subset (default 48 / 8 / 8).
        task_steps: PR and ASR head steps.
        threads: torch threads per command (0 = every core).
        overrides: more ``key=value`` changes to sweeps/base/paper.yaml (e.g.
            ``data.batch_size=4`` for a quicker check; the default is the paper's batch).
    """
    if steps < 4:
        raise ValueError(f"--steps must be >= 4 (one per stage of 3 -> 6 -> 9 -> 12), got {steps}")
    counts = counts or {"train-clean-100": 48, "dev-clean": 8, "test-clean": 8}
    threads = threads or os.cpu_count() or 1
    phases: dict[str, dict] = {}
    result = report_header("paper-smoke", ("transformers",))
    with scratch(work_dir, "paper-smoke-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        log(f"[paper smoke] fabricating a LibriSpeech-layout folder under {tmp / 'LibriSpeech'}")
        rows = fabricate_librispeech(tmp / "LibriSpeech", counts, seconds)
        phases["fabricate"] = {"seconds": round(time.perf_counter() - t0, 2), "utterances": counts}
        log("[paper smoke] saving a randomly initialised HuBERT Base (HubertConfig())")
        # in a child process: this one stays small, so nothing it holds is counted in a command's memory
        made = subprocess.run([sys.executable, "-c", "import sys; from harness.bench.papersmoke import "
                               "save_hubert_base as s; print(s(sys.argv[1]))", str(tmp / "hubert_base")],
                              capture_output=True, text=True, cwd=ROOT)
        if made.returncode != 0:
            raise RuntimeError(f"paper smoke: saving the HuBERT Base checkpoint failed: {made.stderr.strip()[-300:]}")
        teacher_params = int(made.stdout.strip().splitlines()[-1])
        corpus, run = tmp / "librispeech", tmp / "results" / "paper-smoke" / "run"
        env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        phases["import"] = timed(_harness("data", "import", "librispeech", str(tmp / "LibriSpeech"),
                                          "--out", str(corpus)), log, env)
        add_phones(corpus, rows)
        spec = f"hf:{tmp / 'hubert_base'}"
        cache_dir = tmp / "cache" / "teacher"
        # the layers a 12-layer teacher's L2L run reads (distill.teacher_layers): the run reuses this cache
        phases["cache"] = timed(_harness("teacher", "cache", "--teacher", spec, "--manifest",
                                         str(corpus / "distill.jsonl"), "--out", str(cache_dir),
                                         "--layers", *[str(k) for k in range(1, 13)]), log, env)
        cfg_over = [f"data.corpus={corpus}", f"teacher.spec={spec}", f"teacher.cache_dir={cache_dir}",
                    f"train.steps={steps}", "train.device=cpu", f"train.threads={threads}", "train.log_every=1",
                    "data.heldout=4", f"train.eval_every={steps}", f"train.ckpt_every={steps}",
                    "data.num_workers=0", *overrides]
        phases["distill"] = timed(_harness("distill", "--config", str(ROOT / "sweeps/base/paper.yaml"),
                                           "--out", str(run), *cfg_over), log, env)
        phases["export"] = timed(_harness("export", str(run), "--out", str(tmp / "student_s3prl.ckpt")), log, env)
        sets = [f"{t}.{k}={v}" for t in ("pr", "asr") for k, v in
                (("steps", task_steps), ("eval_every", task_steps), ("batch_size", 4))]
        phases["evaluate"] = timed(_harness("evaluate", str(run), "--tasks", "pr,asr", "--profile", "paper",
                                            "--corpus", str(corpus), "--no-score", "--threads", str(threads),
                                            "--cache-dir", str(tmp / "cache" / "superb"),
                                            *[a for s in sets for a in ("--set", s)]), log, env)
        phases["report"] = timed(_harness("report", str(run.parent), "--out", str(tmp / "report"), "--no-pdf"),
                                 log, env)
        result.update(_measurements(tmp, corpus, cache_dir, run, teacher_params, phases, steps, threads,
                                    list(overrides)))
    if out:
        write_json(Path(out), result)
        log(f"[paper smoke] wrote {out}")
    return result


def _measurements(tmp: Path, corpus: Path, cache_dir: Path, run: Path, teacher_params: int, phases: dict,
                  steps: int, threads: int, overrides: list[str]) -> dict:
    """The bench JSON's body: settings, phases, the measured step costs, the cache's size
    per hour of audio, what was checked, and the extrapolated (arithmetic) paper cost."""
    import math

    from harness.data.manifest import read_manifest

    summary = json.loads((run / "summary.json").read_text())
    superb = json.loads((run / "superb.json").read_text())
    distill_secs = sum(r["num_samples"] for r in read_manifest(corpus / "distill.jsonl")) / 16000
    cache_bytes = sum(p.stat().st_size for p in cache_dir.rglob("*.f16"))
    stages = [{"depth": s["depth"], "steps": s["steps"], "seconds_per_step": s["seconds"] / max(1, s["steps"]),
               "cpu_seconds_per_step": s["cpu_seconds"] / max(1, s["steps"])} for s in summary["stages"]]
    full = stages[-1]["seconds_per_step"]
    cfg = summary["config"]
    # the paper run's own schedule: its stage steps at 200k steps (proportional: ~ depth)
    from harness import stacking
    from harness.config import RunConfig, from_dict

    paper_cfg = from_dict(RunConfig, {**cfg, "train": {**cfg["train"], "steps": PAPER_STEPS}}, source="paper smoke")
    paper_steps = list(stacking.plan_stages(paper_cfg).steps)
    per_run = [st["seconds_per_step"] * n for st, n in zip(stages, paper_steps)]
    exported = next((json.loads(line) for line in phases["export"]["output_tail"] if line.startswith("{")), {})
    caches = [p for p in cache_dir.iterdir() if (p / "COMPLETE.json").is_file()]
    per_hour = cache_bytes / (distill_secs / 3600)
    # arithmetic: the FLOP model's count (summary["flops"], student only: the teacher is
    # cached) scaled to the paper's steps, and the cache pass (2 FLOPs per teacher parameter
    # per frame, 50 frames/s, plus its conv front-end) over the audio, at an assumed MFU
    run_flops = sum(stacking.CostModel(**summary["cost_model"]).per_step(d) * n
                    for d, n in zip(summary_depths(summary), paper_steps))
    teacher_flops_hour = (2.0 * teacher_params + _conv_flops()) * 50 * 3600

    def gpu_hours(flops: float, mfu: float) -> float:
        return flops / (A100_BF16_TFLOPS * 1e12 * mfu) / 3600

    gpu = {}
    for mfu in ASSUMED_MFU:
        run_h = gpu_hours(run_flops, mfu)
        cache_h = gpu_hours(teacher_flops_hour * LIBRISPEECH_HOURS["960 h"], mfu)
        gpu[f"mfu_{mfu:g}"] = {
            "hours_per_run": run_h, "cache_960h_hours_one_gpu": cache_h,
            "main_study_days_one_gpu": (PAPER_RUNS * run_h + cache_h) / 24,
            # 8 GPUs: one trial per GPU (Ray), ceil(35 / 8) waves; the cache pass split 8 ways
            "main_study_days_eight_gpus": (math.ceil(PAPER_RUNS / 8) * run_h + cache_h / 8) / 24,
        }
    return {
        "settings": {"steps": steps, "threads": threads, "overrides": overrides,
                     "batch_size": cfg["data"]["batch_size"], "max_seconds": cfg["data"]["max_seconds"],
                     "teacher": "HubertConfig() defaults, random init, hf: adapter",
                     "teacher_params": teacher_params, "student_params": summary["student_params"],
                     "depths": [s["depth"] for s in stages]},
        "phases": phases,
        "stages": stages,
        "cache": {"bytes": cache_bytes, "audio_hours": distill_secs / 3600, "caches": len(caches),
                  "bytes_per_audio_hour": per_hour,
                  "seconds_per_audio_hour": phases["cache"]["seconds"] / (distill_secs / 3600),
                  "bytes_for": {k: per_hour * h for k, h in LIBRISPEECH_HOURS.items()}},
        "checks": {"status": summary["status"], "theoretical_speedup": summary["theoretical_speedup"],
                   "export_max_abs_diff": exported.get("max_abs_diff"),
                   "tasks": {k: v.get("value") for k, v in superb.get("tasks", superb).items()
                             if isinstance(v, dict)},
                   "report": (tmp / "report" / "index.html").is_file()},
        "extrapolated_paper_cost": {
            "label": "ARITHMETIC, not a measurement: this machine's CPU step time per stage x the paper's "
                     f"{PAPER_STEPS} steps in the paper schedule's stages; one device; a GPU's figure needs "
                     "`harness bench gpu`",
            "cpu_hours_per_run": sum(per_run) / 3600,
            "cpu_hours_per_run_full_depth": full * PAPER_STEPS / 3600,
            "cpu_days_main_study": PAPER_RUNS * sum(per_run) / 86400,
            "runs_in_main_study": PAPER_RUNS, "paper_stage_steps": paper_steps,
            "flops_per_run": run_flops, "teacher_flops_per_audio_hour": teacher_flops_hour,
            "gpu_label": f"ARITHMETIC: FLOPs / ({A100_BF16_TFLOPS:g} TFLOP/s A100 bf16 peak x an ASSUMED MFU of "
                         f"{ASSUMED_MFU[0]:g} or {ASSUMED_MFU[1]:g}); `harness bench gpu` measures the MFU",
            "gpu": gpu,
        },
    }


def _conv_flops() -> float:
    """HuBERT Base's conv front-end, forward FLOPs per 50 Hz frame."""
    from harness.stacking import conv_frontend_flops

    return float(conv_frontend_flops([[512, 10, 5]] + [[512, 3, 2]] * 4 + [[512, 2, 2]] * 2))


def format_paper_smoke(res: dict) -> str:
    """The markdown tables of docs/benchmarks.md "Paper-shape smoke" (tested against the JSON)."""
    s, c, x = res["settings"], res["cache"], res["extrapolated_paper_cost"]
    lines = [f"Batch {s['batch_size']} x {s['max_seconds']:g} s crops, {s['steps']} steps, {s['threads']} threads; "
             f"teacher {s['teacher_params'] / 1e6:.1f} M parameters, student {s['student_params'] / 1e6:.1f} M "
             f"(depths {' -> '.join(str(d) for d in s['depths'])}).", "",
             "| command | wall-clock s | peak RSS MiB |", "|---|---|---|"]
    for name, ph in res["phases"].items():
        if "peak_rss_mib" in ph:
            lines.append(f"| {name} | {ph['seconds']:.1f} | {ph['peak_rss_mib']:.0f} |")
    lines += ["", "| stage depth | steps | s / step (wall) | CPU s / step |", "|---|---|---|---|"]
    for st in res["stages"]:
        lines.append(f"| {st['depth']} | {st['steps']} | {st['seconds_per_step']:.2f} | "
                     f"{st['cpu_seconds_per_step']:.2f} |")
    gb = c["bytes_per_audio_hour"] / 1e9
    lines += ["", f"Teacher cache (13 arrays: front-end + 12 layers, fp16): {gb:.2f} GB per hour of audio "
              f"({c['bytes_for']['train-clean-100'] / 1e9:.0f} GB for train-clean-100, "
              f"{c['bytes_for']['960 h'] / 1e12:.2f} TB for 960 h); built at "
              f"{c['seconds_per_audio_hour'] / 60:.1f} minutes of wall-clock per hour of audio ({s['threads']} threads).", "",
              f"Extrapolated, **arithmetic** ({x['runs_in_main_study']} runs of {PAPER_STEPS} steps): "
              f"{x['cpu_hours_per_run']:.0f} h per run on this CPU "
              f"({x['cpu_days_main_study']:.0f} days for the main study).", "",
              "| assumed MFU (A100 bf16, 312 TFLOP/s) | h / run | 960 h cache pass, h | main study, days, 1 GPU "
              "| main study, days, 8 GPUs |", "|---|---|---|---|---|"]
    for key, g in x["gpu"].items():
        lines.append(f"| {key.split('_', 1)[1]} | {g['hours_per_run']:.2f} | {g['cache_960h_hours_one_gpu']:.2f} | "
                     f"{g['main_study_days_one_gpu']:.2f} | {g['main_study_days_eight_gpus']:.2f} |")
    return "\n".join(lines)



def summary_depths(summary: dict) -> list[int]:
    """The depth of each stage of a run's ``summary.json``."""
    return [int(st["depth"]) for st in summary["stages"]]
