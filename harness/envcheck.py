"""The environment against requirements.lock: drift detection and the post-install smoke check.

``./run_all.sh`` calls this before anything else runs (standard library only, plus the
``packaging`` copy that pip vendors, so it works in a half-installed venv):

    python -m harness.envcheck drift requirements.lock   # exit 1 + one line a mismatch
    python -m harness.envcheck extra requirements.lock   # what the lock does not name
    python -m harness.envcheck smoke                     # exit 1 + one line on failure

``drift`` compares what is installed (``importlib.metadata``) with the lock's pins that
apply to this interpreter and platform (their environment markers evaluated here): a wrong
version, a missing package or a package the lock does not name is a mismatch.
``smoke`` loads torchaudio's compiled extension (a ``kaldi.fbank`` call on a short tensor)
and imports s3prl through ``harness.compat``; a torch/torchaudio pair that cannot load
together (torchaudio 2.11.1 next to torch 2.11.0: "undefined symbol") gives one line naming
the installed versions and the command that repairs the venv.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

#: Installed distributions the lock never lists: the project itself.
NOT_LOCKED = {"harness"}

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?\s*$")


def canonical(name: str) -> str:
    """PEP 503 normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    marker: str | None


def read_lock(path: str | Path) -> list[Pin]:
    """Every ``name==version [; marker]`` line of a pip/uv requirements lock."""
    pins = []
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line or line[0] in " #\t-":
            continue
        m = _PIN.match(line)
        if m is None:
            raise ValueError(f"{path}:{lineno}: not a 'name==version' pin: {line.strip()!r}")
        pins.append(Pin(canonical(m.group(1)), m.group(2), (m.group(3) or "").strip() or None))
    return pins


def _marker_applies(marker: str | None) -> bool:
    if marker is None:
        return True
    try:
        from packaging.markers import Marker
    except ImportError:  # a venv without packaging: pip's vendored copy
        from pip._vendor.packaging.markers import Marker
    return Marker(marker).evaluate()


def wanted(pins: list[Pin]) -> dict[str, str]:
    """The lock's pins that apply to this interpreter and platform: name -> version."""
    out: dict[str, str] = {}
    for p in pins:
        if _marker_applies(p.marker):
            out[p.name] = p.version
    return out


def installed() -> dict[str, str]:
    out = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            out[canonical(name)] = dist.version
    return out


def extra(lock: str | Path) -> list[str]:
    """Installed distributions the lock does not name for this platform (the project aside)."""
    return sorted(set(installed()) - set(wanted(read_lock(lock))) - NOT_LOCKED)


def drift(lock: str | Path) -> list[str]:
    """Human-readable mismatches between the installed packages and the lock (empty: none)."""
    want = wanted(read_lock(lock))
    have = installed()
    problems = []
    for name, version in sorted(want.items()):
        if name not in have:
            problems.append(f"{name} missing (lock {version})")
        elif have[name] != version:
            problems.append(f"{name} {have[name]} installed (lock {version})")
    for name in extra(lock):
        problems.append(f"{name} {have[name]} installed (not in the lock)")
    return problems


REPAIR = "run ./run_all.sh repair (or delete .venv and run ./run_all.sh again)"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def smoke() -> str | None:
    """None when torchaudio's extension and s3prl load; else the one-line reason."""
    pair = f"torch {_version('torch')}, torchaudio {_version('torchaudio')}"
    try:
        import torch
        import torchaudio.compliance.kaldi as kaldi

        feats = kaldi.fbank(torch.zeros(1, 4000), num_mel_bins=23, sample_frequency=16000)
        if feats.shape[-1] != 23:
            return f"torchaudio's kaldi.fbank returned shape {tuple(feats.shape)} ({pair}): {REPAIR}"
    except (ImportError, OSError, RuntimeError) as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        return (
            f"torchaudio's compiled extension does not load with this torch ({pair}: "
            f"{reason[:160]}); they must be the exact pair in requirements.lock: {REPAIR}"
        )
    try:
        from harness.compat import apply_s3prl_shim

        apply_s3prl_shim()
        import s3prl.nn  # noqa: F401  (the upstream/featurizer code the adapters use)
    except Exception as exc:  # noqa: BLE001 - any import failure is the one-line message
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        return (
            f"s3prl {_version('s3prl')} does not import through harness.compat ({pair}: "
            f"{type(exc).__name__}: {reason[:160]}): {REPAIR}"
        )
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["drift"] and len(argv) == 2:
        problems = drift(argv[1])
        if problems:
            more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
            print(f".venv differs from {argv[1]}: " + "; ".join(problems[:3]) + more)
            return 1
        return 0
    if argv[:1] == ["extra"] and len(argv) == 2:
        print(" ".join(extra(argv[1])))
        return 0
    if argv == ["smoke"]:
        reason = smoke()
        if reason:
            print(f"environment check failed: {reason}")
            return 1
        return 0
    print("usage: python -m harness.envcheck drift LOCK | extra LOCK | smoke", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
