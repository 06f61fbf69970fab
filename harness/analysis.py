"""Layer analysis for any upstream: linear CKA between layers and layer-wise linear probes.

* **Linear CKA** (Kornblith et al. 2019) between two representations of the same ``n``
  frames, ``X (n, d1)`` and ``Y (n, d2)``, both column-centred:
  ``CKA = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)``, the feature-space form of
  ``HSIC(XX^T, YY^T) / sqrt(HSIC(XX^T, XX^T) HSIC(YY^T, YY^T))``. It is 1 for identical
  inputs and invariant to orthogonal transforms and isotropic scaling of either input.
* **Linear probes**: a linear classifier per layer on frozen, standardised features
  (closed-form ridge regression onto one-hot targets by default, its strength chosen on a
  held-out part of the training set; softmax regression on request). Phone classification is frame level (each 50 Hz frame is labelled with the
  phone covering its centre sample); speaker identification is utterance level (mean
  pooled over valid frames). Run-to-run noise is measured by repeating each probe with
  different seeds (initialisation and an 80 % subsample of the training set).

Layer names follow the feature cache: ``frontend`` (the upstream's ``.frontend`` output,
when it has one) and ``layer_<k>`` for hidden state ``k = 0..L``.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F

from harness import runs
from harness.data.manifest import audio_path, read_manifest
from harness.teachers.base import load_teacher

# ----------------------------------------------------------------------------- CKA


def _as_f64(x) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).to(torch.float64)
    if t.dim() != 2:
        raise ValueError(f"CKA expects (n, d) matrices, got shape {tuple(t.shape)}")
    return t


def linear_cka(x, y) -> float:
    """Linear CKA between ``x (n, d1)`` and ``y (n, d2)`` (rows = the same ``n`` examples).

    Returns:
        CKA in [0, 1] (float64 arithmetic; 0.0 when either input is constant).

    Raises:
        ValueError: the inputs are not 2-D or have different row counts.
    """
    x, y = _as_f64(x), _as_f64(y)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"CKA needs the same examples in both inputs: {x.shape[0]} vs {y.shape[0]} rows")
    x = x - x.mean(0, keepdim=True)
    y = y - y.mean(0, keepdim=True)
    cross = torch.linalg.matrix_norm(y.T @ x) ** 2
    norm = torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y)
    return float(cross / norm) if float(norm) > 0 else 0.0


def cka_matrix(states_a: Sequence, states_b: Sequence | None = None) -> np.ndarray:
    """Linear CKA between every pair of layers.

    Args:
        states_a: ``La`` matrices ``(n, d_i)`` (one per layer, same ``n`` frames).
        states_b: ``Lb`` matrices over the same frames (another upstream); ``None`` = within
            ``states_a`` (a symmetric matrix with ones on the diagonal).

    Returns:
        ``(La, Lb)`` float64 array.
    """
    a = [_as_f64(s) for s in states_a]
    b = a if states_b is None else [_as_f64(s) for s in states_b]
    # centre once and keep the Gram norms: O(L^2 n d^2) -> cheap for a few thousand frames
    a = [s - s.mean(0, keepdim=True) for s in a]
    b = a if states_b is None else [s - s.mean(0, keepdim=True) for s in b]
    na = [torch.linalg.matrix_norm(s.T @ s) for s in a]
    nb = na if states_b is None else [torch.linalg.matrix_norm(s.T @ s) for s in b]
    out = np.zeros((len(a), len(b)))
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            if states_b is None and j < i:
                out[i, j] = out[j, i]
                continue
            den = na[i] * nb[j]
            out[i, j] = float(torch.linalg.matrix_norm(y.T @ x) ** 2 / den) if float(den) > 0 else 0.0
    return out


# ----------------------------------------------------------------------------- features


def _load(path: Path) -> np.ndarray:
    wav, sr = sf.read(str(path), dtype="float32", always_2d=True)
    if sr != 16000 or wav.shape[1] != 1:
        raise ValueError(f"{path}: expected 16 kHz mono audio, got {sr} Hz x {wav.shape[1]} channels")
    return wav[:, 0]


def layer_names(upstream) -> list[str]:
    """``["frontend"]`` (if the upstream has one) + ``layer_0 .. layer_L``."""
    names = ["frontend"] if getattr(upstream, "frontend", None) is not None else []
    return names + [f"layer_{k}" for k in range(upstream.num_layers + 1)]


@torch.no_grad()
def extract(
    upstream,
    records: list[dict],
    root: str | Path,
    select: Callable[[dict, int], np.ndarray] | None = None,
    pool: bool = False,
    batch: int = 16,
) -> dict[str, list[np.ndarray]]:
    """Features of every layer for each record.

    Args:
        upstream: an Upstream (``hidden_states``, ``frame_lengths``; ``.frontend`` optional).
        records: manifest records (``path`` relative to ``root`` or absolute).
        root: corpus folder.
        select: ``select(record, n_frames) -> frame indices`` kept (frame-level use).
        pool: mean-pool valid frames instead (utterance level): arrays ``(D,)``.
        batch: utterances per forward pass (sorted by length to limit padding).

    Returns:
        ``{layer name: [per-record (n_i, D) float32 array, or (D,) when pooled]}``.
    """
    names = layer_names(upstream)
    out: dict[str, list] = {n: [None] * len(records) for n in names}
    order = sorted(range(len(records)), key=lambda i: records[i]["num_samples"])
    fe = getattr(upstream, "frontend", None)
    for s in range(0, len(order), batch):
        idx = order[s : s + batch]
        wavs = [torch.from_numpy(_load(audio_path(records[i], root))) for i in idx]
        lengths = torch.tensor([len(w) for w in wavs])
        x = torch.zeros(len(wavs), int(lengths.max()))
        for j, w in enumerate(wavs):
            x[j, : len(w)] = w
        states, flen = upstream.hidden_states(x, lengths)
        layers = list(states)
        if fe is not None:
            feats, _ = fe(x, lengths)
            layers = [feats] + layers
        for j, i in enumerate(idx):
            n = int(flen[j])
            keep = None if pool or select is None else select(records[i], n)
            for name, h in zip(names, layers):
                v = h[j, :n].float()
                if pool:
                    out[name][i] = v.mean(0).numpy() if n else np.zeros(v.shape[-1], np.float32)
                else:
                    out[name][i] = v.numpy()[keep] if keep is not None else v.numpy()
    return out


def frame_phone_labels(record: dict, n_frames: int, phone_index: dict[str, int], hop: int = 320, win: int = 400) -> np.ndarray:
    """Phone id per 50 Hz frame (the phone covering the frame's centre sample), -1 if none.

    Args:
        record: a manifest record with ``phones`` = ``[[phone, start_sample, end_sample], ...]``.
        n_frames: frames of the upstream for this utterance.
        phone_index: phone -> class id (phones not in it get -1).
        hop, win: the frame grid (samples); frame ``t`` is centred at ``t * hop + win // 2``.
    """
    labels = np.full(n_frames, -1, dtype=np.int64)
    centres = np.arange(n_frames) * hop + win // 2
    for ph, start, end in record.get("phones") or []:
        if ph in phone_index:
            labels[(centres >= start) & (centres < end)] = phone_index[ph]
    return labels


# ----------------------------------------------------------------------------- probes


def train_probe(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
    n_classes: int, seed: int = 0, method: str = "ridge", steps: int = 300, lr: float = 0.05,
    weight_decay: float = 1e-4,
) -> float:
    """A linear classifier on standardised features; returns test accuracy.

    Args:
        x_train, x_test: ``(n, D)`` features; y_train, y_test: ``(n,)`` int class ids.
        n_classes: number of classes.
        seed: initialisation (logistic) and the ridge validation split.
        method: ``ridge`` (closed-form least squares on one-hot targets, the ridge strength
            chosen on a held-out 20 % of the training set; ~100x cheaper than iterative
            training, which matters on a shared 2-core CPU) or ``logistic`` (softmax
            regression, full-batch Adam for ``steps``).
    """
    xtr = torch.from_numpy(np.ascontiguousarray(x_train, dtype=np.float32)).double()
    xte = torch.from_numpy(np.ascontiguousarray(x_test, dtype=np.float32)).double()
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-5  # train statistics only
    xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
    ytr, yte = torch.from_numpy(np.asarray(y_train, np.int64)), torch.from_numpy(np.asarray(y_test, np.int64))
    if method == "ridge":
        w = _ridge_fit(xtr, ytr, n_classes, seed)
        return float(((_bias(xte) @ w).argmax(-1) == yte).double().mean())
    if method != "logistic":
        raise ValueError(f"probe method must be 'ridge' or 'logistic', got {method!r}")
    g = torch.Generator().manual_seed(seed)
    xtr, xte = xtr.float(), xte.float()
    w = (torch.randn(xtr.shape[1], n_classes, generator=g) * 0.01).requires_grad_()
    b = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=lr)
    for _ in range(steps):
        loss = F.cross_entropy(xtr @ w + b, ytr) + weight_decay * (w * w).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float(((xte @ w + b).argmax(-1) == yte).float().mean())


def _bias(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)


def _ridge_fit(x: torch.Tensor, y: torch.Tensor, n_classes: int, seed: int) -> torch.Tensor:
    """Ridge regression onto one-hot targets; lambda picked on a held-out 20 %, then refit."""
    x = _bias(x)
    onehot = F.one_hot(y, n_classes).double()
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    cut = max(1, int(0.8 * len(x)))
    fit, val = perm[:cut], perm[cut:]
    lams = [1e-4, 1e-3, 1e-2, 1e-1, 1.0]  # times n (standardised features: diag(X^T X) ~ n)

    def solve(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        evals, evecs = torch.linalg.eigh(x[idx].T @ x[idx])
        return evals, evecs, evecs.T @ (x[idx].T @ onehot[idx])

    best = lams[0]
    if len(val):
        evals, evecs, proj = solve(fit)
        accs = [
            float(((x[val] @ (evecs @ (proj / (evals + lam * len(fit))[:, None]))).argmax(-1) == y[val]).double().mean())
            for lam in lams
        ]
        best = lams[int(np.argmax(accs))]
    evals, evecs, proj = solve(torch.arange(len(x)))
    return evecs @ (proj / (evals + best * len(x))[:, None])


def _subsample(n: int, frac: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=max(1, int(round(frac * n))), replace=False))


def probe_layers(
    train: dict[str, np.ndarray], y_train: np.ndarray, test: dict[str, np.ndarray], y_test: np.ndarray,
    n_classes: int, seeds: Sequence[int] = (0, 1, 2), frac: float = 0.8, method: str = "ridge",
) -> dict[str, dict]:
    """One probe per layer and seed; ``{layer: {"acc": [per seed], "mean", "std"}}``."""
    out = {}
    for name in train:
        accs = []
        for s in seeds:
            sub = _subsample(len(y_train), frac, 1000 + s)
            accs.append(train_probe(train[name][sub], y_train[sub], test[name], y_test, n_classes, seed=s, method=method))
        out[name] = {"acc": accs, "mean": float(np.mean(accs)), "std": float(np.std(accs))}
    return out


def phone_probe(
    upstream, data_dir: str | Path, seeds: Sequence[int] = (0, 1, 2), max_utts: int = 400,
    max_frames: int = 40_000, cka_frames: int = 3000, seed: int = 0,
) -> dict:
    """Frame-level phone probes per layer on ``asr_train`` -> ``asr_test`` (+ CKA on test frames).

    Returns:
        ``{"probe": {layer: {...}}, "cka": (L', L') list, "layers": names, "classes": n,
        "train_frames", "test_frames"}``.
    """
    data_dir = Path(data_dir)
    rng = random.Random(seed)
    splits = {}
    for split in ("asr_train", "asr_test"):
        recs = [r for r in read_manifest(data_dir / f"{split}.jsonl") if r.get("phones")]
        if not recs:
            raise ValueError(f"{data_dir / (split + '.jsonl')}: no records with 'phones' for the phone probe")
        splits[split] = rng.sample(recs, min(max_utts, len(recs)))
    phones = sorted({p[0] for r in splits["asr_train"] for p in r["phones"]})
    index = {p: i for i, p in enumerate(phones)}
    hop = int(round(16000 / upstream.frame_rate))
    total = {k: sum(int(upstream.frame_lengths(torch.tensor([r["num_samples"]]))[0]) for r in v) for k, v in splits.items()}
    budget = {"asr_train": max_frames, "asr_test": max_frames // 2}
    feats, labels = {}, {}
    for split, recs in splits.items():
        keep_frac = min(1.0, budget[split] / max(total[split], 1))
        lab_store: dict[str, np.ndarray] = {}
        frng = np.random.default_rng(seed + len(split))

        def select(rec: dict, n: int, _f=keep_frac, _store=lab_store, _rng=frng) -> np.ndarray:
            lab = frame_phone_labels(rec, n, index, hop=hop)
            keep = np.flatnonzero((lab >= 0) & (_rng.random(n) < _f))
            _store[rec["id"]] = lab[keep]
            return keep

        f = extract(upstream, recs, data_dir, select=select)
        feats[split] = {k: np.concatenate(v, 0) for k, v in f.items()}
        labels[split] = np.concatenate([lab_store[r["id"]] for r in recs])
    probe = probe_layers(feats["asr_train"], labels["asr_train"], feats["asr_test"], labels["asr_test"], len(phones), seeds)
    test = feats["asr_test"]
    n = len(labels["asr_test"])
    sel = np.sort(np.random.default_rng(seed).choice(n, size=min(cka_frames, n), replace=False))
    names = list(test)
    return {
        "probe": probe,
        "cka": cka_matrix([test[k][sel] for k in names]).tolist(),
        "layers": names,
        "classes": len(phones),
        "train_frames": int(len(labels["asr_train"])),
        "test_frames": n,
        "cka_frames": int(len(sel)),
    }


def speaker_probe(upstream, data_dir: str | Path, seeds: Sequence[int] = (0, 1, 2), max_utts: int = 1500, seed: int = 0) -> dict:
    """Utterance-level (mean-pooled) speaker-id probes per layer on ``sid_train`` -> ``sid_test``."""
    data_dir = Path(data_dir)
    rng = random.Random(seed)
    tr = read_manifest(data_dir / "sid_train.jsonl")
    te = read_manifest(data_dir / "sid_test.jsonl")
    tr = rng.sample(tr, min(max_utts, len(tr)))
    classes = sorted({str(r.get("label", r["speaker"])) for r in tr})
    index = {c: i for i, c in enumerate(classes)}
    te = [r for r in te if str(r.get("label", r["speaker"])) in index]
    te = rng.sample(te, min(max(max_utts // 2, 1), len(te)))
    if not te:
        raise ValueError(f"{data_dir / 'sid_test.jsonl'}: no test utterance of a speaker seen in sid_train")
    ftr = {k: np.stack(v) for k, v in extract(upstream, tr, data_dir, pool=True).items()}
    fte = {k: np.stack(v) for k, v in extract(upstream, te, data_dir, pool=True).items()}
    ytr = np.array([index[str(r.get("label", r["speaker"]))] for r in tr])
    yte = np.array([index[str(r.get("label", r["speaker"]))] for r in te])
    return {
        "probe": probe_layers(ftr, ytr, fte, yte, len(classes), seeds),
        "classes": len(classes), "train_utts": len(tr), "test_utts": len(te),
    }


def upstream_cka(
    upstream_a, upstream_b=None, data_dir: str | Path = ".", split: str = "asr_test",
    max_utts: int = 100, max_frames: int = 3000, seed: int = 0,
) -> dict:
    """Linear CKA between every layer of two upstreams (or within one) on the same frames.

    Both upstreams must share the frame rate; per utterance the shorter frame count is
    used (front-ends may differ by a frame at the end).

    Args:
        upstream_a, upstream_b: Upstreams (``upstream_b=None``: within ``upstream_a``).
        data_dir: corpus folder; ``split``: its manifest used for the audio.
        max_utts, max_frames: audio and frame sample sizes (seeded).

    Returns:
        ``{"layers_a", "layers_b", "cka": (La, Lb) list, "frames"}``.

    Raises:
        ValueError: the frame rates differ.
    """
    data_dir = Path(data_dir)
    recs = read_manifest(data_dir / f"{split}.jsonl")
    recs = random.Random(seed).sample(recs, min(max_utts, len(recs)))
    fa = extract(upstream_a, recs, data_dir)
    if upstream_b is None:
        fb = None
    else:
        if abs(upstream_a.frame_rate - upstream_b.frame_rate) > 1e-6:
            raise ValueError(f"CKA needs the same frame rate: {upstream_a.frame_rate} vs {upstream_b.frame_rate} Hz")
        fb = extract(upstream_b, recs, data_dir)
    a, b = same_frames([fa, fb] if fb else [fa], list(fa), list(fb) if fb else [], max_frames, seed)
    return {
        "layers_a": list(fa), "layers_b": list(fb) if fb else list(fa),
        "cka": cka_matrix(a, b if fb else None).tolist(), "frames": int(len(a[0])),
    }


def same_frames(feats: list[dict], names_a: list[str], names_b: list[str], max_frames: int, seed: int):
    """The same seeded sample of frames from the layers of one or two upstreams' features.

    ``feats`` holds one or two ``extract`` results over the same records; per utterance the
    shorter frame count is used (front-ends may differ by a frame at the end). Returns
    ``(layers of names_a, layers of names_b)``, each a list of ``(n, D)`` arrays.
    """
    first = [f[next(iter(f))] for f in feats]
    n_per = [min(len(x[i]) for x in first) for i in range(len(first[0]))]
    total = sum(n_per)
    sel = np.sort(np.random.default_rng(seed).choice(total, size=min(max_frames, total), replace=False))

    def stack(f: dict, names: list[str]) -> list[np.ndarray]:
        return [np.concatenate([f[n][i][: n_per[i]] for i in range(len(n_per))], 0)[sel] for n in names]

    return stack(feats[0], names_a), stack(feats[-1], names_b)


# ----------------------------------------------------------------------------- per run


def analyse_run(run_dir: str | Path, corpus: str | Path | None = None, split: str = "asr_test",
                max_utts: int = 48, max_frames: int = 2000, seed: int = 0) -> dict:
    """Student x teacher and student x student CKA of a finished run -> ``analysis.json``.

    Rows and columns are hidden states ``layer_0 .. layer_L`` (the front-end output is left
    out, so the matrices are ``(L+1) x (T+1)`` and ``(L+1) x (L+1)``), on the same seeded
    frames of ``split`` (default: the corpus of the run's config).

    Returns:
        The written content: ``{"cka_teacher", "cka_self", "layers_student",
        "layers_teacher", "teacher", "split", "utterances", "frames", "seconds"}``.

    Raises:
        FileNotFoundError: no student checkpoint, config or split.
    """
    import time

    from harness.superb.evaluate import load_upstream

    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    student, _, cfg = load_upstream(run_dir)
    spec = cfg.get("teacher.spec")
    corpus = Path(corpus or cfg.get("data.corpus") or "")
    if not spec:
        raise FileNotFoundError(f"{run_dir / 'config.yaml'}: no teacher.spec to compare the student with")
    if not (corpus / f"{split}.jsonl").is_file():
        raise FileNotFoundError(f"{corpus / f'{split}.jsonl'}: no {split} split for the layer analysis")
    teacher = load_teacher(spec, "cpu")
    if abs(student.frame_rate - teacher.frame_rate) > 1e-6:
        raise ValueError(f"CKA needs the same frame rate: student {student.frame_rate} vs teacher {teacher.frame_rate} Hz")
    recs = read_manifest(corpus / f"{split}.jsonl")
    recs = random.Random(seed).sample(recs, min(max_utts, len(recs)))
    fs, ft = extract(student, recs, corpus), extract(teacher, recs, corpus)
    s_names = [n for n in fs if n.startswith("layer_")]
    t_names = [n for n in ft if n.startswith("layer_")]
    a, b = same_frames([fs, ft], s_names, t_names, max_frames, seed)
    m, w = cka_matrix(a, b), cka_matrix(a)
    between = {"frames": int(len(a[0]))}
    out = {
        "cka_teacher": m.round(5).tolist(), "cka_self": w.round(5).tolist(),
        "layers_student": s_names, "layers_teacher": t_names, "teacher": spec, "split": split,
        "utterances": max_utts, "frames": between["frames"], "seconds": round(time.perf_counter() - t0, 2),
    }
    runs.write_analysis(run_dir, out)
    return out
