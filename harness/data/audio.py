"""Reading audio files with validation: every bad file becomes one :class:`AudioError`.

The harness works on 16 kHz mono audio only. A file that is empty, truncated, corrupt,
at another sample rate or with more than one channel is refused with a one-line message
naming the path and what is wrong, so importers can count it as a skip and the loader can
report it instead of training on garbage.

Two entry points:

- :func:`probe_audio` / :func:`check_audio`: cheap, header-level checks (plus a one-sample
  read at the end of the file, which catches truncated compressed files) used by the
  importers to fill ``num_samples`` and ``sample_rate`` without decoding the whole file;
  only a float WAV (the one format that can hold NaN or inf) is decoded through and
  refused when a sample is not finite.
- :func:`load_audio`: decodes samples (optionally a window) as float32 in [-1, 1].
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import soundfile as sf

from harness.errors import HarnessError
from harness.fsio import atomic_write

SAMPLE_RATE = 16000  # Hz; the only rate the harness accepts
MIN_SAMPLES = 400  # 25 ms: the receptive field of one 50 Hz frame of the conv front-ends
_FLOAT_SUBTYPES = ("FLOAT", "DOUBLE")  # the only sample formats that can hold NaN or inf


class AudioError(ValueError, HarnessError):
    """An audio file that cannot be used; the message is one line naming the path."""


def _riff_truncation(path: Path, size: int) -> str | None:
    """For a RIFF/WAVE file, compare the ``data`` chunk's declared size with the file size.

    libsndfile silently clamps the frame count of a truncated WAV to what is present, so
    ``soundfile.info`` alone reports a shorter, plausible file. Returns a reason string
    when the file holds fewer data bytes than its header declares, else None.
    """
    with open(path, "rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None  # RF64/W64/other containers: no cheap check, trust libsndfile
        pos = 12
        for _ in range(64):  # a WAV has a handful of chunks; bound the walk
            fh.seek(pos)
            hdr = fh.read(8)
            if len(hdr) < 8:
                return None
            cid, csize = hdr[:4], struct.unpack("<I", hdr[4:])[0]
            if cid == b"data":
                # 0 and 0xFFFFFFFF mark a size never filled in by a streaming writer
                if csize in (0, 0xFFFFFFFF):
                    return None
                avail = size - (pos + 8)
                if avail < csize:
                    return f"truncated (header declares {csize} data bytes, file holds {avail})"
                return None
            pos += 8 + csize + (csize & 1)  # chunks are padded to even sizes
    return None



def _nonempty_size(path: Path) -> int:
    """The file size in bytes; AudioError (one line) when unreadable or empty."""
    try:
        size = path.stat().st_size
    except OSError as err:
        raise AudioError(f"{path}: cannot read ({err.strerror or err})") from None
    if size == 0:
        raise AudioError(f"{path}: empty file (0 bytes)")
    return size


def probe_audio(path: str | Path) -> tuple[int, int, int]:
    """Read an audio file's header and verify the file is complete, without decoding it.

    Args:
        path: an audio file soundfile/libsndfile can read (WAV, FLAC, OGG, ...).

    Returns:
        ``(sample_rate, channels, frames)``: rate in Hz, channel count, length in samples
        per channel.

    Raises:
        AudioError: the file is missing, empty (0 bytes or 0 samples), not decodable audio,
            truncated, or (float WAVs, decoded through) holds NaN or infinite samples.
            Sample rate and channels are returned, not checked: see :func:`check_audio`.
    """
    path = Path(path)
    size = _nonempty_size(path)
    try:
        with sf.SoundFile(str(path)) as fh:
            rate, channels, frames = fh.samplerate, fh.channels, fh.frames
            if frames > 0:
                # Decoding the last sample makes a truncated FLAC/OGG fail here (its
                # header still declares the full length), at the cost of one seek.
                try:
                    fh.seek(frames - 1)
                    last = fh.read(1, dtype="float32")
                except (sf.SoundFileError, RuntimeError) as err:
                    raise AudioError(
                        f"{path}: truncated or corrupt (decoding the end failed: {_one_line(err)})"
                    ) from None
                if last.shape[0] != 1:
                    raise AudioError(f"{path}: truncated (last sample unreadable)")
                if fh.subtype in _FLOAT_SUBTYPES:
                    _check_finite(path, fh)
    except (sf.SoundFileError, RuntimeError) as err:  # LibsndfileError and friends
        raise AudioError(f"{path}: not readable audio ({_one_line(err)})") from None
    if frames == 0:
        raise AudioError(f"{path}: empty audio (0 samples)")
    reason = _riff_truncation(path, size)
    if reason:
        raise AudioError(f"{path}: {reason}")
    return int(rate), int(channels), int(frames)


def _check_finite(path: Path, fh: sf.SoundFile, block: int = 1 << 18) -> None:
    """Decode a float WAV through and refuse NaN/inf samples (integer formats, FLAC
    included, cannot hold them, so only float files pay for a full read)."""
    fh.seek(0)
    done = 0
    for chunk in fh.blocks(blocksize=block, dtype="float32", always_2d=True):
        bad = ~np.isfinite(chunk)
        if bad.any():
            first = done + int(np.argmax(bad.any(axis=1)))
            raise AudioError(f"{path}: holds NaN or infinite samples (first at sample {first}, "
                             f"{first / SAMPLE_RATE:.3f} s)")
        done += chunk.shape[0]


def check_audio(path: str | Path, expected_sr: int = SAMPLE_RATE) -> int:
    """:func:`probe_audio` plus the harness' format rules (sample rate, mono).

    Args:
        path: audio file.
        expected_sr: required sample rate in Hz.

    Returns:
        Length in samples.

    Raises:
        AudioError: as :func:`probe_audio`, or for a wrong sample rate or more than one
            channel.
    """
    rate, channels, frames = probe_audio(path)
    _check_format(Path(path), rate, channels, expected_sr)
    return frames


def _check_format(path: Path, rate: int, channels: int, expected_sr: int) -> None:
    if rate != expected_sr:
        raise AudioError(
            f"{path}: sample rate {rate} Hz, expected {expected_sr} Hz (resample the corpus to "
            f"{expected_sr} Hz mono first, e.g. sox in.wav -r {expected_sr} -c 1 out.wav)"
        )
    if channels != 1:
        raise AudioError(f"{path}: {channels} channels, expected mono (downmix to 1 channel first)")


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    # libsndfile repeats the path in its message; keep only the reason
    if ": " in text and text.startswith("Error opening"):
        text = text.split(": ", 1)[1]
    return text


def load_audio(
    path: str | Path,
    expected_sr: int = SAMPLE_RATE,
    start: int = 0,
    stop: int | None = None,
    expected_len: int | None = None,
) -> np.ndarray:
    """Decode a mono audio file (or a window of it) to float32.

    Args:
        path: audio file.
        expected_sr: required sample rate in Hz.
        start: first sample to read (samples, 0-based).
        stop: one past the last sample to read (samples); None = end of file.
        expected_len: if given, the file must hold exactly this many samples (e.g. the
            manifest's ``num_samples``).

    Returns:
        ``np.float32`` array of shape ``(S,)``, values in [-1, 1], ``S = stop - start``
        (or the file length minus ``start``).

    Raises:
        AudioError: the file is missing, empty, corrupt or truncated, has another sample
            rate or more than one channel, holds other than ``expected_len`` samples,
            the window lies outside the file, or the samples are not finite. The
            message is one line naming the path.
    """
    path = Path(path)
    size = _nonempty_size(path)
    try:
        with sf.SoundFile(str(path)) as fh:
            _check_format(path, fh.samplerate, fh.channels, expected_sr)
            frames = fh.frames
            if expected_len is not None and frames != expected_len:
                raise AudioError(
                    f"{path}: holds {frames} samples, the manifest says {expected_len} "
                    "(re-import or rebuild the corpus)"
                )
            end = frames if stop is None else stop
            if not 0 <= start < end <= frames:
                raise AudioError(
                    f"{path}: window [{start}, {end}) outside the file's {frames} samples"
                    + (" (empty audio)" if frames == 0 else "")
                )
            fh.seek(start)
            wav = fh.read(end - start, dtype="float32", always_2d=False)
    except (sf.SoundFileError, RuntimeError) as err:  # LibsndfileError and friends
        raise AudioError(f"{path}: not readable audio ({_one_line(err)})") from None
    if wav.shape[0] != end - start:
        raise AudioError(f"{path}: truncated (read {wav.shape[0]} of {end - start} samples)")
    reason = _riff_truncation(path, size)
    if reason:
        raise AudioError(f"{path}: {reason}")
    if not np.isfinite(wav).all():
        raise AudioError(f"{path}: holds NaN or infinite samples")
    return np.ascontiguousarray(wav, dtype=np.float32)


def write_wav(path: str | Path, wav: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write a mono float waveform as 16-bit PCM WAV atomically (temporary file + rename).

    Args:
        path: destination ``.wav``.
        wav: ``(S,)`` float samples in [-1, 1].
        sample_rate: Hz.
    """
    atomic_write(path, lambda tmp: sf.write(str(tmp), np.asarray(wav, dtype=np.float32), sample_rate,
                                            subtype="PCM_16", format="WAV"))
