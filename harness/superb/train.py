"""Train one task's head (and layer weights) on cached features; select on dev, report test.

The upstream is frozen and its features come from :mod:`harness.superb.cache`, so a task
costs only its head. Model selection: the dev metric is computed every
``task.eval_every`` steps and at the end; the best dev checkpoint (direction-aware) is the
one scored on test.
"""

from __future__ import annotations

import copy
import math
import time

import numpy as np
import torch
from torch import nn

from harness.superb.cache import SplitFeatures
from harness.superb.data import label_key
from harness.superb.featurizer import Featurizer
from harness.superb.heads import BiLSTMCTC, LinearCTC, UtteranceHead, ctc_loss, greedy_ctc_decode
from harness.superb.metrics import accuracy, error_rate, normalize_text
from harness.superb.tasks import Task

# phone symbols that mark silence/pauses rather than phones; excluded from PR targets
SILENCE = frozenset({"", "sil", "sp", "spn", "_", "|", "<sil>", "pau"})


def targets_of(task: Task, record: dict) -> list[str]:
    """Reference tokens of a sequence task: phone symbols (PR) or characters (ASR, with
    ``" "`` as the word separator)."""
    if task.target == "phones":
        phones = record.get("phones")
        if phones is None:
            raise ValueError(f"record {record.get('id')!r} has no 'phones'")
        syms = [p[0] if isinstance(p, (list, tuple)) else p for p in phones]
        return [str(s) for s in syms if str(s) not in SILENCE]
    text = record.get("text")
    if text is None:
        raise ValueError(f"record {record.get('id')!r} has no 'text'")
    return list(normalize_text(text))


def _optimizer(task: Task, params) -> torch.optim.Optimizer:
    cls = torch.optim.AdamW if task.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=task.lr)


def train_task(task: Task, feats: dict[str, SplitFeatures], records: dict[str, list[dict]],
               seed: int = 0, device: str | torch.device = "cpu", log=None) -> dict:
    """Train and score one task.

    Args:
        task: the task.
        feats: cached features per split name (the task's train/dev/test).
        records: manifest records per split name, aligned with ``feats``.
        seed: seeds the head's init and the batch order.
        device: where the head trains.
        log: optional ``print``-like callable.

    Returns:
        ``{"metric", "direction", "value", "n", "dev_value", "dev_n", "layer_weights",
        "train_n", "steps", "best_step", "seconds"}`` (values are fractions).
    """
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    fn = _train_utterance if task.level == "utterance" else _train_sequence
    device = torch.device(device)
    # Heads are tiny: on CPU one intra-op thread is fastest, and on a shared machine more
    # threads are far slower (measured here, 2 busy cores: a 2-layer BiLSTM step 20x slower
    # with 2 threads than with 1).
    threads = torch.get_num_threads()
    if device.type == "cpu" and threads > 1:
        torch.set_num_threads(1)
    try:
        out = fn(task, feats, records, seed, device, log)
    finally:
        torch.set_num_threads(threads)
    out.update(metric=task.metric, direction=task.direction, steps=task.steps,
               seconds=round(time.perf_counter() - t0, 2))
    return out


# ----------------------------------------------------------------------------- utterance level


def _train_utterance(task, feats, records, seed, device, log) -> dict:
    tr, dv, te = task.splits
    classes = sorted({label_key(r["label"]) for r in records[tr]})
    index = {c: i for i, c in enumerate(classes)}

    def xy(split):
        x = torch.from_numpy(np.asarray(feats[split].pooled, dtype=np.float32)).to(device)
        y = torch.tensor([index.get(label_key(r["label"]), -1) for r in records[split]],
                         dtype=torch.long, device=device)
        return x, y

    (xtr, ytr), (xdv, ydv), (xte, yte) = xy(tr), xy(dv), xy(te)
    num_states, width = xtr.shape[1], xtr.shape[2]
    mean = std = None
    if task.normalize:
        mean, std = xtr.mean(0), xtr.std(0, unbiased=False)
    model = nn.Sequential(Featurizer(num_states, width, mean, std),
                          UtteranceHead(width, len(classes), task.hidden)).to(device)
    opt = _optimizer(task, model.parameters())
    gen = torch.Generator().manual_seed(seed)

    def score(x, y) -> float:
        model.eval()
        with torch.no_grad():
            pred = model(x).argmax(-1)
        model.train()
        return accuracy(y.tolist(), pred.tolist())

    best = (-math.inf, None, 0)
    for step in range(1, task.steps + 1):
        idx = torch.randint(0, len(xtr), (min(task.batch_size, len(xtr)),), generator=gen).to(device)
        loss = nn.functional.cross_entropy(model(xtr[idx]), ytr[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % task.eval_every == 0 or step == task.steps:
            dev = score(xdv, ydv)
            if best[1] is None or dev > best[0]:
                best = (dev, copy.deepcopy(model.state_dict()), step)
            if log:
                log(f"  {task.name} step {step}: loss {loss.item():.3f} dev {task.metric} {dev:.4f}")
    model.load_state_dict(best[1])
    return {"value": score(xte, yte), "n": len(xte), "dev_value": best[0], "dev_n": len(xdv),
            "train_n": len(xtr), "num_classes": len(classes), "best_step": best[2],
            "layer_weights": model[0].layer_weights()}


# ----------------------------------------------------------------------------- sequence level


class _SeqModel(nn.Module):
    """Featurizer -> zeroed padding -> optional frame averaging -> CTC head."""

    def __init__(self, featurizer: Featurizer, head: nn.Module, downsample: int = 1) -> None:
        super().__init__()
        self.featurizer, self.head, self.k = featurizer, head, max(1, int(downsample))

    def out_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Frames after averaging (a partial last group counts)."""
        return torch.div(lengths + self.k - 1, self.k, rounding_mode="floor")

    def forward(self, states: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = self.featurizer(states)  # (B, T, D)
        mask = torch.arange(x.shape[1], device=x.device)[None, :] < lengths.to(x.device)[:, None]
        x = x * mask[..., None]
        if self.k > 1:
            pad = (-x.shape[1]) % self.k
            x = nn.functional.pad(x, (0, 0, 0, pad)).unflatten(1, (-1, self.k)).mean(2)
        return self.head(x, self.out_lengths(lengths))


def _batch(sf: SplitFeatures, idx: list[int], device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, Tmax, L + 1, D)`` float32 zero-padded frames and ``(B,)`` lengths."""
    lens = [int(sf.frames_per_utt[i]) for i in idx]
    first = sf.utterance(idx[0])
    out = torch.zeros(len(idx), max(lens), first.shape[1], first.shape[2])
    for b, i in enumerate(idx):
        out[b, : lens[b]] = torch.from_numpy(np.asarray(sf.utterance(i), dtype=np.float32))
    return out.to(device), torch.tensor(lens, dtype=torch.long)


def _train_sequence(task, feats, records, seed, device, log) -> dict:
    tr, dv, te = task.splits
    refs = {s: [targets_of(task, r) for r in records[s]] for s in (tr, dv, te)}
    vocab = sorted({t for seq in refs[tr] for t in seq})
    tok = {t: i + 1 for i, t in enumerate(vocab)}  # 0 = CTC blank
    sf_tr = feats[tr]
    # CTC needs at least as many frames as labels (plus repeats); drop the rest from training
    k = max(1, task.downsample)
    train_idx = [i for i, seq in enumerate(refs[tr])
                 if seq and len(seq) <= (int(sf_tr.frames_per_utt[i]) + k - 1) // k]
    if not train_idx:
        raise ValueError(f"{task.name}: no training utterance has fewer labels than frames")
    first = sf_tr.utterance(0)
    num_states, width = first.shape[1], first.shape[2]
    mean = std = None
    if task.normalize:
        sample = np.concatenate([np.asarray(sf_tr.utterance(i), np.float32) for i in train_idx[:200]])
        mean = torch.from_numpy(sample.mean(0))
        std = torch.from_numpy(sample.std(0))
    head = (LinearCTC(width, len(vocab)) if task.head == "linear_ctc"
            else BiLSTMCTC(width, len(vocab), hidden=task.hidden or 1024))
    model = _SeqModel(Featurizer(num_states, width, mean, std), head, task.downsample).to(device)
    opt = _optimizer(task, model.parameters())
    rng = np.random.default_rng(seed)
    inv = {i: t for t, i in tok.items()}

    def decode(split: str) -> tuple[list[list[str]], list[list[str]]]:
        sf, hyps = feats[split], [None] * len(refs[split])
        order = sorted(range(len(refs[split])), key=lambda i: int(sf.frames_per_utt[i]))
        model.eval()
        with torch.no_grad():
            for k in range(0, len(order), 32):
                idx = order[k: k + 32]
                x, lens = _batch(sf, idx, device)
                for i, seq in zip(idx, greedy_ctc_decode(model(x, lens), model.out_lengths(lens))):
                    hyps[i] = [inv[t] for t in seq]
        model.train()
        keep = [i for i, r in enumerate(refs[split]) if r]
        return [refs[split][i] for i in keep], [hyps[i] for i in keep]

    def rate(split: str, extra: dict | None = None) -> tuple[float, int]:
        r, h = decode(split)
        if task.target == "text":  # WER on words: characters back to strings
            if extra is not None:  # character error rate, a diagnostic next to the WER
                extra["cer"] = error_rate([[c if c != " " else "|" for c in x] for x in r],
                                          [[c if c != " " else "|" for c in x] for x in h])["rate"]
            r = ["".join(x).split() for x in r]
            h = ["".join(x).split() for x in h]
            keep = [i for i, x in enumerate(r) if x]
            r, h = [r[i] for i in keep], [h[i] for i in keep]
        return error_rate(r, h)["rate"], len(r)

    # length-bucketed batches: a random window of the length-sorted training set, so a
    # batch holds utterances of similar length (little padding; see BiLSTMCTC.forward)
    by_len = sorted(train_idx, key=lambda i: int(sf_tr.frames_per_utt[i]))
    bs = min(task.batch_size, len(by_len))
    best = (math.inf, None, 0)
    for step in range(1, task.steps + 1):
        start = int(rng.integers(0, len(by_len) - bs + 1))
        idx = by_len[start: start + bs]
        x, lens = _batch(sf_tr, idx, device)
        loss = ctc_loss(model(x, lens), model.out_lengths(lens), [[tok[t] for t in refs[tr][i]] for i in idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        if step % task.eval_every == 0 or step == task.steps:
            dev, _ = rate(dv)
            if best[1] is None or dev < best[0]:
                best = (dev, copy.deepcopy(model.state_dict()), step)
            if log:
                log(f"  {task.name} step {step}: loss {loss.item():.3f} dev {task.metric} {dev:.4f}")
    model.load_state_dict(best[1])
    extra: dict = {}
    value, n = rate(te, extra)
    return {"value": value, "n": n, "dev_value": best[0], "dev_n": len(refs[dv]), **extra,
            "train_n": len(train_idx), "vocab": len(vocab), "best_step": best[2],
            "layer_weights": model.featurizer.layer_weights()}
