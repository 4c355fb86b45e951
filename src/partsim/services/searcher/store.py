"""The searcher's index: :class:`SearchStore`, what the gRPC service calls to write, read and search.

The catalog lives in Milvus alone, so any searcher replica answers any request and a searcher with
an empty data folder serves an existing catalog at once: one collection per part with a row per
(track, segment) (:mod:`.milvus`; a collection of an older schema is migrated when opened,
:mod:`.migrate`), and the ``tracks`` collection with a record per track (:mod:`.tracktable`; an
older catalog's SQLite file is imported into it once). The in-memory mirror is a cache
(:mod:`.cache`), filled in the background after open, bounded by a memory budget, checked against
the ``tracks`` collection before each answer, and never needed: without it the exact path reads
Milvus (:mod:`.exact`).

- Writes: a replace is atomic (:meth:`SearchStore.upsert_many`): the new version's rows are written
  beside the old ones under a new generation, the track record switches to them, then the old rows
  are deleted, so a shorter new version leaves no stale segments and a failed write leaves the
  catalog as it was. Any replica may write; writes of one track id through two replicas at once
  end with the last switch's version (rows of the other are swept once old, :mod:`.cache`).
- Consistency: reads that must see finished writes (GetTrack, ListTracks, GetSegment, the record
  read before a switch) are Strong; searches and GetStats use the configured level (Bounded by
  default).
- Exact path: brute force over the mirror with :mod:`.retrieval`, or over rows read from Milvus.
- Approximate path: Milvus's vector index, then an exact re-rank (:mod:`.ann`).
- Filters: every segment row carries its track's filter fields (tags, BPM, key, duration, indexing
  time; written with the rows), so a search filter is a Milvus expression on the rows for both
  Milvus paths, and the same predicate in Python on the mirror (:mod:`partsim.services.filters`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np

from partsim.errors import InvalidArgument, NotFound, ResourceExhausted, Unavailable

from ..filters import ANY, Filter, row_fields
from . import migrate, readiness, retrieval
from .ann import ApproximateSearch
from .cache import MirrorCache
from .exact import MilvusExact
from .meta import TrackInfo
from .milvus import CONSISTENCY_LEVELS, INDEX_TYPES, MILVUS_MAX_LIMIT, REMOTE_SCHEMES, STRONG, Milvus, pk, quote
from .mirror import Mirror, mirror_mix, mirror_stems
from .records import MixHit, MixResult, SegmentRecord, Segments, StemHit
from .space import check_space
from .tracktable import TrackTable, generation_ms, new_generation

# what other modules import from here (config.py validates against the Milvus constants)
__all__ = [
    "CONSISTENCY_LEVELS",
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

MIRROR_BYTES = 1536 << 20  # the mirror's default memory budget: 150,000 songs of 4 segments x 5 parts x 128-d
ORPHAN_GRACE_SECONDS = 600.0
# How long the mirror answers Bounded (Session, Eventually) searches before it asks Milvus again what other
# searchers changed. Milvus's own Bounded staleness is seconds; each look is a query of the tracks collection,
# which before every answer was most of an exact search's time at 10,000 songs on Milvus Lite.
FRESHNESS_SECONDS = 1.0


def filter_fields(info: TrackInfo) -> dict:
    """A track's filter fields, as each of its segment rows carries them."""
    return row_fields(info.tags, info.bpm, info.key, info.duration_seconds, info.indexed_at)


class SearchStore:
    """Milvus collections + the mirror cache. Thread-safe: one writer at a time per process, searches concurrent.

    Args:
        uri: Milvus URI (a path ending in ``.db``: Milvus Lite; ``http://host:19530``: a server).
        legacy_meta: where an older catalog kept its track records (SQLite), imported once if it is there.
        parts: the model's parts, in its order.
        dim: the subspace dimension D.
        index_type: FLAT, IVF_FLAT, IVF_SQ8 or HNSW.
        ann_candidates: K', neighbours per query part on the approximate path (<= 16384).
        ann_grouping: one-part approximate SearchMix as a Milvus grouping search by track id, where
            Milvus has it (:mod:`.ann`).
        hnsw_m, hnsw_ef_construction, hnsw_ef: HNSW build and search parameters (ef is raised to
            the search limit when smaller).
        ivf_nlist, ivf_nprobe: IVF_FLAT and IVF_SQ8 build and search parameters.
        flush_rows: flush (seal) the collections after this many rows are written, so searches
            use indexed segments rather than brute-forcing a growing one.
        collection_prefix: the collections are ``<prefix><part>`` and ``<prefix>tracks``.
        mirror_bytes: the mirror's memory budget (0: no mirror; exact searches read Milvus).
        search_consistency: the consistency level of searches and GetStats (Strong, Bounded, Session,
            Eventually).
        orphan_grace_seconds: rows of no current version are swept (at open, and by a later write of
            the track) once their write began this long ago; younger ones may be another replica's
            write in flight, and a write whose switch would come later than half of it fails. 0: sweep every
            orphaned row (one writer only, e.g. tests), no time limit on writes.
        freshness_seconds: how long the mirror answers searches of a level other than Strong after it last asked
            Milvus what other searchers changed (:meth:`.cache.MirrorCache.fresh`; 0: it asks before every answer).
    """

    def __init__(
        self,
        uri: str,
        legacy_meta: str | Path | None,
        parts: Sequence[str],
        dim: int,
        index_type: str = "HNSW",
        ann_candidates: int = 1000,
        ann_grouping: bool = True,
        hnsw_m: int = 16,
        hnsw_ef_construction: int = 100,
        hnsw_ef: int = 0,
        ivf_nlist: int = 256,
        ivf_nprobe: int = 32,
        flush_rows: int = 4096,
        collection_prefix: str = "partsim_",
        mirror_bytes: int = MIRROR_BYTES,
        search_consistency: str = "Bounded",
        orphan_grace_seconds: float = ORPHAN_GRACE_SECONDS,
        freshness_seconds: float = FRESHNESS_SECONDS,
    ):
        if index_type not in INDEX_TYPES:
            raise InvalidArgument(f"index_type {index_type!r}: expected one of {', '.join(INDEX_TYPES)}")
        if not 1 <= ann_candidates <= MILVUS_MAX_LIMIT:
            raise InvalidArgument(f"ann_candidates {ann_candidates}: must be within 1..{MILVUS_MAX_LIMIT}")
        if len(set(parts)) != len(parts) or not parts:
            raise InvalidArgument(f"parts {list(parts)}: need at least one, without duplicates")
        if search_consistency not in CONSISTENCY_LEVELS:
            raise InvalidArgument(f"search_consistency {search_consistency!r}: one of {', '.join(CONSISTENCY_LEVELS)}")
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
        self.level = search_consistency
        self.grace = float(orphan_grace_seconds)
        self.legacy_meta = Path(legacy_meta) if legacy_meta else None
        self.collections = {p: f"{collection_prefix}{p}" for p in self.parts}
        self.tracks = TrackTable(self.milvus, f"{collection_prefix}tracks")
        self._pool = ThreadPoolExecutor(max_workers=len(self.parts), thread_name_prefix="searcher-milvus")
        self.cache = MirrorCache(
            self.milvus,
            self.tracks,
            self.collections,
            self.dim,
            mirror_bytes,
            self.level,
            self.grace,
            freshness_seconds,
        )
        self.exact = MilvusExact(self.milvus, self.tracks, self.collections, self._pool, self.level)
        self.ann = ApproximateSearch(
            self.milvus, self.collections, ann_candidates, self.tracks, self._pool, self.level, ann_grouping, self.cache
        )
        self._write = threading.Lock()  # one writer at a time (in this process)
        self._pending = 0  # rows written since the last flush
        self._dirty = False  # anything written (rows, deletes, migrations) since the last flush

    @property
    def mirror(self) -> Mirror | None:
        """The mirror once complete (None before, or beyond the budget)."""
        return self.cache.mirror

    # ---------------------------------------------------------------- lifecycle

    def open(self, wait: bool = False) -> SearchStore:
        """Connect, create or check (and migrate) the collections and load them; the mirror fills in the
        background (``wait``: return once it has, with the sweep of orphaned rows done)."""
        t0 = time.perf_counter()
        self.milvus.connect()
        try:
            self.tracks.open()
            records = None  # every track's record, read once if a collection is to be migrated
            for name in self.collections.values():
                migrate.recover(self.milvus, name)
                if self.milvus.has(name):
                    if migrate.is_legacy(self.milvus, name):
                        if records is None:
                            records = migrate.track_records(self.tracks, self.legacy_meta)
                        migrate.migrate(self.milvus, name, records)
                        self._dirty = True
                else:
                    self.milvus.create(name)
            self.milvus.load_all(list(self.collections.values()))
            if self.legacy_meta is not None and self.legacy_meta.is_file():
                migrate.import_sqlite(self.tracks, self.legacy_meta, self.collections)
                self._dirty = True
        except BaseException:
            self.close()
            raise
        self.cache.start()
        log.info(
            "searcher index open: %s, parts %s, dim %d, %s, searches %s (%.1f s); the mirror fills in the background",
            self.milvus.backend,
            self.parts,
            self.dim,
            self.milvus.index_type,
            self.level,
            time.perf_counter() - t0,
        )
        if wait:
            self.cache.wait()
        return self

    def flush(self) -> None:
        """Seal what was written so far (Milvus builds its index on sealed segments)."""
        self.milvus.flush([*self.collections.values(), self.tracks.name])
        self._pending, self._dirty = 0, False

    def wait_for_index(self, timeout: float = 600.0, probe_keys: Sequence[str] = ()) -> float:
        """Flush, wait until Milvus has indexed every sealed row, then until its searches serve that index
        (:func:`.readiness.wait_until_served`: progress, and probe searches that must find the probed
        rows: ``probe_keys``, primary keys spread over the catalog, and a few the collections give), for
        benchmarks, tests and anyone about to switch to approximate search. Returns the seconds the
        last check (the probes) took; Unavailable when the index is not served within ``timeout``."""
        self.flush()
        deadline = time.monotonic() + timeout
        readiness.wait_for_index(self.milvus, self.collections.values(), timeout)
        return readiness.wait_until_served(
            self.milvus, self.collections.values(), max(1.0, deadline - time.monotonic()), probe_keys, level=self.level
        )

    def close(self) -> None:
        """Stop the mirror's fill, flush what this process wrote (a replica that only read flushes nothing: a
        flush per restart would seal small segments), disconnect, and (Milvus Lite) stop the embedded database."""
        self.cache.close()
        if self.milvus.client is not None:
            try:
                if self._dirty:
                    self.flush()
            except (Unavailable, ResourceExhausted):  # an outage or a full disk
                log.exception("flush at close failed")
            self.milvus.close()
        self._pool.shutdown(wait=True)

    # ---------------------------------------------------------------- writes

    def upsert(self, track: TrackInfo, segments: Segments) -> TrackInfo | None:
        """Index one track (replacing any previous version). Returns the version it replaced, if any."""
        return self.upsert_many([(track, segments)])[0]

    def upsert_many(self, items: Sequence[tuple[TrackInfo, Segments]]) -> list[TrackInfo | None]:
        """Index several tracks with batched Milvus writes (a track given twice: the last wins).

        Atomic per track: the new rows (keys of a new generation) are written beside the old version's,
        then the track records switch to them (one upsert per 4,096 tracks), then the mirror follows and
        the old rows are deleted. A failure before the switch leaves every old version searchable and
        listed (the new rows are removed, or swept later); one after it (deleting the old rows) is
        logged and repaired by a later write of the track or the sweep.

        Returns, per distinct track in order, the record of the version it replaced (None: new).
        """
        last = {t.track_id: i for i, (t, _) in enumerate(items)}  # a track twice in one batch: the last wins
        items = [it for i, it in enumerate(items) if last[it[0].track_id] == i]
        with self._write:
            self._dirty = True
            known = self.tracks.get_many([t.track_id for t, _ in items], STRONG)
            before = [known.get(t.track_id) for t, _ in items]
            gen = new_generation()
            items = [(replace(t, generation=gen), seg) for t, seg in items]
            fields = {t.track_id: filter_fields(t) for t, _ in items}
            prepared = [(track, seg, *seg.rows(track.track_id, gen, fields[track.track_id])) for track, seg in items]
            keys = {t.track_id: [pk(t.track_id, i, gen) for i in seg.index] for t, seg in items}
            records = [
                (t, dict(zip(self.parts, (int(n) for n in p[4].sum(axis=1)))))
                for t, p in zip([t for t, _ in items], prepared)
            ]
            if self.milvus.lite:  # nothing written on a (nearly) full disk: see .space
                rows = sum(len(seg.index) for _, seg in items) * len(self.parts)
                check_space(Path(self.milvus.uri).parent, rows * (8 * self.milvus.dim + 512))
            try:
                for pi, name in enumerate(self.collections.values()):
                    self.milvus.insert(name, [row for p in prepared for row in p[2][pi]])
                if 0 < self.grace * 500 < time.time() * 1000 - generation_ms(gen):
                    raise Unavailable(
                        f"the write took over {self.grace / 2:.0f} s before its switch (the sweep could take its "
                        "rows for an abandoned write's); retry it, in smaller batches"
                    )
                stamps = self.tracks.put_many(records)  # the switch
            except BaseException:
                self._undo(keys, gen)
                raise
            for track, seg, _, units, present in prepared:
                self.cache.put(
                    track.track_id,
                    gen,
                    np.asarray(seg.index),
                    np.asarray(seg.start),
                    np.asarray(seg.end),
                    units,
                    present,
                    fields[track.track_id],
                )
            self.cache.saw(stamps)
            cutoff = time.time() * 1000 - self.grace * 1000
            for tid, old in zip(keys, before):
                if old is not None:
                    self._quietly(f"old rows of {tid!r}", self.milvus.delete_stale, tid, gen, old.generation, cutoff)
            self._pending += sum(len(s) for _, s in items)
            if self._pending >= self.flush_rows:
                self.flush()
            return before

    def _undo(self, keys: dict[str, list[str]], gen: int) -> None:
        """Remove the rows of a failed write, except those of tracks whose switch went through."""
        try:
            switched = {t for t, g in self.tracks.generations(keys, STRONG).items() if g == gen}
        except Exception as exc:  # noqa: BLE001 - Milvus is gone: the sweep removes them later
            log.warning("rows of a failed write not removed (%s); the sweep removes them", exc)
            return
        self._quietly(
            "rows of a failed write",
            self.milvus.delete_keys,
            [k for t, ks in keys.items() if t not in switched for k in ks],
        )

    def _quietly(self, what: str, delete: Callable[..., None], *args) -> None:
        """``delete(collection, *args)`` for each part; a failure is only logged (the write's outcome is decided:
        rows of no current version are never served, and a later write of the track or the sweep removes them)."""
        try:
            for name in self.collections.values():
                delete(name, *args)
        except Exception as exc:  # noqa: BLE001
            log.warning("%s not deleted (%s); a later write of the track or the sweep removes them", what, exc)

    def delete(self, track_id: str) -> TrackInfo:
        """Remove a track's record and rows; the record it had. NotFound if it is not indexed.

        The record turns into a tombstone first (the commit point): rows a failure leaves after it are
        never served (searches keep rows of a live record's generation only) and the sweep removes them.
        """
        with self._write:
            info = self.tracks.get(track_id, STRONG)
            if info is None:
                raise NotFound(f"track {track_id!r} is not indexed", reason="TRACK_NOT_FOUND")
            stamp = self.tracks.tombstone(info)
            self._dirty = True
            self.cache.forget(track_id)
            self.cache.saw([stamp])
            cutoff = time.time() * 1000 - self.grace * 1000
            self._quietly(
                f"rows of deleted track {track_id!r}", self.milvus.delete_stale, track_id, None, info.generation, cutoff
            )
            return info

    # ---------------------------------------------------------------- reads

    def get_track(self, track_id: str) -> TrackInfo:
        info = self.tracks.get(track_id, STRONG)
        if info is None:
            raise NotFound(f"track {track_id!r} is not indexed", reason="TRACK_NOT_FOUND")
        return info

    def get_tracks(self, track_ids: Iterable[str]) -> dict[str, TrackInfo]:
        """The records of the live tracks among ``track_ids`` (for search hits: at the search level)."""
        return self.tracks.get_many(track_ids, self.level)

    def list_tracks(self, after: str, limit: int) -> list[TrackInfo]:
        return self.tracks.page(after, limit, STRONG)

    def get_segment(self, track_id: str, index: int) -> tuple[TrackInfo, SegmentRecord]:
        """One stored segment (all parts) read from Milvus; NotFound for an unknown track or index.

        The rows are those of the version the record names (read again if a replace switched
        versions in between), so the record and the vectors answered belong to one write.
        """
        info = self.get_track(track_id)
        got = self._segment(info, index)
        while got is None and (now := self.get_track(track_id)).generation != info.generation:
            info, got = now, self._segment(now, index)
        if got is not None:
            return info, got
        first = next(iter(self.collections.values()))
        rows = self.milvus.query(first, f"track_id == {quote(track_id)}", ["segment"])
        have = sorted(int(r["segment"]) for r in rows if r["pk"] == pk(track_id, r["segment"], info.generation))
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
        """Tracks, segments and present segments per part: from the mirror when it is current, else from the
        track records (at the search level)."""
        st = self.mirror_stats()
        if st is None:
            tracks, segments, present = self.tracks.stats(self.parts, self.level)
            st = {"tracks": tracks, "segments": segments, "present": present}
        return {**st, "backend": f"{self.milvus.backend} ({self.milvus.index_type}, IP)"}

    def mirror_stats(self) -> dict | None:
        """:meth:`stats` from the mirror (None unless it is complete and current): costs no catalog scan."""
        return self.cache.stats() if self.cache.fresh() else None

    # ---------------------------------------------------------------- search

    def search_mix(
        self,
        queries: Sequence[retrieval.Query],
        top_k: int,
        exclude: Sequence[str] = (),
        exact: bool = True,
        where: Filter = ANY,
    ) -> MixResult:
        """Songs by eq. 6.2 (min over segments), ascending, among the tracks ``where`` admits; exact (the
        mirror, or rows read from Milvus) or the ANN path."""
        if not exact:
            return self.ann.search_mix(queries, top_k, exclude, where)
        if self.cache.fresh():
            with self.cache.lock:
                m = self.cache.mirror
                if m is not None:
                    return mirror_mix(m, queries, top_k, exclude, where)
        return self.exact.search_mix(queries, top_k, exclude, where)

    def search_stems(
        self,
        query: retrieval.Query,
        top_k: int,
        exclude: Sequence[str] = (),
        exact: bool = True,
        where: Filter = ANY,
    ) -> list[StemHit]:
        """Segments by cosine distance of one part, no grouping by song, of the tracks ``where`` admits."""
        if not exact:
            return self.ann.search_stems(query, top_k, exclude, where)
        if self.cache.fresh():
            with self.cache.lock:
                m = self.cache.mirror
                if m is not None:
                    return mirror_stems(m, query, top_k, exclude, where)
        return self.exact.search_stems(query, top_k, exclude, where)
