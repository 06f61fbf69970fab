"""Shared fixtures.

``tiny_corpus``: the ``tiny`` embedded corpus, synthesised ONCE per pytest session (about
10 s on 2 cores) under a session temporary folder; every split and every class present.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """Path of a freshly built ``tiny`` corpus (read-only use: other tests share it)."""
    from harness.data.synth import build_corpus

    out = tmp_path_factory.mktemp("corpus") / "tiny"
    return build_corpus("tiny", out, seed=0, workers=0, verbose=False)
