"""``partsim.v1.Audio`` messages to samples: the one decoder every service uses."""

from __future__ import annotations

import numpy as np

from partsim.audio import decode_audio_bytes, pcm_to_audio
from partsim.errors import InvalidArgument
from partsim.v1 import types_pb2

PCM_FORMAT_NAMES = {types_pb2.SAMPLE_FORMAT_FLOAT32LE: "f32le", types_pb2.SAMPLE_FORMAT_INT16LE: "s16le"}


def decode_audio_message(audio: types_pb2.Audio, sr: int, mono: bool, max_seconds: float) -> np.ndarray:
    """Encoded bytes or raw PCM -> float32 at ``sr``: ``(n,)`` when ``mono`` else ``(n, channels)``.

    Raises InvalidArgument (undecodable, empty, NaN/Inf, bad PCM parameters) or ResourceExhausted
    (longer than ``max_seconds``) with a message naming the problem.
    """
    which = audio.WhichOneof("source")
    if which == "encoded":
        return decode_audio_bytes(audio.encoded, sr=sr, mono=mono, max_seconds=max_seconds)
    if which == "pcm":
        pcm = audio.pcm
        fmt = PCM_FORMAT_NAMES.get(pcm.format)
        if fmt is None:
            got = (
                types_pb2.SampleFormat.Name(pcm.format)
                if pcm.format in types_pb2.SampleFormat.values()
                else str(pcm.format)
            )
            raise InvalidArgument(
                f"audio.pcm.format must be SAMPLE_FORMAT_FLOAT32LE or SAMPLE_FORMAT_INT16LE, got {got}"
            )
        return pcm_to_audio(pcm.data, pcm.sample_rate, pcm.channels, fmt, sr=sr, mono=mono, max_seconds=max_seconds)
    raise InvalidArgument("audio is empty: set audio.encoded or audio.pcm")
