"""The searcher's index: :class:`SearchStore`, what the gRPC service calls to write, read and search.

It ties together one Milvus collection per part (:mod:`.milvus`: schema, index, raw calls; a
collection of an older schema is migrated when opened, :mod:`.migrate`), the in-memory
:class:`Mirror` of every vector, and the track metadata (:class:`MetaDB`, a SQLite file beside
the vectors).

- Opening: connect, create or check (and migrate) each part's collection, load it, then fill the
  mirror from Milvus; rows of tracks without metadata, and rows of a generation other than their
  track's (an interrupted write or replace), are deleted.
- Writes: a replace is atomic (:meth:`SearchStore.upsert_many`): the new version's rows are written
  beside the old ones, the metadata switches to them, then the old rows are deleted, so a shorter
  new version leaves no stale segments and a failed write leaves the catalog as it was; the mirror
  follows each switch. One searcher process writes a given catalog (the mirror is per process).
- Exact path: brute force over the mirror with :mod:`.retrieval`.
- Approximate path: Milvus's vector index, then an exact re-rank (:mod:`.ann`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from partsim.errors import InvalidArgument, NotFound, ResourceExhausted, Unavailable

from . import migrate, retrieval
from .ann import ApproximateSearch
from .meta import MetaDB, TrackInfo
from .milvus import INDEX_TYPES, MILVUS_MAX_LIMIT, REMOTE_SCHEMES, Milvus, pk
from .mirror import Mirror
from .records import MixHit, MixResult, SegmentRecord, Segments, StemHit

# what other modules import from here (config.py validates against the Milvus constants)
__all__ = [
    "INDEX_TYPES",
    "MILVUS_MAX_LIMIT",
    "REMOTE_SCHEMES",
    "MixHit",
    "MixResult",
    "SearchStore",
    "SegmentRecord",
    "Segments",
    "StemHit",
]

log = logging.getLogger("partsim.searcher")


class SearchStore:
    """Milvus collections + mirror + metadata. Thread-safe: one writer at a time, searches concurrent.

    Args:
        uri: Milvus URI (a path ending in ``.db``: Milvus Lite; ``http://host:19530``: a server).
        meta_path: the SQLite metadata file.
        parts: the model's parts, in its order.
        dim: the subspace dimension D.
        index_type: FLAT, IVF_FLAT or HNSW.
        ann_candidates: K', neighbours per query part on the approximate path (<= 16384).
        hnsw_m, hnsw_ef_construction, hnsw_ef: HNSW build and search parameters (ef is raised to
            the search limit when smaller).
        ivf_nlist, ivf_nprobe: IVF_FLAT build and search parameters.
        flush_rows: flush (seal) the collections after this many rows are written, so searches
            use indexed segments rather than brute-forcing a growing one.
    """

    def __init__(
        self,
        uri: str,
        meta_path: str | Path,
        parts: Sequence[str],
        dim: int,
        index_type: str = "HNSW",
        ann_candidates: int = 1000,
        hnsw_m: int = 16,
        hnsw_ef_construction: int = 100,
        hnsw_ef: int = 0,
        ivf_nlist: int = 256,
        ivf_nprobe: int = 32,
        flush_rows: int = 4096,
        collection_prefix: str = "partsim_",
    ):
        if index_type not in INDEX_TYPES:
            raise InvalidArgument(f"index_type {index_type!r}: expected one of {', '.join(INDEX_TYPES)}")
        if not 1 <= ann_candidates <= MILVUS_MAX_LIMIT:
            raise InvalidArgument(f"ann_candidates {ann_candidates}: must be within 1..{MILVUS_MAX_LIMIT}")
        if len(set(parts)) != len(parts) or not parts:
            raise InvalidArgument(f"parts {list(parts)}: need at least one, without duplicates")
        self.milvus = Milvus(
            uri,
            dim,
            index_type,
            hnsw={"M": hnsw_m, "efConstruction": hnsw_ef_construction, "ef": hnsw_ef},
            ivf={"nlist": ivf_nlist, "nprobe": ivf_nprobe},
        )
        self.parts = list(parts)
        self.dim = int(dim)
        self.flush_rows = flush_rows
        self.collections = {p: f"{collection_prefix}{p}" for p in self.parts}
        self.meta = MetaDB(meta_path)
        self.mirror = Mirror(self.parts, self.dim)
        self.ann = ApproximateSearch(self.milvus, self.collections, ann_candidates)
        self._lock = threading.Lock()  # the mirror
        self._write = threading.Lock()  # one writer at a time
        self._pending = 0

    # ---------------------------------------------------------------- lifecycle

    def open(self) -> SearchStore:
        """Connect, create or check (and migrate) the collections, load them, and fill the mirror."""
        t0 = time.perf_counter()
        self.milvus.connect()
        try:
            for name in self.collections.values():
                migrate.recover(self.milvus, name)
                if self.milvus.has(name):
                    if migrate.is_legacy(self.milvus, name):
                        migrate.migrate(self.milvus, name)
                else:
                    self.milvus.create(name)
                self.milvus.load(name)
            self._load_mirror()
        except BaseException:
            self.close()
            raise
        log.info(
            "searcher index open: %s, %d tracks, %d segments, parts %s, dim %d, %s (%.1f s)",
            self.milvus.backend,
            len(self.mirror.rows),
            self.mirror.segments,
            self.parts,
            self.dim,
            self.milvus.index_type,
            time.perf_counter() - t0,
        )
        return self

    def _load_mirror(self) -> None:
        """Read every row of every part into the mirror; delete rows of tracks without metadata and
        rows of another generation than their track's (both left by an interrupted write)."""
        known = self.meta.generations()
        seg_info: dict[tuple[str, int], tuple[float, float]] = {}
        vecs: list[dict[tuple[str, int], tuple[np.ndarray, bool]]] = []
        for name in self.collections.values():
            rows: dict[tuple[str, int], tuple[np.ndarray, bool]] = {}
            orphans = []
            for r in self.milvus.scan(name, ["track_id", "segment", "start", "end", "present", "vector"]):
                gen = known.get(r["track_id"])
                if gen is None or r["pk"] != pk(r["track_id"], r["segment"], gen):
                    orphans.append(r["pk"])
                    continue
                key = (r["track_id"], int(r["segment"]))
                rows[key] = (r["vector"], bool(r["present"]))
                seg_info[key] = (float(r["start"]), float(r["end"]))
            if orphans:
                log.warning(
                    "%s: deleting %d rows of tracks without metadata or of a replaced version (an interrupted write)",
                    name,
                    len(orphans),
                )
                self.milvus.delete_keys(name, orphans)
            vecs.append(rows)
        by_track: dict[str, list[int]] = {}
        for tid, seg in seg_info:
            by_track.setdefault(tid, []).append(seg)
        zero = np.zeros(self.dim, dtype=np.float32)
        with self._lock:
            self.mirror = Mirror(self.parts, self.dim, capacity=max(1024, len(seg_info)))
            for tid, segs in sorted(by_track.items()):
                segs.sort()
                units = np.zeros((len(self.parts), len(segs), self.dim), dtype=np.float32)
                present = np.zeros((len(self.parts), len(segs)), dtype=bool)
                for p, rows in enumerate(vecs):
                    for j, s in enumerate(segs):
                        v, pr = rows.get((tid, s), (zero, False))
                        units[p, j], present[p, j] = v, pr
                info = [seg_info[(tid, s)] for s in segs]
                self.mirror.add(
                    tid, np.array(segs), np.array([a for a, _ in info]), np.array([b for _, b in info]), units, present
                )
        missing = set(known) - set(by_track)
        if missing:
            log.warning(
                "%d tracks have metadata but no vectors in Milvus (e.g. %s); they cannot be found",
                len(missing),
                sorted(missing)[:3],
            )

    def flush(self) -> None:
        """Seal what was written so far (Milvus builds its index on sealed segments)."""
        self.milvus.flush(self.collections.values())
        self._pending = 0

    def wait_for_index(self, timeout: float = 600.0) -> None:
        """Flush, then wait until Milvus has indexed every sealed row (for benchmarks and tests)."""
        self.flush()
        self.milvus.wait_for_index(self.collections.values(), timeout)

    def close(self) -> None:
        """Flush, disconnect, and (Milvus Lite) stop the embedded database so its files are closed."""
        if self.milvus.client is not None:
            try:
                self.flush()
            except (Unavailable, ResourceExhausted):  # an outage or a full disk
                log.exception("flush at close failed")
            self.milvus.close()
        self.meta.close()
        self.ann.close()

    # ---------------------------------------------------------------- writes

    def upsert(self, track: TrackInfo, segments: Segments) -> TrackInfo | None:
        """Index one track (replacing any previous version). Returns the version it replaced, if any."""
        return self.upsert_many([(track, segments)])[0]

    def upsert_many(self, items: Sequence[tuple[TrackInfo, Segments]]) -> list[TrackInfo | None]:
        """Index several tracks with batched Milvus writes (a track given twice: the last wins).

        Atomic per call: the new rows (keys of a new generation) are written beside the old version's,
        then one metadata commit switches every track to them, then the mirror follows and the old
        rows are deleted. A failure before the switch leaves every old version searchable and listed
        (the new rows are removed, or at the next open); one after it (deleting the old rows) is
        logged and repaired by the next write of the track or the next open.

        Returns, per distinct track in order, the metadata of the version it replaced (None: new).
        """
        last = {t.track_id: i for i, (t, _) in enumerate(items)}  # a track twice in one batch: the last wins
        items = [it for i, it in enumerate(items) if last[it[0].track_id] == i]
        with self._write:
            before = [self.meta.get(t.track_id) for t, _ in items]
            gen = self.meta.next_generation()
            items = [(replace(t, generation=gen), seg) for t, seg in items]
            prepared = [(track, seg, *seg.rows(track.track_id, gen)) for track, seg in items]
            keys = {t.track_id: [pk(t.track_id, i, gen) for i in seg.index] for t, seg in items}
            try:
                for pi, name in enumerate(self.collections.values()):
                    self.milvus.insert(name, [row for p in prepared for row in p[2][pi]])
                self.meta.put_many([t for t, _ in items])  # the switch
            except BaseException:
                self._quietly(
                    "rows of a failed write", self.milvus.delete_keys, [k for ks in keys.values() for k in ks]
                )
                raise
            with self._lock:
                for track, seg, _, units, present in prepared:
                    self.mirror.add(
                        track.track_id,
                        np.asarray(seg.index),
                        np.asarray(seg.start),
                        np.asarray(seg.end),
                        units,
                        present,
                    )
            for tid, old in zip(keys, before):
                if old is not None:
                    self._quietly(f"old rows of {tid!r}", self.milvus.delete_stale, tid, keys[tid])
            self._pending += sum(len(s) for _, s in items)
            if self._pending >= self.flush_rows:
                self.flush()
            return before

    def _quietly(self, what: str, delete: Callable[..., None], *args) -> None:
        """``delete(collection, *args)`` for each part; a failure is only logged (the write's outcome is decided:
        rows of no current version are never served, and the next write of the track or open removes them)."""
        try:
            for name in self.collections.values():
                delete(name, *args)
        except Exception as exc:  # noqa: BLE001
            log.warning("%s not deleted (%s); the next write of the track or the next open removes them", what, exc)

    def delete(self, track_id: str) -> TrackInfo:
        """Remove a track's metadata and rows; the metadata it had. NotFound if it is not indexed.

        The metadata goes first (the commit point): rows a failure leaves after it are never served
        (the mirror follows the metadata, searches leave out tracks without it) and the next open removes them.
        """
        with self._write:
            info = self.meta.get(track_id)
            if info is None or not self.meta.delete(track_id):
                raise NotFound(f"track {track_id!r} is not indexed", reason="TRACK_NOT_FOUND")
            with self._lock:
                self.mirror.remove(track_id)
            self._quietly(f"rows of deleted track {track_id!r}", self.milvus.delete_tracks, [track_id])
            return info

    # ---------------------------------------------------------------- reads

    def get_track(self, track_id: str) -> TrackInfo:
        info = self.meta.get(track_id)
        if info is None:
            raise NotFound(f"track {track_id!r} is not indexed", reason="TRACK_NOT_FOUND")
        return info

    def list_tracks(self, after: str, limit: int) -> list[TrackInfo]:
        return self.meta.page(after, limit)

    def get_segment(self, track_id: str, index: int) -> tuple[TrackInfo, SegmentRecord]:
        """One stored segment (all parts) read from Milvus; NotFound for an unknown track or index.

        The rows are those of the version the metadata names (read again if a replace switched
        versions in between), so the metadata and the vectors answered belong to one write.
        """
        info = self.get_track(track_id)
        got = self._segment(info, index)
        while got is None and (now := self.get_track(track_id)).generation != info.generation:
            info, got = now, self._segment(now, index)
        if got is not None:
            return info, got
        with self._lock:
            rows = self.mirror.rows.get(track_id)
            have = sorted(self.mirror.segment[rows].tolist()) if rows is not None else []
        span = f"segments {have[0]}..{have[-1]}" if have else "no segments"
        raise NotFound(f"track {track_id!r} has no segment {index} (it has {span})")

    def _segment(self, info: TrackInfo, index: int) -> SegmentRecord | None:
        """The segment's rows of the version ``info`` names; None where one is missing."""
        rec = SegmentRecord(index, 0.0, 0.0, {}, {}, {}, {})
        key = pk(info.track_id, index, info.generation)
        for part, name in self.collections.items():
            got = self.milvus.get(name, [key], ["start", "end", "present", "norm", "power", "raw"])
            if not got:
                return None
            r = got[0]
            rec.start, rec.end = float(r["start"]), float(r["end"])
            rec.norms[part], rec.present[part] = float(r["norm"]), bool(r["present"])
            rec.power[part] = float(r["power"]) if r["power"] >= 0 else None
            rec.vectors[part] = np.asarray(r["raw"], dtype=np.float32) if len(r["raw"]) else None
        return rec

    def stats(self) -> dict:
        with self._lock:
            return {
                "tracks": len(self.mirror.rows),
                "segments": self.mirror.segments,
                "present": self.mirror.present_counts(),
                "backend": f"{self.milvus.backend} ({self.milvus.index_type}, IP)",
            }

    # ---------------------------------------------------------------- search

    def _excluded_mask(self, exclude: Iterable[str]) -> np.ndarray:
        valid = self.mirror.alive[: self.mirror.n].copy()
        for tid in exclude:
            rows = self.mirror.rows.get(tid)
            if rows is not None:
                valid[rows] = False
        return valid

    def search_mix(
        self, queries: Sequence[retrieval.Query], top_k: int, exclude: Sequence[str] = (), exact: bool = True
    ) -> MixResult:
        """Songs by eq. 6.2 (min over segments), ascending; exact brute force or the ANN path."""
        if not exact:
            return self.ann.search_mix(queries, top_k, exclude)
        with self._lock:
            m = self.mirror
            if m.n == 0:
                return MixResult([], 0)
            total, per = retrieval.segment_distances(queries, [m.matrix(q.part) for q in queries])
            valid = self._excluded_mask(exclude)
            rows = retrieval.rank(total, m.track[: m.n], m.segment[: m.n], m.names, top_k, valid, per_song=True)
            hits = [
                MixHit(
                    m.names[m.track[r]],
                    float(total[r]),
                    int(m.segment[r]),
                    float(m.start[r]),
                    float(m.end[r]),
                    {q.part: float(per[i, r]) for i, q in enumerate(queries)},
                )
                for r in rows
            ]
            return MixResult(hits, int(valid.sum()))

    def search_stems(
        self, query: retrieval.Query, top_k: int, exclude: Sequence[str] = (), exact: bool = True
    ) -> list[StemHit]:
        """Segments by cosine distance of one part, no grouping by song."""
        if not exact:
            return self.ann.search_stems(query, top_k, exclude)
        with self._lock:
            m = self.mirror
            if m.n == 0:
                return []
            total, _ = retrieval.segment_distances([query], [m.matrix(query.part)])
            rows = retrieval.rank(
                total, m.track[: m.n], m.segment[: m.n], m.names, top_k, self._excluded_mask(exclude), per_song=False
            )
            return [
                StemHit(m.names[m.track[r]], int(m.segment[r]), float(m.start[r]), float(m.end[r]), float(total[r]))
                for r in rows
            ]
