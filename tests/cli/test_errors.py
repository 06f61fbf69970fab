"""Bad input through the real ``harness`` entry point: one line on stderr naming the file or
key and the fix, exit status 2, no traceback (issue 17, list item 11)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "sweeps" / "base" / "tiny.yaml"


def one_line_error(capsys, argv: list[str]) -> str:
    """Run ``harness ARGV``; assert exit status 2 and a single ``harness: error:`` line; return it."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("harness: error: ") and "Traceback" not in err, err
    return err.strip()


@pytest.mark.parametrize("content, fragment", [
    (b"train:\n  steps: 5\n\xff\xfe\x00\x01\x89PNG", "is not a text file (byte 18 is not UTF-8 text): give a YAML config"),
    (b"train:\n  steps: 5\x00\n", "is not a text file (byte 17 is not UTF-8 text)"),
    (b"", "is empty: write the keys to change, or {} for all defaults"),
    (b"# nothing but a comment\n", "is empty: write the keys to change"),
])
@pytest.mark.parametrize("command", ["validate", "distill"])
def test_binary_or_empty_config_file(tmp_path, capsys, content, fragment, command):
    path = tmp_path / "run.yaml"
    path.write_bytes(content)
    argv = ["validate", str(path)] if command == "validate" else [
        "distill", "--config", str(path), "--out", str(tmp_path / "run")]
    err = one_line_error(capsys, argv)
    assert str(path) in err and fragment in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("override, fragment", [
    ("train.seed=-1", "train.seed: a seed must be in [0, 2**32 - 1], got -1"),
    ("data.max_seconds=.nan", "data.max_seconds: expected a finite number, got nan"),
    ("data.max_seconds=.inf", "data.max_seconds: expected a finite number, got inf"),
    ("data.max_seconds=0", "data.max_seconds must be > 0, got 0.0"),
    ("optim.lr=-.inf", "optim.lr: expected a finite number, got -inf"),
    ("train.device=tpu", "train.device: unknown device 'tpu': use auto, cpu, cuda, cuda:N (N = GPU index) or mps"),
    ("teacher.spec=fbank", "teacher.spec 'fbank': fbank is the SUPERB baseline (log-mel features, no layers), "
                           "not a distillation teacher (use dummy, embedded"),
    ("optim.lr=1e-3x", "optim.lr: expected a number, got '1e-3x'"),
])
def test_distill_refuses_bad_values_before_running(tmp_path, capsys, override, fragment):
    out = tmp_path / "run"
    err = one_line_error(capsys, ["distill", "--config", str(TINY), override, "--out", str(out)])
    # the command line's value is at fault: the message names the override, not the file
    assert f"override {override!r} (command line): " in err and fragment in err and str(TINY) not in err
    assert not out.exists()  # refused before anything was written


@pytest.mark.parametrize("argv_tail, expected", [
    (["trian.steps=5"], "override 'trian.steps=5' (command line): unknown key 'trian'; did you mean 'train'?"),
    (["train.stpes=5"], "override 'train.stpes=5' (command line): unknown key 'train.stpes'; "
                        "did you mean 'train.steps'"),
    (["train.steps=abc"], "override 'train.steps=abc' (command line): train.steps: expected an integer, got 'abc'"),
])
def test_an_override_typo_is_the_command_lines_not_the_files(tmp_path, capsys, argv_tail, expected):
    out = tmp_path / "run"
    err = one_line_error(capsys, ["distill", "--config", str(TINY), *argv_tail, "--out", str(out)])
    assert expected in err and str(TINY) not in err, err
    assert not out.exists()


def test_a_sweep_set_typo_names_the_set(tmp_path, capsys):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"name: s\nbase: {TINY}\ngrid:\n  loss.w: [0.1]\nstorage: {tmp_path / 'results'}\n")
    err = one_line_error(capsys, ["sweep", str(sweep), "--dry-run", "--set", "trian.steps=5"])
    assert "--set 'trian.steps=5' (command line): unknown key 'trian'; did you mean 'train'?" in err, err
    err = one_line_error(capsys, ["sweep", str(sweep), "--dry-run", "--set", "data.max_seconds=0"])
    assert "--set 'data.max_seconds=0' (command line): data.max_seconds must be > 0" in err, err
    assert str(TINY) not in err


def test_exponent_floats_are_accepted_in_files_and_overrides(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text("optim:\n  lr: 1e-3\n  weight_decay: 1E-5\nloss:\n  w: -2.5e-4\n")
    err = one_line_error(capsys, ["validate", str(path)])  # w < 0: the number got through as a number
    assert "loss.w must be >= 0, got -0.00025" in err
    path.write_text("optim:\n  lr: 1e-3\n  weight_decay: 1E-5\nloss:\n  w: 2.5e-1\n")
    assert main(["validate", str(path)]) == 0
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"name: s\nbase: {TINY}\ngrid:\n  loss.w: [1e-1, 5E-1]\nstorage: {tmp_path / 'results'}\n")
    assert main(["sweep", str(sweep), "--dry-run", "--set", "optim.lr=1e-3", "--set", "optim.grad_clip=1E1"]) == 0
    out = capsys.readouterr().out
    assert "w=0.1-s0" in out and "w=0.5-s0" in out


@pytest.mark.parametrize("item, fragment", [
    ("ks.lr=abc", "--set ks.lr: expected a number, got 'abc'"),
    ("ks.steps=abc", "--set ks.steps: expected an integer, got 'abc'"),
    ("ks.steps=2.5", "--set ks.steps: expected an integer, got 2.5"),
    ("ks.steps=-3", "--set ks.steps: must be >= 1, got -3"),
    ("ks.lr=.nan", "--set ks.lr: expected a finite number, got nan"),
    ("ks.lr=0", "--set ks.lr: must be > 0, got 0.0"),
    ("ks.max_utts=abc", "--set ks.max_utts: expected list[int], got 'abc'"),
    ("ks.max_utts=[1,2]", "--set ks.max_utts: expected 3 values (train, dev, test), got [1, 2]"),
    ("ks.max_utts=[8,-1,4]", "--set ks.max_utts: must be >= 0, got [8, -1, 4]"),
    ("ks.optimizer=sgd", "--set ks.optimizer: 'sgd' is not one of 'adam' | 'adamw'"),
    ("ks.normalize=maybe", "--set ks.normalize: expected true/false, got 'maybe'"),
    ("ks.stepz=3", "--set 'ks.stepz=3': no task option 'stepz'; did you mean 'steps'?"),
    ("ks.metric=wer", "--set 'ks.metric=wer': no task option 'metric'"),
    ("kss.steps=3", "--set 'kss.steps=3': unknown SUPERB task 'kss'; did you mean 'ks'?"),
    ("ks=3", "bad --set 'ks=3'; expected TASK.OPTION=VALUE"),
])
def test_superb_set_values_are_checked(tmp_path, capsys, item, fragment):
    """Checked before any feature is extracted: the corpus does not even exist."""
    err = one_line_error(capsys, ["evaluate", "fbank", "--corpus", str(tmp_path / "none"), "--tasks", "ks",
                                  "--no-score", "--quiet", "--set", item])
    assert fragment in err


@pytest.mark.parametrize("option, fragment", [
    (["--device", "tpu"], "--device 'tpu': use cpu, cuda, cuda:N (N = GPU index) or mps"),
    (["--seed", "-1"], "--seed -1: a seed must be in [0, 2**32 - 1]"),
    (["--threads", "-2"], "--threads -2: must be >= 0 (0 = torch's default)"),
    (["--threads", "-2", "--as-baseline"], "--threads -2: must be >= 0"),
])
def test_evaluate_options_are_checked(tmp_path, capsys, option, fragment):
    err = one_line_error(capsys, ["evaluate", "fbank", "--corpus", str(tmp_path), "--tasks", "ks", "--quiet", *option])
    assert err == f"harness: error: {fragment}" or fragment in err


def test_superb_set_reads_yaml_numbers():
    from harness.cli.evaluate import superb_options

    got = superb_options(["ks.lr=1e-3", "ks.max_utts=[8, 4, 4]", "asr.max_seconds=2", "ks.normalize=false"])
    assert got == {"ks": {"lr": 0.001, "max_utts": (8, 4, 4), "normalize": False}, "asr": {"max_seconds": 2.0}}


@pytest.mark.parametrize("suffix", ["/../..", "..", ".hidden", "a/b", "-x y", "x\\y"])
def test_sweep_suffix_must_be_a_folder_name_word(tmp_path, capsys, suffix):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"name: s\nbase: {TINY}\nstorage: {tmp_path / 'results'}\n")
    err = one_line_error(capsys, ["sweep", str(sweep), "--dry-run", f"--suffix={suffix}"])
    assert f"--suffix {suffix!r}: use letters, digits, _ . - only" in err
    assert main(["sweep", str(sweep), "--dry-run", "--suffix=-quick.v2"]) == 0
    assert "s-quick.v2" in capsys.readouterr().out


def test_a_closed_stdout_ends_quietly():
    """`harness ls | head -1` style: the reader is gone; no BrokenPipeError traceback."""
    read, write = os.pipe()
    os.close(read)
    try:
        out = subprocess.run([sys.executable, "-m", "harness.cli", "ls"], stdout=write, stderr=subprocess.PIPE,
                             text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    finally:
        os.close(write)
    assert out.returncode == 141 and out.stderr == ""


def test_errors_in_a_subprocess_are_one_line(tmp_path):
    """The console entry (`python -m harness.cli`), not only main(): same line, status 2."""
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"\x00\x01\x02binary")
    out = subprocess.run([sys.executable, "-m", "harness.cli", "validate", str(path)], capture_output=True,
                         text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 2
    assert out.stderr == f"harness: error: {path} is not a text file (byte 0 is not UTF-8 text): " \
                         "give a YAML config, not a binary file\n"


@pytest.mark.parametrize("device", ["mps", "cuda:99"])
def test_a_device_this_machine_lacks_is_one_line(tmp_path, capsys, device):
    import torch

    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    err = one_line_error(capsys, ["distill", "--config", str(TINY), f"train.device={device}",
                                  "--out", str(tmp_path / "run")])
    assert f"train.device: {device!r}" in err
    assert ("MPS (Apple GPU) is not available" in err if device == "mps"
            else "CUDA is not available" in err or "use cuda:0 .. cuda:" in err)
