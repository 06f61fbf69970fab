"""ASR scoring: WER (greedy and beam decoding), latency, real-time factor, parameters.

**WER** is corpus-level (total word edits / total reference words, a fraction) computed
by ``jiwer`` after :func:`harness.superb.metrics.normalize_text` on references and
hypotheses alike: Unicode NFKC, lower case, every character other than a letter, digit
or apostrophe becomes a space, spaces collapse. (The same normaliser SUPERB's ASR task
uses, so the two tracks' WERs are comparable.)

**Decoding** runs the encoder once, then the decoder token by token with its key/value
cache, from the model's prompt until ``</s>`` or the decoder's position limit. Greedy
takes the arg-max, with the lean decoding loop of :mod:`harness.asr.fastdecode` (the
``transformers`` forward's arithmetic without its per-call overhead, which at these sizes
cost more than a decoder layer; :func:`greedy_decode_hf` is the reference it is tested
against); beam search keeps ``beam`` hypotheses per utterance and returns the
best by log-probability divided by length (tokens, ``</s>`` included).

**Latency** (:func:`measure_latency`): models are timed in one process on the same
utterances, one utterance at a time (batch 1, the on-device case), features + encoder +
greedy decoding, with the models' order alternating per utterance so slow drift of a
shared machine hits both alike. Real-time factor = processing seconds / audio seconds.
"""

from __future__ import annotations

import functools
import inspect
import json
import time
from pathlib import Path

import torch

from harness.asr.data import AsrSplit
from harness.asr.teacher import load_asr_model
from harness.fsio import atomic_write
from harness.superb.metrics import normalize_text
from harness.superb.metrics import wer as corpus_wer


def _encode(asr, features: torch.Tensor) -> torch.Tensor:
    return asr.model.model.encoder(features).last_hidden_state


@functools.lru_cache(maxsize=1)
def _cache_arg() -> str:
    """The forward's cache argument: ``cache`` (transformers >= 5.24), ``past_key_values`` before."""
    from transformers import WhisperForConditionalGeneration

    return "cache" if "cache" in inspect.signature(WhisperForConditionalGeneration.forward).parameters \
        else "past_key_values"


def _step(asr, enc: torch.Tensor, ids: torch.Tensor, cache):
    from transformers.modeling_outputs import BaseModelOutput

    out = asr.model(encoder_outputs=BaseModelOutput(last_hidden_state=enc), decoder_input_ids=ids,
                    use_cache=True, **{_cache_arg(): cache})
    new = getattr(out, "cache", None)
    return torch.log_softmax(out.logits[:, -1].float(), dim=-1), new if new is not None else out.past_key_values


def _max_new(asr) -> int:
    return asr.max_target_positions - len(asr.prompt)


@torch.no_grad()
def greedy_decode(asr, features: torch.Tensor, encoder_states: torch.Tensor | None = None,
                  max_new: int = 0) -> list[list[int]]:
    """Greedy transcripts as token ids (prompt and ``</s>`` removed), with the lean loop
    (:func:`harness.asr.fastdecode.lean_greedy`).

    Args:
        asr: an :class:`~harness.asr.teacher.AsrModel`.
        features: ``(B, n_mels, frames)`` log-mel input.
        encoder_states: ``(B, T, D)`` encoder output, if already computed.
        max_new: token limit (0 = up to the decoder's position limit).
    """
    from harness.asr.fastdecode import lean_greedy

    asr.model.eval()
    enc = encoder_states if encoder_states is not None else _encode(asr, features)
    return lean_greedy(asr, enc, max_new)


@torch.no_grad()
def greedy_decode_hf(asr, features: torch.Tensor, encoder_states: torch.Tensor | None = None,
                     max_new: int = 0) -> list[list[int]]:
    """:func:`greedy_decode` through ``transformers``' forward and cache (the reference)."""
    asr.model.eval()
    enc = encoder_states if encoder_states is not None else _encode(asr, features)
    b = enc.shape[0]
    ids = torch.tensor([asr.prompt] * b, dtype=torch.long, device=enc.device)
    out = [[] for _ in range(b)]
    done = torch.zeros(b, dtype=torch.bool)
    cache = None
    for _ in range(max_new or _max_new(asr)):
        logp, cache = _step(asr, enc, ids, cache)
        nxt = logp.argmax(-1)
        for i in range(b):
            if not done[i]:
                if int(nxt[i]) == asr.eos_id:
                    done[i] = True
                else:
                    out[i].append(int(nxt[i]))
        if bool(done.all()):
            break
        ids = nxt[:, None]
    return out


@torch.no_grad()
def beam_decode(asr, features: torch.Tensor, beam: int = 4, max_new: int = 0) -> list[list[int]]:
    """Beam-search transcripts as token ids (see the module docstring), batched over utterances."""
    asr.model.eval()
    enc = _encode(asr, features)
    b, k = enc.shape[0], beam
    enc = enc.repeat_interleave(k, dim=0)  # (B*K, T, D), beams of utterance i at rows i*K..i*K+K-1
    ids = torch.tensor([asr.prompt] * (b * k), dtype=torch.long, device=enc.device)
    scores = torch.full((b, k), float("-inf"))
    scores[:, 0] = 0.0  # identical beams at the start: keep one
    seqs = [[[] for _ in range(k)] for _ in range(b)]
    finished = torch.zeros(b, k, dtype=torch.bool)
    cache = None
    for _ in range(max_new or _max_new(asr)):
        logp, cache = _step(asr, enc, ids, cache)
        v = logp.shape[-1]
        logp = logp.view(b, k, v)
        # A finished beam may only "continue" with </s> at no cost, so its score is frozen.
        frozen = torch.full((v,), float("-inf"))
        frozen[asr.eos_id] = 0.0
        logp = torch.where(finished[..., None], frozen, logp)
        cand = (scores[..., None] + logp).view(b, k * v)
        top, idx = cand.topk(k, dim=-1)
        src, tok = idx // v, idx % v
        new_seqs, new_fin = [], torch.zeros_like(finished)
        for i in range(b):
            row = []
            for j in range(k):
                s, t = int(src[i, j]), int(tok[i, j])
                was = bool(finished[i, s])
                row.append(seqs[i][s] + ([] if (was or t == asr.eos_id) else [t]))
                new_fin[i, j] = was or t == asr.eos_id
            new_seqs.append(row)
        seqs, finished, scores = new_seqs, new_fin, top
        cache.reorder_cache((src + torch.arange(b)[:, None] * k).view(-1))
        if bool(finished.all()):
            break
        ids = tok.view(-1, 1)
    best = []
    for i in range(b):
        norm = [float(scores[i, j]) / (len(seqs[i][j]) + 1) for j in range(k)]
        best.append(seqs[i][max(range(k), key=lambda j: norm[j])])
    return best


def transcribe(asr, features: torch.Tensor, method: str = "greedy", beam: int = 4) -> list[str]:
    """Decoded transcripts (special tokens removed) of a feature batch."""
    if method == "greedy":
        ids = greedy_decode(asr, features)
    elif method == "beam":
        ids = beam_decode(asr, features, beam=beam)
    else:
        raise ValueError(f"unknown decoding {method!r}; choose greedy or beam")
    return [asr.tokenizer.decode(s, skip_special_tokens=True) for s in ids]


def evaluate_wer(asr, split, method: str = "greedy", beam: int = 4, max_utterances: int = 0,
                 batch_size: int = 16, examples: int = 3) -> dict:
    """Corpus WER of ``asr`` on a split (the first ``max_utterances``; 0 = all).

    Returns:
        ``{"wer", "n" (utterances), "method", "beam", "seconds", "examples": [[ref, hyp], ...]}``.
    """
    n = min(len(split), max_utterances or len(split))
    refs, hyps = [], []
    t0 = time.perf_counter()
    for s in range(0, n, batch_size):
        b = split.batch(asr, list(range(s, min(n, s + batch_size))))
        hyps += transcribe(asr, b.features, method, beam)
        refs += b.texts
    return {
        "wer": corpus_wer(refs, hyps), "n": n, "method": method, "beam": beam if method == "beam" else 1,
        "seconds": time.perf_counter() - t0,
        "examples": [[normalize_text(r), normalize_text(h)] for r, h in zip(refs[:examples], hyps[:examples])],
    }


def teacher_eval(teacher, folder: Path, split, ev) -> dict:
    """The teacher's greedy (and beam) WER on ``split``, memoised in ``<folder>/teacher_eval.json``
    (keyed by split file and utterance counts), so a study scores its teacher once."""
    key = f"{split.manifest.resolve()}|{ev.max_utterances}|{ev.beam}|{ev.beam_utterances}"
    memo_path = Path(folder) / "teacher_eval.json"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, json.JSONDecodeError):
        memo = {}
    if key not in memo:
        res = {"greedy": evaluate_wer(teacher, split, "greedy", max_utterances=ev.max_utterances,
                                      batch_size=ev.batch_size)}
        res["beam"] = (evaluate_wer(teacher, split, "beam", beam=ev.beam, max_utterances=ev.beam_utterances,
                                    batch_size=ev.batch_size) if ev.beam else None)
        memo[key] = res
        atomic_write(memo_path, json.dumps(memo, indent=2))
    return memo[key]


@torch.no_grad()
def measure_latency(models: dict, split, n: int = 24, warmup: int = 2) -> dict:
    """Time greedy transcription of the same utterances by each model (see the module docstring).

    Args:
        models: name -> :class:`~harness.asr.teacher.AsrModel` (same feature extractor).
        split: utterances to time (the first ``n``).
        warmup: untimed utterances first (allocator and thread-pool warm-up).

    Returns:
        name -> ``{"latency_s" (mean seconds per utterance), "rtf", "tokens_per_s", "n",
        "threads"}``.
    """
    from harness.asr.data import featurize

    n = max(1, min(n, len(split)))
    names = list(models)
    secs = {m: 0.0 for m in names}
    toks = {m: 0 for m in names}
    audio = 0.0
    for i in range(-warmup, n):
        j = max(0, i) % len(split)
        wav = split.wav(j)
        order = names if i % 2 == 0 else names[::-1]
        for m in order:
            asr = models[m]
            t0 = time.perf_counter()
            ids = greedy_decode(asr, featurize(asr, [wav]))
            dt = time.perf_counter() - t0
            if i >= 0:
                secs[m] += dt
                toks[m] += len(ids[0]) + 1
        if i >= 0:
            audio += len(wav) / 16000
    return {m: {"latency_s": secs[m] / n, "rtf": secs[m] / audio, "tokens_per_s": toks[m] / secs[m], "n": n,
                "threads": torch.get_num_threads()} for m in names}


def count_params(asr) -> dict:
    """Parameter counts: ``total``, ``encoder``, ``decoder`` (embeddings in the decoder;
    the output projection is tied to them and not counted twice)."""
    m = asr.model.model
    return {"total": sum(p.numel() for p in asr.model.parameters()),
            "encoder": sum(p.numel() for p in m.encoder.parameters()),
            "decoder": sum(p.numel() for p in m.decoder.parameters())}


def evaluate_checkpoint(checkpoint: str | Path, corpus: str | Path, split: str = "asr_test", beam: int = 0,
                        max_utterances: int = 0, teacher: str | Path | None = None, latency: int = 0) -> dict:
    """Score one Whisper checkpoint folder: parameters, WER, optionally latency vs a teacher.

    Args:
        checkpoint: a local ``save_pretrained`` folder (never downloaded).
        corpus: corpus folder holding ``<split>.jsonl``.
        split: the split to decode.
        beam: also decode with this beam width (0 = greedy only).
        max_utterances: decode at most this many utterances (0 = all).
        teacher: another checkpoint folder timed side by side (gives ``speedup``).
        latency: utterances to time (0 = no timing).

    Returns:
        ``{"checkpoint", "params", "greedy"[, "beam"][, "latency"][, "speedup"]}``, with
        the WER entries of :func:`evaluate_wer` and the timings of :func:`measure_latency`
        (``speedup`` = teacher latency / model latency).
    """
    model = load_asr_model(Path(checkpoint))
    data = AsrSplit(Path(corpus) / f"{split}.jsonl", model)
    res = {"checkpoint": str(checkpoint), "params": count_params(model),
           "greedy": evaluate_wer(model, data, "greedy", max_utterances=max_utterances)}
    if beam:
        res["beam"] = evaluate_wer(model, data, "beam", beam=beam, max_utterances=max_utterances)
    models = {"model": model}
    if teacher:
        models = {"teacher": load_asr_model(Path(teacher)), "model": model}
    if latency:
        res["latency"] = measure_latency(models, data, latency)
        if teacher:
            res["speedup"] = res["latency"]["teacher"]["latency_s"] / res["latency"]["model"]["latency_s"]
    return res
