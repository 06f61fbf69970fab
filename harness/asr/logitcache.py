"""The teacher's logits on the training transcripts, computed once per study.

``kd`` and ``askd`` students learn from the frozen teacher's next-token distributions,
teacher-forced on the reference transcripts. With the teacher in eval mode and no
augmentation those are a fixed function of the utterance, so recomputing them at every
step (the teacher's encoder and decoder: about half of a narrow student's step on the
reference machine) buys nothing. :func:`ensure_logit_cache` computes them for the whole
training split once and stores them in ``teacher_logits-<hash>.npz`` (the hash of its
fingerprint) (plain arrays, loaded with
``allow_pickle=False``: nothing in it can run code):

* ``ids`` (utterance ids), ``offsets`` (row ``i``'s positions are
  ``logits[offsets[i]:offsets[i + 1]]``: the prompt and the transcript, as
  :func:`harness.asr.data.make_targets` lays them out), ``logits`` (float32);
* ``meta``: a JSON string with the fingerprint it was made for (the teacher's files, the
  manifest's bytes, ``max_train``, the batch size); a cache whose fingerprint differs is
  rebuilt, never reused.

Batching changes nothing but rounding: the decoder is causal and the padding sits after
each transcript, so an utterance's logits do not depend on its batch (tested against the
live teacher). Pseudo-label runs (their targets are the teacher's own decodes) and runs
that share the teacher's frozen encoder keep the live teacher.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from harness.fsio import atomic_write

CACHE_FILE = "teacher_logits-{}.npz"  # the fingerprint's hash: other settings get another file
FORMAT = 1


def _digest(paths: list[Path]) -> str:
    h = hashlib.sha1()
    for p in paths:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def fingerprint(teacher_path: str | Path, split, batch_size: int) -> dict:
    """What a cache is valid for: the teacher folder's files, the split's manifest bytes
    and length, and the batch size it was computed with (rounding only)."""
    folder = Path(teacher_path)
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in (".json", ".safetensors", ".bin"))
    files = [p for p in files if p.name not in ("eval.json", "teacher_eval.json")]
    return {"format": FORMAT, "teacher": _digest(files), "manifest": _digest([split.manifest]),
            "utterances": len(split), "batch_size": int(batch_size)}


class TeacherLogits:
    """A loaded cache: :meth:`batch` returns the teacher logits of a training batch."""

    def __init__(self, path: Path):
        with np.load(path, allow_pickle=False) as z:
            self.meta = json.loads(str(z["meta"]))
            self.logits = torch.from_numpy(z["logits"].copy())
            offsets = z["offsets"].tolist()
            self.index = {u: (offsets[i], offsets[i + 1]) for i, u in enumerate(z["ids"].tolist())}
        self.path = path

    def batch(self, ids: list[str], length: int) -> torch.Tensor:
        """``(B, length, V)`` logits of utterances ``ids`` (zeros past each transcript,
        where the labels are -100)."""
        out = torch.zeros(len(ids), length, self.logits.shape[1])
        for i, u in enumerate(ids):
            if u not in self.index:
                raise KeyError(f"{self.path}: no teacher logits for utterance {u!r} (a stale cache: delete it)")
            a, b = self.index[u]
            out[i, : b - a] = self.logits[a:b]
        return out


@torch.no_grad()
def build(teacher, split, batch_size: int) -> dict[str, np.ndarray]:
    """The cache arrays for every utterance of ``split`` (teacher-forced, eval mode)."""
    from transformers.modeling_outputs import BaseModelOutput

    teacher.model.eval()
    ids, chunks, offsets = [], [], [0]
    for s in range(0, len(split), batch_size):
        b = split.batch(teacher, list(range(s, min(len(split), s + batch_size))))
        enc = teacher.model.model.encoder(b.features).last_hidden_state
        logits = teacher.model(encoder_outputs=BaseModelOutput(last_hidden_state=enc),
                               decoder_input_ids=b.decoder_input).logits.float()
        for i, u in enumerate(b.ids):
            n = int((b.labels[i] != -100).sum()) + len(teacher.prompt) - 1  # prompt + transcript
            chunks.append(logits[i, :n].numpy())
            ids.append(u)
            offsets.append(offsets[-1] + n)
    return {"ids": np.array(ids), "offsets": np.array(offsets, dtype=np.int64),
            "logits": np.concatenate(chunks).astype(np.float32)}


def ensure_logit_cache(teacher, teacher_path: str | Path, split, folder: str | Path, batch_size: int,
                       log=print) -> TeacherLogits:
    """Load ``<folder>/teacher_logits.npz`` if it was made for this teacher and split,
    else (re)build it (atomically: a concurrent run never reads half a file)."""
    import io

    want = fingerprint(teacher_path, split, batch_size)
    key = hashlib.sha1(json.dumps(want, sort_keys=True).encode()).hexdigest()[:10]
    path = Path(folder) / CACHE_FILE.format(key)
    if path.is_file():
        try:
            cache = TeacherLogits(path)
            if cache.meta == want:
                return cache
            log(f"[asr] {path}: made for another teacher or split: rebuilding")
        except (OSError, ValueError, KeyError) as err:
            log(f"[asr] {path}: unreadable ({err}): rebuilding")
    arrays = build(teacher, split, batch_size)
    buf = io.BytesIO()
    np.savez(buf, meta=np.array(json.dumps(want, sort_keys=True)), **arrays)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, buf.getvalue())
    log(f"[asr] teacher logits of {len(arrays['ids'])} utterances cached in {path}")
    return TeacherLogits(path)
