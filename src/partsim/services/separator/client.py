"""Calling ``SeparatorService.Separate`` and putting the streamed stems back together.

:func:`collect` works on any stream of messages with a ``header``/``chunk`` oneof (SeparateResponse,
and the gateway's GetStemsResponse, whose header wraps a SeparationHeader); :func:`header_and_chunks`
reads any such stream (the gateway's IndexTrack upload too).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import grpc

from partsim.errors import InvalidArgument, PartsimError
from partsim.internal.v1 import separator_pb2, separator_pb2_grpc
from partsim.v1 import types_pb2

from ..status import error_for
from ..tls import open_channel

if TYPE_CHECKING:
    import numpy as np


def header_and_chunks(messages: Iterable, what: str) -> tuple[Any, Iterator[Any]]:
    """The header of a stream of messages with a ``header``/``chunk`` ``payload`` oneof (the first
    message, read now), and an iterator over the chunks of the rest (read as it is consumed).

    Raises:
        InvalidArgument: ``what`` (e.g. "the stem stream") is empty or does not start with a header,
            or (while iterating) a second header.
    """
    it = iter(messages)
    first = next(it, None)
    if first is None:
        raise InvalidArgument(f"{what} was empty")
    if first.WhichOneof("payload") != "header":
        raise InvalidArgument(f"{what} did not start with a header")

    def chunks() -> Iterator[Any]:
        for msg in it:
            if msg.WhichOneof("payload") != "chunk":
                raise InvalidArgument(f"a second header in {what}")
            yield msg.chunk

    return first.header, chunks()


def collect(responses: Iterable) -> tuple[Any, list[bytes]]:
    """``(header, [bytes of stem 0, stem 1, ...])`` from a stream whose first message is the header.

    Raises:
        InvalidArgument: the stream does not start with a header, a chunk names no stem, or a chunk's
            offset leaves a gap.
    """
    header, chunks = header_and_chunks(responses, "the stem stream")
    sep = header.separation if hasattr(header, "separation") else header
    stems = [bytearray() for _ in sep.stems]
    for c in chunks:
        if not 0 <= c.stem < len(stems):
            raise InvalidArgument(f"a chunk for stem {c.stem}; the header lists {len(stems)}")
        if c.offset != len(stems[c.stem]):
            raise InvalidArgument(f"stem {c.stem}: a chunk at byte {c.offset}, expected {len(stems[c.stem])}")
        stems[c.stem] += c.data
    return header, [bytes(s) for s in stems]


def decode_stems(header: types_pb2.SeparationHeader, stems: list[bytes]) -> np.ndarray:
    """``(S, C, total_frames)`` float32 from collected stems of either encoding."""
    import numpy as np  # here, not above: collect() and separate() serve the thin client (no numpy)
    import soundfile as sf

    out = np.zeros((len(stems), header.channels, header.total_frames), np.float32)
    for i, data in enumerate(stems):
        if header.encoding == types_pb2.STEM_ENCODING_FLAC:
            x, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
            if sr != header.sample_rate:
                raise InvalidArgument(f"stem {i}: FLAC at {sr} Hz, header says {header.sample_rate}")
        else:
            x = np.frombuffer(data, dtype="<f4").reshape(-1, header.channels)
        if x.shape != (header.total_frames, header.channels):
            raise InvalidArgument(
                f"stem {i}: {x.shape[0]} frames x {x.shape[1]} channels, header says "
                f"{header.total_frames} x {header.channels}"
            )
        out[i] = x.T
    return out


def separate(
    address: str,
    audio: types_pb2.Audio,
    encoding: types_pb2.StemEncoding = types_pb2.STEM_ENCODING_FLAC,
    start_seconds: float | None = None,
    end_seconds: float | None = None,
    shifts: int | None = None,
    timeout: float | None = None,
    max_message_bytes: int = 256 << 20,
    credentials: grpc.ChannelCredentials | None = None,
) -> tuple[types_pb2.SeparationHeader, list[bytes]]:
    """One Separate call (over TLS with ``credentials``: :func:`..tls.channel_credentials`); gRPC errors come
    back as :class:`partsim.errors.PartsimError` (same status)."""
    request = separator_pb2.SeparateRequest(audio=audio, encoding=encoding)
    if start_seconds is not None:
        request.start_seconds = start_seconds
    if end_seconds is not None:
        request.end_seconds = end_seconds
    if shifts is not None:
        request.shifts = shifts
    options = [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
    ]
    with open_channel(address, credentials, options) as channel:
        stub = separator_pb2_grpc.SeparatorServiceStub(channel)
        try:
            return collect(stub.Separate(request, timeout=timeout))
        except grpc.RpcError as exc:
            err: PartsimError = error_for(exc.code(), f"separator at {address}: {exc.details() or exc.code().name}")
            raise err from None
