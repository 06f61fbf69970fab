"""The one reader and writer of torch checkpoints: plain data only, so loading runs no code.

``torch.load(..., weights_only=False)`` unpickles whatever the file names: a crafted
``student.ckpt`` or ``train.pt`` in someone else's results folder would run its code
through ``harness evaluate`` or a resume. So every checkpoint the harness writes holds
only tensors and primitive containers (dict, list, tuple, str, int, float, bool, None):
configs as plain dicts, RNG states as tensors, no dataclasses, numpy objects or paths.
:func:`save` refuses anything else, and :func:`load` reads with ``weights_only=True``.

Files that need pickle (original fairseq HuBERT / wav2vec 2.0 checkpoints, or any file
written by another tool with Python objects in it) load only when the user says they trust
them: ``--trust-checkpoint`` on the command that names the file, or the environment
variable ``HARNESS_TRUST_CHECKPOINT=1`` (what a sweep, whose teacher path comes from its
config, sets; Ray workers started by that process inherit it). Without it, :func:`load`
raises :class:`UnsafeCheckpointError`, one line saying why and how to allow it; a
truncated or foreign file is a :class:`CorruptCheckpointError`. Neither runs any of the
file's code.

Below every other harness module but :mod:`harness.errors` and :mod:`harness.fsio`.
"""

from __future__ import annotations

import collections
import os
import pickle
import pickletools
import re
import zipfile
from pathlib import Path
from typing import Any, Optional

import torch

from harness.errors import UserError
from harness.fsio import atomic_write

TRUST_ENV = "HARNESS_TRUST_CHECKPOINT"
TRUST_HINT = f"pass --trust-checkpoint (or set {TRUST_ENV}=1) only if you trust its source"

# exact types: numpy's float64 subclasses float but pickles as a numpy object
_PRIMITIVES = (str, int, float, bool, type(None), torch.dtype, torch.device, torch.Size)


class UnsafeCheckpointError(ValueError, UserError):
    """A checkpoint that would run code to load (needs pickle) and is not trusted."""


class CorruptCheckpointError(ValueError, UserError):
    """A checkpoint file that is truncated, empty or not a torch checkpoint at all."""

    reason: str = ""


def trusted() -> bool:
    """Whether pickle-needing checkpoints may be loaded (``HARNESS_TRUST_CHECKPOINT``)."""
    return os.environ.get(TRUST_ENV, "").strip().lower() in ("1", "true", "yes")


def trust_checkpoints() -> None:
    """Allow pickle-needing checkpoints in this process and the processes it starts
    (what ``--trust-checkpoint`` does)."""
    os.environ[TRUST_ENV] = "1"


def _one_line(err: BaseException, limit: int = 120) -> str:
    """``Type: first sentence`` of an exception (torch's messages run on for lines)."""
    text = (str(err).strip().splitlines() or [""])[0].split(". ")[0][:limit]
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _why_unreadable(path: Path, err: BaseException) -> str:
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as os_err:
        return _one_line(os_err)
    if not head:
        return "empty file"
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        return "not a torch checkpoint"
    return _one_line(err)


def _is_pickle(path: Path) -> bool:
    """Whether the file is a well-formed pickle stream: a torch zip's ``data.pkl``, or a
    raw (legacy) pickle's first stream. Decoding the opcodes (``pickletools``) runs nothing."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
            fh.seek(0)
            if head.startswith(b"PK\x03\x04"):
                with zipfile.ZipFile(fh) as zf:
                    name = next((n for n in zf.namelist() if n.rpartition("/")[2] == "data.pkl"), None)
                    if name is None:
                        return False
                    with zf.open(name) as stream:
                        for _ in pickletools.genops(stream):
                            pass
                return True
            if head[:1] != b"\x80":  # pickle's PROTO opcode
                return False
            for _ in pickletools.genops(fh):
                pass
            return True
    except Exception:  # bad zip, unknown opcode, truncated stream
        return False


def _needs_pickle(path: Path, err: BaseException) -> Optional[str]:
    """What the file needs pickle for, from torch's weights-only error; None when the
    file is no well-formed pickle at all (random bytes fail the weights-only unpickler too)."""
    if not _is_pickle(path):
        return None
    found = re.findall(r"GLOBAL ([\w.]+)", str(err))
    if found:
        return "it references " + ", ".join(dict.fromkeys(found))
    op = re.search(r"Unsupported operand (\d+)", str(err))
    if op:
        return f"it uses pickle opcode {op.group(1)}, outside torch's weights-only subset"
    return "it holds Python objects"


def _corrupt(path: Path, what: str, reason: str) -> CorruptCheckpointError:
    err = CorruptCheckpointError(f"{path}: not a loadable {what} ({reason})")
    err.reason = reason
    return err


def load(path: str | Path, map_location: Any = "cpu", what: str = "checkpoint",
         pickle_module: Any = None, trust: Optional[bool] = None) -> Any:
    """Read a torch checkpoint with ``weights_only=True``; pickle only when trusted.

    Args:
        path: the file.
        map_location: as for ``torch.load``.
        what: what the file should be, for the error message (``"student checkpoint"``).
        pickle_module: the pickle module of a trusted load (s3prl's fairseq reader).
        trust: allow pickle; default :func:`trusted` (``--trust-checkpoint``).

    Returns:
        The loaded object.

    Raises:
        FileNotFoundError: no such file.
        UnsafeCheckpointError: the file needs pickle and is not trusted.
        CorruptCheckpointError: the file cannot be read as a torch checkpoint (its
            ``reason`` attribute says why).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such {what}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        names = _needs_pickle(path, err)
        if names is None:
            raise _corrupt(path, what, "not a torch checkpoint") from None
        if not (trusted() if trust is None else trust):
            raise UnsafeCheckpointError(
                f"{path}: not a safe checkpoint (loading it needs full pickle, which can run code; {names}); "
                f"{TRUST_HINT}"
            ) from None
    except Exception as err:  # truncated zip, empty file, text...
        raise _corrupt(path, what, _why_unreadable(path, err)) from None
    extra = {"pickle_module": pickle_module} if pickle_module is not None else {}
    try:
        return torch.load(path, map_location=map_location, weights_only=False, **extra)
    except Exception as err:
        raise _corrupt(path, what, _one_line(err)) from None


def check_plain(obj: Any, where: str = "checkpoint") -> None:
    """Raise ``TypeError`` naming the first value ``weights_only=True`` could not load.

    Allowed: tensors, dtypes, devices, sizes, ``str``/``int``/``float``/``bool``/``None``,
    and dicts (plain or ordered, with str/int keys), lists and tuples of them.
    """
    if type(obj) in _PRIMITIVES or isinstance(obj, torch.Tensor):
        return
    if type(obj) in (dict, collections.OrderedDict):
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"{where}: key {k!r} is a {type(k).__name__}, not str or int")
            check_plain(v, f"{where}[{k!r}]")
        return
    if type(obj) in (list, tuple):
        for i, v in enumerate(obj):
            check_plain(v, f"{where}[{i}]")
        return
    raise TypeError(f"{where} is a {type(obj).__module__}.{type(obj).__name__}: store it as plain data "
                    "(tensors, numbers, strings, lists, dicts) so the file loads with weights_only=True")


def save(obj: Any, path: str | Path) -> Path:
    """Write ``obj`` (plain data only, see :func:`check_plain`) to ``path`` atomically.

    Raises:
        TypeError: ``obj`` holds something ``weights_only=True`` cannot load (a bug of
            the writer, caught before the file exists).
    """
    check_plain(obj, str(Path(path).name))
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))
