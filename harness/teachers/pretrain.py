"""HuBERT-style masked-prediction pretraining of the embedded SFM, sized for a 2-core CPU.

Recipe (HuBERT, Hsu et al. 2021, in miniature):

1. **Iteration 1.** Targets = k-means (``k1`` clusters) on MFCC + deltas (39 dims, 50 Hz,
   globally standardised). Spans of frames are replaced by a learned mask embedding and the
   model predicts the cluster of every masked frame (cross-entropy on masked frames only).
2. **Iteration 2.** Targets = k-means (``k2``) on the iteration-1 model's layer
   ``iter2_layer`` features, each utterance mean/variance normalised first (per-utterance
   CMVN removes the speaker/channel offset, so clusters follow phonetic content rather than
   who speaks). The model continues from the iteration-1 weights with a fresh prediction
   head (``iter2_init="continue"``) or restarts from random weights (``"scratch"``).
3. **Phone iteration** (optional, ``phone_minutes``/``phone_steps`` > 0). Targets = the
   corpus's own phone alignments (the eSpeak NG phoneme events of
   :mod:`harness.data.phones`, one of 41 phones per 50 Hz frame): the "perfect clusters"
   that HuBERT's k-means iterations approximate. Same masked prediction, continuing from
   the previous weights with a fresh head. The shipped embedded teacher uses it: with a
   CPU budget of half an hour the two k-means iterations alone left a teacher barely
   above log-mel features downstream (see ``harness/assets/README.md``), too weak to
   make a distillation study informative. ``init`` starts from an existing checkpoint
   (``iterations=0`` then skips the k-means iterations), so the phone iteration can be
   added to a trained model.
4. **Utterance iteration** (optional, ``utt_minutes``/``utt_steps`` > 0). The phone targets
   again, plus a contrastive loss on the mean of hidden state ``utt_layer`` over a segment
   (:func:`utterance_contrastive_loss`, InfoNCE with in-batch negatives): the masked
   prediction objectives never ask for who speaks or how, and after three stages the
   teacher was no better than fbank on SID and the ER proxy. Positive pairs are either
   the two halves of one utterance, each re-augmented (``utt_positives="halves"``,
   self-supervised) or two different utterances of one distill speaker (``"speaker"``,
   weakly supervised by speaker identity), leaving out the speakers the embedded SID task
   scores. The shipped teacher uses ``"speaker"``: in 6-minute pilots, halves moved SID
   from 0.191 to 0.203, speaker pairs to 0.250 (fbank 0.199); the halves share the
   original recording's channel and noise, which the contrast learns instead of the voice.

Each iteration trains for a wall-clock budget (minutes) and/or a step count; the learning
rate warms up over the first 8 % of the iteration's progress and decays linearly to zero,
where progress = max(step / steps, elapsed / budget), so a time-limited run still ends on a
decayed learning rate. Outputs: the checkpoint (fp16), ``<out>.log.tsv`` (one row per
logged step: iteration, step, seconds, lr, loss, masked accuracy), ``<out>.json`` and, with
two iterations, the iteration-1 model as ``<out stem>.iter1.pt``. The recipe's
hyperparameters are :class:`harness.teachers.pretrain_config.PretrainConfig`.

Size: over 500 lines on purpose: the four stages share their data (audio in memory, batches,
masks, targets) and one training loop (:func:`train_iteration`); the shipped teacher is
reproduced by running them in order from one place.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchaudio

from harness.data.manifest import audio_path, read_manifest
from harness.data.phones import PHONE_INDEX, SILENCE, UNKNOWN
from harness.progress import eta
from harness.provenance import git_commit, hardware, now_iso
from harness.superb.data import CLASS_SEED, keep_classes, read_split
from harness.teachers.embedded import EmbeddedSFM, count_params, save_embedded
from harness.teachers.pretrain_config import PretrainConfig

HOP50 = 320  # samples per 50 Hz frame


# ----------------------------------------------------------------------------- data


def load_corpus_audio(data_dir: str | Path, split: str = "distill", max_utts: int = 0, seed: int = 0, records: list | None = None) -> list[np.ndarray]:
    """Read a split's audio into memory as int16 arrays (half the RAM of float32).

    ``records``, when given a list, receives the manifest records in the same order.

    Raises:
        FileNotFoundError: the manifest or an audio file is missing.
        ValueError: an audio file is not 16 kHz mono.
    """
    data_dir = Path(data_dir)
    man = data_dir / f"{split}.jsonl"
    if not man.is_file():
        raise FileNotFoundError(f"{man}: no {split} manifest (build the corpus with 'harness data build --profile embedded --out {data_dir}')")
    recs = read_manifest(man)
    if max_utts and len(recs) > max_utts:
        recs = random.Random(seed).sample(recs, max_utts)
    out = []
    for rec in recs:
        path = audio_path(rec, data_dir)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: audio file of {rec['id']} in {man} is missing")
        wav, sr = sf.read(str(path), dtype="int16", always_2d=True)
        if sr != 16000 or wav.shape[1] != 1:
            raise ValueError(f"{path}: expected 16 kHz mono, got {sr} Hz x {wav.shape[1]} channels")
        out.append(wav[:, 0].copy())
    if records is not None:
        records.extend(recs)
    return out


def phone_frame_labels(rec: dict, num_samples: int) -> np.ndarray:
    """One phone index per 50 Hz frame (the phone covering the frame's centre sample).

    Raises:
        ValueError: the record has no ``phones`` alignment.
    """
    phones = rec.get("phones")
    if not phones:
        raise ValueError(f"utterance {rec.get('id')!r} has no 'phones' alignment (the phone iteration needs the embedded corpus)")
    n = num_samples // HOP50
    centres = np.arange(n) * HOP50 + HOP50 // 2
    lab = np.full(n, PHONE_INDEX[SILENCE], dtype=np.int16)
    for sym, start, end in phones:
        a, b = np.searchsorted(centres, [start, end])
        lab[a:b] = PHONE_INDEX.get(sym, PHONE_INDEX[UNKNOWN])
    return lab


def to_float(wav: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(wav.astype(np.float32) / 32768.0)


def pad_batch(wavs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """List of ``(S_i,)`` -> ``(B, S)`` zero-padded + ``(B,)`` lengths."""
    lengths = torch.tensor([w.numel() for w in wavs], dtype=torch.long)
    out = torch.zeros(len(wavs), int(lengths.max()))
    for i, w in enumerate(wavs):
        out[i, : w.numel()] = w
    return out, lengths


def mfcc_features(wav: torch.Tensor) -> np.ndarray:
    """``(S,)`` waveform -> ``(T, 39)`` MFCC + deltas at 50 Hz (fbank front-end frame grid).

    13 MFCCs on the front-end's 25 ms / 10 ms grid, plus first and second deltas, then
    adjacent 100 Hz frames averaged in pairs: frame ``t`` covers the same samples as the
    fbank front-end's frame ``t``.
    """
    mfcc = _MFCC(wav[None])[0]  # (13, n)
    d1 = torchaudio.functional.compute_deltas(mfcc)
    d2 = torchaudio.functional.compute_deltas(d1)
    feats = torch.cat([mfcc, d1, d2], 0).T  # (n, 39)
    t = feats.shape[0] // 2
    return feats[: 2 * t].reshape(t, 2, -1).mean(1).numpy()


_MFCC = torchaudio.transforms.MFCC(
    16000, n_mfcc=13, melkwargs={"n_fft": 400, "win_length": 400, "hop_length": 160, "n_mels": 40, "center": False}
)


@torch.no_grad()
def model_features(model: EmbeddedSFM, wavs: list[np.ndarray], layer: int, cmvn: bool, batch: int = 16) -> list[np.ndarray]:
    """Hidden state ``layer`` of ``model`` per utterance, ``(T_i, D)`` float32 (optionally CMVN'd)."""
    model.eval()
    order = sorted(range(len(wavs)), key=lambda i: len(wavs[i]))
    out: list[np.ndarray] = [None] * len(wavs)  # type: ignore[list-item]
    for s in range(0, len(order), batch):
        idx = order[s : s + batch]
        x, lengths = pad_batch([to_float(wavs[i]) for i in idx])
        states, flen = model.hidden_states(x, lengths)
        h = states[layer]
        for j, i in enumerate(idx):
            f = h[j, : int(flen[j])].numpy()
            if cmvn and len(f) > 1:
                f = (f - f.mean(0)) / (f.std(0) + 1e-5)
            out[i] = f.astype(np.float32)
    return out


def kmeans(x: torch.Tensor, k: int, iters: int = 30, seed: int = 0) -> torch.Tensor:
    """Lloyd's k-means with k-means++ seeding; ``x (n, d)`` -> centroids ``(k, d)``.

    Plain torch (no sklearn): sklearn's bundled OpenMP runtime competes with torch's for the
    two shared cores, which measured here as a 10x slowdown of a 3000-frame fit.
    """
    g = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    k = min(k, n)
    cent = x[torch.randint(n, (1,), generator=g)]
    d2 = torch.cdist(x, cent).squeeze(1) ** 2
    for _ in range(1, k):  # k-means++: next centre drawn proportional to squared distance
        nxt = x[torch.multinomial(d2 + 1e-12, 1, generator=g)]
        cent = torch.cat([cent, nxt])
        d2 = torch.minimum(d2, (torch.cdist(x, nxt).squeeze(1)) ** 2)
    for _ in range(iters):
        assign = torch.cdist(x, cent).argmin(1)
        sums = torch.zeros_like(cent).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        empty = counts == 0  # an emptied cluster keeps its old centre
        cent = torch.where(empty[:, None], cent, sums / counts.clamp(min=1)[:, None])
    return cent


def fit_kmeans(feats: list[np.ndarray], k: int, max_frames: int, seed: int) -> tuple[list[np.ndarray], dict]:
    """k-means on a frame sample; returns per-utterance int16 labels and fit statistics."""
    allf = np.concatenate([f for f in feats if len(f)], 0)
    rng = np.random.default_rng(seed)
    sample = allf[rng.choice(len(allf), size=min(max_frames, len(allf)), replace=False)]
    mu, sd = sample.mean(0), sample.std(0) + 1e-5  # global standardisation (euclidean k-means)
    cent = kmeans(torch.from_numpy((sample - mu) / sd).float(), k, seed=seed)

    def predict(f: np.ndarray) -> np.ndarray:
        if not len(f):
            return np.zeros(0, np.int16)
        return torch.cdist(torch.from_numpy((f - mu) / sd).float(), cent).argmin(1).numpy().astype(np.int16)

    labels = [predict(f) for f in feats]
    counts = np.bincount(np.concatenate(labels).astype(np.int64), minlength=k)
    p = counts / counts.sum()
    xs = torch.from_numpy((sample - mu) / sd).float()
    inertia = float((torch.cdist(xs, cent).min(1).values ** 2).mean())
    stats = {
        "k": k, "frames": int(counts.sum()), "fit_frames": int(len(sample)),
        "used_clusters": int((counts > 0).sum()),
        "perplexity": float(np.exp(-(p[p > 0] * np.log(p[p > 0])).sum())),
        "inertia_per_frame": inertia,
    }
    return labels, stats


# ----------------------------------------------------------------------------- training


def span_mask(frame_lengths: torch.Tensor, t: int, prob: float, span: int, gen: torch.Generator) -> torch.Tensor:
    """``(B, T)`` bool: ``round(prob * T_i / span)`` random spans of ``span`` frames per utterance."""
    mask = torch.zeros(len(frame_lengths), t, dtype=torch.bool)
    for i, n in enumerate(frame_lengths.tolist()):
        if n <= span:
            continue
        k = max(1, round(prob * n / span))
        starts = torch.randint(0, n - span + 1, (k,), generator=gen)
        for s in starts.tolist():
            mask[i, s : s + span] = True
    return mask


class Batcher:
    """Random batches of about ``batch_seconds`` of audio, similar lengths together, cropped."""

    def __init__(self, wavs: list[np.ndarray], batch_seconds: float, crop_seconds: float, seed: int) -> None:
        self.wavs, self.rng = wavs, random.Random(seed)
        self.crop = int(crop_seconds * 16000) // HOP50 * HOP50  # whole 50 Hz frames
        self.budget = batch_seconds * 16000
        self._queue: list[list[int]] = []

    def _refill(self) -> None:
        idx = list(range(len(self.wavs)))
        self.rng.shuffle(idx)
        batches = []
        # sort within chunks of 50 batches' worth so padding stays small but order varies
        for c in range(0, len(idx), 400):
            chunk = sorted(idx[c : c + 400], key=lambda i: len(self.wavs[i]))
            cur: list[int] = []
            for i in chunk:
                longest = max([min(len(self.wavs[j]), self.crop) for j in cur + [i]])
                if cur and longest * (len(cur) + 1) > self.budget:
                    batches.append(cur)
                    cur = []
                cur.append(i)
            if cur:
                batches.append(cur)
        self.rng.shuffle(batches)
        self._queue = batches

    def next(self) -> tuple[list[int], list[int]]:
        """Indices of one batch and each utterance's crop offset in 50 Hz frames."""
        if not self._queue:
            self._refill()
        idx = self._queue.pop()
        offs = []
        for i in idx:
            extra = len(self.wavs[i]) - self.crop
            offs.append(self.rng.randrange(0, extra // HOP50 + 1) if extra > 0 else 0)
        return idx, offs


def _lr_factor(progress: float) -> float:
    warm = 0.08
    return progress / warm if progress < warm else max(0.0, (1.0 - progress) / (1.0 - warm))


def train_iteration(
    model: EmbeddedSFM,
    wavs: list[np.ndarray],
    labels: list[np.ndarray],
    k: int,
    cfg: PretrainConfig,
    minutes: float,
    steps: int,
    iteration: int,
    log_rows: list[dict],
    log_fn=print,
    utterance: bool = False,
    speakers: list[str] | None = None,
) -> dict:
    """Masked prediction of ``labels`` (per-utterance int16 frame targets) until the budget ends.

    With ``utterance=True`` (the utterance iteration) every crop of ``cfg.utt_crop_seconds``
    is cut into two halves, each half gets its own random channel, noise and level
    (:func:`reaugment`), the halves go through the model as separate items, and
    ``cfg.utt_weight`` x :func:`utterance_contrastive_loss` on hidden state
    ``cfg.utt_layer`` is added to the masked prediction loss. With ``speakers`` (one id per
    utterance, ``None`` for an utterance to leave out) the positive pairs are instead two
    utterances of one speaker (:class:`SpeakerPairs`), ``batch_seconds / crop`` items a batch.
    """
    if minutes <= 0 and steps <= 0:
        raise ValueError("pretraining needs a time budget (minutes) or a step budget (steps)")
    torch.manual_seed(cfg.seed + iteration)
    gen = torch.Generator().manual_seed(cfg.seed + 100 + iteration)
    head = nn.Linear(model.width, k)
    model.train()
    params = list(model.parameters()) + list(head.parameters())
    proj = None
    if utterance:
        proj = nn.Sequential(nn.Linear(model.width, model.width), nn.ReLU(), nn.Linear(model.width, 128))
        params += list(proj.parameters())
        aug_rng = np.random.default_rng(cfg.seed + 200 + iteration)
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01)
    crop_s = cfg.utt_crop_seconds if utterance else cfg.crop_seconds
    batch_s = cfg.utt_batch_seconds if utterance else cfg.batch_seconds
    batcher = Batcher(wavs, batch_s, crop_s, cfg.seed + iteration)
    pairs = SpeakerPairs(speakers, batch_s, crop_s, cfg.seed + iteration) if utterance and speakers else None
    t0 = time.perf_counter()
    step, acc_sum, loss_sum, n_sum = 0, 0.0, 0.0, 0
    utt_hits, utt_n = 0, 0
    budget_s = minutes * 60.0
    while True:
        elapsed = time.perf_counter() - t0
        progress = max(step / steps if steps > 0 else 0.0, elapsed / budget_s if budget_s > 0 else 0.0)
        if progress >= 1.0:
            break
        lr = cfg.lr * _lr_factor(progress)
        for g in opt.param_groups:
            g["lr"] = lr
        crop = batcher.crop
        if pairs is not None:
            idx, segs, labs = pairs.next(wavs, labels)
        elif utterance:
            idx, offs = batcher.next()
            segs, labs = halves_batch(wavs, labels, idx, offs, crop, aug_rng)
        else:
            idx, offs = batcher.next()
            segs = [to_float(wavs[i][o * HOP50 : o * HOP50 + crop]) for i, o in zip(idx, offs)]
            labs = [labels[i][o:] for i, o in zip(idx, offs)]
        x, lengths = pad_batch(segs)
        feats, flen = model.frontend(x, lengths)
        t = feats.shape[1]
        tgt = torch.full((len(segs), t), -100, dtype=torch.long)
        for j, lab in enumerate(labs):
            lab = torch.from_numpy(lab[: min(t, int(flen[j]))].astype(np.int64))
            tgt[j, : len(lab)] = lab
        mask = span_mask(flen, t, cfg.mask_prob, cfg.mask_span, gen)
        states = model.encode(feats, flen, mask=mask)
        logits = head(states[-1])
        sel = mask & (tgt >= 0)
        loss = F.cross_entropy(logits[sel], tgt[sel])
        if cfg.unmasked_weight > 0:
            un = ~mask & (tgt >= 0)
            loss = loss + cfg.unmasked_weight * F.cross_entropy(logits[un], tgt[un])
        if utterance and len(idx) > 1:
            closs, hits = utterance_contrastive_loss(states[cfg.utt_layer], flen, proj, cfg.utt_temperature)
            loss = loss + cfg.utt_weight * closs
            utt_hits, utt_n = utt_hits + hits, utt_n + len(idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        with torch.no_grad():
            acc_sum += float((logits[sel].argmax(-1) == tgt[sel]).float().sum())
            n_sum += int(sel.sum())
            loss_sum += float(loss) * int(sel.sum())
        if step % cfg.log_every == 0:
            row = {
                "iteration": iteration, "step": step, "seconds": round(time.perf_counter() - t0, 2),
                "lr": lr, "loss": loss_sum / max(n_sum, 1), "masked_acc": acc_sum / max(n_sum, 1),
            }
            if utterance:
                row["utt_acc"] = utt_hits / max(utt_n, 1)
            log_rows.append(row)
            frac = progress  # of the budget (steps or minutes), at the top of this step
            log_fn(
                f"iter {iteration} step {step:5d}  {row['seconds']:7.1f}s  lr {lr:.2e}  "
                f"loss {row['loss']:.3f}  masked acc {row['masked_acc']:.3f}"
                + (f"  pair acc {row['utt_acc']:.3f}" if utterance else "")
                + f"  ({100 * frac:.0f}% of the budget, ETA {eta(row['seconds'] * (1 - frac) / max(frac, 1e-9))})"
            )
            acc_sum, loss_sum, n_sum = 0.0, 0.0, 0
            utt_hits, utt_n = 0, 0
    model.eval()
    done = [r for r in log_rows if r["iteration"] == iteration]
    out = {
        "steps": step, "seconds": round(time.perf_counter() - t0, 1),
        "final_loss": done[-1]["loss"] if done else None,
        "final_masked_acc": done[-1]["masked_acc"] if done else None,
        "first_loss": done[0]["loss"] if done else None,
    }
    if utterance:
        out.update(first_pair_acc=done[0]["utt_acc"] if done else None, final_pair_acc=done[-1]["utt_acc"] if done else None)
    return out


# ----------------------------------------------------------------------------- utterance iteration

_REAUG_NOISE = ("white", "pink", "brown", "hum", "machine")  # babble needs a voice bank


def reaugment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A fresh random channel, maybe noise (10-30 dB SNR), and a random level for one segment
    (:func:`harness.data.noise.augment` without babble, noise half the time, fewer rooms).

    Applied independently to the two halves of an utterance in the utterance iteration, so
    that what the halves share is the voice and the speaking style, not the recording:
    without it, the corpus's per-utterance channel, noise and level would be the easiest
    way to tell utterances apart.
    """
    from harness.data import noise

    return noise.augment(x, rng, None, snr_db=(10.0, 30.0), p_clean=0.5, kinds=_REAUG_NOISE, p_room=0.3)[0]


def halves_batch(
    wavs: list[np.ndarray], labels: list[np.ndarray], idx: list[int], offs: list[int], crop: int, rng: np.random.Generator
) -> tuple[list[torch.Tensor], list[np.ndarray]]:
    """Cut each crop into two halves of whole frames: ``[first halves..., second halves...]``.

    Returns the re-augmented waveforms and each half's frame labels, in the order
    ``a_0 .. a_{B-1}, b_0 .. b_{B-1}`` that :func:`utterance_contrastive_loss` expects.
    """
    first, second, lab_a, lab_b = [], [], [], []
    for i, o in zip(idx, offs):
        seg = wavs[i][o * HOP50 : o * HOP50 + crop]
        h = max(1, len(seg) // HOP50 // 2)
        a, b = seg[: h * HOP50], seg[h * HOP50 : 2 * h * HOP50]
        if len(b) == 0:  # shorter than two frames: both halves are the whole segment
            b = a
        first.append(torch.from_numpy(reaugment(a.astype(np.float32) / 32768.0, rng)))
        second.append(torch.from_numpy(reaugment(b.astype(np.float32) / 32768.0, rng)))
        lab_a.append(labels[i][o : o + h])
        lab_b.append(labels[i][o + h : o + 2 * h])
    return first + second, lab_a + lab_b


class SpeakerPairs:
    """Batches of two different utterances of each of ``n`` speakers, randomly cropped.

    ``next`` returns ``(speakers drawn, [a_0.. a_{n-1}, b_0 .. b_{n-1}] waveforms, their
    frame labels)``: ``a_k`` and ``b_k`` come from two utterances of one speaker, so only
    the voice is shared (each utterance has its own random channel, noise and level).
    """

    def __init__(self, speakers: list[str | None], batch_seconds: float, crop_seconds: float, seed: int) -> None:
        self.rng = random.Random(seed)
        self.crop = int(crop_seconds * 16000) // HOP50 * HOP50
        by: dict[str, list[int]] = {}
        for i, spk in enumerate(speakers):
            if spk is not None:
                by.setdefault(spk, []).append(i)
        self.by = {s: v for s, v in sorted(by.items()) if len(v) >= 2}
        self.n = max(2, min(len(self.by), int(batch_seconds / crop_seconds / 2)))
        if len(self.by) < 2:
            raise ValueError(f"speaker pairs need 2 speakers with 2 utterances each, got {len(self.by)}")

    def _cut(self, wav: np.ndarray, lab: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        extra = len(wav) - self.crop
        o = self.rng.randrange(0, extra // HOP50 + 1) if extra > 0 else 0
        return to_float(wav[o * HOP50 : o * HOP50 + self.crop]), lab[o:]

    def next(self, wavs: list[np.ndarray], labels: list[np.ndarray]) -> tuple[list[str], list[torch.Tensor], list[np.ndarray]]:
        spks = self.rng.sample(list(self.by), self.n)
        firsts, seconds = [], []
        for s in spks:
            i, j = self.rng.sample(self.by[s], 2)
            firsts.append(self._cut(wavs[i], labels[i]))
            seconds.append(self._cut(wavs[j], labels[j]))
        items = firsts + seconds
        return spks, [w for w, _ in items], [lab for _, lab in items]


def sid_scored_speakers(data_dir: str | Path, profile: str = "embedded") -> set[str]:
    """The speakers the SUPERB ``sid`` task of ``profile`` scores on this corpus (its fixed
    class subset; all ``sid_train`` speakers when the task keeps every class)."""
    from harness.superb.tasks import get_task

    task = get_task("sid", profile)
    recs = {task.splits[0]: read_split(Path(data_dir), task.splits[0])}
    kept = keep_classes(recs, task.splits[0], task.max_classes, CLASS_SEED)[task.splits[0]]
    return {str(r["label"]) for r in kept}


def utterance_contrastive_loss(
    h: torch.Tensor, frame_lengths: torch.Tensor, proj: nn.Module, temperature: float
) -> tuple[torch.Tensor, int]:
    """Symmetric InfoNCE between the two halves of each utterance (self-supervised).

    ``h (2B, T, D)`` holds first halves then second halves. Each half is mean-pooled over its
    valid frames (the pooling the SUPERB utterance heads use), projected, L2-normalised; the
    positive of half ``a_i`` is ``b_i`` and the other ``B - 1`` second halves are negatives.
    The halves never attend to each other, so only what is constant over an utterance
    (voice, speaking style) can match them.

    Returns:
        ``(loss, hits)``: hits = first halves whose nearest second half is their own.
    """
    n = h.shape[0] // 2
    valid = (torch.arange(h.shape[1])[None, :] < frame_lengths[:, None]).to(h.dtype)
    pooled = (h * valid[..., None]).sum(1) / valid.sum(1, keepdim=True).clamp(min=1)
    z = F.normalize(proj(pooled), dim=-1)
    logits = z[:n] @ z[n:].T / temperature
    target = torch.arange(n)
    loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
    hits = int((logits.argmax(1) == target).sum())
    return loss, hits


def pretrain(cfg: PretrainConfig, data_dir: str | Path, out: str | Path, log_fn=print) -> dict:
    """Run both iterations on ``data_dir/distill.jsonl``; write the checkpoint and its logs.

    Returns:
        The summary written to ``<out>.json``.

    Raises:
        ConfigError: ``cfg.validate()`` failed (a ``ValueError``).
        FileNotFoundError: no ``distill.jsonl`` in ``data_dir``.
    """
    cfg.validate()
    phone_stage = cfg.phone_minutes > 0 or cfg.phone_steps > 0
    utt_stage = cfg.utt_minutes > 0 or cfg.utt_steps > 0
    torch.set_num_threads(cfg.threads)
    out = Path(out)
    start, t_all = now_iso(), time.perf_counter()
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    if cfg.init:
        from harness.teachers.embedded import load_embedded

        model = load_embedded(cfg.init)
        if model.cfg != cfg.model:
            cfg = replace(cfg, model=model.cfg)
        for prm in model.parameters():
            prm.requires_grad_(True)
        log_fn(f"init: {cfg.init} ({model.id})")
    else:
        model = EmbeddedSFM(cfg.model)
    log_fn(f"model: {count_params(model) / 1e6:.2f} M parameters, {cfg.model.layers} x {cfg.model.width}, post_ln={cfg.model.post_ln}")
    rows: list[dict] = []
    summary: dict = {"config": asdict(cfg), "data": str(data_dir)}

    if cfg.iterations >= 1:
        wavs = load_corpus_audio(data_dir, "distill", cfg.max_utts, cfg.seed)
        hours = sum(len(w) for w in wavs) / 16000 / 3600
        log_fn(f"pretrain: {len(wavs)} utterances, {hours:.2f} h from {data_dir}")
        summary.update(utterances=len(wavs), hours=round(hours, 3))
        t = time.perf_counter()
        labels, km = fit_kmeans([mfcc_features(to_float(w)) for w in wavs], cfg.k1, cfg.kmeans_frames, cfg.seed)
        km["seconds"] = round(time.perf_counter() - t, 1)
        log_fn(f"iteration 1 targets: k-means on MFCC: {km}")
        summary["iter1"] = {"targets": km, **train_iteration(model, wavs, labels, cfg.k1, cfg, cfg.minutes1, cfg.steps1, 1, rows, log_fn)}

    if cfg.iterations >= 2:
        # keep the iteration-1 model too: the probes can then tell what iteration 2 changed
        save_embedded(model, out.with_suffix(".iter1.pt"), extra={"iter1": summary["iter1"], "pretrain_config": asdict(cfg)})
        write_log(rows, out.with_suffix(".log.tsv"))
        t = time.perf_counter()
        feats = model_features(model, wavs, cfg.iter2_layer, cfg.iter2_cmvn)
        labels, km = fit_kmeans(feats, cfg.k2, cfg.kmeans_frames, cfg.seed + 1)
        del feats
        km.update(seconds=round(time.perf_counter() - t, 1), layer=cfg.iter2_layer, cmvn=cfg.iter2_cmvn)
        log_fn(f"iteration 2 targets: k-means on layer {cfg.iter2_layer}: {km}")
        if cfg.iter2_init == "scratch":
            torch.manual_seed(cfg.seed + 2)
            model = EmbeddedSFM(cfg.model)
        summary["iter2"] = {"targets": km, **train_iteration(model, wavs, labels, cfg.k2, cfg, cfg.minutes2, cfg.steps2, 2, rows, log_fn)}

    if phone_stage or utt_stage:
        from harness.data.phones import PHONES

        if cfg.iterations >= 2:
            save_embedded(model, out.with_suffix(".iter2.pt"), extra={"iter2": summary["iter2"], "pretrain_config": asdict(cfg)})
        recs: list[dict] = []
        wavs = load_corpus_audio(data_dir, "distill", cfg.phone_max_utts, cfg.seed + 3, records=recs)
        labels = [phone_frame_labels(r, len(w)) for r, w in zip(recs, wavs)]
        hours = sum(len(w) for w in wavs) / 16000 / 3600
        targets = {"source": "corpus phone alignments", "classes": len(PHONES), "utterances": len(wavs), "hours": round(hours, 3)}
    if phone_stage:
        log_fn(f"phone iteration: {len(wavs)} utterances, {hours:.2f} h, {len(PHONES)} phone targets from the corpus alignments")
        summary["phones"] = {
            "targets": targets,
            **train_iteration(model, wavs, labels, len(PHONES), cfg, cfg.phone_minutes, cfg.phone_steps, 3, rows, log_fn),
        }
    if utt_stage:
        if phone_stage:
            save_embedded(model, out.with_suffix(".phones.pt"), extra={"phones": summary["phones"], "pretrain_config": asdict(cfg)})
        contrast = {"layer": cfg.utt_layer, "weight": cfg.utt_weight, "temperature": cfg.utt_temperature, "positives": cfg.utt_positives}
        speakers = None
        if cfg.utt_positives == "speaker":
            try:
                scored = sid_scored_speakers(data_dir)
            except FileNotFoundError:  # a corpus without the SID task: nobody to leave out
                scored = set()
                log_fn(f"utterance iteration: {data_dir} has no sid_train split; no speaker is left out")
            speakers = [None if r.get("speaker") in scored else r.get("speaker") for r in recs]
            used = sorted({s for s in speakers if s is not None})
            contrast.update(speakers=len(used), left_out_sid_speakers=len(scored),
                            utterances=sum(s is not None for s in speakers))
            what = f"two utterances of one of {len(used)} distill speakers (the {len(scored)} SID-scored speakers left out)"
        else:
            what = f"two halves of one utterance, re-augmented ({cfg.utt_crop_seconds} s crops)"
        log_fn(f"utterance iteration: phone targets + {cfg.utt_weight} x contrastive loss on layer {cfg.utt_layer}; positives: {what}")
        summary["utterance"] = {
            "targets": targets | {"contrastive": contrast},
            **train_iteration(model, wavs, labels, len(PHONES), cfg, cfg.utt_minutes, cfg.utt_steps, 4, rows, log_fn,
                              utterance=True, speakers=speakers),
        }

    summary.update(
        total_seconds=round(time.perf_counter() - t_all, 1), start=start, end=now_iso(),
        hardware=hardware(), git_commit=git_commit(), params=count_params(model),
    )
    save_embedded(model, out, extra={k: v for k, v in summary.items() if k != "config"} | {"pretrain_config": asdict(cfg)})
    summary["teacher_id"] = _reloaded_id(out)
    write_log(rows, out.with_suffix(".log.tsv"))
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    log_fn(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB), {out.with_suffix('.log.tsv')}, {out.with_suffix('.json')}")
    return summary


def _reloaded_id(path: Path) -> str:
    from harness.teachers.embedded import load_embedded

    return load_embedded(path).id


def write_log(rows: list[dict], path: Path) -> None:
    cols = ["iteration", "step", "seconds", "lr", "loss", "masked_acc"]
    if any("utt_acc" in r for r in rows):
        cols.append("utt_acc")  # pair accuracy of the utterance iteration; empty elsewhere
    lines = ["\t".join(cols)]
    for r in rows:
        vals = [r.get(c, "") for c in cols]
        lines.append("\t".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in vals))
    path.write_text("\n".join(lines) + "\n")
