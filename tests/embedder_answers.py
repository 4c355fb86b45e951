"""Reading and predicting the embedder's answers, for the embedder's service tests."""

from __future__ import annotations

import numpy as np

from partsim.internal.v1 import embedder_pb2
from partsim.model.embed import file_segments
from partsim.model.inference import OnnxEmbedder
from partsim.v1 import types_pb2

from .audio import SR

MAX_AUDIO = 30.0  # the test servers' limits
MAX_SEGMENTS = 40


def vectors(resp: embedder_pb2.EmbedResponse) -> np.ndarray:
    """``(N, P, D)`` from a response."""
    return np.array([[list(p.vector) for p in s.parts] for s in resp.segments], dtype=np.float32).reshape(
        len(resp.segments), len(resp.model.parts), resp.model.subspace_dim
    )


def expected(ref: OnnxEmbedder, mono: np.ndarray, seg: float, hop: float) -> tuple[np.ndarray, np.ndarray]:
    """What ``partsim embed`` computes: ``(N, P, D)`` vectors and start seconds."""
    segs, starts = file_segments(mono, SR, seg, hop)
    return ref.embed(segs), starts


def embed(stub, audio: types_pb2.Audio, seg: float = 1.0, hop: float = 0.0) -> embedder_pb2.EmbedResponse:
    return stub.Embed(embedder_pb2.EmbedRequest(audio=audio, segment_seconds=seg, hop_seconds=hop), timeout=60)
