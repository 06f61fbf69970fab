"""The live teacher's targets, computed exactly as the feature cache stores them.

Cached and live distillation train on one target semantics (docs/architecture.md,
"Targets"): the teacher and its front-end see the **whole utterance**, and the training
crop is taken afterwards, in frames. :func:`utterance_features` is the cache's computation
(:mod:`harness.teachers.cache`) for a few waveforms in memory: the same plan (an
utterance over ``max_seconds`` run in pieces whose frames tile its frames, one too short
for a frame zero-padded to one), the same batching (length-sorted; for a teacher that does
not declare ``padding_invariant``, batches of equal-width pieces only, so no padding) and
the same forward (:func:`harness.teachers.cache.forward_arrays`), without the fp16 cast.
:func:`harness.data.loader.crop_stack` then crops them with the draws
:class:`harness.data.loader.CachedBatches` makes, so step ``k`` of a live run and of a
cached run train on the same frames of the same utterances against the same targets, up
to the cache's fp16 rounding (tests/teachers/test_features.py).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from harness.data.audio import SAMPLE_RATE
from harness.teachers.cache import MAX_SECONDS, _batches, _make_plan, forward_arrays


def utterance_features(teacher, wavs: Sequence[torch.Tensor | np.ndarray], layers: Sequence[int],
                       frontend: bool = True, device: torch.device | str | None = None,
                       max_seconds: float = MAX_SECONDS, batch_size: int = 8,
                       max_batch_seconds: float = 320.0) -> list[dict[str, torch.Tensor]]:
    """The cache's arrays for each waveform, as float32 tensors on ``device``.

    Args:
        teacher: a loaded teacher (``hidden_states``, ``frontend``, ``frame_lengths``).
        wavs: whole utterances, 1-D float32 samples at 16 kHz.
        layers: hidden-state indices (``layer_<k>`` arrays).
        frontend: also the front-end output (``"frontend"``).
        device: where the teacher runs (default: the device of its parameters, or CPU).
        max_seconds, batch_size, max_batch_seconds: as in
            :func:`harness.teachers.cache.ensure_cache` (the cache's defaults).

    Returns:
        One dict per waveform, in input order: ``{"frontend": (T_f, C), "layer_<k>": (T,
        D)}``, the frame counts the cache stores for an utterance of that length.
    """
    if device is None:
        p = next(iter(teacher.parameters()), None) if isinstance(teacher, torch.nn.Module) else None
        device = p.device if p is not None else torch.device("cpu")
    samples = [int(len(w)) for w in wavs]
    records = [{"id": str(i), "num_samples": n} for i, n in enumerate(samples)]
    layers = list(layers)
    plan = _make_plan(teacher, records, layers, frontend, shard_size=max(1, len(records)),
                      max_samples=int(max_seconds * SAMPLE_RATE))
    utts = plan["utts"]  # storage order: longest first
    order = [int(u[0]) for u in utts]
    stored = [samples[i] for i in order]
    out: list[dict[str, torch.Tensor]] = [{} for _ in wavs]
    for name in plan["names"]:
        n_i = 4 if name == "frontend" else 2
        for j, u in enumerate(utts):
            out[order[j]][name] = torch.zeros(u[n_i], plan["dims"][name], device=device)
    for batch in _batches(plan, 0, stored, batch_size, int(max_batch_seconds * SAMPLE_RATE)):
        widths = [max(piece[2], piece[1] - piece[0]) for _, piece, _ in batch]
        x = torch.zeros(len(batch), max(widths), dtype=torch.float32)
        for b, (j, (s0, s1, _, _, _), _) in enumerate(batch):
            w = wavs[order[j]]
            w = w if isinstance(w, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32))
            x[b, : s1 - s0] = w[s0:s1]
        arrays = forward_arrays(teacher, x.to(device), torch.tensor(widths, dtype=torch.int64).to(device),
                                layers, frontend)
        for name, arr in arrays.items():
            n_i = 4 if name == "frontend" else 2
            for b, (j, (_, _, _, lo, frames), whole) in enumerate(batch):
                n = utts[j][n_i] if whole else frames
                out[order[j]][name][lo: lo + n] = arr[b, :n].float()
    return out


def frontend_crops(frontend: torch.nn.Module, wavs: Sequence[torch.Tensor], offsets: Sequence[int],
                   lengths: Sequence[int], device: torch.device | str) -> torch.Tensor:
    """A (trainable) front-end on each whole waveform, cropped to ``lengths[b]`` frames from
    ``offsets[b]`` and zero-padded: ``(B, max(lengths), C)``, differentiable. One utterance
    per forward, so a padding-dependent front-end sees what the teacher's saw."""
    crops = []
    for w, o, n in zip(wavs, offsets, lengths):
        w = w.to(device, torch.float32)
        feats, _ = frontend(w[None], torch.tensor([w.shape[0]], dtype=torch.int64, device=device))
        crops.append(feats[0, o:o + n])
    return torch.nn.utils.rnn.pad_sequence(crops, batch_first=True)
