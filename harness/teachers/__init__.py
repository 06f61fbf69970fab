"""Teachers: the upstream protocol, adapters for real checkpoints, the embedded SFM, the cache."""

from harness.teachers.base import TEACHERS, SAMPLE_RATE, Upstream, load_teacher, parse_spec

# Importing the defining modules registers their spec kinds in TEACHERS. The adapters
# import s3prl / transformers only when a spec of theirs is loaded.
from harness.teachers import dummy as _dummy  # noqa: F401,E402  ("dummy")
from harness.teachers import hf_adapter as _hf  # noqa: F401,E402  ("hf")
from harness.teachers import s3prl_adapter as _s3prl  # noqa: F401,E402  ("s3prl")

__all__ = ["TEACHERS", "SAMPLE_RATE", "Upstream", "load_teacher", "parse_spec"]
