"""GetStems: one segment of a kept track, separated, as the stream of messages the gateway answers.

The whole stream is cached (length-prefixed messages under a key naming the separator model, the
audio, the span and the encoding), so listening to a segment again costs no separation.
"""

from __future__ import annotations

import hashlib

from partsim.errors import FailedPrecondition
from partsim.internal.v1 import separator_pb2
from partsim.v1 import gateway_pb2, types_pb2

from .audio_store import AudioStore
from .backends import Backends
from .cache import EmbeddingCache
from .config import PREFIX

CHUNK_BYTES = 1 << 20


def pack(msgs: list[gateway_pb2.GetStemsResponse]) -> bytes:
    """Length-prefixed serialised messages (for the stems cache)."""
    return b"".join(len(b).to_bytes(4, "little") + b for b in (m.SerializeToString() for m in msgs))


def unpack(data: bytes) -> list[gateway_pb2.GetStemsResponse]:
    out, i = [], 0
    while i < len(data):
        n = int.from_bytes(data[i : i + 4], "little")
        out.append(gateway_pb2.GetStemsResponse.FromString(data[i + 4 : i + 4 + n]))
        i += 4 + n
    return out


def stem_stream(
    backends: Backends,
    audio_store: AudioStore | None,
    cache: EmbeddingCache,
    track: types_pb2.Track,
    idx: int,
    encoding: types_pb2.StemEncoding,
) -> list[gateway_pb2.GetStemsResponse]:
    """The header (naming the segment) and then the stems in chunks of at most ``CHUNK_BYTES``."""
    if audio_store is None:
        raise FailedPrecondition(f"this gateway keeps no audio ({PREFIX}_STORE_AUDIO is off)")
    missing = FailedPrecondition(
        f"the audio of track {track.track_id} was not kept when it was indexed, or the track was "
        "re-indexed or deleted meanwhile; index it again (or ask again) to listen to its stems"
    )
    start = idx * track.segment_seconds
    end = min(start + track.segment_seconds, track.duration_seconds)
    if track.version:  # an upload id: it names the audio, so a cache hit needs no read of it
        if not audio_store.has(track.track_id, track.version):
            raise missing
        audio, upload = None, f"{track.track_id}@{track.version}"
    else:  # a catalog from before versions: the audio's own hash names it
        audio = audio_store.get(track.track_id)
        if audio is None:
            raise missing
        upload = hashlib.sha256(audio.SerializeToString(deterministic=True)).hexdigest()
    key = f"stems:{backends.separator_model}:{upload}:{start:g}-{end:g}:{int(encoding)}"
    cached = cache.get(key)
    if cached is not None:
        return unpack(cached)
    if audio is None:
        audio = audio_store.get(track.track_id, track.version)  # the upload the catalog's version came from
        if audio is None:  # deleted since the check above
            raise missing
    header, stems = backends.separate(
        separator_pb2.SeparateRequest(audio=audio, start_seconds=start, end_seconds=end, encoding=encoding)
    )
    msgs = [
        gateway_pb2.GetStemsResponse(
            header=gateway_pb2.GetStemsHeader(
                track_id=track.track_id, segment_index=idx, start_seconds=start, end_seconds=end, separation=header
            )
        )
    ]
    for i, data in enumerate(stems):
        for off in range(0, len(data), CHUNK_BYTES):
            msgs.append(
                gateway_pb2.GetStemsResponse(
                    chunk=types_pb2.StemChunk(stem=i, offset=off, data=data[off : off + CHUNK_BYTES])
                )
            )
    cache.put(key, pack(msgs))
    return msgs
