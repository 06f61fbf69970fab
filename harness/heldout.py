"""Held-out quality of a distillation run (ARCHITECTURE.md, "Held-out quality").

A fixed held-out set: the first ``data.heldout`` utterances of the distillation split
(after ``data.max_utterances``' cut), the same for every run of a profile and never
trained on (:func:`split_ids`). :func:`evaluate` runs the student on them without dropout
and measures, deterministically (no sampling anywhere, so two evaluations of the same
student agree to the last bit on the same machine):

- ``output_loss``: MSE of the student's top-layer projection against the teacher's top
  layer, over every valid frame. It means the same at every depth (every variant's top
  layer matches the teacher's top layer, whatever the layer map) and for every training
  criterion (always MSE, the paper's loss), so it is the metric that runs compare on;
- ``layer_loss``: each student layer's projection against its matched teacher layer;
- ``probe``: a closed-form ridge frame-phone probe per student hidden state
  (:func:`harness.analysis.train_probe`, ``ridge``), fitted on the even-numbered held-out
  utterances and scored on the odd-numbered ones; ``probe_best`` is the best layer's
  accuracy.

Inputs are the teacher's front-end output and states of each whole held-out utterance,
cut to its first frames and held in memory as float16: read from the teacher-feature cache
when the run uses it, else computed once by the live teacher at the start of the run, the
same computation (:mod:`harness.teachers.features`), so cached and live runs are measured
on the same targets.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from harness.analysis import frame_phone_labels, train_probe
from harness.config import ConfigError
from harness.data.audio import load_audio
from harness.data.manifest import audio_path, read_manifest
from harness.losses import mse

BATCH = 16  # utterances per evaluation forward pass


def split_ids(ids: list[str], heldout: int) -> tuple[list[str], list[str]]:
    """``(held-out ids, training ids)``: the first ``heldout`` ids and the rest.

    Raises:
        ConfigError: fewer than ``heldout + 1`` ids (nothing left to train on).
    """
    if heldout and heldout >= len(ids):
        raise ConfigError(f"data.heldout: {heldout} held-out utterances leave none of the split's "
                          f"{len(ids)} to train on; lower data.heldout")
    return ids[:heldout], ids[heldout:]


@dataclass
class HeldoutSet:
    """The held-out utterances, batched once, with their per-frame phone labels."""

    ids: list[str]
    batches: list[dict]  # cached: feats/frame_lengths/targets (float16); live: wavs/lengths
    labels: list[np.ndarray]  # per utterance, in batch order: phone id per frame (-1 = none)
    n_classes: int  # 0: no phone labels (no probe)
    frames: int


def _phone_index(records: list[dict]) -> dict[str, int]:
    phones = sorted({p[0] for r in records for p in (r.get("phones") or [])})
    return {p: i for i, p in enumerate(phones)}


def build(ids: list[str], manifest: Path, teacher, cache=None, max_seconds: Optional[float] = None) -> HeldoutSet:
    """Batch the held-out utterances ``ids`` (from ``cache`` when given, else computed by the
    live teacher), the teacher having seen each whole utterance, cut to its first
    ``max_seconds`` of frames (``data.heldout_seconds``, by default the training crop
    length: a fixed offset, never a random one; ``None`` = whole utterances).

    Without ``phones`` on every held-out record (an imported corpus without alignments)
    the set has no probe labels and :func:`evaluate` measures the losses only.

    Raises:
        ConfigError: a held-out utterance without a cached entry.
    """
    by_id = {r["id"]: r for r in read_manifest(manifest)}
    records = [by_id[i] for i in ids]
    index = _phone_index(records) if all(r.get("phones") for r in records) else {}
    hop = int(round(16000 / teacher.frame_rate))
    max_frames = int(max_seconds * teacher.frame_rate) if max_seconds else None
    order = sorted(range(len(records)), key=lambda i: records[i]["num_samples"])  # less padding
    batches, labels, frames = [], [], 0
    for s in range(0, len(order), BATCH):
        recs = [records[i] for i in order[s: s + BATCH]]
        batch = _cached_batch(recs, cache, teacher.num_layers, max_frames) if cache is not None \
            else _live_batch(recs, manifest, teacher, max_frames)
        n = batch["frame_lengths"].tolist()
        for r, k in zip(recs, n):
            labels.append(frame_phone_labels(r, int(k), index, hop=hop))
            frames += int(k)
        batches.append(batch)
    return HeldoutSet([r["id"] for r in (records[i] for i in order)], batches, labels, len(index), frames)


def _cached_batch(recs: list[dict], cache, num_layers: int, max_frames: Optional[int]) -> dict:
    try:
        arrays = [cache.get(r["id"]) for r in recs]
    except KeyError as err:
        raise ConfigError(f"data.heldout: {err.args[0]}; rebuild the cache with the held-out utterances") from None
    return _stack_first(arrays, num_layers, max_frames)


def _stack_first(arrays: list[dict], num_layers: int, max_frames: Optional[int]) -> dict:
    """The first ``max_frames`` frames of each utterance's arrays, zero-padded, as float16."""
    keys = ["frontend"] + [f"layer_{j}" for j in range(1, num_layers + 1) if f"layer_{j}" in arrays[0]]
    lengths = [min([a[k].shape[0] for k in keys] + ([max_frames] if max_frames else [])) for a in arrays]
    t = max(lengths)

    def stack(key: str) -> torch.Tensor:
        out = np.zeros((len(arrays), t, arrays[0][key].shape[1]), dtype=np.float16)
        for b, a in enumerate(arrays):
            out[b, : lengths[b]] = np.asarray(a[key][: lengths[b]], dtype=np.float16)
        return torch.from_numpy(out)

    return {"feats": stack("frontend"), "frame_lengths": torch.tensor(lengths, dtype=torch.int64),
            "targets": {int(k.split("_")[1]): stack(k) for k in keys[1:]}}


def _live_batch(recs: list[dict], manifest: Path, teacher, max_frames: Optional[int]) -> dict:
    """What :func:`_cached_batch` reads from the cache, computed by the live teacher now
    (once: the held-out set is fixed): the teacher on each whole utterance, then the first
    ``max_frames`` frames, stored as float16 like the cache. The whole waveforms are kept
    for a student with a trainable front-end (:func:`_forward`)."""
    from harness.teachers.features import utterance_features

    wavs = [torch.from_numpy(load_audio(audio_path(r, manifest.parent), expected_len=r["num_samples"]))
            for r in recs]
    layers = list(range(1, teacher.num_layers + 1))
    arrays = [{k: v.cpu().numpy() for k, v in a.items()} for a in utterance_features(teacher, wavs, layers)]
    batch = _stack_first(arrays, teacher.num_layers, max_frames)
    batch["wavs"] = wavs
    return batch


def output_index(targets: list[int]) -> int:
    """The projection compared with the teacher's top layer: the last one matching the
    highest teacher layer (the student's top layer under L2L)."""
    top = max(targets)
    return max(i for i, j in enumerate(targets) if j == top)


@torch.no_grad()
def evaluate(student, teacher, hs: HeldoutSet, device: torch.device, probe: bool = True) -> dict:
    """The held-out metrics of ``student`` (left in the train/eval mode it was in).

    Returns:
        ``{"output_loss", "teacher_layer", "layer_loss": [{"student_layer", "teacher_layer",
        "loss"}], "probe": {"layer_k": acc}, "probe_best", "probe_best_layer", "frames",
        "utterances", "criterion": "mse", "seconds"}`` (the probe keys only with ``probe``).
    """
    t0 = time.perf_counter()
    probe = probe and hs.n_classes > 1
    was_training = student.training
    student.eval()
    targets = list(student.targets)
    out_i = output_index(targets)
    sums = np.zeros(len(targets) + 1)
    count = 0
    states_by_layer: list[list[np.ndarray]] = []
    try:
        for batch in hs.batches:
            states, flen, tstates = _forward(student, batch, device)
            t = min(states[-1].shape[1], next(iter(tstates.values())).shape[1])
            mask = torch.arange(t, device=device)[None, :] < flen.to(device)[:, None]
            preds = student.project([x[:, :t] for x in states])
            n = float(mask.sum())
            for i, j in enumerate(targets):
                sums[i] += float(mse(preds[i], tstates[j][:, :t].to(preds[i].dtype), mask)) * n
            top = max(tstates)
            sums[-1] += float(mse(preds[out_i], tstates[top][:, :t].to(preds[out_i].dtype), mask)) * n
            count += n
            if probe:
                if not states_by_layer:
                    states_by_layer = [[] for _ in states]
                for k, x in enumerate(states):
                    for b in range(x.shape[0]):
                        states_by_layer[k].append(x[b, : int(flen[b])].float().cpu().numpy())
    finally:
        student.train(was_training)
    top_layer = max(tstates)
    res: dict[str, Any] = {
        "utterances": len(hs.ids), "frames": int(count), "criterion": "mse", "teacher_layer": int(top_layer),
        "output_loss": float(sums[-1] / max(count, 1)),
        "layer_loss": [{"student_layer": i + 1, "teacher_layer": int(j), "loss": float(sums[i] / max(count, 1))}
                       for i, j in enumerate(targets)],
    }
    if probe:
        res.update(phone_probe(states_by_layer, hs))
    res["seconds"] = time.perf_counter() - t0
    return res


def _forward(student, batch: dict, device: torch.device):
    """Student states, valid frames, and the teacher's states ``{j: (B, T, D)}``."""
    flen = batch["frame_lengths"]
    if "wavs" in batch and student.shape.frontend_trainable and student.frontend is not None:
        from harness.teachers.features import frontend_crops

        feats = frontend_crops(student.frontend, batch["wavs"], [0] * len(flen), flen.tolist(), device)
    else:
        feats = batch["feats"].to(device, torch.float32)
    states = student.forward_features(feats, flen)
    return states, flen, {j: x.to(device) for j, x in batch["targets"].items()}


def phone_probe(states_by_layer: list[list[np.ndarray]], hs: HeldoutSet) -> dict:
    """Ridge frame-phone probe per student hidden state: fit on the even-numbered held-out
    utterances (in batch order), score on the odd-numbered ones; labelled frames only."""
    fit = [u for u in range(len(hs.labels)) if u % 2 == 0]
    test = [u for u in range(len(hs.labels)) if u % 2 == 1]

    def frames(layer: list[np.ndarray], utts: list[int]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for u in utts:
            lab = hs.labels[u]
            n = min(len(lab), len(layer[u]))
            keep = np.flatnonzero(lab[:n] >= 0)
            xs.append(layer[u][keep])
            ys.append(lab[keep])
        return np.concatenate(xs), np.concatenate(ys)

    probe = {}
    for k, layer in enumerate(states_by_layer):
        xtr, ytr = frames(layer, fit)
        xte, yte = frames(layer, test)
        probe[f"layer_{k}"] = train_probe(xtr, ytr, xte, yte, hs.n_classes, seed=0, method="ridge")
    best = max(probe, key=lambda name: probe[name])
    return {"probe": probe, "probe_best": probe[best], "probe_best_layer": best,
            "probe_frames": {"fit": int(len(ytr)), "test": int(len(yte))}}


def summary_block(final: Optional[dict], curve: list[dict], eval_seconds: float) -> Optional[dict]:
    """``summary.json``'s ``heldout`` block: the final evaluation, its curve, the time spent."""
    if final is None:
        return None
    return {**{k: v for k, v in final.items() if k != "seconds"}, "eval_seconds": eval_seconds, "curve": curve}
