"""Stable teacher ids (hash of weights and config) and the checkpoint error type."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from harness.config import ConfigError


class CheckpointError(ConfigError):
    """A teacher checkpoint that exists but cannot be loaded (one line naming the file).

    A ``ConfigError`` so the CLI prints it as one line: the fix is a different
    ``teacher.spec``.
    """


def weights_id(prefix: str, config: object, state: dict[str, torch.Tensor], n: int = 16) -> str:
    """``"<prefix>-<hash>"``: a hash of ``config`` (JSON/repr) and every tensor's bytes.

    Args:
        prefix: a readable kind, e.g. ``"s3prl-hubert"``.
        config: whatever besides the weights shapes the outputs (dicts, dataclasses).
        state: the state dict; names, dtypes, shapes and values all enter the hash.
        n: hex digits kept.
    """
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps(config, sort_keys=True, default=repr).encode())
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.view(-1).view(torch.uint8).numpy())
    return f"{prefix}-{h.hexdigest()[:n]}"


def require_path(path: str | Path, what: str, is_dir: bool = False) -> Path:
    """Return ``path`` as a Path, or raise a one-line FileNotFoundError naming it."""
    if not str(path):
        raise FileNotFoundError(f"{what}: no path given (the spec needs a local path, e.g. {what.split()[0]}:/data/model.pt)")
    p = Path(path).expanduser()
    if is_dir and not p.is_dir():
        raise FileNotFoundError(f"{what}: folder not found: {p} (models are never downloaded; give a local folder)")
    if not is_dir and not p.is_file():
        raise FileNotFoundError(f"{what}: checkpoint not found: {p} (models are never downloaded; give a local file)")
    return p


def one_line(err: BaseException, limit: int = 200) -> str:
    """An exception as ``Type: first line`` (truncated), for wrapping in one-line errors."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {text[:limit]}" if text else type(err).__name__
