"""Shared fixtures.

``tiny_corpus``: the ``tiny`` embedded corpus, synthesised ONCE per pytest session (about
10 s on 2 cores) under a session temporary folder; every split and every class present.
``fake_corpus``: ``fake_corpus(kind, root=None, **options) -> Path`` builds one of the fake
corpora of :mod:`tests.support.corpora` (real FLACs + manifests; ``kind`` in ``corpora.KINDS``)
under ``root``, or under a fresh session temporary folder when ``root`` is None.
``one_thread``: torch runs single-threaded for a test module (use it with
``pytestmark = pytest.mark.usefixtures("one_thread")``).
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """Path of a freshly built ``tiny`` corpus (read-only use: other tests share it)."""
    from harness.data.synth import build_corpus

    out = tmp_path_factory.mktemp("corpus") / "tiny"
    return build_corpus("tiny", out, seed=0, workers=0, verbose=False)


@pytest.fixture(scope="session")
def fake_corpus(tmp_path_factory):
    """The one factory of fake corpora: ``make(kind, root=None, **options) -> Path``."""
    from tests.support import corpora

    def make(kind: str, root: str | Path | None = None, **options) -> Path:
        if kind not in corpora.KINDS:
            raise ValueError(f"unknown fake corpus {kind!r}; known: {', '.join(corpora.KINDS)}")
        root = tmp_path_factory.mktemp(kind) if root is None else Path(root)
        return corpora.KINDS[kind](root, **options)

    return make


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
