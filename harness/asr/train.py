"""One ASR run: build (or load) the models, train with ``ce``/``kd``/``askd``, evaluate.

``run_asr_distill(cfg, out_dir)`` reads top to bottom: load the teacher, cut the student
(:func:`harness.asr.student.shrink`), train it (:func:`fit`), save it as a Whisper
checkpoint folder, score WER (greedy and beam) on the test split and time teacher and
student side by side. ``train_teacher`` uses the same :func:`fit` with ``ce`` on a fresh
character-level Whisper.

Run folder: ``config.yaml`` (resolved), ``metrics.jsonl`` (one line per logged step),
``tensorboard/`` (the same scalars, then the scores), ``student/`` (``save_pretrained`` +
tokenizer + preprocessor config), ``summary.json``; in a study the teacher's shared files
(``teacher_logits-*.npz``, ``teacher_eval.json``) are in the study folder, else here. The
config classes are :mod:`harness.asr.config`'s.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Callable, Optional

import torch

from harness import runs
from harness.asr.config import (  # noqa: F401  (re-exported: harness.asr.train is where users look)
    AsrDataConfig, AsrEvalConfig, AsrLossConfig, AsrOptimConfig, AsrRunConfig, AsrStudentConfig, AsrTeacherConfig,
    AsrTrainConfig, load_asr_config,
)
from harness.config import ConfigError, to_dict
from harness.data.manifest import read_manifest
from harness.provenance import git_commit, hardware, load_average, now_iso, run_load

# ----------------------------------------------------------------------------- training


def _lr_factor(step: int, total: int, warmup_frac: float) -> float:
    warm = max(1, int(total * warmup_frac))
    if step < warm:
        return (step + 1) / warm
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))


def _ctc_loss(asr, head, enc_out: torch.Tensor, b) -> torch.Tensor:
    """CTC (blank = ``<pad>``) of a linear head on the encoder output against the transcripts."""
    from harness.asr.data import target_ids

    logp = head(enc_out).log_softmax(-1).transpose(0, 1)  # (T, B, V)
    t = logp.shape[0]
    per_frame = asr.chunk_samples / t  # samples per encoder frame
    in_len = torch.clamp(torch.ceil(b.num_samples.float() / per_frame).long(), 1, t)
    tgts = [target_ids(asr, x) for x in b.texts]
    tgt_len = torch.tensor([len(x) for x in tgts], dtype=torch.long)
    flat = torch.tensor([i for x in tgts for i in x], dtype=torch.long)
    blank = asr.tokenizer.pad_token_id or 0
    return torch.nn.functional.ctc_loss(logp, flat, in_len, tgt_len, blank=blank, zero_infinity=True)


def fit(
    student, split, steps: int, loss_cfg: AsrLossConfig, optim_cfg: AsrOptimConfig,
    batch_size: int = 16, seed: int = 0, teacher=None, freeze_encoder: bool = True,
    log_every: int = 10, metrics_path: Optional[Path] = None,
    on_log: Optional[Callable[[dict], None]] = None, grow_at: Optional[dict[int, list[int]]] = None,
    ctc_weight: float = 0.0, teacher_logits=None,
) -> dict:
    """Train ``student`` in place for ``steps`` steps.

    Args:
        student: an :class:`~harness.asr.teacher.AsrModel` (trainable).
        split: the training :class:`~harness.asr.data.AsrSplit`.
        loss_cfg: objective, weights, temperature, ASKD schedule, pseudo-labels.
        teacher: frozen teacher (needed by ``kd``, ``askd`` and pseudo-labels).
        freeze_encoder: keep the student's encoder fixed. When its encoder is also the
            teacher's (same depth), one encoder pass serves both.
        grow_at: ``{step: plan}``: before that step the decoder is rebuilt from the plan
            (:func:`harness.asr.student.grow_decoder`; the EMA self-teacher grows alike),
            and AdamW restarts on the new parameter set (its moments reset) while the
            learning-rate schedule continues.
        ctc_weight: with a trainable encoder, add ``ctc_weight`` x a CTC loss of a linear
            head on the encoder output (hybrid CTC/attention training, as in ESPnet): it
            makes a small encoder-decoder learn to align to the audio in far fewer steps
            instead of decoding from its language model alone. The head is training-only
            (not part of the saved Whisper checkpoint).
        teacher_logits: a :class:`~harness.asr.logitcache.TeacherLogits` of ``split``: the
            teacher's logits are read from it instead of computed (not with pseudo-labels or
            a shared frozen encoder, which need the live teacher).

    Returns:
        ``{"steps", "train_seconds", "first": {loss parts at step 0}, "final": {mean loss
        parts over the last logging window}}``.
    """
    from harness.asr.objectives import askd_alpha, student_loss
    from harness.losses import SelfTeacher

    obj = loss_cfg.objective
    if (obj != "ce" or loss_cfg.pseudo_labels) and teacher is None:
        raise ValueError(f"objective {obj!r} (or pseudo-labels) needs a teacher")
    torch.manual_seed(seed)
    model = student.model
    model.train()
    enc = model.model.encoder
    if freeze_encoder:
        for p in enc.parameters():
            p.requires_grad_(False)
        enc.eval()
    shared_enc = (teacher is not None and freeze_encoder
                  and teacher.model.config.encoder_layers == model.config.encoder_layers)
    cached = teacher_logits if not (shared_enc or loss_cfg.pseudo_labels) else None
    def make_opt(offset: int):
        ps = [p for p in model.parameters() if p.requires_grad]
        o = torch.optim.AdamW(ps, lr=optim_cfg.lr, weight_decay=optim_cfg.weight_decay, betas=(0.9, 0.98))
        return ps, o, torch.optim.lr_scheduler.LambdaLR(
            o, lambda s: _lr_factor(s + offset, steps, optim_cfg.warmup_frac))

    ctc_head = None
    if ctc_weight > 0:
        if freeze_encoder:
            raise ValueError("ctc_weight needs a trainable encoder (freeze_encoder=False)")
        ctc_head = torch.nn.Linear(model.config.d_model, model.config.vocab_size)
        model.add_module("_ctc_head", ctc_head)  # joins the optimiser; removed after training
    params, opt, sched = make_opt(0)
    ema = SelfTeacher(model, loss_cfg.askd, steps) if obj == "askd" else None
    if teacher is not None:
        teacher.model.eval()
    pseudo: dict[str, list[int]] = {}
    batches = split.epochs(batch_size, seed)
    window, first = [], {}
    fh = open(metrics_path, "a") if metrics_path else None
    t0 = time.perf_counter()
    try:
        for step in range(steps):
            if grow_at and step in grow_at:
                from harness.asr.student import grow_decoder

                grow_decoder(student, grow_at[step], seed=seed + step)
                if ema is not None:
                    ema.update(model)  # a changed architecture is re-copied (harness.losses.EmaTeacher)
                params, opt, sched = make_opt(step)
            b = split.batch(student, next(batches))
            t_enc, dec, labels, t_logits = _teacher_side(teacher, student, b, loss_cfg, pseudo, shared_enc, cached)
            with torch.set_grad_enabled(not freeze_encoder):  # a frozen encoder runs without gradients
                s_enc = t_enc if shared_enc else enc(b.features).last_hidden_state
            alpha = askd_alpha(step / max(1, steps - 1), loss_cfg.askd.decay, loss_cfg.askd.alpha_start,
                               loss_cfg.askd.alpha_end, loss_cfg.askd.start_frac) if obj == "askd" else 1.0
            parts = student_loss(model, ema, s_enc, dec, labels, t_logits, alpha, loss_cfg)
            if ctc_head is not None:
                parts["ctc"] = _ctc_loss(student, ctc_head, s_enc, b)
                parts["total"] = parts["total"] + ctc_weight * parts["ctc"]
            if not torch.isfinite(parts["total"]):
                raise FloatingPointError(f"non-finite loss at step {step}: {parts['total'].item()}")
            opt.zero_grad(set_to_none=True)
            parts["total"].backward()
            torch.nn.utils.clip_grad_norm_(params, optim_cfg.grad_clip)
            opt.step()
            sched.step()
            if ema is not None:
                ema.update(model)
            row = {k: float(v.detach()) for k, v in parts.items()}
            first = first or dict(row)
            window.append(row)
            if (step + 1) % log_every == 0 or step + 1 == steps:
                final = {k: sum(r[k] for r in window) / len(window) for k in window[0]}
                line = {"step": step + 1, **final, "alpha": alpha, "lr": sched.get_last_lr()[0],
                        "seconds": round(time.perf_counter() - t0, 3)}
                if fh:
                    runs.append_metrics(fh, line)
                if on_log:
                    on_log(line)
                window = []
    finally:
        if fh:
            fh.close()
        if ctc_head is not None:
            del model._ctc_head
    model.eval()
    return {"steps": steps, "train_seconds": time.perf_counter() - t0, "first": first, "final": final,
            "self_teacher": ema.describe() if ema is not None else None}


def _teacher_side(teacher, student, b, loss_cfg: AsrLossConfig, pseudo: dict[str, list[int]],
                  shared_enc: bool = False, cached=None):
    """The frozen teacher's part of a step, without gradients: its encoder states (when the
    student shares them or pseudo-labels need them), the decoder inputs and labels (the
    teacher's greedy pseudo-labels when asked for, decoded once per utterance into
    ``pseudo``) and, for ``kd``/``askd``, its logits (from ``cached`` when given).

    Returns:
        ``(t_enc or None, decoder_input, labels, t_logits or None)``.
    """
    from transformers.modeling_outputs import BaseModelOutput

    from harness.asr.data import make_targets
    from harness.asr.evaluate import greedy_decode

    dec, labels = b.decoder_input, b.labels
    need_logits = loss_cfg.objective != "ce"
    if cached is not None and need_logits:
        return None, dec, labels, cached.batch(b.ids, dec.shape[1])
    with torch.no_grad():
        need_enc = teacher is not None and (shared_enc or loss_cfg.pseudo_labels or need_logits)
        t_enc = teacher.model.model.encoder(b.features).last_hidden_state if need_enc else None
        if loss_cfg.pseudo_labels:
            todo = [i for i, u in enumerate(b.ids) if u not in pseudo]
            if todo:
                hyps = greedy_decode(teacher, b.features[todo], encoder_states=t_enc[todo])
                for i, h in zip(todo, hyps):
                    pseudo[b.ids[i]] = h[: student.max_target_positions - len(student.prompt) - 1]
            dec, labels = make_targets(student, [pseudo[u] for u in b.ids])
        t_logits = None
        if need_logits:
            t_logits = teacher.model(encoder_outputs=BaseModelOutput(last_hidden_state=t_enc),
                                     decoder_input_ids=dec).logits
    return t_enc, dec, labels, t_logits


# ----------------------------------------------------------------------------- teacher


TEACHER_STEPS = {"tiny": 150, "embedded": 1500}


def train_teacher(profile: str, out: str | Path, corpus: str | Path, steps: int = 0, seed: int = 0,
                  batch_size: int = 16, lr: float = 2e-3, threads: int = 0, ctc_weight: float = 0.5,
                  log: Callable[[str], None] = print, split: str = "asr", **shape) -> Path:
    """Train the profile's character-level Whisper teacher on ``<corpus>/<split>_train.jsonl``
    (``split``: ``asr``, the read sentences, or ``ic``, the spoken commands: any split
    family whose records carry ``text``).

    Skipped when ``out`` already holds a finished teacher (``harness_asr.json``).
    ``shape`` overrides entries of the profile's preset (``d_model``, ``decoder_layers``...).

    Returns:
        ``out``, a self-contained Whisper checkpoint folder.
    """
    from harness.asr.data import AsrSplit
    from harness.asr.teacher import META_FILE, chunk_seconds_for, new_char_model, save_asr_model

    out, corpus = Path(out), Path(corpus)
    if (out / META_FILE).is_file():
        log(f"[asr] teacher already trained: {out}")
        return out
    if threads:
        torch.set_num_threads(threads)
    recs = []
    for part in (f"{split}_train", f"{split}_dev", f"{split}_test"):
        p = corpus / f"{part}.jsonl"
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no such ASR manifest (build the corpus: harness data build "
                                    f"--profile {profile} --out {corpus})")
        recs += read_manifest(p)
    asr = new_char_model(profile, chunk_seconds_for(recs), seed=seed, **shape)
    family, split = split, AsrSplit(corpus / f"{split}_train.jsonl", asr)
    steps = steps or TEACHER_STEPS.get(profile, 1000)
    started = now_iso()
    log(f"[asr] training {asr.name} ({asr.num_params() / 1e6:.2f} M params) for {steps} steps on {len(split)} utterances")
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.jsonl").unlink(missing_ok=True)
    loss_cfg = AsrLossConfig(objective="ce")
    res = fit(asr, split, steps, loss_cfg, AsrOptimConfig(lr=lr, warmup_frac=0.05), batch_size=batch_size,
              seed=seed, freeze_encoder=False, log_every=max(1, steps // 50), metrics_path=out / "metrics.jsonl",
              ctc_weight=ctc_weight,
              on_log=lambda r: log(f"[asr] teacher step {r['step']}: loss {r['total']:.3f}") if r["step"] % max(1, steps // 10) == 0 else None)
    save_asr_model(asr, out, extra={
        "profile": profile, "corpus": str(corpus), "split": family, "shape": shape, "steps": steps, "seed": seed, "batch_size": batch_size, "lr": lr,
        "ctc_weight": ctc_weight,
        "train_seconds": res["train_seconds"], "final_loss": res["final"], "params": asr.num_params(),
        "skipped": len(split.skips), "started": started, "finished": now_iso(), "git_commit": git_commit(),
        "hardware": hardware(),
    })
    log(f"[asr] teacher saved to {out} ({res['train_seconds']:.0f} s, final loss {res['final']['total']:.3f})")
    return out


# ----------------------------------------------------------------------------- one run


def prepare_teacher(cfg: AsrRunConfig, folder: Path, teacher=None, log: Callable[[str], None] = print):
    """What every run of a study shares, computed once into ``folder`` (the study's, or a
    lone run's own): the teacher's logit cache (kd/askd with ``teacher.cache_logits``) and
    its WER on the test split (``teacher_eval.json``). Returns ``(teacher, train split, test
    split, cache or None, teacher WER)``. No cache for a student that shares the teacher's
    frozen encoder or trains on pseudo-labels: :func:`fit` runs the live teacher for those."""
    from harness.asr.data import AsrSplit
    from harness.asr.evaluate import teacher_eval
    from harness.asr.logitcache import ensure_logit_cache
    from harness.asr.teacher import load_asr_model

    if not cfg.teacher.path:
        raise ConfigError("teacher.path must name a Whisper checkpoint folder (harness asr train-teacher --out DIR)")
    teacher = teacher or load_asr_model(cfg.teacher.path)
    corpus = Path(cfg.data.corpus)
    split = AsrSplit(corpus / f"{cfg.data.train_split}.jsonl", teacher, cfg.data.max_train)
    sc = cfg.student
    shares_encoder = sc.freeze_encoder and sc.encoder_layers in (0, teacher.model.config.encoder_layers)
    cache = None
    if cfg.teacher.cache_logits and cfg.loss.objective != "ce" and not cfg.loss.pseudo_labels and not shares_encoder:
        cache = ensure_logit_cache(teacher, cfg.teacher.path, split, folder, cfg.data.batch_size, log=log)
    test = AsrSplit(corpus / f"{cfg.data.test_split}.jsonl", teacher)
    return teacher, split, test, cache, teacher_eval(teacher, folder, test, cfg.eval)


def run_asr_distill(cfg: AsrRunConfig, out_dir: str | Path, sweep: str = "",
                    on_log: Optional[Callable[[dict], None]] = None) -> dict:
    """Distil one student and score it; writes the run folder (see the module docstring).
    In a study (``sweep`` given) the teacher's shared results live in the study folder
    (:func:`prepare_teacher`), else in the run folder.

    Returns:
        The summary (also written to ``summary.json``).
    """
    from harness.asr.evaluate import count_params, evaluate_wer, measure_latency
    from harness.asr.student import shrink
    from harness.asr.teacher import save_asr_model

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs.write_config(out, cfg)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    summary: dict = {"run_id": out.name, "sweep": sweep, "track": "asr", "objective": cfg.loss.objective,
                     "seed": cfg.train.seed, "status": "running", "started": now_iso()}
    load0 = load_average()
    runs.write_summary(out, summary)
    teacher, split, test, cache, t_eval = prepare_teacher(cfg, out.parent if sweep else out, log=lambda m: None)
    first_depth, grow_at = cfg.student.growth(cfg.train.steps)
    sc, bs = cfg.student, cfg.data.batch_size
    calib = ([split.batch(teacher, list(range(i, min(len(split), i + bs))))
              for i in range(0, min(len(split), sc.calib_batches * bs), bs)] if sc.d_model else None)
    student = shrink(teacher, first_depth, sc.encoder_layers, sc.d_model, sc.ffn_dim, calib)
    (out / "metrics.jsonl").unlink(missing_ok=True)
    tb = _tensorboard(out)  # the same scalars as metrics.jsonl, then the scores (a rerun starts over)

    def logged(row: dict) -> None:
        for k, v in row.items():
            if k != "step" and isinstance(v, (int, float)):
                tb.add_scalar(f"train/{k}", v, row["step"])
        if on_log:
            on_log(row)

    try:  # the writer is closed whatever happens
        res = fit(student, split, cfg.train.steps, cfg.loss, cfg.optim, cfg.data.batch_size, cfg.train.seed,
                  teacher=teacher, freeze_encoder=cfg.student.freeze_encoder, log_every=cfg.train.log_every,
                  metrics_path=out / "metrics.jsonl", on_log=logged, grow_at=grow_at, teacher_logits=cache,
                  ctc_weight=cfg.loss.ctc_weight)
        save_asr_model(student, out / "student", extra={"teacher": cfg.teacher.path, "objective": cfg.loss.objective})

        ev = cfg.eval
        s_greedy = evaluate_wer(student, test, "greedy", max_utterances=ev.max_utterances, batch_size=ev.batch_size)
        s_beam = (evaluate_wer(student, test, "beam", beam=ev.beam, max_utterances=ev.beam_utterances,
                               batch_size=ev.batch_size) if ev.beam else None)
        lat = measure_latency({"teacher": teacher, "student": student}, test, ev.latency_utterances)
        summary.update(
            status="ok", ended=now_iso(), teacher=cfg.teacher.path, train_seconds=res["train_seconds"],
            steps=res["steps"], first_losses=res["first"], final_losses=res["final"],
            teacher_logits=str(cache.path) if cache is not None else None,
            self_teacher=res["self_teacher"],
            encoder_layers=student.model.config.encoder_layers,
            student_params=count_params(student), teacher_params=count_params(teacher),
            decoder_layers=student.model.config.decoder_layers,
            wer={"greedy": s_greedy, "beam": s_beam}, teacher_wer=t_eval,
            latency=lat, speedup=lat["teacher"]["latency_s"] / lat["student"]["latency_s"],
            hardware=hardware(), load=run_load(load0), git_commit=git_commit(), config=json.loads(json.dumps(_plain(cfg))),
        )
        runs.write_summary(out, summary)
        for k, v in (("wer_greedy", s_greedy["wer"]), ("wer_beam", (s_beam or {}).get("wer")),
                     ("teacher_wer_greedy", t_eval["greedy"]["wer"]), ("speedup", summary["speedup"])):
            if v is not None:
                tb.add_scalar(f"eval/{k}", v, cfg.train.steps)
    finally:
        tb.close()
    return summary


def _tensorboard(out: Path):
    """A fresh TensorBoard writer in ``<run>/tensorboard/`` (tensorboardX)."""
    import shutil

    from tensorboardX import SummaryWriter

    shutil.rmtree(out / "tensorboard", ignore_errors=True)
    return SummaryWriter(str(out / "tensorboard"))


def _plain(cfg) -> dict:
    return to_dict(cfg)
