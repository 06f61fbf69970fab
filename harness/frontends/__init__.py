"""Front-ends: waveform -> frame features, below both students and teachers.

A front-end maps ``(B, S)`` 16 kHz waveforms and ``(B,)`` valid samples to ``(B, T, C)``
frames and ``(B,)`` valid frames, and carries a ``.spec`` dict that rebuilds its
architecture (:func:`build_frontend`). Two kinds:

- ``conv`` (:class:`ConvFrontend`, :mod:`harness.frontends.conv`): the wav2vec 2.0 / HuBERT
  convolutional feature extractor (320-sample hop, 50 Hz).
- ``fbank`` (:class:`FbankFrontend`, :mod:`harness.frontends.fbank`): log-mel filterbank +
  one strided convolution to 50 Hz, the embedded teacher's cheaper front-end.

A student copies its teacher's front-end (:mod:`harness.student`), so this package sits
under both. The SUPERB ``fbank`` *upstream* (features with no model) is a teacher kind:
:mod:`harness.teachers.fbank`.
"""

from __future__ import annotations

from torch import nn

from harness.data.audio import SAMPLE_RATE
from harness.frontends.conv import (
    CONV_MODES,
    STANDARD_CONV_LAYERS,
    ConvFrontend,
    conv_layers,
    normalize_waveforms,
)
from harness.frontends.fbank import FbankFrontend

__all__ = ["SAMPLE_RATE", "CONV_MODES", "STANDARD_CONV_LAYERS", "ConvFrontend", "FbankFrontend", "build_frontend",
           "conv_layers", "normalize_waveforms"]


def build_frontend(spec: dict) -> nn.Module:
    """Rebuild a front-end from its ``.spec`` (random weights; load a state dict next).

    Args:
        spec: ``{"type": "conv" | "fbank", ...}`` (the rest are the class' arguments).

    Raises:
        ValueError: unknown type or bad arguments (naming them).
    """
    if not isinstance(spec, dict) or "type" not in spec:
        raise ValueError(f"front-end spec must be a dict with a 'type' key, got {spec!r}")
    rest = {k: v for k, v in spec.items() if k != "type"}
    kind = spec["type"]
    if kind == "conv":
        cls = ConvFrontend
    elif kind == "fbank":
        cls = FbankFrontend
    else:
        raise ValueError(f"front-end type {kind!r} is unknown; use 'conv' or 'fbank'")
    try:
        return cls(**rest)
    except TypeError as err:
        raise ValueError(f"front-end spec {spec!r}: {err}") from None
