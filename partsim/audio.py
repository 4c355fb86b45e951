"""Audio I/O: soundfile for decoding and encoding, soxr for resampling (no torchaudio)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from .errors import DatasetError, NotFound

SAMPLE_RATE = 44100


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
    except Exception as exc:  # soundfile raises LibsndfileError, RuntimeError, TypeError...
        raise DatasetError(f"cannot decode audio file {path}: {_one_line(exc)}") from None
    if mono:
        data = data.mean(axis=1)
    if file_sr != sr and data.shape[0] > 0:
        data = soxr.resample(data, file_sr, sr, quality="HQ").astype(np.float32, copy=False)
    return np.ascontiguousarray(data, dtype=np.float32)


def audio_info(path: str | os.PathLike) -> sf._SoundFileInfo:
    """Header of an audio file (sample rate, frames, channels) without decoding it."""
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"audio file not found: {path}")
    try:
        return sf.info(str(path))
    except Exception as exc:
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
