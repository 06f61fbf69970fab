"""Export: a tiny student with a conv front-end, written in s3prl's distiller format,
loads through s3prl and yields the student's hidden states."""

from __future__ import annotations

import pytest
import torch

from harness.export import ExportError, export_run, export_s3prl, load_s3prl_upstream, s3prl_checkpoint
from harness.stacking import grow, plan
from harness.student import TeacherInfo, save_student, student_tiny
from tests.support.modules import LAYERS, ConvStack

# s3prl's own weight_norm call warns about its deprecation; not ours to fix
pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning"), pytest.mark.usefixtures("one_thread")]


def conv_frontend(mode="group_norm", **kw):
    try:
        from harness.frontends import ConvFrontend
    except ImportError:
        return ConvStack(mode=mode, **kw)
    return ConvFrontend(LAYERS, mode=mode, **kw)


def make_student(mode="group_norm", seed=0, **kw):
    torch.manual_seed(seed)
    fe = conv_frontend(mode)
    with torch.no_grad():  # move the norms off identity so the front-end mapping is tested
        for p in fe.parameters():
            p.add_(0.1 * torch.randn_like(p))
    shape = {"layers": 2, "width": 32, "heads": 4, "ffn": 48, "conv_pos": 8, "conv_pos_groups": 4, **kw}
    s = student_tiny(TeacherInfo(width=24, num_layers=4, frontend=fe), **shape)
    with torch.no_grad():
        for p in s.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return s.eval()


def wav_batch():
    g = torch.Generator().manual_seed(7)
    wavs = torch.randn(2, 16000, generator=g) * 0.1
    lengths = torch.tensor([16000, 12800])
    wavs[1, 12800:] = 0
    return wavs, lengths


def compare(student, path):
    upstream = load_s3prl_upstream(path)
    wavs, lengths = wav_batch()
    with torch.no_grad():
        ours, frames = student.hidden_states(wavs, lengths)
        theirs, _ = upstream(wavs, lengths)
        feat_final = student.post_extract_proj(student.frontend(wavs, lengths)[0])
    return ours, theirs, frames, feat_final


@pytest.mark.parametrize("pre_ln", [False, True])
def test_export_loads_in_s3prl_with_same_hidden_states(tmp_path, pre_ln):
    student = make_student(layer_norm_first=pre_ln)
    path = export_s3prl(student, tmp_path / "distiller.ckpt")
    blob = torch.load(path, weights_only=False)
    assert set(blob) >= {"Config", "Distiller"} and blob["Config"]["distiller"]["encoder_layers"] == 2
    ours, theirs, frames, feat_final = compare(student, path)
    L = len(student.layers)
    assert len(theirs) == 2 * (L + 1)  # self-hidden mode returns the L + 1 states twice
    for b in range(2):
        t = int(frames[b])
        for k in range(1, L + 1):
            assert torch.allclose(ours[k][b, :t], theirs[k][b, :t], atol=1e-4), (k, b)
            assert torch.allclose(ours[k][b, :t], theirs[L + 1 + k][b, :t], atol=1e-4)
        # s3prl's state 0 is the projected features before the positional conv
        assert torch.allclose(feat_final[b, :t], theirs[0][b, :t], atol=1e-4)


def test_export_layer_norm_frontend_grown_student_and_no_pos_conv(tmp_path):
    student = make_student(mode="layer_norm", conv_pos=0).train()
    grow(student, None, plan("interleaved", 2, 2), init="copy")
    student.eval()
    path = export_s3prl(student, tmp_path / "x.ckpt")
    ours, theirs, frames, _ = compare(student, path)
    for k in range(1, 5):
        t = int(frames[0])
        assert torch.allclose(ours[k][0, :t], theirs[k][0, :t], atol=1e-4)


@pytest.mark.parametrize("pre_ln", [False, True])
def test_export_pred_heads(tmp_path, pre_ln):
    student = make_student(target_mode="pred_heads", pred_head_layers=[2, 4], layer_norm_first=pre_ln)
    path = export_s3prl(student, tmp_path / "h.ckpt")
    ours, theirs, frames, _ = compare(student, path)
    with torch.no_grad():
        preds = student.project(ours)
    assert len(theirs) == 3 + 2
    t = int(frames[1])
    for k in (1, 2):
        assert torch.allclose(ours[k][1, :t], theirs[k][1, :t], atol=1e-4)
    for i in range(2):
        assert torch.allclose(preds[i][1, :t], theirs[3 + i][1, :t], atol=1e-4)


def test_export_refuses_what_s3prl_cannot_express():
    with pytest.raises(ExportError, match="feature LayerNorm"):
        s3prl_checkpoint(make_student(feature_norm=True))
    s = make_student()
    s.frontend.spec  # noqa: B018
    s.frontend = None
    with pytest.raises(ExportError, match="no front-end"):
        s3prl_checkpoint(s)
    s = make_student(layer_norm_first=False).train()
    grow(s, None, plan("top", 2, 2), init="zero")
    with pytest.raises(ExportError, match="blended"):
        s3prl_checkpoint(s)


def test_export_run_folder(tmp_path):
    student = make_student()
    run = tmp_path / "run"
    run.mkdir()
    try:
        from harness.frontends import build_frontend
    except ImportError:  # before the teachers branch is merged
        def build_frontend(spec):
            return ConvStack(**{k: v for k, v in spec.items() if k != "type"})
    save_student(student, run / "student.ckpt", extra={"run_id": "run"})
    result = export_run(run, tmp_path / "out.ckpt", frontend_builder=build_frontend)
    assert result["layers"] == 2 and result["max_abs_diff"] < 1e-4
    with pytest.raises(FileNotFoundError, match="student.ckpt"):
        export_run(tmp_path / "nope", tmp_path / "o.ckpt")


def test_cli_export(tmp_path, capsys):
    from harness.cli import main

    assert main(["export", str(tmp_path / "missing"), "--out", str(tmp_path / "o.ckpt")]) == 2
    assert "no student checkpoint" in capsys.readouterr().err
    pytest.importorskip("harness.frontends")
    run = tmp_path / "run"
    run.mkdir()
    save_student(make_student(), run / "student.ckpt")
    assert main(["export", str(run), "--format", "s3prl", "--out", str(tmp_path / "d.ckpt")]) == 0
    assert '"max_abs_diff"' in capsys.readouterr().out
    assert (tmp_path / "d.ckpt").is_file()
    save_student(make_student(feature_norm=True), run / "student.ckpt")
    assert main(["export", str(run), "--out", str(tmp_path / "e.ckpt")]) == 2
    assert "feature LayerNorm" in capsys.readouterr().err
