"""Noise, channel and level augmentation for the embedded corpus (all generated here).

Noise types (:data:`NOISE_TYPES`): ``white``, ``pink`` (1/f power), ``brown`` (1/f^2),
``hum`` (mains 50 or 60 Hz with random harmonics, plus a little white noise), ``babble``
(3-7 overlapping utterances of voices that are *not* corpus speakers, taken from a bank
synthesised once per build), ``machine`` (band-passed noise with a slow amplitude
modulation, like a fan or engine). :func:`augment` mixes one at a random SNR, passes the
result through a random channel (a random tilt/peak equaliser, optional telephone band and
a synthetic room impulse response) and sets a random level; all draws come from the given
``numpy.random.Generator``, so augmentation is a pure function of the seed.

Units: audio is float32 in [-1, 1] at 16 kHz; SNRs and levels are in dB.
"""

from __future__ import annotations

import numpy as np

from harness.data.audio import SAMPLE_RATE
NOISE_TYPES = ("white", "pink", "brown", "hum", "babble", "machine")


def _spectral_noise(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Gaussian noise with power spectrum ~ 1/f**exponent, unit RMS, ``(n,)`` float32."""
    from scipy import fft

    m = fft.next_fast_len(n, real=True)  # odd lengths with large prime factors are slow
    spec = fft.rfft(rng.standard_normal(m, dtype=np.float32))
    f = np.arange(len(spec), dtype=np.float32)
    f[0] = 1.0
    spec *= f ** np.float32(-exponent / 2.0)
    spec[0] = 0.0
    x = fft.irfft(spec, m)[:n]
    return (x / (np.sqrt(np.mean(x**2)) + 1e-12)).astype(np.float32)


def make_noise(kind: str, n: int, rng: np.random.Generator, babble_bank: list[np.ndarray] | None = None) -> np.ndarray:
    """``n`` samples of noise of type ``kind`` with unit RMS.

    Args:
        kind: one of :data:`NOISE_TYPES`.
        n: length in samples.
        rng: random generator.
        babble_bank: utterances (float32, 16 kHz) to build babble from; required for
            ``babble``.

    Raises:
        ValueError: unknown kind, or babble without a bank.
    """
    from scipy import signal

    if kind == "white":
        x = rng.standard_normal(n, dtype=np.float32)
    elif kind == "pink":
        x = _spectral_noise(rng, n, 1.0)
    elif kind == "brown":
        x = _spectral_noise(rng, n, 2.0)
    elif kind == "hum":
        f0 = 50.0 if rng.random() < 0.5 else 60.0
        f0 *= 1.0 + rng.uniform(-0.01, 0.01)
        t = np.arange(n) / SAMPLE_RATE
        x = np.zeros(n)
        for h in range(1, 9):
            x += rng.uniform(0.0, 1.0) / h * np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 2 * np.pi))
        x += 0.05 * rng.standard_normal(n)
    elif kind == "machine":
        lo = rng.uniform(80, 800)
        hi = min(lo * rng.uniform(1.5, 6.0), 7500)
        sos = signal.butter(4, [lo, hi], btype="band", fs=SAMPLE_RATE, output="sos")
        x = signal.sosfilt(sos, rng.standard_normal(n))
        t = np.arange(n) / SAMPLE_RATE
        x *= 1.0 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.5, 8.0) * t)
    elif kind == "babble":
        if not babble_bank:
            raise ValueError("babble noise needs a babble bank (synthesised non-corpus voices)")
        x = np.zeros(n)
        for _ in range(int(rng.integers(3, 8))):
            src = babble_bank[rng.integers(len(babble_bank))]
            seg = np.zeros(n)
            if len(src) >= n:
                off = int(rng.integers(len(src) - n + 1))
                seg = src[off : off + n]
            else:  # loop a short source
                reps = int(np.ceil(n / len(src))) + 1
                tiled = np.tile(src, reps)
                off = int(rng.integers(len(src)))
                seg = tiled[off : off + n]
            x = x + seg * rng.uniform(0.5, 1.0)
    else:
        raise ValueError(f"unknown noise type {kind!r} (known: {', '.join(NOISE_TYPES)})")
    x = np.asarray(x, dtype=np.float64)
    return (x / (np.sqrt(np.mean(x**2)) + 1e-12)).astype(np.float32)


def active_rms(x: np.ndarray, frame: int = 400) -> float:
    """RMS over the loudest half of 25 ms frames (speech level, ignoring pauses)."""
    n = len(x) // frame
    if n < 2:
        return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)) + 1e-12)
    e = np.mean(x[: n * frame].astype(np.float64).reshape(n, frame) ** 2, axis=1)
    e = np.sort(e)[n // 2 :]
    return float(np.sqrt(np.mean(e)) + 1e-12)


def room_ir(rng: np.random.Generator, rt60: float) -> np.ndarray:
    """A synthetic room impulse response: direct path + exponentially decaying noise tail."""
    n = int(SAMPLE_RATE * min(rt60, 1.0))
    t = np.arange(n) / SAMPLE_RATE
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)  # -60 dB at rt60
    tail[: int(0.002 * SAMPLE_RATE)] = 0.0  # first reflections arrive after ~2 ms
    ir = tail * rng.uniform(0.1, 0.4)
    ir[0] = 1.0
    return ir / np.sqrt(np.sum(ir**2))


def channel(x: np.ndarray, rng: np.random.Generator, p_phone: float = 0.15, p_room: float = 0.5) -> np.ndarray:
    """A random microphone/room channel: spectral tilt + one peak EQ, maybe telephone band, maybe room.

    Returns audio of the same length.
    """
    from scipy import signal

    y = x.astype(np.float64)
    # first-order tilt: y[n] = x[n] + a x[n-1], a in [-0.6, 0.6] (brighter or duller mic)
    a = rng.uniform(-0.6, 0.6)
    y = signal.lfilter([1.0, a], [1.0], y) / (1.0 + abs(a))
    # one peaking EQ band of +-8 dB somewhere between 200 Hz and 5 kHz
    f0 = float(np.exp(rng.uniform(np.log(200), np.log(5000))))
    gain_db = rng.uniform(-8, 8)
    q = rng.uniform(0.5, 2.0)
    A = 10 ** (gain_db / 40)
    w0 = 2 * np.pi * f0 / SAMPLE_RATE
    alpha = np.sin(w0) / (2 * q)
    b = [1 + alpha * A, -2 * np.cos(w0), 1 - alpha * A]
    den = [1 + alpha / A, -2 * np.cos(w0), 1 - alpha / A]
    y = signal.lfilter(b, den, y)
    if rng.random() < p_phone:
        sos = signal.butter(4, [300, 3400], btype="band", fs=SAMPLE_RATE, output="sos")
        y = signal.sosfilt(sos, y)
    if rng.random() < p_room:
        ir = room_ir(rng, rng.uniform(0.15, 0.7))
        y = signal.fftconvolve(y, ir)[: len(y)]
    return y.astype(np.float32)


def augment(
    speech: np.ndarray,
    rng: np.random.Generator,
    babble_bank: list[np.ndarray] | None,
    snr_db: tuple[float, float] = (5.0, 30.0),
    level_db: tuple[float, float] = (-35.0, -15.0),
    p_clean: float = 0.1,
    kinds: tuple[str, ...] = NOISE_TYPES,
    p_room: float = 0.5,
) -> tuple[np.ndarray, dict]:
    """Channel, noise at a random SNR, and a random level for one utterance.

    Args:
        speech: ``(S,)`` float32 clean speech.
        rng: random generator (all draws come from it).
        babble_bank: bank for babble noise (see :func:`make_noise`).
        snr_db: uniform SNR range (dB, speech active RMS over noise RMS).
        level_db: uniform output active-RMS range (dBFS).
        p_clean: probability of adding no noise (channel and level still apply).
        kinds: noise types to draw from (``babble`` needs ``babble_bank``).
        p_room: probability of a room response in the channel.

    Returns:
        ``(audio (S,) float32 in [-1, 1], info)`` with info ``{"noise", "snr_db", "level_db"}``
        (``noise`` is ``"none"`` and ``snr_db`` ``None`` for a clean draw).
    """
    y = channel(speech, rng, p_room=p_room)
    info: dict = {"noise": "none", "snr_db": None}
    if rng.random() >= p_clean:
        kind = kinds[rng.integers(len(kinds))]
        snr = float(rng.uniform(*snr_db))
        noise = make_noise(kind, len(y), rng, babble_bank)
        y = y + noise * (active_rms(y) / 10 ** (snr / 20))
        info = {"noise": kind, "snr_db": round(snr, 2)}
    level = float(rng.uniform(*level_db))
    y = y * (10 ** (level / 20) / active_rms(y))
    peak = float(np.max(np.abs(y))) if len(y) else 0.0
    if peak > 0.99:  # avoid clipping: a loud draw is scaled down, not distorted
        y = y * (0.99 / peak)
    info["level_db"] = round(level, 2)
    return y.astype(np.float32), info


def noise_clip(
    n: int, rng: np.random.Generator, babble_bank: list[np.ndarray] | None, level_db: tuple[float, float] = (-50.0, -20.0)
) -> tuple[np.ndarray, dict]:
    """A noise-only clip (KS ``_silence_``): one noise type through a random channel, random level."""
    kind = NOISE_TYPES[rng.integers(len(NOISE_TYPES))]
    y = channel(make_noise(kind, n, rng, babble_bank), rng)
    level = float(rng.uniform(*level_db))
    y = y * (10 ** (level / 20) / (np.sqrt(np.mean(y.astype(np.float64) ** 2)) + 1e-12))
    peak = float(np.max(np.abs(y)))
    if peak > 0.99:
        y = y * (0.99 / peak)
    return y.astype(np.float32), {"noise": kind, "snr_db": None, "level_db": round(level, 2)}
