import subprocess
import sys

from harness.cli import main


def test_validate_ok_and_error(tmp_path, capsys):
    good = tmp_path / "good.yaml"
    good.write_text("train:\n  steps: 5\n")
    assert main(["validate", str(good)]) == 0
    assert "ok" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("loss:\n  ww: 0.5\n")
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "loss.ww" in err and "loss.w'" in err


def test_ls_runs(capsys):
    assert main(["ls"]) == 0


def test_console_script_help():
    out = subprocess.run(
        [sys.executable, "-m", "harness.cli", "data", "build", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "examples:" in out.stdout


def test_library_never_imports_the_cli():
    """No module under harness/ but harness/cli/ imports harness.cli (imports inside functions too)."""
    import ast
    from pathlib import Path

    import harness

    root = Path(harness.__file__).parent
    offenders = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent)
        if rel.parts[:2] == ("harness", "cli"):
            continue
        package = list(rel.with_suffix("").parts[:-1])  # for relative imports
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            if any(n == "harness.cli" or n.startswith("harness.cli.") for n in names):
                offenders.append(f"{rel}:{node.lineno}")
    assert not offenders, offenders


def test_teacher_pretrain_unknown_key_is_one_line(tmp_path, capsys):
    cfg = tmp_path / "pretrain.yaml"
    cfg.write_text("k1: 8\nminutes_1: 2\n")
    assert main(["teacher", "pretrain", "--config", str(cfg), "--out", str(tmp_path / "t.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(cfg) in err and "'minutes_1'" in err and "'minutes1'" in err
    cfg.write_text("model:\n  post_ln: maybe\n")
    assert main(["teacher", "pretrain", "--config", str(cfg), "--out", str(tmp_path / "t.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(cfg) in err and "model.post_ln" in err


def test_teacher_pretrain_overrides_reach_the_config(tmp_path, monkeypatch):
    from harness.teachers import pretrain as pt
    from harness.teachers.pretrain_config import profile_config

    seen = {}
    monkeypatch.setattr(pt, "pretrain", lambda cfg, data, out, log_fn: seen.update(cfg=cfg, data=data, out=out))
    (tmp_path / "distill.jsonl").write_text("")
    cfg = tmp_path / "pretrain.yaml"
    cfg.write_text("k1: 8\niter2_layer: 2\n")
    rc = main(["teacher", "pretrain", "--profile", "tiny", "--config", str(cfg), "--data", str(tmp_path),
               "--out", str(tmp_path / "t.pt"), "steps1=40", "model.post_ln=false", "iter2_init=scratch"])
    assert rc == 0
    c = seen["cfg"]
    assert (c.k1, c.iter2_layer, c.steps1, c.model.post_ln, c.iter2_init) == (8, 2, 40, False, "scratch")
    assert c.model.layers == profile_config("tiny").model.layers and seen["data"] == tmp_path


def test_the_cli_starts_without_importing_torch():
    """`harness --help` stays fast: torch (and what needs it) is imported by the commands."""
    import subprocess
    import sys

    code = "import sys, harness.cli; print(sorted(m for m in ('torch', 'transformers', 's3prl', 'ray') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def _commands(parser, name="harness"):
    """Every (command name, parser) below ``parser``, the groups' commands included."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield f"{name} {sub_name}", sub
                yield from _commands(sub, f"{name} {sub_name}")


def test_every_option_has_help_and_shows_its_default():
    """Each argument of each command has a help text, and the --help of each option with a
    default (not a flag, not required) says it: '(default: 0)' appended, or the text's own."""
    import argparse

    from harness.cli import build_parser

    missing, no_default = [], []
    for name, parser in _commands(build_parser()):
        text = parser.format_help()
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            if not action.help:
                missing.append(f"{name} {action.dest}")
            shown = parser._get_formatter()._get_help_string(action)
            if action.option_strings and not action.required and not isinstance(action.default, bool) \
                    and "(default" not in shown and "default:" not in shown:
                no_default.append(f"{name} {action.option_strings[0]}")
        assert "%(" not in text, name
    assert not missing, missing
    assert not no_default, no_default


def test_help_shows_defaults(capsys):
    import pytest

    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--seed SEED seed of the task subsets, head init and batch order (default: 0)" in out
    assert "--device DEVICE cpu, cuda, cuda:N or mps (default: cpu)" in out
    assert "--threads THREADS torch threads (0 = torch's default) (default: 1)" in out
    assert "--quiet print only the result" in out and "(default: False)" not in out  # flags: off unless given
