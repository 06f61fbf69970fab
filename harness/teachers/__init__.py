"""Teachers: the upstream protocol, adapters for real checkpoints, the embedded SFM, the cache."""

from harness.data.audio import SAMPLE_RATE
from harness.teachers.base import TEACHERS, Upstream, load_teacher, parse_spec

# The spec kinds (dummy, embedded, fbank, hf, s3prl) are lazy entries of TEACHERS
# (harness.teachers.base): nothing here is imported only to register itself.

__all__ = ["TEACHERS", "SAMPLE_RATE", "Upstream", "load_teacher", "parse_spec"]
