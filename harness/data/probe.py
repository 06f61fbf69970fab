"""A floor for every classification task: logistic regression on mean-pooled log-mel.

The corpus is meant to be hard enough that a surface feature does not solve a task. This
module measures it: each utterance becomes the mean and standard deviation over time of
80 log-mel filterbank energies (25 ms / 10 ms, Kaldi-compatible, torchaudio), and a
standardised multinomial logistic regression is trained on ``<task>_train`` and scored on
``<task>_test``. Used for the SID difficulty check in the corpus issue; a teacher's
SUPERB score on the same task should be well above it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.data.manifest import audio_path, read_manifest


def mean_fbank(path: str | Path, num_mel_bins: int = 80, with_std: bool = False) -> np.ndarray:
    """Mean (and optionally std) over frames of Kaldi-style log-mel energies, ``(80,)`` or ``(160,)``."""
    import soundfile as sf
    import torch
    import torchaudio

    wav, sr = sf.read(str(path), dtype="float32")
    feats = torchaudio.compliance.kaldi.fbank(
        torch.from_numpy(wav)[None] * 32768.0, num_mel_bins=num_mel_bins, sample_frequency=sr, dither=0.0
    )
    parts = [feats.mean(0)]
    if with_std:
        parts.append(feats.std(0))
    return torch.cat(parts).numpy()


def probe_task(corpus: str | Path, task: str, with_std: bool = False, max_train: int | None = None, seed: int = 0) -> dict:
    """Train on ``<task>_train``, score on ``<task>_test``; returns accuracy and counts.

    Args:
        corpus: corpus folder.
        task: ``ks``, ``ic``, ``sid`` or ``er`` (any split family with ``label``).
        with_std: also pool the standard deviation over time.
        max_train: subsample the training set (for speed), None = all.
        seed: subsampling and solver seed.

    Returns:
        ``{"task", "features", "accuracy", "n_train", "n_test", "classes", "chance"}``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    corpus = Path(corpus)
    train = read_manifest(corpus / f"{task}_train.jsonl")
    test = read_manifest(corpus / f"{task}_test.jsonl")
    if max_train and len(train) > max_train:
        idx = np.random.default_rng(seed).choice(len(train), max_train, replace=False)
        train = [train[i] for i in sorted(idx)]

    def feats(recs: list[dict]) -> np.ndarray:
        return np.stack([mean_fbank(audio_path(r, corpus), with_std=with_std) for r in recs])

    xtr, xte = feats(train), feats(test)
    ytr, yte = [r["label"] for r in train], [r["label"] for r in test]
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0, random_state=seed))
    clf.fit(xtr, ytr)
    acc = float(np.mean(clf.predict(xte) == np.array(yte)))
    counts = np.unique(yte, return_counts=True)[1]
    return {
        "task": task, "features": "mean+std log-mel 80" if with_std else "mean log-mel 80",
        "accuracy": round(acc, 4), "n_train": len(train), "n_test": len(test), "classes": len(set(ytr)),
        "chance": round(float(counts.max() / counts.sum()), 4),
    }
