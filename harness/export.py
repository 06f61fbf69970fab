"""Export a student to s3prl's ``distiller_local`` checkpoint format.

s3prl loads ``{"Config": {"distiller": <DistillerConfig dict>}, "Distiller": <state_dict
of DistillerModel>}`` (``s3prl/upstream/distiller/builder.py``). The harness student
mirrors ``DistillerModel`` (:mod:`harness.student`), so the export is a key rename:

==================================  ==================================================
harness student                     s3prl DistillerModel
==================================  ==================================================
``frontend.convs.{i}``              ``feature_extractor.conv_layers.{i}.0``
``frontend.norms.0`` (group norm)   ``feature_extractor.conv_layers.0.2``
``frontend.norms.{i}`` (layer norm) ``feature_extractor.conv_layers.{i}.2.1``
``post_extract_proj``               ``post_extract_proj``
``pos_conv.weight_g/_v``, ``bias``  ``encoder.pos_conv.0.weight_g/_v``, ``bias``
``encoder_layer_norm``              ``encoder.layer_norm``
``layers.{i}.*``                    ``encoder.layers.{i}.*`` (same fairseq names)
``heads.{0,2}``                     ``output_layer.{0,2}`` (prediction heads)
==================================  ==================================================

What s3prl's format cannot express, and what the export does about it:

- L2L students: the per-layer projections to the teacher width are training-only
  heads; s3prl has no place for them, so they are not exported. The model is written
  with ``task_emb_type: self-hidden``, the only DistillerModel mode without a
  prediction head, and s3prl then returns the ``L + 1`` states *twice*
  (``[feat_final, layer 1..L]`` as hidden states, then the same again as
  "predictions"): ``2L + 2`` hidden states, the first ``L + 1`` being the student's.
- Hidden state 0: s3prl's is ``feat_final`` = the projected front-end features *before*
  the positional conv (padded frames zeroed); the student's state 0 is the encoder input
  (after the positional conv and, post-LN, the encoder LayerNorm). States 1..L agree.
- A student without a positional conv is exported with a 1-frame conv whose weight
  gain ``weight_g`` is 0 (it adds GELU(0) = 0: exact).
- Not exportable (an :class:`ExportError` says which): a feature LayerNorm
  (``feature_norm: true``), a non-``conv`` front-end (e.g. ``fbank``; DistillerModel's
  front-end is the wav2vec 2.0 conv stack), a conv front-end with biases, waveform
  normalisation or no norm at all, a front-end width equal to the student width
  (DistillerModel then has no projection), and a layer still being blended in (mask < 1).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from harness.data.audio import SAMPLE_RATE
from harness import safeload
from harness.errors import HarnessError

FORMATS = ("s3prl",)


class ExportError(ValueError, HarnessError):
    """The student has a part s3prl's DistillerModel cannot express (one line: which)."""


def _conv_frontend_config(student: Any) -> tuple[dict, dict[str, torch.Tensor]]:
    """DistillerConfig front-end fields and ``feature_extractor.*`` weights."""
    fe = student.frontend
    if fe is None:
        raise ExportError("the student has no front-end; attach the teacher's (student.frontend = teacher.frontend)")
    spec = dict(getattr(fe, "spec", {}) or {})
    if spec.get("type") != "conv":
        raise ExportError(
            f"front-end type {spec.get('type')!r} cannot be exported: s3prl's DistillerModel only has the "
            "wav2vec 2.0 conv front-end (type 'conv')"
        )
    if spec.get("conv_bias"):
        raise ExportError("conv front-end with biases cannot be exported (DistillerModel uses conv_bias=False)")
    if spec.get("normalize_wav"):
        raise ExportError("conv front-end normalising the waveform cannot be exported (DistillerModel does not)")
    mode = spec.get("mode", "group_norm")
    if mode not in ("group_norm", "layer_norm"):
        raise ExportError(f"conv front-end mode {mode!r} cannot be exported (s3prl has group_norm='default' and layer_norm)")
    layers = [tuple(int(v) for v in layer) for layer in spec["layers"]]
    state = fe.state_dict()
    out: dict[str, torch.Tensor] = {}
    for i in range(len(layers)):
        out[f"feature_extractor.conv_layers.{i}.0.weight"] = state[f"convs.{i}.weight"]
        norm = "2" if mode == "group_norm" else "2.1"
        if mode == "layer_norm" or i == 0:
            out[f"feature_extractor.conv_layers.{i}.{norm}.weight"] = state[f"norms.{i}.weight"]
            out[f"feature_extractor.conv_layers.{i}.{norm}.bias"] = state[f"norms.{i}.bias"]
    cfg = {
        "extractor_mode": "default" if mode == "group_norm" else "layer_norm",
        "extractor_conv_feature_layers": "[" + ", ".join(f"({c}, {k}, {s})" for c, k, s in layers) + "]",
        "extractor_dropout": 0.0,
        # 0 = s3prl runs the front-end under no_grad, as the harness does when it is frozen
        "feature_grad_mult": 1.0 if student.shape.frontend_trainable else 0.0,
    }
    return cfg, out


def s3prl_checkpoint(student: Any) -> dict:
    """The ``{"Config": {"distiller": ...}, "Distiller": state_dict}`` dict for a student.

    Args:
        student: a :class:`harness.student.Student` with its front-end attached.

    Raises:
        ExportError: a part s3prl cannot express (see the module docstring).
    """
    shape = student.shape
    if shape.feature_norm:
        raise ExportError("the student has a feature LayerNorm (student.feature_norm: true), which s3prl's "
                          "DistillerModel lacks; train with feature_norm: false to export")
    if shape.frontend_dim == shape.width:
        raise ExportError(f"front-end width = student width ({shape.width}): DistillerModel then drops "
                          "post_extract_proj, so the student's projection cannot be expressed")
    blended = [i for i, layer in enumerate(student.layers) if layer.mask_value != 1.0]
    if blended:
        raise ExportError(f"layers {blended} are still being blended in (mask < 1); finish the ramp first")
    fe_cfg, state = _conv_frontend_config(student)
    sd = {k: v for k, v in student.state_dict().items() if not k.startswith("frontend.")}
    n_layers = len(student.layers)
    cfg: dict[str, Any] = {
        **fe_cfg,
        "conv_pos": shape.conv_pos or 1,
        "conv_pos_groups": shape.conv_pos_groups if shape.conv_pos else 1,
        "encoder_layers": n_layers,
        "encoder_embed_dim": shape.width,
        "encoder_ffn_embed_dim": shape.ffn,
        "encoder_attention_heads": shape.heads,
        "activation_fn": "gelu",
        "layer_norm_first": bool(shape.layer_norm_first),
        "attention_type": "original",
        "dropout": shape.dropout,
        "attention_dropout": shape.dropout,
        "activation_dropout": shape.dropout,
        "encoder_layerdrop": 0.0,
        "init_teacher_conv_layers": False,
        "init_teacher_encoder_layers": False,
    }
    if shape.target_mode == "pred_heads":
        n = len(student.targets)
        cfg.update({"task_emb_type": "expand-last", "out_layer_type": "expand-last", "n_tasks": n,
                    "pred_layer_id": [int(k) for k in student.targets], "final_dim": shape.teacher_width,
                    "out_layer_inter_dim": shape.width, "loss_type": "l1", "cosine_loss": 1.0})
        for k, v in sd.items():
            if k.startswith("heads."):
                state["output_layer." + k[len("heads."):]] = v
    else:
        cfg.update({"task_emb_type": "self-hidden", "out_layer_type": "self-hidden", "n_tasks": n_layers + 1,
                    "pred_layer_id": [0] + [int(k) for k in student.targets], "final_dim": shape.width,
                    "loss_type": "l2"})
    state["post_extract_proj.weight"] = sd["post_extract_proj.weight"]
    state["post_extract_proj.bias"] = sd["post_extract_proj.bias"]
    if shape.conv_pos:
        for name in ("weight_g", "weight_v", "bias"):
            state[f"encoder.pos_conv.0.{name}"] = sd[f"pos_conv.{name}"]
    else:
        w = shape.width
        state["encoder.pos_conv.0.weight_g"] = torch.zeros(1, 1, 1)
        state["encoder.pos_conv.0.weight_v"] = torch.ones(w, w, 1)  # any nonzero direction
        state["encoder.pos_conv.0.bias"] = torch.zeros(w)
    state["encoder.layer_norm.weight"] = sd["encoder_layer_norm.weight"]
    state["encoder.layer_norm.bias"] = sd["encoder_layer_norm.bias"]
    for k, v in sd.items():
        if k.startswith("layers.") and not k.endswith(".mask"):
            state["encoder." + k] = v
    state = {k: v.detach().to("cpu", torch.float32).clone() for k, v in state.items()}
    return {
        "Config": {"distiller": cfg},
        "Distiller": state,
        "harness": {"targets": list(student.targets), "target_mode": shape.target_mode,
                    "teacher_width": shape.teacher_width, "teacher_layers": shape.teacher_layers},
    }


def export_s3prl(student: Any, path: str | Path) -> Path:
    """Write ``student`` as an s3prl ``distiller_local`` checkpoint (atomically).

    Returns:
        The path written. Raises :class:`ExportError` for an inexpressible student.
    """
    path = Path(path)
    blob = s3prl_checkpoint(student)
    return safeload.save(blob, path)  # plain tensors and primitives: s3prl's torch.load reads it weights_only


def load_s3prl_upstream(path: str | Path):
    """Load an exported checkpoint through ``s3prl.nn.S3PRLUpstream("distiller_local")``
    (in eval mode), applying the torchaudio shim first."""
    import contextlib
    import io
    import warnings

    from harness.compat import apply_s3prl_shim

    apply_s3prl_shim()  # torchaudio 2.9 removed two APIs s3prl 0.4.18 touches on import
    # s3prl prints its build steps (and "ESPnet is not installed" on import), and its
    # pos conv uses the deprecated torch.nn.utils.weight_norm: none of it is ours to act on
    noise = io.StringIO()
    with contextlib.redirect_stdout(noise), contextlib.redirect_stderr(noise), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        from s3prl.nn import S3PRLUpstream

        model = S3PRLUpstream("distiller_local", path_or_url=str(path))
    return model.eval()


@torch.no_grad()
def verify_s3prl_export(student: Any, path: str | Path, seconds: float = 1.0, seed: int = 0) -> float:
    """Run the student and the exported s3prl model on the same random waveforms.

    Returns:
        The largest absolute difference over hidden states 1..L (valid frames).
    """
    upstream = load_s3prl_upstream(path)
    g = torch.Generator().manual_seed(seed)
    n = int(seconds * SAMPLE_RATE)
    wavs = torch.randn(2, n, generator=g) * 0.1
    lengths = torch.tensor([n, n - 1600])
    wavs[1, lengths[1]:] = 0
    was_training = student.training
    student.eval()
    ours, frames = student.hidden_states(wavs, lengths)
    student.train(was_training)
    theirs, _ = upstream(wavs, lengths)
    worst = 0.0
    for k in range(1, len(ours)):
        for b in range(2):
            t = int(frames[b])
            worst = max(worst, float((ours[k][b, :t] - theirs[k][b, :t]).abs().max()))
    return worst


def export_run(run_dir: str | Path, out: str | Path, fmt: str = "s3prl", verify: bool = True,
               frontend_builder: Optional[Callable[[dict], Any]] = None) -> dict:
    """Export ``<run_dir>/student.ckpt``.

    Args:
        run_dir: a finished run folder (or a ``student.ckpt`` path).
        out: output file.
        fmt: ``s3prl``.
        verify: reload the file through s3prl and compare hidden states.
        frontend_builder: ``spec -> front-end`` for :func:`harness.student.load_student`.

    Returns:
        ``{"out", "format", "layers", "max_abs_diff"}`` (``max_abs_diff`` None unverified).

    Raises:
        FileNotFoundError: no student checkpoint. ExportError: inexpressible student.
        ValueError: a corrupt, foreign or pickle-needing checkpoint (one line; see
            :func:`harness.student.load_student`).
    """
    from harness.student import load_student

    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    run_dir = Path(run_dir)
    ckpt = run_dir if run_dir.is_file() else run_dir / "student.ckpt"
    if not ckpt.is_file():
        raise FileNotFoundError(f"{ckpt}: no student checkpoint (is {run_dir} a finished run folder?)")
    student = load_student(ckpt, frontend_builder=frontend_builder)
    path = export_s3prl(student, out)
    diff: Optional[float] = verify_s3prl_export(student, path) if verify else None
    return {"out": str(path), "format": fmt, "layers": len(student.layers), "max_abs_diff": diff}


def describe(result: dict) -> str:
    """One line for the CLI."""
    return json.dumps(result)
