"""Shared fixtures.

``tiny_corpus``: the ``tiny`` embedded corpus, synthesised ONCE per pytest session (about
10 s on 2 cores) under a session temporary folder; every split and every class present.
``one_thread``: torch runs single-threaded for a test module (use it with
``pytestmark = pytest.mark.usefixtures("one_thread")``).
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """Path of a freshly built ``tiny`` corpus (read-only use: other tests share it)."""
    from harness.data.synth import build_corpus

    out = tmp_path_factory.mktemp("corpus") / "tiny"
    return build_corpus("tiny", out, seed=0, workers=0, verbose=False)


@pytest.fixture(scope="module")
def one_thread():
    """One torch intra-op thread for the module, restored after.

    Tiny models on a shared 2-core machine: a second intra-op thread only spin-waits
    (measured ~50x slower per step under load).
    """
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
