"""Distil-Whisper-style students: the teacher's encoder, a decoder cut to ``n`` layers.

The student is built from the teacher's weights: every tensor outside the decoder layers
(convolutions, embeddings, encoder, final layer norms) is copied, and decoder layer ``i``
of the student is a copy of teacher decoder layer ``spaced_layers(T, n)[i]``: maximally
spaced, always including the first and the last (0 and T-1 for n = 2, as in
Distil-Whisper). ``encoder_layers`` can cut the encoder the same way (0 keeps it whole).

Autoregressive decoding runs the decoder once per token, so decoder depth dominates
inference latency; the encoder runs once per utterance.

Growth (:func:`grow_decoder`) applies a stacking plan from ``harness.stacking.plan``
(a list, per new layer, of the old layer it copies; -1 = fresh) to the decoder.
"""

from __future__ import annotations

import copy
import re

import torch

from harness.asr.teacher import AsrModel


def spaced_layers(total: int, keep: int) -> list[int]:
    """``keep`` maximally spaced indices out of ``range(total)``, first and last included.

    ``spaced_layers(4, 2) == [0, 3]``, ``spaced_layers(6, 3) == [0, 2, 5]``,
    ``spaced_layers(T, 1) == [T - 1]`` (the top layer, which feeds the output head).

    Raises:
        ValueError: ``keep`` not in 1..total.
    """
    if not 1 <= keep <= total:
        raise ValueError(f"cannot keep {keep} of {total} layers (need 1..{total})")
    if keep == 1:
        return [total - 1]
    return [round(i * (total - 1) / (keep - 1)) for i in range(keep)]


def _remap(state: dict, prefix: str, src: list[int]) -> dict:
    """State dict with ``<prefix>.<k>.`` entries taken from ``<prefix>.<src[k]>.``."""
    pat = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.(.*)$")
    out = {k: v for k, v in state.items() if not pat.match(k)}
    for new, old in enumerate(src):
        for k, v in state.items():
            m = pat.match(k)
            if m and int(m.group(1)) == old:
                out[f"{prefix}.{new}.{m.group(2)}"] = v.clone()
    return out


def shrink(teacher: AsrModel, decoder_layers: int = 2, encoder_layers: int = 0, d_model: int = 0,
           ffn_dim: int = 0, calib_batches=None) -> AsrModel:
    """Build a student from a teacher (see the module docstring).

    Args:
        teacher: the loaded teacher.
        decoder_layers: student decoder depth ``n``.
        encoder_layers: student encoder depth (0 = the teacher's, copied whole).
        d_model: student width (0 = the teacher's). A narrower student keeps the teacher's
            most active channels (:mod:`harness.asr.narrow`), measured on ``calib_batches``.
        ffn_dim: student feed-forward width (0 = the teacher's, scaled like ``d_model``).
        calib_batches: training batches for the channel importances (needed when narrowing).

    Returns:
        A new :class:`AsrModel` sharing the teacher's tokenizer, features and prompt.
    """
    from transformers import WhisperForConditionalGeneration

    tcfg = teacher.model.config
    enc_src = spaced_layers(tcfg.encoder_layers, encoder_layers or tcfg.encoder_layers)
    dec_src = spaced_layers(tcfg.decoder_layers, decoder_layers)
    cfg = copy.deepcopy(tcfg)
    cfg.decoder_layers = len(dec_src)
    cfg.encoder_layers = len(enc_src)
    student = WhisperForConditionalGeneration(cfg)
    state = teacher.model.state_dict()
    state = _remap(state, "model.decoder.layers", dec_src)
    state = _remap(state, "model.encoder.layers", enc_src)
    _load(student, state, "student/teacher")
    name = f"student-dec{len(dec_src)}-enc{len(enc_src)}"
    if d_model and d_model != tcfg.d_model:
        student = _narrowed(teacher, student, enc_src, dec_src, d_model, ffn_dim, calib_batches)
        name += f"-d{d_model}"
    student.to(next(teacher.model.parameters()).device)
    return AsrModel(student, teacher.tokenizer, teacher.features, list(teacher.prompt), teacher.eos_id, name=name)


def _narrowed(teacher: AsrModel, cut, enc_src: list[int], dec_src: list[int], d_model: int, ffn_dim: int,
              calib_batches):
    """The depth-cut student ``cut`` narrowed to ``d_model`` (:mod:`harness.asr.narrow`)."""
    from transformers import WhisperForConditionalGeneration

    from harness.asr.narrow import calibrate, choose, narrow_state, rename_stats

    tcfg = teacher.model.config
    if not calib_batches:
        raise ValueError("a narrower student needs calibration batches (training utterances)")
    if not 0 < d_model < tcfg.d_model:
        raise ValueError(f"student d_model {d_model} must be between 1 and the teacher's {tcfg.d_model}")
    ffn = ffn_dim or max(1, round(tcfg.encoder_ffn_dim * d_model / tcfg.d_model))
    if ffn > min(tcfg.encoder_ffn_dim, tcfg.decoder_ffn_dim):
        raise ValueError(f"student ffn_dim {ffn} exceeds the teacher's {tcfg.encoder_ffn_dim}")
    stats = rename_stats(calibrate(teacher, calib_batches), enc_src, dec_src)
    idx = choose(cut, stats, d_model, ffn)
    cfg = copy.deepcopy(cut.config)
    cfg.d_model, cfg.encoder_ffn_dim, cfg.decoder_ffn_dim = d_model, ffn, ffn
    model = WhisperForConditionalGeneration(cfg)
    _load(model, narrow_state(cut.state_dict(), idx), "narrowed student")
    return model


def _load(model, state: dict, what: str) -> None:
    """``load_state_dict`` that accepts only ``proj_out`` missing (it is tied to the token
    embedding, so it may be reported missing); anything else missing or unexpected raises."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    bad = [k for k in missing if not k.startswith("proj_out")] + list(unexpected)
    if bad:
        raise RuntimeError(f"{what} state mismatch: {bad[:5]}")


def grow_decoder(asr: AsrModel, plan: list[int], seed: int = 0) -> None:
    """Grow (or rebuild) the decoder in place from a stacking plan.

    Args:
        asr: the student; its decoder layers are replaced.
        plan: for each new layer bottom to top, the old layer index it copies, or -1 for a
            freshly initialised layer (``harness.stacking.plan`` output).
        seed: seeds fresh layers.

    The optimiser must be rebuilt (or its state remapped) by the caller afterwards.
    """
    from transformers.models.whisper.modeling_whisper import WhisperDecoderLayer

    dec = asr.model.model.decoder
    old = list(dec.layers)
    new = []
    torch.manual_seed(seed)
    for i, src in enumerate(plan):
        if src >= 0:
            layer = copy.deepcopy(old[src])
        else:
            layer = WhisperDecoderLayer(asr.model.config, layer_idx=i)
            layer.apply(asr.model._init_weights)
            layer.to(next(dec.parameters()).device)
        new.append(layer)
    for i, layer in enumerate(new):  # the KV cache is indexed by layer_idx
        layer.self_attn.layer_idx = i
        layer.encoder_attn.layer_idx = i
    dec.layers = torch.nn.ModuleList(new)
    asr.model.config.decoder_layers = len(new)
