"""Teachers: the upstream protocol, adapters for real checkpoints, the embedded SFM, the cache."""

from harness.teachers.base import TEACHERS, SAMPLE_RATE, Upstream, load_teacher, parse_spec

__all__ = ["TEACHERS", "SAMPLE_RATE", "Upstream", "load_teacher", "parse_spec"]
import harness.teachers.embedded  # noqa: E402,F401  (registers the 'embedded' teacher kind)
