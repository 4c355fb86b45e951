"""Playable files for ``<audio>`` elements (not RPCs; the OpenAPI document lists them beside the RPCs):

* ``GET /v1/tracks/{track_id}/stems/{stem}.wav|.flac?seconds=S`` (or ``segment_index=N``; neither: segment 0):
  one separated stem of one indexed segment, ``stem`` a catalog part (``drums``, ``bass``, ...) or the
  separator's source name. Built from the answer of GetStems, called through the gateway's own gRPC server
  with the caller's credentials: the same auth, rate limit, cache and errors.
* ``GET /v1/tracks/{track_id}/audio.wav|.flac?start=S&end=E`` (both optional: the whole track): the audio kept
  when the track was indexed (the gateway's audio store), clipped. GetTrack, called the same way, admits
  the caller (reader role, as GetStems) and names the upload (``Track.version``) the catalog holds; only
  then is the store read.

Files are 16-bit WAV or FLAC at the audio's own rate and channels.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from urllib.parse import parse_qsl

import numpy as np
import soundfile as sf
from google.protobuf import message_factory

from partsim.errors import FailedPrecondition, InvalidArgument, NotFound
from partsim.v1 import gateway_pb2, types_pb2

from ..audio_store import AudioStore
from .transcode import bad_request

FORMATS = {"wav": ("WAV", "audio/wav"), "flac": ("FLAC", "audio/flac")}
STEM_ROUTE = "/v1/tracks/{track_id}/stems/{stem}.{format}"
AUDIO_ROUTE = "/v1/tracks/{track_id}/audio.{format}"

Call = Callable[[str, object], object]  # (RPC name, request) -> response (a list for a server stream)
SERVICE = gateway_pb2.DESCRIPTOR.services_by_name["PartsimService"]


def request(method: str, **fields):
    """The request message of a PartsimService method (by its descriptor: internal types may be renamed)."""
    return message_factory.GetMessageClass(SERVICE.methods_by_name[method].input_type)(**fields)


def split_name(name: str) -> tuple[str, str]:
    """``drums.wav`` -> ("drums", "wav"); InvalidArgument for another extension."""
    stem, dot, ext = name.rpartition(".")
    if not dot or ext.lower() not in FORMATS or not stem:
        raise NotFound(f"no such file {name!r}: ask for <name>.wav or <name>.flac", reason="NO_SUCH_ROUTE")
    return stem, ext.lower()


def params(query: str, allowed: tuple[str, ...]) -> dict[str, float]:
    out: dict[str, float] = {}
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query), errors="strict")
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request(f"the query string is malformed: {exc}", "INVALID_PARAMETER") from None
    for name, text in pairs:
        if name == "access_token":
            continue
        if name not in allowed:
            raise bad_request(
                f"unknown query parameter {name!r} (expected {', '.join(allowed)})", "INVALID_PARAMETER", name
            )
        try:
            value = float(text)
        except ValueError:
            raise bad_request(
                f"query parameter {name}: expected a number, got {text!r}", "INVALID_PARAMETER", name
            ) from None
        if not np.isfinite(value) or value < 0:
            raise bad_request(f"query parameter {name} must be a finite number >= 0", "INVALID_PARAMETER", name)
        out[name] = value
    return out


def encode(samples: np.ndarray, rate: int, fmt: str) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.clip(samples, -1.0, 1.0), rate, format=FORMATS[fmt][0], subtype="PCM_16")
    return buf.getvalue()


def stem_file(call: Call, track_id: str, name: str, query: str) -> tuple[bytes, str, str]:
    """(file bytes, content type, file name) of one stem of one segment."""
    stem, fmt = split_name(name)
    p = params(query, ("seconds", "segment_index"))
    if len(p) > 1:
        raise bad_request("give seconds or segment_index, not both", "INVALID_PARAMETER", "segment_index")
    segment = gateway_pb2.IndexedSegment(track_id=track_id)
    if "seconds" in p:
        segment.seconds = p["seconds"]
    else:
        index = p.get("segment_index", 0.0)
        if index != int(index):
            raise bad_request("segment_index must be a whole number", "INVALID_PARAMETER", "segment_index")
        segment.segment_index = int(index)
    req = request("GetStems", segment=segment)
    req.encoding = req.DESCRIPTOR.fields_by_name["encoding"].enum_type.values_by_name["STEM_ENCODING_FLOAT32LE"].number
    answer = call("GetStems", req)
    msgs = list(answer)  # type: ignore[call-overload]
    if not msgs or not msgs[0].HasField("header"):
        raise FailedPrecondition("GetStems answered no header")
    header = msgs[0].header
    sep = header.separation
    names = [s.name for s in sep.stems]
    which = next((i for i, s in enumerate(sep.stems) if stem in (s.name, s.part)), None)
    if which is None:
        parts = sorted({s.part for s in sep.stems if s.part} | set(names))
        raise NotFound(f"no stem {stem!r} in the separation; stems: {', '.join(parts)}", reason="STEM_NOT_FOUND")
    chunks = sorted((m.chunk.offset, m.chunk.data) for m in msgs[1:] if m.HasField("chunk") and m.chunk.stem == which)
    data = b"".join(d for _, d in chunks)
    channels = max(sep.channels, 1)
    samples = np.frombuffer(data, dtype="<f4")
    samples = samples[: len(samples) - len(samples) % channels].reshape(-1, channels)
    filename = f"{safe(track_id)}-{header.segment_index}-{stem}.{fmt}"
    return encode(samples, sep.sample_rate, fmt), FORMATS[fmt][1], filename


def audio_file(call: Call, store: AudioStore | None, track_id: str, name: str, query: str) -> tuple[bytes, str, str]:
    """(file bytes, content type, file name) of the kept audio of a track, clipped to ``start``..``end``."""
    base, fmt = split_name(name)
    if base != "audio":
        raise NotFound(f"no such file {name!r}: the track's audio is audio.wav or audio.flac", reason="NO_SUCH_ROUTE")
    p = params(query, ("start", "end"))
    track = call("GetTrack", request("GetTrack", track_id=track_id)).track  # type: ignore[attr-defined]
    if store is None:
        raise FailedPrecondition("this gateway keeps no audio (PARTSIM_GATEWAY_STORE_AUDIO is off)")
    audio = store.get(track.track_id, track.version)
    if audio is None:
        raise FailedPrecondition(
            f"the audio of track {track_id} was not kept when it was indexed, or the track was re-indexed or "
            "deleted meanwhile"
        )
    start = p.get("start", 0.0)
    end = p.get("end")
    if end is not None and end <= start:
        raise bad_request(f"end ({end:g}) must be after start ({start:g})", "INVALID_PARAMETER", "end")
    samples, rate = clip(audio, start, end)
    return encode(samples, rate, fmt), FORMATS[fmt][1], f"{safe(track_id)}.{fmt}"


def clip(audio: types_pb2.Audio, start: float, end: float | None) -> tuple[np.ndarray, int]:
    """``audio`` (as uploaded) from ``start`` to ``end`` seconds, as ``(frames, channels)`` float32 and its rate."""
    if audio.WhichOneof("source") == "pcm":
        pcm = audio.pcm
        dtype, scale = ("<f4", 1.0) if pcm.format == types_pb2.SAMPLE_FORMAT_FLOAT32LE else ("<i2", 32768.0)
        channels = max(pcm.channels, 1)
        frames = np.frombuffer(pcm.data, dtype=dtype)
        frames = frames[: len(frames) - len(frames) % channels].reshape(-1, channels)
        rate = pcm.sample_rate
        a, b = int(start * rate), None if end is None else int(end * rate)
        return frames[a:b].astype(np.float32) / np.float32(scale), rate
    try:
        with sf.SoundFile(io.BytesIO(audio.encoded)) as f:
            rate = int(f.samplerate)
            a = min(int(start * rate), f.frames)
            f.seek(a)
            n = -1 if end is None else max(int(end * rate) - a, 0)
            return f.read(frames=n, dtype="float32", always_2d=True), rate
    except (RuntimeError, sf.LibsndfileError) as exc:
        raise InvalidArgument(f"the kept audio cannot be decoded: {exc}") from None


def safe(text: str) -> str:
    """A file name of ``text``: characters other than letters, digits, ``-_.`` become ``_``."""
    return "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in text)[:100] or "track"
