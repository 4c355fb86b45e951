"""The searcher's gRPC service (``partsim.internal.v1.SearcherService``) and ``main``.

Validates every request (parts, vector sizes, limits) with messages a caller can act on, and
delegates to :class:`SearchStore`. Health turns SERVING once Milvus is open (the catalog is served
from there at once; the in-memory mirror fills in the background); until then every RPC answers
UNAVAILABLE.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np
from prometheus_client import Gauge, Histogram

from partsim.errors import InvalidArgument, NotFound, Unavailable
from partsim.internal.v1 import searcher_pb2, searcher_pb2_grpc
from partsim.v1 import types_pb2

from .. import paging
from ..filters import requested
from ..runtime import LATENCY_BUCKETS, ServiceRuntime
from ..service import Service
from ..tracks import check_metadata, check_norm_fits, check_track_id, normal_key
from .config import MAX_EXCLUDE, MAX_TOP_K, SearcherConfig
from .meta import TrackInfo
from .retrieval import Query
from .store import SearchStore, Segments

log = logging.getLogger("partsim.searcher")

SERVICE = "partsim.internal.v1.SearcherService"
CANDIDATE_BUCKETS = (1, 10, 100, 300, 1000, 3000, 10000, 30000, 100000, 300000, 1e6, 3e6, 1e7)


def track_proto(info: TrackInfo) -> types_pb2.Track:
    return types_pb2.Track(
        track_id=info.track_id,
        metadata=types_pb2.TrackMetadata(
            title=info.title, artist=info.artist, tags=info.tags, bpm=info.bpm, key=info.key or ""
        ),
        num_segments=info.num_segments,
        duration_seconds=info.duration_seconds,
        segment_seconds=info.segment_seconds,
        model_version=info.model_version,
        indexed_at=info.indexed_at,
        version=info.version,
    )


def _token(after: str) -> str:
    return paging.encode_token({"after": after})


def _after(token: str) -> str:
    d = paging.decode_token(token, "ListTracks", "searcher")
    if d is None:
        return ""
    after = d.get("after")
    if not isinstance(after, str):
        raise paging.bad_token("ListTracks", "searcher")
    return after


def _listed(vector: np.ndarray | None) -> list[float]:
    return [] if vector is None else vector.tolist()


class Searcher(searcher_pb2_grpc.SearcherServiceServicer):
    """The servicer. ``store`` is None until :meth:`open` has loaded the index."""

    def __init__(self, cfg: SearcherConfig, rt: ServiceRuntime):
        self.cfg = cfg
        self.parts, self.dim = cfg.model_parts()
        self.store: SearchStore | None = None
        r = rt.registry
        self.search_seconds = Histogram(
            "partsim_search_seconds",
            "Search latency in the searcher.",
            ["mode", "kind"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.candidates = Histogram(
            "partsim_search_candidates",
            "Catalog segments whose distance was computed exactly per SearchMix.",
            ["mode"],
            buckets=CANDIDATE_BUCKETS,
            registry=r,
        )
        self.tracks = Gauge("partsim_index_tracks", "Tracks in the index.", registry=r)
        self.segments = Gauge("partsim_index_segments", "Segments (rows per part) in the index.", registry=r)
        self.present = Gauge(
            "partsim_index_present_segments", "Segments where the part is present.", ["part"], registry=r
        )
        for mode in ("exact", "approximate"):  # export zeros from the start, so rates see the first search
            self.candidates.labels(mode)
            for kind in ("mix", "stems"):
                self.search_seconds.labels(mode, kind)

    def open(self) -> None:
        cfg = self.cfg
        self.store = SearchStore(
            cfg.uri,
            f"{cfg.data_dir}/tracks.sqlite",
            self.parts,
            self.dim,
            index_type=cfg.index_type,
            ann_candidates=cfg.ann_candidates,
            ann_grouping=cfg.ann_grouping,
            hnsw_m=cfg.hnsw_m,
            hnsw_ef_construction=cfg.hnsw_ef_construction,
            hnsw_ef=cfg.hnsw_ef,
            ivf_nlist=cfg.ivf_nlist,
            ivf_nprobe=cfg.ivf_nprobe,
            flush_rows=cfg.flush_rows,
            mirror_bytes=cfg.mirror_bytes,
            search_consistency=cfg.search_consistency,
            freshness_seconds=cfg.freshness_seconds,
        ).open()
        self._update_gauges()

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None

    def _store(self) -> SearchStore:
        store = self.store
        if store is None:
            raise Unavailable("the searcher is still loading its index; retry shortly", retry_after_seconds=1.0)
        return store

    def _update_gauges(self, st: dict | None = None) -> None:
        """From the mirror when it is current (a write's cost stays flat), or from ``st``."""
        if (st := st or self._store().mirror_stats()) is None:
            return
        self.tracks.set(st["tracks"])
        self.segments.set(st["segments"])
        for part, n in st["present"].items():
            self.present.labels(part).set(n)

    # ---------------------------------------------------------------- validation

    def _vector(self, values, what: str) -> np.ndarray:
        v = np.asarray(values, dtype=np.float32)
        if v.size != self.dim:
            raise InvalidArgument(f"{what}: vector has {v.size} values, expected subspace_dim {self.dim}")
        if not np.all(np.isfinite(v)):
            raise InvalidArgument(f"{what}: vector holds NaN or infinity")
        check_norm_fits(v, what)
        return v

    def _query(self, pq: searcher_pb2.PartQuery, what: str) -> Query:
        if pq.part not in self.parts:
            raise InvalidArgument(f"{what}: unknown part {pq.part!r}; the parts are {self.parts}")
        v = self._vector(pq.vector, f"{what} (part {pq.part})")
        if float(np.linalg.norm(v)) <= 1e-12:
            raise InvalidArgument(
                f"{what} (part {pq.part}): the vector is all zeros, so its cosine is undefined; "
                "leave a silent part out of the query"
            )
        w = float(pq.weight)
        if math.isnan(w) or w < 0 or math.isinf(w):
            raise InvalidArgument(
                f"{what} (part {pq.part}): weight {w} must be a finite number >= 0 (0 or unset means 1)"
            )
        return Query(pq.part, v, w if w > 0 else 1.0)

    def _search_args(self, top_k: int, exclude, mode: int) -> tuple[list[str], bool]:
        if not 1 <= top_k <= MAX_TOP_K:
            raise InvalidArgument(f"top_k {top_k}: must be within 1..{MAX_TOP_K}")
        if len(exclude) > MAX_EXCLUDE:
            raise InvalidArgument(f"exclude_track_ids has {len(exclude)} ids; the limit is {MAX_EXCLUDE}")
        if mode not in (
            types_pb2.SEARCH_MODE_UNSPECIFIED,
            types_pb2.SEARCH_MODE_EXACT,
            types_pb2.SEARCH_MODE_APPROXIMATE,
        ):
            raise InvalidArgument(f"mode {mode}: unknown SearchMode")
        if mode == types_pb2.SEARCH_MODE_UNSPECIFIED:
            return list(exclude), self.cfg.default_mode == "exact"
        return list(exclude), mode == types_pb2.SEARCH_MODE_EXACT

    def _segments(self, request: searcher_pb2.UpsertTrackRequest) -> Segments:
        segs = request.segments
        if not segs:
            raise InvalidArgument(f"track {request.track.track_id!r}: segments is empty; a track needs at least one")
        n, pos = len(segs), {p: i for i, p in enumerate(self.parts)}
        vectors = np.zeros((len(self.parts), n, self.dim), dtype=np.float32)
        present = np.zeros((len(self.parts), n), dtype=bool)
        power = np.full((len(self.parts), n), -1.0)  # unknown unless the part vector says
        index, start, end = np.zeros(n, dtype=np.int64), np.zeros(n), np.zeros(n)
        seen: set[int] = set()
        for j, s in enumerate(segs):
            what = f"segment {s.index}"
            if s.index < 0 or s.index in seen:
                raise InvalidArgument(f"{what}: segment indices must be distinct and >= 0")
            seen.add(s.index)
            if not (math.isfinite(s.start_seconds) and math.isfinite(s.end_seconds)) or s.end_seconds < s.start_seconds:
                raise InvalidArgument(
                    f"{what}: start_seconds {s.start_seconds} / end_seconds {s.end_seconds} "
                    "must be finite with end >= start"
                )
            names = [pv.part for pv in s.parts]
            if sorted(names) != sorted(self.parts):
                unknown = sorted(set(names) - set(self.parts))
                missing = [p for p in self.parts if p not in names]
                dup = sorted({p for p in names if names.count(p) > 1})
                raise InvalidArgument(
                    f"{what}: parts must be exactly {self.parts} once each"
                    + (f"; unknown {unknown}" if unknown else "")
                    + (f"; missing {missing}" if missing else "")
                    + (f"; repeated {dup}" if dup else "")
                )
            for pv in s.parts:
                vectors[pos[pv.part], j] = self._vector(pv.vector, f"{what} part {pv.part}")
                present[pos[pv.part], j] = pv.present
                if pv.HasField("power"):
                    if not (math.isfinite(pv.power) and pv.power >= 0):
                        raise InvalidArgument(
                            f"{what} part {pv.part}: power {pv.power} must be a finite number >= 0 (or unset: unknown)"
                        )
                    power[pos[pv.part], j] = pv.power
            index[j], start[j], end[j] = s.index, s.start_seconds, s.end_seconds
        return Segments(index, start, end, vectors, present, power)

    # ---------------------------------------------------------------- RPCs

    def UpsertTrack(self, request, context):
        store = self._store()
        t = request.track
        check_track_id(t.track_id)
        check_metadata(t.metadata, "track.metadata")
        segs = self._segments(request)
        if t.num_segments and t.num_segments != len(segs):
            raise InvalidArgument(
                f"track {t.track_id!r}: num_segments is {t.num_segments} but {len(segs)} "
                "segments were sent (leave it 0 to have it counted)"
            )
        info = TrackInfo(
            t.track_id,
            t.metadata.title,
            t.metadata.artist,
            dict(t.metadata.tags),
            len(segs),
            t.duration_seconds or float(segs.end.max()),
            t.segment_seconds,
            t.model_version,
            t.indexed_at or time.time(),
            t.version,
            bpm=float(t.metadata.bpm) if t.metadata.HasField("bpm") else None,
            key=normal_key(t.metadata.key) if t.metadata.key else None,
        )
        old = store.upsert(info, segs)
        self._update_gauges()
        return searcher_pb2.UpsertTrackResponse(replaced=old is not None, replaced_version=old.version if old else "")

    def DeleteTrack(self, request, context):
        check_track_id(request.track_id)
        gone = self._store().delete(request.track_id)
        self._update_gauges()
        return searcher_pb2.DeleteTrackResponse(version=gone.version)

    def GetTrack(self, request, context):
        check_track_id(request.track_id)
        return searcher_pb2.GetTrackResponse(track=track_proto(self._store().get_track(request.track_id)))

    def ListTracks(self, request, context):
        store = self._store()
        size = paging.page_size(request.page_size)
        infos = store.list_tracks(_after(request.page_token), size + 1)
        more = len(infos) > size
        infos = infos[:size]
        return searcher_pb2.ListTracksResponse(
            tracks=[track_proto(i) for i in infos], next_page_token=_token(infos[-1].track_id) if more else ""
        )

    def GetSegment(self, request, context):
        check_track_id(request.track_id)
        store = self._store()
        if request.segment_index < 0:
            raise NotFound(f"track {request.track_id!r} has no segment {request.segment_index} (indices are >= 0)")
        info, rec = store.get_segment(request.track_id, request.segment_index)
        # the raw vectors as indexed (none for an absent part of a row migrated from an older catalog)
        seg = types_pb2.SegmentEmbedding(
            index=rec.index,
            start_seconds=rec.start,
            end_seconds=rec.end,
            parts=[
                types_pb2.PartVector(
                    part=p,
                    vector=_listed(rec.vectors[p]),
                    norm=rec.norms[p],
                    present=rec.present[p],
                    power=rec.power[p],
                )
                for p in self.parts
            ],
        )
        return searcher_pb2.GetSegmentResponse(track=track_proto(info), segment=seg)

    def SearchMix(self, request, context):
        store = self._store()
        if not request.parts:
            raise InvalidArgument("parts is empty: give at least one PartQuery (part, vector)")
        queries, seen = [], set()
        for i, pq in enumerate(request.parts):
            q = self._query(pq, f"parts[{i}]")
            if q.part in seen:
                raise InvalidArgument(
                    f"parts[{i}]: part {q.part!r} is given twice; average its query embeddings "
                    "into one vector (eq. 6.1)"
                )
            seen.add(q.part)
            queries.append(q)
        exclude, exact = self._search_args(request.top_k, request.exclude_track_ids, request.mode)
        where = requested(request)
        mode = "exact" if exact else "approximate"
        t0 = time.perf_counter()
        res = store.search_mix(queries, request.top_k, exclude, exact=exact, where=where)
        self.search_seconds.labels(mode, "mix").observe(time.perf_counter() - t0)
        self.candidates.labels(mode).observe(res.candidates)
        infos = self._infos([h.track_id for h in res.hits])
        hits = [
            types_pb2.MixHit(
                track=track_proto(infos[h.track_id]),
                distance=h.distance,
                best_segment=types_pb2.SegmentRef(index=h.segment, start_seconds=h.start, end_seconds=h.end),
                part_distances=[
                    types_pb2.PartDistance(part=q.part, distance=h.part_distances[q.part]) for q in queries
                ],
            )
            for h in res.hits
            if h.track_id in infos
        ]
        return searcher_pb2.SearchMixResponse(hits=hits, candidates=res.candidates)

    def SearchStems(self, request, context):
        store = self._store()
        if not request.HasField("query"):
            raise InvalidArgument("query is unset: give one PartQuery (part, vector)")
        q = self._query(request.query, "query")
        exclude, exact = self._search_args(request.top_k, request.exclude_track_ids, request.mode)
        where = requested(request)
        mode = "exact" if exact else "approximate"
        t0 = time.perf_counter()
        found = store.search_stems(q, request.top_k, exclude, exact=exact, where=where)
        self.search_seconds.labels(mode, "stems").observe(time.perf_counter() - t0)
        infos = self._infos([h.track_id for h in found])
        return searcher_pb2.SearchStemsResponse(
            hits=[
                types_pb2.StemHit(
                    track=track_proto(infos[h.track_id]),
                    segment=types_pb2.SegmentRef(index=h.segment, start_seconds=h.start, end_seconds=h.end),
                    distance=h.distance,
                )
                for h in found
                if h.track_id in infos
            ]
        )

    def _infos(self, track_ids: list[str]) -> dict[str, TrackInfo]:
        """Records of the hits, in one read (a track deleted meanwhile is left out)."""
        return self._store().get_tracks(track_ids)

    def GetStats(self, request, context):
        st = self._store().stats()
        self._update_gauges(st)
        return searcher_pb2.GetStatsResponse(
            tracks=st["tracks"], segments=st["segments"], present_segments_by_part=st["present"], backend=st["backend"]
        )


class SearcherServer(Service[SearcherConfig]):
    """The searcher: gRPC, health and metrics from :meth:`serve`, the index (Milvus) from :meth:`load`."""

    name = "searcher"
    grpc_service = SERVICE
    config = SearcherConfig

    def add_servicer(self, rt: ServiceRuntime) -> Searcher:
        servicer = Searcher(self.cfg, rt)
        searcher_pb2_grpc.add_SearcherServiceServicer_to_server(servicer, rt.server)
        return servicer

    def load(self) -> None:
        """Open the index (blocking), then turn SERVING."""
        self.servicer.open()
        self._runtime().set_serving(True)

    def close(self) -> None:
        self.servicer.close()


def main(argv: list[str] | None = None) -> int:
    return SearcherServer.main(argv)
