"""requirements.lock against pyproject.toml, and harness.envcheck's drift and smoke checks."""

import re
import subprocess
import sys
import os
import textwrap
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from harness import envcheck

try:
    import tomllib
except ImportError:  # Python 3.10: pytest's own dependency
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"


def _direct_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    reqs = list(project["project"]["dependencies"])
    for extra in project["project"]["optional-dependencies"].values():
        reqs += extra
    for group in project["dependency-groups"].values():
        reqs += group
    return [Requirement(r) for r in reqs]


def _lock_blocks() -> dict[str, list[tuple[str, list[str]]]]:
    """name -> [(version, via names)] for every pin (one per marker fork)."""
    blocks: dict[str, list[tuple[str, list[str]]]] = {}
    current = None
    for line in LOCK.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+?)\s*(;.*)?\\?$", line.rstrip(" \\"))
        if m:
            current = (envcheck.canonical(m.group(1)), m.group(2), [])
            blocks.setdefault(current[0], []).append((current[1], current[2]))
            continue
        via = re.match(r"^\s+#\s+(?:via\s+)?([A-Za-z0-9][A-Za-z0-9._-]*)( \(pyproject\.toml[^)]*\))?\s*$", line)
        if current is not None and via and via.group(1) != "via":
            current[2].append("harness" if via.group(2) else envcheck.canonical(via.group(1)))
    return blocks


def test_every_pyproject_requirement_is_pinned_inside_its_range():
    blocks = _lock_blocks()
    for req in _direct_requirements():
        name = envcheck.canonical(req.name)
        assert name in blocks, f"{req} is in pyproject.toml but not in requirements.lock: run ./run_all.sh lock"
        for version, _ in blocks[name]:
            assert req.specifier.contains(Version(version), prereleases=True), (
                f"requirements.lock pins {name}=={version}, outside pyproject.toml's {req}: run ./run_all.sh lock")


def test_every_lock_pin_is_needed_by_pyproject():
    blocks = _lock_blocks()
    direct = {envcheck.canonical(r.name) for r in _direct_requirements()}
    for name, forks in blocks.items():
        for version, via in forks:
            assert via, f"requirements.lock: {name}=={version} has no '# via' line"
            if "harness" in via:
                assert name in direct, f"requirements.lock says {name} comes from pyproject.toml, which no longer names it"
            for parent in via:
                assert parent == "harness" or parent in blocks, f"{name} is pulled in by {parent}, which is not locked"


def test_torch_and_torchaudio_are_an_exact_pair_in_both_files():
    reqs = {envcheck.canonical(r.name): r for r in _direct_requirements()}
    blocks = _lock_blocks()
    for name in ("torch", "torchaudio"):
        spec = list(reqs[name].specifier)
        assert len(spec) == 1 and spec[0].operator == "==" and "*" not in spec[0].version, (
            f"pyproject.toml must pin {name} exactly (a pair known to load together), not {reqs[name]}")
        assert [v for v, _ in blocks[name]] == [spec[0].version]


def test_the_lock_header_names_the_refresh_command():
    head = LOCK.read_text().splitlines()[:3]
    assert any("./run_all.sh lock" in line for line in head)
    # and run_all.sh compiles exactly the extras/groups pyproject.toml declares
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    script = (ROOT / "run_all.sh").read_text()
    for extra in project["project"]["optional-dependencies"]:
        assert f"--extra {extra}" in script
    for group in project["dependency-groups"]:
        assert f"--group {group}" in script


def test_read_lock_parses_every_pin_of_the_real_lock():
    pins = envcheck.read_lock(LOCK)
    assert len(pins) == sum(len(f) for f in _lock_blocks().values()) > 50
    assert {p.name for p in pins} >= {"torch", "torchaudio", "s3prl", "ray", "pip", "setuptools"}


def _fake_lock(tmp_path, body):
    path = tmp_path / "requirements.lock"
    path.write_text(textwrap.dedent(body))
    return path


def test_drift_names_wrong_missing_and_extra_packages(tmp_path):
    have = envcheck.installed()
    pytest_version = have["pytest"]
    lock = _fake_lock(tmp_path, f"""\
        # header
        pytest=={pytest_version}.post999 \\
            --hash=sha256:00
            # via harness (pyproject.toml)
        no-such-package-xyz==1.0 \\
            --hash=sha256:00
        never-here==2.0 ; sys_platform == 'no-such-platform' \\
            --hash=sha256:00
        """)
    problems = envcheck.drift(lock)
    assert f"pytest {pytest_version} installed (lock {pytest_version}.post999)" in problems
    assert "no-such-package-xyz missing (lock 1.0)" in problems
    assert not any("never-here" in p for p in problems)  # its marker does not apply here
    assert any(p.startswith("torch ") and p.endswith("(not in the lock)") for p in problems)
    assert "harness" not in envcheck.extra(lock)


def test_drift_is_empty_for_a_lock_of_exactly_what_is_installed(tmp_path):
    have = envcheck.installed()
    lines = [f"{name}=={version} \\\n    --hash=sha256:00" for name, version in have.items() if name != "harness"]
    assert envcheck.drift(_fake_lock(tmp_path, "\n".join(lines) + "\n")) == []


def test_a_line_that_is_not_a_pin_is_refused_with_its_place(tmp_path):
    lock = _fake_lock(tmp_path, "torch>=2\n")
    with pytest.raises(ValueError, match=r"requirements.lock:1: not a 'name==version' pin"):
        envcheck.read_lock(lock)


def _run_smoke(fake_dir):
    return subprocess.run([sys.executable, "-m", "harness.envcheck", "smoke"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": f"{fake_dir}{os.pathsep}{ROOT}"})


def test_smoke_turns_an_abi_mismatch_into_one_line(tmp_path):
    # a torchaudio whose compiled extension fails to load the way 2.11.1 does next to torch 2.11.0
    pkg = tmp_path / "torchaudio"
    (pkg / "compliance").mkdir(parents=True)
    (pkg / "__init__.py").write_text(
        "raise OSError('/venv/lib/python3.11/site-packages/torchaudio/lib/libtorchaudio.so: "
        "undefined symbol: torch_exception_get_what_without_backtrace')\n")
    (pkg / "compliance" / "__init__.py").write_text("")
    out = _run_smoke(tmp_path)
    assert out.returncode == 1
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stdout + out.stderr, out.stdout + out.stderr
    line = lines[0]
    assert line.startswith("environment check failed: torchaudio's compiled extension does not load")
    assert "undefined symbol: torch_exception_get_what_without_backtrace" in line
    assert f"torch {envcheck._version('torch')}" in line and "./run_all.sh repair" in line


def test_smoke_passes_in_the_locked_environment(tmp_path):
    out = _run_smoke(tmp_path)  # nothing fake on the path
    assert out.returncode == 0 and out.stdout == "", out.stdout + out.stderr
