"""Synthetic audio for the service tests and the two ways a request carries it (encoded bytes, raw PCM)."""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf

from partsim.v1 import types_pb2

SR = 44100


def make_audio(seconds: float, seed: int, sr: int = SR, channels: int = 1) -> np.ndarray:
    """Noise plus a few tones (different per seed): ``(n,)`` or ``(n, channels)`` float32 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sr))) / sr
    out = []
    for c in range(channels):
        x = 0.05 * rng.standard_normal(len(t))
        for f in rng.uniform(50, 4000, size=3):
            x += 0.2 * np.sin(2 * np.pi * f * t) * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.2, 3) * t + c))
        out.append(x)
    a = np.stack(out, axis=1).astype(np.float32)
    return a[:, 0] if channels == 1 else a


def encode(audio: np.ndarray, fmt: str = "WAV", subtype: str = "FLOAT", sr: int = SR) -> bytes:
    """``audio`` as the bytes of an audio file (soundfile's format and subtype names)."""
    buf = io.BytesIO()
    sf.write(buf, audio, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def pcm(audio: np.ndarray, sr: int = SR, fmt: str = "f32") -> types_pb2.Audio:
    """``audio`` as raw PCM in a request: float32 (``fmt="f32"``) or int16 (any other ``fmt``) samples."""
    channels = 1 if audio.ndim == 1 else audio.shape[1]
    if fmt == "f32":
        data, f = audio.astype("<f4").tobytes(), types_pb2.SAMPLE_FORMAT_FLOAT32LE
    else:
        data, f = audio.astype("<i2").tobytes(), types_pb2.SAMPLE_FORMAT_INT16LE
    return types_pb2.Audio(pcm=types_pb2.RawPcm(data=data, sample_rate=sr, channels=channels, format=f))
