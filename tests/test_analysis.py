"""Layer analysis: linear CKA (closed-form properties, HSIC reference) and linear probes."""

import numpy as np
import pytest
import torch

from harness.analysis import (
    cka_matrix, extract, frame_phone_labels, layer_names, linear_cka, phone_probe, speaker_probe, train_probe,
    upstream_cka,
)
from harness.teachers.embedded import EmbeddedSFM, teacher_tiny



def hsic_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Direct O(n^2) definition: HSIC(K, L) = tr(K H L H) / (n - 1)^2 with linear kernels."""
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    k, l = x @ x.T, y @ y.T
    hsic = lambda a, b: np.trace(a @ h @ b @ h) / (n - 1) ** 2  # noqa: E731
    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


def test_cka_identity_orthogonal_scaling_and_hsic():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 8))
    y = x @ rng.standard_normal((8, 5)) + 0.5 * rng.standard_normal((50, 5))
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    q, _ = np.linalg.qr(rng.standard_normal((8, 8)))
    assert linear_cka(x @ q, y) == pytest.approx(linear_cka(x, y), abs=1e-10)  # orthogonal
    assert linear_cka(3.7 * x, 0.01 * y) == pytest.approx(linear_cka(x, y), abs=1e-10)  # isotropic scale
    assert linear_cka(x, y) == pytest.approx(hsic_cka(x, y), abs=1e-10)
    assert 0.0 < linear_cka(x, y) < 1.0
    # not invariant to a non-isotropic scaling (so the test above can fail)
    assert abs(linear_cka(x * np.arange(1, 9), y) - linear_cka(x, y)) > 1e-3
    with pytest.raises(ValueError, match="rows"):
        linear_cka(x, y[:10])


def test_cka_matrix_within_and_between():
    rng = np.random.default_rng(1)
    a = [rng.standard_normal((30, 4)) for _ in range(3)]
    m = cka_matrix(a)
    assert m.shape == (3, 3) and np.allclose(np.diag(m), 1.0) and np.allclose(m, m.T)
    b = cka_matrix(a, [a[2], a[0]])
    assert b.shape == (3, 2) and b[2, 0] == pytest.approx(1.0) and b[1, 0] == pytest.approx(linear_cka(a[1], a[2]))


def test_frame_phone_labels_centre_rule():
    rec = {"phones": [["a", 0, 640], ["b", 640, 1000], ["zz", 1000, 1600]]}
    # frame t centred at 320 t + 200: 200, 520 -> a; 840 -> b; 1160, 1480 -> unknown phone
    labels = frame_phone_labels(rec, 6, {"a": 0, "b": 1})
    assert labels.tolist() == [0, 0, 1, -1, -1, -1]


def test_probe_separable_vs_random():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    x = rng.standard_normal((300, 6)) + 4.0 * np.eye(3, 6)[y]
    assert train_probe(x[:200], y[:200], x[200:], y[200:], 3) > 0.95
    noise = rng.standard_normal((300, 6))
    assert train_probe(noise[:200], y[:200], noise[200:], y[200:], 3) < 0.6


@pytest.fixture(scope="module")
def corpus(fake_corpus):
    return fake_corpus("teacher", n_distill=2, n_probe=12)


def test_extract_and_probes_on_an_upstream(corpus):
    from harness.data.manifest import read_manifest

    torch.manual_seed(0)
    model = EmbeddedSFM(teacher_tiny()).eval()
    recs = read_manifest(corpus / "asr_train.jsonl")[:3]
    feats = extract(model, recs, corpus)
    assert list(feats) == layer_names(model) == ["frontend"] + [f"layer_{k}" for k in range(5)]
    n = int(model.frame_lengths(torch.tensor([recs[0]["num_samples"]]))[0])
    assert feats["layer_4"][0].shape == (n, 64) and feats["frontend"][0].shape == (n, 64)
    pooled = extract(model, recs, corpus, pool=True)
    np.testing.assert_allclose(pooled["layer_2"][0], feats["layer_2"][0].mean(0), rtol=1e-5, atol=1e-6)
    ph = phone_probe(model, corpus, seeds=(0, 1), max_utts=12, max_frames=5000, cka_frames=500)
    assert set(ph["probe"]) == set(ph["layers"]) and ph["classes"] == 5
    # tones vs noise are linearly separable in the fbank front-end: far above chance (0.2)
    assert ph["probe"]["frontend"]["mean"] > 0.6 and len(ph["probe"]["frontend"]["acc"]) == 2
    cka = np.array(ph["cka"])
    assert cka.shape == (6, 6) and np.allclose(np.diag(cka), 1.0)
    spk = speaker_probe(model, corpus, seeds=(0,))
    assert spk["classes"] == 3 and 0.0 <= spk["probe"]["layer_4"]["mean"] <= 1.0


def test_upstream_cka_between_and_within(corpus):
    torch.manual_seed(0)
    a = EmbeddedSFM(teacher_tiny()).eval()
    torch.manual_seed(1)
    b = EmbeddedSFM(teacher_tiny()).eval()
    within = upstream_cka(a, None, corpus, split="asr_test", max_utts=4, max_frames=200)
    self_pair = upstream_cka(a, a, corpus, split="asr_test", max_utts=4, max_frames=200)
    np.testing.assert_allclose(within["cka"], self_pair["cka"], atol=1e-9)
    between = np.array(upstream_cka(a, b, corpus, split="asr_test", max_utts=4, max_frames=200)["cka"])
    assert between.shape == (6, 6) and (between < 0.999).any()


def test_ridge_and_logistic_probes_agree_on_easy_data():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 400)
    x = rng.standard_normal((400, 10)) + 3.0 * np.eye(4, 10)[y]
    ridge = train_probe(x[:300], y[:300], x[300:], y[300:], 4, method="ridge")
    logistic = train_probe(x[:300], y[:300], x[300:], y[300:], 4, method="logistic")
    assert ridge > 0.85 and logistic > 0.85 and abs(ridge - logistic) < 0.08
    with pytest.raises(ValueError, match="ridge"):
        train_probe(x, y, x, y, 4, method="svm")


def test_analyse_run_writes_student_teacher_cka(tmp_path, fake_corpus):
    """A student saved by harness.student next to its config: analysis.json for the report."""
    import json

    from harness.analysis import analyse_run
    from harness.config import StudentConfig
    from harness.student import build_student, save_student
    from harness.teachers.base import load_teacher

    corpus = fake_corpus("superb", tmp_path / "corpus")
    teacher = load_teacher("dummy", "cpu")
    student = build_student(StudentConfig(preset="student_tiny", layers=2), teacher)
    run = tmp_path / "run"
    run.mkdir()
    save_student(student, run / "student.ckpt", {"run_id": "r"})
    (run / "config.yaml").write_text(f"profile: tiny\nteacher:\n  spec: dummy\ndata:\n  corpus: {corpus}\n")
    out = analyse_run(run, max_utts=6, max_frames=300)
    saved = json.loads((run / "analysis.json").read_text())
    assert saved["cka_teacher"] == out["cka_teacher"]
    assert np.asarray(saved["cka_teacher"]).shape == (3, teacher.num_layers + 1)
    self_cka = np.asarray(saved["cka_self"])
    assert self_cka.shape == (3, 3) and np.allclose(np.diag(self_cka), 1.0, atol=1e-4)
    assert np.allclose(self_cka, self_cka.T, atol=1e-6)
    (run / "config.yaml").write_text("profile: tiny\n")
    with pytest.raises(FileNotFoundError, match="teacher.spec"):
        analyse_run(run)
