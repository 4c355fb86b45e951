"""Calling ``SeparatorService.Separate`` and putting the streamed stems back together.

:func:`collect` works on any stream of messages with a ``header``/``chunk`` oneof (SeparateResponse,
and the gateway's GetStemsResponse, whose header wraps a SeparationHeader).
"""

from __future__ import annotations

import io
from typing import Iterable

import grpc
import numpy as np
import soundfile as sf

from partsim.errors import InvalidArgument, PartsimError
from partsim.v1 import separator_pb2, separator_pb2_grpc, types_pb2

from ..status import error_for


def collect(responses: Iterable) -> tuple[object, list[bytes]]:
    """``(header, [bytes of stem 0, stem 1, ...])`` from a stream whose first message is the header.

    Raises:
        InvalidArgument: the stream does not start with a header, a chunk names no stem, or a chunk's
            offset leaves a gap.
    """
    header, stems = None, None
    for msg in responses:
        kind = msg.WhichOneof("payload")
        if header is None:
            if kind != "header":
                raise InvalidArgument("the stem stream did not start with a header")
            header = msg.header
            sep = header.separation if hasattr(header, "separation") else header
            stems = [bytearray() for _ in sep.stems]
            continue
        if kind != "chunk":
            raise InvalidArgument("a second header in the stem stream")
        c = msg.chunk
        if not 0 <= c.stem < len(stems):
            raise InvalidArgument(f"a chunk for stem {c.stem}; the header lists {len(stems)}")
        if c.offset != len(stems[c.stem]):
            raise InvalidArgument(f"stem {c.stem}: a chunk at byte {c.offset}, expected {len(stems[c.stem])}")
        stems[c.stem] += c.data
    if header is None:
        raise InvalidArgument("the stem stream was empty")
    return header, [bytes(s) for s in stems]


def decode_stems(header: separator_pb2.SeparationHeader, stems: list[bytes]) -> np.ndarray:
    """``(S, C, total_frames)`` float32 from collected stems of either encoding."""
    out = np.zeros((len(stems), header.channels, header.total_frames), np.float32)
    for i, data in enumerate(stems):
        if header.encoding == separator_pb2.STEM_ENCODING_FLAC:
            x, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
            if sr != header.sample_rate:
                raise InvalidArgument(f"stem {i}: FLAC at {sr} Hz, header says {header.sample_rate}")
        else:
            x = np.frombuffer(data, dtype="<f4").reshape(-1, header.channels)
        if x.shape != (header.total_frames, header.channels):
            raise InvalidArgument(f"stem {i}: {x.shape[0]} frames x {x.shape[1]} channels, header says "
                                  f"{header.total_frames} x {header.channels}")
        out[i] = x.T
    return out


def separate(address: str, audio: types_pb2.Audio, encoding: int = separator_pb2.STEM_ENCODING_FLAC,
             start_seconds: float | None = None, end_seconds: float | None = None, shifts: int | None = None,
             timeout: float | None = None, max_message_bytes: int = 256 << 20
             ) -> tuple[separator_pb2.SeparationHeader, list[bytes]]:
    """One Separate call; gRPC errors come back as :class:`partsim.errors.PartsimError` (same status)."""
    request = separator_pb2.SeparateRequest(audio=audio, encoding=encoding)
    if start_seconds is not None:
        request.start_seconds = start_seconds
    if end_seconds is not None:
        request.end_seconds = end_seconds
    if shifts is not None:
        request.shifts = shifts
    options = [("grpc.max_send_message_length", max_message_bytes),
               ("grpc.max_receive_message_length", max_message_bytes)]
    with grpc.insecure_channel(address, options=options) as channel:
        stub = separator_pb2_grpc.SeparatorServiceStub(channel)
        try:
            return collect(stub.Separate(request, timeout=timeout))
        except grpc.RpcError as exc:
            err: PartsimError = error_for(exc.code(), f"separator at {address}: {exc.details() or exc.code().name}")
            raise err from None
