"""The approximate search path: Milvus's vector index finds candidates, :mod:`.retrieval` ranks them exactly.

SearchMix: per query part a Milvus ``search`` (K' = ``candidates`` neighbours; the parts' searches
run concurrently), union of the candidate segments, their vectors of the other query parts fetched
from Milvus by primary key, exact re-rank with :mod:`.retrieval` (eq. 6.2), min per song.
A one-part SearchMix, where Milvus has grouping search (:meth:`.milvus.Milvus.supports_grouping`)
and ``grouping`` is on, is one grouping search by track id (group size 1): Milvus returns the best
segment of each of the top_k tracks, i.e. the min over segments (eq. 6.2 with one part is the cosine
distance itself), read without their vectors: on a float index (FLAT, IVF_FLAT, HNSW) the inner
product Milvus computed is the cosine, on IVF_SQ8 the rows' vectors are fetched (one read of top_k
keys) and re-ranked exactly; no candidate union. Where a
returned row is not its track's current version (a replace in flight), or Milvus ignored the
grouping (a 2.3 server: grouping is then turned off for the connection), the query takes the
per-part path.
SearchStems: one part's nearest segments, re-ranked exactly. Both keep only rows of each track's
current version (:func:`.exact.rank_current`: a replace in flight, or rows an interrupted write left).
Reads use the searcher's search consistency level. A search filter is passed to each Milvus ``search``
as its filter expression (:meth:`partsim.services.filters.Filter.expression`), so the K' neighbours
are K' neighbours among the matching tracks' rows, not K' neighbours thinned out afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..filters import ANY, Filter
from . import retrieval
from .exact import rank_current
from .milvus import MILVUS_MAX_LIMIT, QUANTISED, STRONG, Milvus, generation_of
from .records import MixHit, MixResult, StemHit
from .tracktable import TrackTable


class ApproximateSearch:
    """Searches the collections ``collections`` (part -> name) through Milvus's index.

    Args:
        milvus: the connection (open by the time a search runs).
        collections: each part's collection name.
        candidates: K', neighbours per query part (<= 16384).
        tracks: the track records (which generation is current).
        pool: runs the parts' Milvus calls concurrently.
        level: the consistency level of its reads.
        grouping: answer one-part SearchMix queries with a grouping search where Milvus has it.
    """

    def __init__(
        self,
        milvus: Milvus,
        collections: dict[str, str],
        candidates: int,
        tracks: TrackTable,
        pool: ThreadPoolExecutor,
        level: str = STRONG,
        grouping: bool = True,
    ):
        self.milvus = milvus
        self.grouping = grouping
        self.collections = collections
        self.candidates = candidates
        self.tracks, self._pool, self.level = tracks, pool, level

    def _nearest(
        self, part: str, vector: np.ndarray, limit: int, exclude: Sequence[str], where: Filter = ANY
    ) -> list[dict]:
        return self.milvus.search(
            self.collections[part], retrieval.unit(vector), limit, exclude, self.level, where.expression()
        )

    def _fetch(self, part: str, keys: list[str]) -> dict[str, np.ndarray]:
        """Unit vectors of ``part`` for the given primary keys (missing keys are left out)."""
        got = self.milvus.get(self.collections[part], keys, ["vector"], self.level)
        return {r["pk"]: np.asarray(r["vector"], dtype=np.float32) for r in got}

    def search_mix(
        self, queries: Sequence[retrieval.Query], top_k: int, exclude: Sequence[str], where: Filter = ANY
    ) -> MixResult:
        if len(queries) == 1 and self.grouping and self.milvus.supports_grouping():
            grouped = self._grouped(queries[0], top_k, exclude, where)
            if grouped is not None:
                return grouped
        return self._union(queries, top_k, exclude, where)

    def _grouped(
        self, query: retrieval.Query, top_k: int, exclude: Sequence[str], where: Filter = ANY
    ) -> MixResult | None:
        """A one-part SearchMix as one grouping search by track id; None: take the per-part path instead."""
        limit = min(top_k + 8, MILVUS_MAX_LIMIT)  # a few more groups: rows of deleted tracks are dropped
        name = self.collections[query.part]
        hits = self.milvus.search(
            name,
            retrieval.unit(query.vector),
            limit,
            exclude,
            self.level,
            where=where.expression(),
            group_by="track_id",
            vectors=False,
        )
        if not hits:
            return MixResult([], 0)
        keys = [h["pk"] if "pk" in h else h["id"] for h in hits]
        tids = [h["entity"]["track_id"] for h in hits]
        if len(set(tids)) < len(tids):  # the server ignored group_by_field
            self.milvus.no_grouping()
            return None
        now = self.tracks.generations(set(tids), self.level)
        live = [i for i, (t, k) in enumerate(zip(tids, keys)) if now.get(t) is not None]
        if any(now[tids[i]] != generation_of(keys[i]) for i in live):
            return None  # a track's best row is not its current version: the per-part path ranks its other rows
        if len(live) < min(top_k, len(hits)) and len(hits) == limit:
            return None  # too many deleted tracks' rows among the groups
        if self.milvus.index_type in QUANTISED:  # approximate distances: re-rank the rows' own vectors
            got = self._fetch(query.part, [keys[i] for i in live])
            zero = np.zeros(self.milvus.dim, dtype=np.float32)
            mat = np.stack([got.get(keys[i], zero) for i in live])
            total = retrieval.segment_distances([query], [mat])[0]
        else:  # IP of unit vectors = cosine, as the exact path computes it (float32)
            total = np.clip(1.0 - np.array([float(hits[i]["distance"]) for i in live]), 0.0, 2.0)
        segment = np.array([int(hits[i]["entity"]["segment"]) for i in live])
        names = [tids[i] for i in live]
        rows = retrieval.rank(total, np.arange(len(live)), segment, names, top_k, per_song=True)
        out = []
        for r in rows:
            e = hits[live[r]]["entity"]
            d = float(total[r])
            out.append(MixHit(names[r], d, int(e["segment"]), float(e["start"]), float(e["end"]), {query.part: d}))
        return MixResult(out, len(hits))

    def _union(
        self, queries: Sequence[retrieval.Query], top_k: int, exclude: Sequence[str], where: Filter = ANY
    ) -> MixResult:
        """Per query part its K' nearest segments, their union re-ranked exactly (eq. 6.2), min per song."""
        k = min(self.candidates, MILVUS_MAX_LIMIT)
        # 1. per query part, its K' nearest segments among the matching tracks' (the parts' searches run
        # concurrently); the other parts' vectors of those segments are of the same tracks, so match too
        found = list(self._pool.map(lambda q: self._nearest(q.part, q.vector, k, exclude, where), queries))
        cand: dict[str, tuple[str, int, float, float]] = {}
        vectors: list[dict[str, np.ndarray]] = []
        kth: list[float] = []
        for nearest in found:
            got = {}
            for h in nearest:
                e, key = h["entity"], h["pk"] if "pk" in h else h["id"]
                cand.setdefault(key, (e["track_id"], int(e["segment"]), float(e["start"]), float(e["end"])))
                got[key] = np.asarray(e["vector"], dtype=np.float32)
            vectors.append(got)
            # the K'-th neighbour's distance; a shorter list holds every row, so it bounds nothing
            kth.append(1.0 - float(nearest[-1]["distance"]) if len(nearest) >= k else 2.0)
        if not cand:
            return MixResult([], 0)
        # 2. the union's vectors of the other query parts, by primary key
        keys = list(cand)
        missing = list(
            self._pool.map(
                lambda qg: self._fetch(qg[0].part, [c for c in keys if c not in qg[1]]), zip(queries, vectors)
            )
        )
        zero = np.zeros(self.milvus.dim, dtype=np.float32)
        mats = [np.stack([got.get(c, extra.get(c, zero)) for c in keys]) for got, extra in zip(vectors, missing)]
        # 3. exact re-rank (eq. 6.2) and min per song
        total, per = retrieval.segment_distances(queries, mats)
        segment = np.array([cand[c][1] for c in keys])
        tids = [cand[c][0] for c in keys]
        rows = rank_current(total, keys, tids, segment, top_k, self.tracks, self.level, per_song=True)
        hits = []
        for r in rows:
            tid, seg, start, end = cand[keys[r]]
            hits.append(
                MixHit(tid, float(total[r]), seg, start, end, {q.part: float(per[i, r]) for i, q in enumerate(queries)})
            )
        bound = retrieval.candidate_bound(kth, [q.weight for q in queries])
        return MixResult(hits, len(keys), bound)

    def search_stems(
        self, query: retrieval.Query, top_k: int, exclude: Sequence[str], where: Filter = ANY
    ) -> list[StemHit]:
        hits = self._nearest(query.part, query.vector, top_k, exclude, where)
        if not hits:
            return []
        keys = [h["pk"] if "pk" in h else h["id"] for h in hits]
        info = [
            (
                h["entity"]["track_id"],
                int(h["entity"]["segment"]),
                float(h["entity"]["start"]),
                float(h["entity"]["end"]),
            )
            for h in hits
        ]
        mat = np.stack([np.asarray(h["entity"]["vector"], dtype=np.float32) for h in hits])
        total, _ = retrieval.segment_distances([query], [mat])
        segment = np.array([s for _, s, *_ in info])
        tids = [t for t, *_ in info]
        rows = rank_current(total, keys, tids, segment, top_k, self.tracks, self.level, per_song=False)
        return [StemHit(info[r][0], info[r][1], info[r][2], info[r][3], float(total[r])) for r in rows]
