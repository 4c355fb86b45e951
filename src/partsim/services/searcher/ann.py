"""The approximate search path: Milvus's vector index finds candidates, :mod:`.retrieval` ranks them exactly.

SearchMix: per query part a Milvus ``search`` (K' = ``candidates`` neighbours; the parts' searches
run concurrently), union of the candidate segments, exact re-rank with :mod:`.retrieval` (eq. 6.2),
min per song. On a float index (FLAT, IVF_FLAT, HNSW) the searches return no vectors (their transfer
and parsing were most of a 1,000-hit search's time on a 2.3 server): a hit's
distance in its own part is the inner product Milvus computed, the cosine of unit vectors. The
candidates' other query parts come from the searcher's mirror while it is current (no Milvus read),
else from Milvus by primary key (IVF_SQ8: every part, its distances being approximate).
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
from .cache import MirrorCache
from .exact import rank_current
from .milvus import MILVUS_MAX_LIMIT, QUANTISED, STRONG, Milvus, generation_of
from .mirror import Mirror
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
        cache: the searcher's mirror; while it is current, candidates are re-ranked on it (no Milvus reads).
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
        cache: MirrorCache | None = None,
    ):
        self.milvus = milvus
        self.grouping = grouping
        self.collections = collections
        self.candidates = candidates
        self.tracks, self._pool, self.level = tracks, pool, level
        self.cache = cache

    def _nearest(
        self,
        part: str,
        vector: np.ndarray,
        limit: int,
        exclude: Sequence[str],
        where: Filter = ANY,
        vectors: bool = True,
    ) -> list[dict]:
        return self.milvus.search(
            self.collections[part],
            retrieval.unit(vector),
            limit,
            exclude,
            self.level,
            where.expression(),
            vectors=vectors,
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
        quantised = self.milvus.index_type in QUANTISED
        # 1. per query part, its K' nearest segments among the matching tracks' (the parts' searches run
        # concurrently); the other parts' vectors of those segments are of the same tracks, so match too.
        # On a float index the hits come without vectors (their transfer was most of a search's time):
        # the inner product Milvus computed on unit vectors is the cosine
        found = list(self._pool.map(lambda q: self._nearest(q.part, q.vector, k, exclude, where, quantised), queries))
        cand: dict[str, tuple[str, int, float, float]] = {}
        own: list[dict[str, float]] = []  # per query part: its hits' cosine distances in that part
        kth: list[float] = []
        for q, nearest in zip(queries, found):
            got: dict[str, float] = {}
            for h in nearest:
                e, key = h["entity"], h["pk"] if "pk" in h else h["id"]
                cand.setdefault(key, (e["track_id"], int(e["segment"]), float(e["start"]), float(e["end"])))
                # a quantised index's distance is approximate: the row's own vector gives the exact one
                ip = (
                    float(np.asarray(e["vector"], dtype=np.float32) @ retrieval.unit(q.vector))
                    if quantised
                    else h["distance"]
                )
                got[key] = min(2.0, max(0.0, 1.0 - float(ip)))
            own.append(got)
            # the K'-th neighbour's distance; a shorter list holds every row, so it bounds nothing
            kth.append(1.0 - float(nearest[-1]["distance"]) if len(nearest) >= k else 2.0)
        if not cand:
            return MixResult([], 0)
        keys = list(cand)
        segment = np.array([cand[c][1] for c in keys])
        tids = [cand[c][0] for c in keys]
        bound = retrieval.candidate_bound(kth, [q.weight for q in queries])
        # 2. the candidates' vectors of the query parts: from the searcher's mirror when it is current (no
        # Milvus read), else read from Milvus by primary key (only the parts a candidate was not found in)
        if self.cache is not None and self.cache.fresh():
            with self.cache.lock:
                m = self.cache.mirror
                if m is not None:
                    return self._rerank_on_mirror(m, queries, keys, cand, tids, segment, top_k, bound)
        per = self._distances(queries, keys, own)
        weights = np.array([q.weight for q in queries], dtype=np.float64)
        total = weights @ per / weights.sum()
        # 3. min per song over the rows of each track's current version
        rows = rank_current(total, keys, tids, segment, top_k, self.tracks, self.level, per_song=True)
        return MixResult(self._hits(queries, rows, keys, cand, total, per), len(keys), bound)

    def _distances(
        self, queries: Sequence[retrieval.Query], keys: list[str], own: list[dict[str, float]]
    ) -> np.ndarray:
        """(len(queries), len(keys)) cosine distances of each query part: the search's own where a key was a hit
        of that part, the rest from vectors read from Milvus by primary key (a row it lacks: 1, a zero vector)."""
        need = [[c for c in keys if c not in got] for got in own]
        fetched = list(self._pool.map(lambda qn: self._fetch(qn[0].part, qn[1]) if qn[1] else {}, zip(queries, need)))
        per = np.empty((len(queries), len(keys)), dtype=np.float64)
        zero = np.zeros(self.milvus.dim, dtype=np.float32)
        for i, (q, got, extra) in enumerate(zip(queries, own, fetched)):
            per[i] = [got.get(c, 1.0) for c in keys]
            rest = [j for j, c in enumerate(keys) if c not in got]
            if rest:
                mat = np.stack([extra.get(keys[j], zero) for j in rest])
                per[i, rest] = np.clip(1.0 - mat @ retrieval.unit(q.vector), 0.0, 2.0)
        return per

    def _rerank_on_mirror(
        self,
        m: Mirror,
        queries: Sequence[retrieval.Query],
        keys: list[str],
        cand: dict[str, tuple[str, int, float, float]],
        tids: list[str],
        segment: np.ndarray,
        top_k: int,
        bound: float,
    ) -> MixResult:
        """Step 2-3 of :meth:`_union` on the (current) mirror: every candidate's vectors are in memory. A candidate
        row the mirror does not hold (not its track's current version, or a track deleted) is left out."""
        assert self.cache is not None
        at = self.cache.rows_of(tids, segment, [generation_of(c) for c in keys])
        ok = at >= 0
        keys = [c for c, good in zip(keys, ok) if good]
        if not keys:
            return MixResult([], 0, bound)
        at, segment = at[ok], segment[ok]
        tids = [t for t, good in zip(tids, ok) if good]
        total, per = retrieval.segment_distances(queries, [m.matrix(q.part)[at] for q in queries])
        names = list(dict.fromkeys(tids))
        ordinal = {t: i for i, t in enumerate(names)}
        track = np.array([ordinal[t] for t in tids])
        rows = retrieval.rank(total, track, segment, names, top_k, per_song=True)
        return MixResult(self._hits(queries, rows, keys, cand, total, per), len(keys), bound)

    @staticmethod
    def _hits(queries, rows, keys, cand, total, per) -> list[MixHit]:
        hits = []
        for r in rows:
            tid, seg, start, end = cand[keys[r]]
            hits.append(
                MixHit(tid, float(total[r]), seg, start, end, {q.part: float(per[i, r]) for i, q in enumerate(queries)})
            )
        return hits

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
