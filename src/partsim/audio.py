"""Audio I/O: soundfile for decoding and encoding, soxr for resampling (no torchaudio).

Files: :func:`load_audio`. In memory (the services): :func:`decode_audio_bytes` for encoded bytes
of any format libsndfile reads and :func:`pcm_to_audio` for raw interleaved PCM; both validate
with :func:`check_audio` and raise :class:`~partsim.errors.InvalidArgument` (a bad upload) or
:class:`~partsim.errors.ResourceExhausted` (longer than ``max_seconds``).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from .errors import DatasetError, InvalidArgument, NotFound, ResourceExhausted

SAMPLE_RATE = 44100

# Raw PCM: sample format name -> (little-endian NumPy dtype, divisor to full scale 1.0).
PCM_FORMATS = {"f32le": ("<f4", 1.0), "s16le": ("<i2", 32768.0)}
PCM_MAX_CHANNELS = 64
PCM_RATES = (1000, 384000)  # accepted input sample rates, Hz (inclusive)


def load_audio(path: str | os.PathLike, sr: int = SAMPLE_RATE, mono: bool = True) -> np.ndarray:
    """Decode an audio file as float32, resampled to ``sr``.

    Returns:
        ``(n,)`` when ``mono`` (channels averaged), else ``(n, channels)``.

    Raises:
        NotFound: the file does not exist.
        DatasetError: the file cannot be decoded (the message names it and says why).
    """
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"audio file not found: {path}")
    try:
        data, file_sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # noqa: BLE001 - soundfile raises LibsndfileError, RuntimeError, TypeError...
        raise DatasetError(f"cannot decode audio file {path}: {_one_line(exc)}") from None
    if mono:
        data = data.mean(axis=1)
    if file_sr != sr and data.shape[0] > 0:
        data = soxr.resample(data, file_sr, sr, quality="HQ").astype(np.float32, copy=False)
    return np.ascontiguousarray(data, dtype=np.float32)


def check_audio(audio: np.ndarray, what: str = "audio") -> np.ndarray:
    """Reject empty audio and NaN/infinite samples (``(n,)`` or ``(n, channels)``); returns ``audio``."""
    if audio.size == 0:
        raise _bad(f"{what} is empty (no samples)")
    if not np.all(np.isfinite(audio)):
        bad = int(np.count_nonzero(~np.isfinite(audio)))
        raise _bad(f"{what} contains {bad} NaN or infinite samples")
    return audio


def _check_length(frames: int, rate: int, max_seconds: float | None, what: str) -> None:
    if max_seconds is not None and frames > max_seconds * rate:
        raise ResourceExhausted(
            f"{what} lasts {frames / rate:.1f} s, longer than the limit of {max_seconds:g} s", reason="AUDIO_TOO_LONG"
        )


def _bad(message: str, field: str | None = None) -> InvalidArgument:
    """InvalidArgument about the audio a caller sent (reason INVALID_AUDIO; ``field``: the request's field)."""
    return InvalidArgument(message, reason="INVALID_AUDIO", field_violations=[(field, message)] if field else ())


def _check_rate(rate: int, what: str, kind: str, field: str) -> None:
    """The sample rate of any input (an encoded file's header, raw PCM) is within :data:`PCM_RATES`."""
    lo, hi = PCM_RATES
    if not lo <= rate <= hi:
        raise _bad(f"{what}: {kind} sample rate {rate} Hz is outside {lo}..{hi} Hz", field)


def _finish(data: np.ndarray, rate: int, sr: int, mono: bool, what: str) -> np.ndarray:
    """``(n, channels)`` float32 at ``rate`` -> validated, mono-averaged if asked, resampled to ``sr``."""
    check_audio(data, what)
    if mono:
        data = data.mean(axis=1)
    if rate != sr:
        data = soxr.resample(data, rate, sr, quality="HQ")
    return np.ascontiguousarray(data, dtype=np.float32)


def decode_audio_bytes(
    data: bytes, sr: int = SAMPLE_RATE, mono: bool = True, max_seconds: float | None = None, what: str = "audio"
) -> np.ndarray:
    """Decode an in-memory file of any format libsndfile reads (WAV, FLAC, OGG, MP3, ...).

    Returns:
        float32 ``(n,)`` when ``mono`` (channels averaged), else ``(n, channels)``, at ``sr`` Hz.

    Raises:
        InvalidArgument: empty or undecodable bytes, a header's sample rate outside :data:`PCM_RATES`
            (checked before decoding), no samples, NaN/infinite samples.
        ResourceExhausted: longer than ``max_seconds`` (checked from the header before decoding,
            and again after).
    """
    if len(data) == 0:
        raise _bad(f"{what} is empty (0 bytes)")
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            rate = int(f.samplerate)
            _check_rate(rate, what, "the header's", "audio.encoded")
            if 0 < f.frames < (1 << 62):
                _check_length(int(f.frames), rate, max_seconds, what)
            # a header may not know the length: never decode more than the limit (+1 frame to notice)
            cap = -1 if max_seconds is None else int(max_seconds * rate) + 1
            decoded = f.read(frames=cap, dtype="float32", always_2d=True)
    except (ResourceExhausted, InvalidArgument):
        raise
    except Exception as exc:  # noqa: BLE001 - libsndfile's errors share no base (LibsndfileError, RuntimeError...)
        reason = (getattr(exc, "error_string", None) or _one_line(exc)).rstrip(".")
        raise _bad(
            f"cannot decode {what} ({len(data)} bytes): {reason}; expected a format libsndfile "
            f"reads (WAV, FLAC, OGG, MP3, ...) or raw PCM"
        ) from None
    _check_length(len(decoded), rate, max_seconds, what)
    return _finish(decoded, rate, sr, mono, what)


def pcm_to_audio(
    data: bytes,
    sample_rate: int,
    channels: int,
    sample_format: str = "f32le",
    sr: int = SAMPLE_RATE,
    mono: bool = True,
    max_seconds: float | None = None,
    what: str = "audio",
) -> np.ndarray:
    """Raw interleaved little-endian PCM (``sample_format`` in :data:`PCM_FORMATS`) -> float32 at ``sr``.

    int16 maps to [-1, 1) by dividing by 32768 (as libsndfile reads 16-bit files).

    Returns:
        float32 ``(n,)`` when ``mono`` (channels averaged), else ``(n, channels)``.

    Raises:
        InvalidArgument: unknown format, sample rate outside :data:`PCM_RATES`, channels outside
            1..:data:`PCM_MAX_CHANNELS`, a length that is not a whole number of frames, no
            samples, NaN/infinite samples.
        ResourceExhausted: longer than ``max_seconds``.
    """
    if sample_format not in PCM_FORMATS:
        raise _bad(f"{what}: unknown PCM sample format {sample_format!r}; expected one of {', '.join(PCM_FORMATS)}")
    _check_rate(sample_rate, what, "PCM", "audio.pcm.sample_rate")
    if not 1 <= channels <= PCM_MAX_CHANNELS:
        raise _bad(f"{what}: PCM channels {channels} is outside 1..{PCM_MAX_CHANNELS}")
    dtype, scale = PCM_FORMATS[sample_format]
    frame_bytes = np.dtype(dtype).itemsize * channels
    if len(data) == 0:
        raise _bad(f"{what} is empty (0 bytes)")
    if len(data) % frame_bytes:
        raise _bad(
            f"{what}: PCM data of {len(data)} bytes is not a whole number of {frame_bytes}-byte "
            f"frames ({channels} channels of {sample_format})"
        )
    frames = len(data) // frame_bytes
    _check_length(frames, sample_rate, max_seconds, what)
    samples = np.frombuffer(data, dtype=dtype).reshape(frames, channels)
    samples = samples.astype(np.float32) / np.float32(scale) if scale != 1.0 else samples.astype(np.float32)
    return _finish(samples, sample_rate, sr, mono, what)


def audio_info(path: str | os.PathLike) -> sf._SoundFileInfo:
    """Header of an audio file (sample rate, frames, channels) without decoding it."""
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"audio file not found: {path}")
    try:
        return sf.info(str(path))
    except Exception as exc:  # noqa: BLE001 - as in read_audio: any libsndfile failure is a bad file
        raise DatasetError(f"cannot read audio file {path}: {_one_line(exc)}") from None


def write_flac_pcm16(path: str | os.PathLike, samples: np.ndarray, sr: int = SAMPLE_RATE) -> None:
    """Write int16 samples (``(n,)`` or ``(n, channels)``) losslessly as 16-bit FLAC."""
    samples = np.asarray(samples)
    if samples.dtype != np.int16:
        raise TypeError(f"write_flac_pcm16 takes int16 samples, got {samples.dtype}")
    sf.write(str(path), samples, sr, format="FLAC", subtype="PCM_16")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
