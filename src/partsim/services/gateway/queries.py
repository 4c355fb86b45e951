"""The inputs of the retrieval function: stem queries turned into the searcher's per-part queries.

A stem query names a part and where its sound comes from: a catalog segment, an uploaded clip
or a vector. Each usable segment of it is one query embedding, normalised to unit length so a
loud and a quiet clip of the same sound weigh the same and catalog segments and uploaded audio
are treated alike. The searcher receives, per part, the mean of that part's query embeddings
(eq. 6.1) and the part's weight, and ranks songs by the min over their segments (eq. 6.2).

Presence and silence: every embedding carries, per segment and part, the mean power of the audio
the vector came from (:func:`segment_powers`). A segment whose audio is silent (power <
``SILENCE_POWER``) is never a query (INVALID_ARGUMENT where it is all the query has). Where the
model judges the part absent but the audio plays, the query embedding is the part's raw subspace
vector, normalised like any other, and the response carries a ``QueryWarning``
(``WARNING_CODE_PART_JUDGED_ABSENT``, :func:`absent_warning`).

The functions are pure (protobuf messages and arrays in, the same out); :class:`Queries` fetches
what they need from the catalog and the embedder.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from partsim.errors import InvalidArgument, NotFound, ResourceExhausted
from partsim.internal.v1 import embedder_pb2, searcher_pb2
from partsim.model.features import SILENCE_POWER, mean_power
from partsim.v1 import gateway_pb2, types_pb2

from .. import filters
from ..tracks import check_norm_fits
from .backends import Backends
from .config import DEFAULT_TOP_K, MAX_TOP_K

Vectors = list[np.ndarray]
Warnings = list[gateway_pb2.QueryWarning]


def unit(v: np.ndarray) -> np.ndarray | None:
    """``v / |v|``; None for a zero or non-finite vector."""
    n = float(np.linalg.norm(v))
    return v / n if n > 1e-12 and math.isfinite(n) else None


def segment_powers(samples: np.ndarray, sr: int, segments) -> list[float]:
    """Mean power of ``samples`` (mono, at ``sr``) over each segment's span, as the embedder cut it."""
    out = []
    for seg in segments:
        a, b = int(round(seg.start_seconds * sr)), int(round(seg.end_seconds * sr))
        out.append(float(mean_power(samples[a:b])) if b > a else 0.0)
    return out


def span(track_id: str, index: int, start: float, end: float) -> str:
    where = f"track {track_id}" if track_id else "the clip"
    return f"segment {index} ({start:g}-{end:g} s) of {where}"


def absent_warning(query_index: int, part: str, track_id: str, seg, pv) -> gateway_pb2.QueryWarning:
    """WARNING_CODE_PART_JUDGED_ABSENT for one query segment (``seg``: SegmentEmbedding, ``pv``: its part)."""
    where = span(track_id, seg.index, seg.start_seconds, seg.end_seconds)
    msg = (
        f"query {query_index}: the model judges the {part} part absent in {where} (subspace norm {pv.norm:.3g}), "
        f"but the audio there is not silent (mean power {pv.power:.2e} >= {SILENCE_POWER:g}); the query uses "
        f"the {part} subspace vector as it is, normalised, so the results may be weak"
    )
    return gateway_pb2.QueryWarning(
        code=gateway_pb2.WARNING_CODE_PART_JUDGED_ABSENT,
        message=msg,
        query_index=query_index,
        part=part,
        track_id=track_id,
        segment_index=seg.index,
        start_seconds=seg.start_seconds,
        end_seconds=seg.end_seconds,
        norm=pv.norm,
        power=pv.power,
    )


def search_filter(request) -> types_pb2.SearchFilter | None:
    """A search request's filter, checked here (INVALID_ARGUMENT naming the field, before any embedding
    work), or None when it has none; the searcher applies it inside Milvus."""
    if not request.HasField("filter"):
        return None
    filters.from_proto(request.filter, "filter")
    return request.filter


def top_k(request) -> int:
    """The request's ``top_k`` (unset: ``DEFAULT_TOP_K``), within 1..``MAX_TOP_K``."""
    if not request.HasField("top_k"):
        return DEFAULT_TOP_K
    k = request.top_k
    if not 1 <= k <= MAX_TOP_K:
        raise InvalidArgument(f"top_k must be within 1..{MAX_TOP_K}, got {k}")
    return k


def part_index(part: str, parts: Sequence[str], where: str) -> int:
    """The position of ``part`` in the model's parts (the order of SegmentEmbedding.parts)."""
    if not part:
        raise InvalidArgument(f"{where}: part is empty; one of {list(parts)}")
    if part not in parts:
        raise InvalidArgument(f"{where}: unknown part {part!r}; the model's parts are {list(parts)}")
    return list(parts).index(part)


def vector_query(values: Sequence[float], dim: int, part: str, where: str) -> Vectors:
    """A given subspace vector: ``dim`` finite values, not all zero, as one unit query embedding."""
    v = np.asarray(values, dtype=np.float32)
    if v.shape != (dim,):
        raise InvalidArgument(f"{where}: vector has {v.size} values; the {part} subspace has {dim}")
    check_norm_fits(v, where)  # finite values whose norm overflows float32: said so, not "not finite"
    u = unit(v)
    if u is None:
        raise InvalidArgument(f"{where}: vector is zero or not finite", reason="INVALID_VECTOR")
    return [u]


def segment_index(track: types_pb2.Track, ref: gateway_pb2.IndexedSegment, where: str) -> int:
    """The segment of ``track`` that ``ref`` points at (by index or by time); NOT_FOUND outside the track."""
    if ref.WhichOneof("at") == "segment_index":
        idx = ref.segment_index
        if not 0 <= idx < track.num_segments:
            raise NotFound(
                f"{where}: track {ref.track_id} has segments 0..{track.num_segments - 1}; there is no segment {idx}"
            )
        return idx
    sec = ref.seconds
    end = track.num_segments * track.segment_seconds
    if not (math.isfinite(sec) and 0 <= sec < end):
        raise NotFound(
            f"{where}: {sec:g} s is outside track {ref.track_id}, whose "
            f"{track.num_segments} segments cover 0..{end:g} s"
        )
    return int(sec // track.segment_seconds)


def indexed_query(
    seg: types_pb2.SegmentEmbedding, j: int, part: str, track_id: str, where: str, query_index: int
) -> tuple[Vectors, Warnings]:
    """One catalog segment's part ``j`` as a query: used when present; with a warning when judged absent
    but audible; refused when silent, or when the catalog row predates kept raw vectors and power."""
    pv = seg.parts[j]
    at = span(track_id, seg.index, seg.start_seconds, seg.end_seconds)
    if pv.HasField("power") and pv.power < SILENCE_POWER:
        raise InvalidArgument(
            f"{where}: the audio of {at} is silent (mean power {pv.power:.2e} < "
            f"{SILENCE_POWER:g}), so the {part} part is silent there; pick a time where it plays"
        )
    u = unit(np.asarray(pv.vector, dtype=np.float32)) if len(pv.vector) else None
    if pv.present and u is not None:
        return [u], []
    if u is not None and pv.HasField("power"):  # judged absent, audible: answer with a warning
        return [u], [absent_warning(query_index, part, track_id, seg, pv)]
    if u is None and len(pv.vector):
        raise InvalidArgument(
            f"{where}: the {part} part is silent in {at} (its subspace vector is zero); pick a time where it plays"
        )
    raise InvalidArgument(
        f"{where}: the {part} part is judged absent in {at}, which was indexed before the "
        "catalog kept raw vectors and audio power, so whether it plays there is unknown; "
        f"re-index track {track_id} to query it, or pick a time where it plays"
    )


def clip_query(
    resp: embedder_pb2.EmbedResponse, j: int, part: str, where: str, query_index: int, segment_seconds: float
) -> tuple[Vectors, Warnings]:
    """A clip's segments as queries of part ``j``: those where it is judged present; only when there
    is none, every audible one, with a warning each. Silent segments never count."""
    present, absent = [], []
    for s in resp.segments:
        pv = s.parts[j]
        u = unit(np.asarray(pv.vector, dtype=np.float32))
        if u is None or (pv.HasField("power") and pv.power < SILENCE_POWER):
            continue  # a silent segment is never a query
        if pv.present:
            present.append(u)
        elif pv.HasField("power"):
            absent.append((u, s, pv))
    if present:
        return present, []
    if absent:
        return [u for u, _, _ in absent], [absent_warning(query_index, part, "", s, pv) for _, s, pv in absent]
    raise InvalidArgument(
        f"{where}: the clip is silent in every {segment_seconds:g}-s segment (mean power < "
        f"{SILENCE_POWER:g}), so the {part} part is not present in any segment of it"
    )


def part_queries(
    per_part: dict[str, Vectors], weights: dict[str, float], parts: Sequence[str], max_query_segments: int
) -> tuple[list[searcher_pb2.PartQuery], int]:
    """Eq. 6.1: per part, the mean of its unit query embeddings, with its weight (default 1), in the
    model's part order; and the number of query embeddings in all.

    Raises:
        ResourceExhausted: more than ``max_query_segments`` query embeddings.
        InvalidArgument: a weight for an unknown part, for a part without a query, or not a positive number.
    """
    total = sum(len(v) for v in per_part.values())
    if total > max_query_segments:
        raise ResourceExhausted(
            f"the query set has {total} query embeddings; at most {max_query_segments} (shorter clips or fewer stems)"
        )
    for part, w in weights.items():
        if part not in parts:
            raise InvalidArgument(f"part_weights: unknown part {part!r}; the model's parts are {list(parts)}")
        if part not in per_part:
            raise InvalidArgument(f"part_weights: {part} has a weight but no query")
        if not (math.isfinite(w) and w > 0):
            raise InvalidArgument(f"part_weights: the weight of {part} must be a positive number, got {w}")
    out = []
    for part in parts:  # the model's order: deterministic requests
        if part in per_part:
            mean = np.mean(per_part[part], axis=0)  # eq. 6.1
            out.append(searcher_pb2.PartQuery(part=part, vector=mean.tolist(), weight=float(weights.get(part, 1.0))))
    return out, total


class Queries:
    """Stem queries to the searcher's part queries, fetching catalog segments and embedding clips."""

    def __init__(
        self,
        backends: Backends,
        embed: Callable[[types_pb2.Audio, float, float], embedder_pb2.EmbedResponse],
        segment_seconds: float,
        max_query_segments: int,
    ):
        self.backends = backends
        self.embed = embed
        self.segment_seconds = segment_seconds
        self.max_query_segments = max_query_segments

    def segment(self, ref: gateway_pb2.IndexedSegment, where: str) -> tuple[types_pb2.Track, int]:
        """The catalog track ``ref`` names, and the index of the segment it points at."""
        track = self.backends.track(ref.track_id)
        return track, segment_index(track, ref, where)

    def vectors(self, q: gateway_pb2.StemQuery, where: str, query_index: int) -> tuple[Vectors, Warnings]:
        """The unit query embeddings of one stem query (one per usable segment), and its warnings."""
        model = self.backends.require_model()
        j = part_index(q.part, model.parts, where)
        which = q.WhichOneof("source")
        if which == "vector":
            return vector_query(q.vector.vector, model.subspace_dim, q.part, where), []
        if which == "indexed":
            _, idx = self.segment(q.indexed, where)
            seg = self.backends.segment(q.indexed.track_id, idx)
            return indexed_query(seg, j, q.part, q.indexed.track_id, where, query_index)
        if which == "audio":
            seg_s = self.segment_seconds
            return clip_query(self.embed(q.audio, seg_s, seg_s), j, q.part, where, query_index, seg_s)
        raise InvalidArgument(f"{where}: set one of indexed, audio or vector")

    def part_queries(
        self, queries: Sequence[gateway_pb2.StemQuery], weights: dict[str, float]
    ) -> tuple[list[searcher_pb2.PartQuery], int, Warnings]:
        """The searcher's part queries (eq. 6.1), the number of query embeddings, and the warnings."""
        model = self.backends.require_model()
        per_part: dict[str, Vectors] = {}
        warnings: Warnings = []
        for i, q in enumerate(queries):
            vectors, warned = self.vectors(q, f"query {i}", i)
            per_part.setdefault(q.part, []).extend(vectors)
            warnings.extend(warned)
        parts, total = part_queries(per_part, weights, model.parts, self.max_query_segments)
        return parts, total, warnings
