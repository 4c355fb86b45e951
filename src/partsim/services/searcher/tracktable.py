"""The catalog's track records in a Milvus collection of their own (``<prefix>tracks``): the source of truth.

One row per track id (the primary key), beside the per-part collections of segment rows, so any
searcher replica answers any request and a searcher with an empty disk serves an existing catalog
at once. Fields: the :class:`TrackInfo` (title, artist, tags as JSON, num_segments, durations,
model version, indexing time, the caller's upload ``version``, and ``bpm`` / ``key``: room for what
is known, stored as 0.0 and "" where unknown, since Milvus 2.3 servers have no nullable fields), plus

- ``generation``: whose segment rows are the track's current version (their primary keys carry it,
  :func:`.milvus.pk`). A replace writes new-generation rows beside the old ones, then upserts this
  row (**the switch**), then deletes the old rows (:meth:`SearchStore.upsert_many`).
- ``changed``: the stamp of the write that last switched the row: a :func:`new_generation` drawn at
  the switch (so it says when, by the writer's clock, and is unique: one stamp per write call). A
  cached mirror learns other replicas' writes by asking for rows changed since it last looked,
  less the stamps it has seen already (:mod:`.cache`).
- ``deleted``: a tombstone. DeleteTrack switches the row to deleted (with a new ``changed``) rather
  than removing it, so a cache sees deletes too; tombstones older than :data:`TOMBSTONE_SECONDS`
  are removed at open (a cache that has not looked for longer rebuilds, :mod:`.cache`).
- ``present``: JSON, per part the number of segments where the part is present (for GetStats
  without reading the segment rows).
- ``dummy``: a 2-d FLOAT_VECTOR of zeros with a FLAT index. Milvus requires a vector field (and an
  index on it to load a collection); nothing searches it.

Reads pass a consistency level: Strong where the caller must see finished writes (GetTrack after
UpsertTrack, the generation read before a switch), the searcher's search level elsewhere.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

from partsim.errors import FailedPrecondition

from ..tracks import MAX_TRACK_ID
from .meta import TrackInfo
from .milvus import BATCH, STRONG, Milvus, quote

log = logging.getLogger("partsim.searcher")

TOMBSTONE_SECONDS = 7 * 24 * 3600  # a deleted track's row is kept this long (caches see the delete)
EPOCH_MS = 1_577_836_800_000  # 2020-01-01 UTC, the generations' time origin
RANDOM_BITS = 22
_FIELDS = (
    "track_id generation changed deleted title artist tags num_segments duration_seconds segment_seconds "
    "model_version indexed_at version bpm key present"
).split()
INFO_FIELDS = [f for f in _FIELDS if f not in ("changed", "deleted", "present")]

_gen_lock = threading.Lock()
_last_gen = 0


def new_generation() -> int:
    """A generation no write has had before, in any process: 63 bits, ``ms << 22 | random``.

    There is no shared counter (every searcher replica writes, and Milvus has no atomic increment), so
    uniqueness comes from time plus randomness: the high 41 bits are milliseconds since 2020-01-01
    (enough until 2089), the low 22 bits random (``os.urandom``). Two writes collide only if they
    start in the same millisecond *and* draw the same 22 bits (p = 2.4e-7 for such a pair), and a
    collision matters only for two concurrent writes of the same track. Within a process the values
    strictly increase (a clock step back or two calls in one millisecond take the last one + 1).
    Generations therefore also say when a write began (:func:`generation_ms`): the open-time sweep
    leaves rows of a recent generation alone, as they may belong to another replica's write in flight.
    The counter-based generations of older catalogs (small integers) read as 2020, i.e. old.
    """
    global _last_gen
    ms = int(time.time() * 1000) - EPOCH_MS
    gen = (ms << RANDOM_BITS) | int.from_bytes(os.urandom(3), "big") & ((1 << RANDOM_BITS) - 1)
    with _gen_lock:
        gen = max(gen, _last_gen + 1)
        _last_gen = gen
    return gen


def generation_ms(generation: int) -> int:
    """When the write of ``generation`` began (milliseconds since the epoch)."""
    return (generation >> RANDOM_BITS) + EPOCH_MS


def stamp_at(ms: float) -> int:
    """The smallest generation (or ``changed`` stamp) drawn at ``ms`` (milliseconds since the epoch) or later."""
    return max(0, int(ms) - EPOCH_MS) << RANDOM_BITS


def _row(info: TrackInfo, present: dict[str, int], changed: int, deleted: bool = False) -> dict[str, Any]:
    return {
        "track_id": info.track_id,
        "generation": int(info.generation),
        "changed": int(changed),
        "deleted": deleted,
        "title": info.title,
        "artist": info.artist,
        "tags": dict(info.tags),
        "num_segments": int(info.num_segments),
        "duration_seconds": float(info.duration_seconds),
        "segment_seconds": float(info.segment_seconds),
        "model_version": info.model_version,
        "indexed_at": float(info.indexed_at),
        "version": info.version,
        "bpm": 0.0 if info.bpm is None else float(info.bpm),  # 0.0: unknown (a real tempo is > 0)
        "key": info.key or "",
        "present": {p: int(n) for p, n in present.items()},
        "dummy": [0.0, 0.0],
    }


def _info(r: dict) -> TrackInfo:
    return TrackInfo(
        r["track_id"],
        r["title"],
        r["artist"],
        dict(r["tags"] or {}),
        int(r["num_segments"]),
        float(r["duration_seconds"]),
        float(r["segment_seconds"]),
        r["model_version"],
        float(r["indexed_at"]),
        r["version"],
        int(r["generation"]),
        float(r["bpm"]) if r.get("bpm") else None,
        r.get("key") or None,
    )


class TrackTable:
    """The ``tracks`` collection: the catalog's :class:`TrackInfo` by track id (see the module doc)."""

    def __init__(self, milvus: Milvus, name: str):
        self.milvus = milvus
        self.name = name

    def open(self) -> TrackTable:
        """Create the collection (or check one of this schema), load it, and drop old tombstones."""
        m = self.milvus
        if m.has(self.name):
            have = {f["name"] for f in m.describe(self.name)["fields"]}
            if not set(_FIELDS) | {"dummy"} <= have:
                raise FailedPrecondition(
                    f"collection {self.name} at {m.uri} lacks the fields {sorted(set(_FIELDS) - have)}: it was not "
                    "written by partsim's searcher; use another Milvus URI or collection prefix, or drop it"
                )
        else:
            self._create()
        m.load(self.name)
        cutoff = stamp_at(time.time() * 1000 - TOMBSTONE_SECONDS * 1000)
        m.call(f"prune {self.name}", m.client.delete, self.name, filter=f"deleted == true and changed < {cutoff}")
        return self

    def _create(self) -> None:
        from pymilvus import DataType, MilvusClient

        s = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        text = 4 * 1024  # bytes: the metadata limits (tracks.py) hold far below, rows of older catalogs too
        s.add_field("track_id", DataType.VARCHAR, is_primary=True, max_length=MAX_TRACK_ID * 4)
        s.add_field("generation", DataType.INT64)
        s.add_field("changed", DataType.INT64)
        s.add_field("deleted", DataType.BOOL)
        s.add_field("title", DataType.VARCHAR, max_length=text)
        s.add_field("artist", DataType.VARCHAR, max_length=text)
        s.add_field("tags", DataType.JSON)
        s.add_field("num_segments", DataType.INT32)
        s.add_field("duration_seconds", DataType.DOUBLE)
        s.add_field("segment_seconds", DataType.DOUBLE)
        s.add_field("model_version", DataType.VARCHAR, max_length=text)
        s.add_field("indexed_at", DataType.DOUBLE)
        s.add_field("version", DataType.VARCHAR, max_length=text)
        s.add_field("bpm", DataType.FLOAT)  # 0.0: unknown (no nullable fields on Milvus 2.3 servers)
        s.add_field("key", DataType.VARCHAR, max_length=64)  # "": unknown
        s.add_field("present", DataType.JSON)
        s.add_field("dummy", DataType.FLOAT_VECTOR, dim=2)  # Milvus needs a vector field; nothing searches it
        m = self.milvus
        m.call(f"create {self.name}", m.client.create_collection, self.name, schema=s, consistency_level="Strong")
        params = m.client.prepare_index_params()
        params.add_index(field_name="dummy", index_type="FLAT", metric_type="L2")
        m.call(f"index {self.name}", m.client.create_index, self.name, params, sync=False)
        log.info("created collection %s (the catalog's track records)", self.name)

    # ---------------------------------------------------------------- writes

    def put_many(self, items: Sequence[tuple[TrackInfo, dict[str, int]]]) -> list[int]:
        """Insert or replace tracks (info, present segments per part): the switch. Returns the ``changed``
        stamps, one per upsert call (of up to 4,096 tracks: a reader seeing a stamp sees all its rows)."""
        stamps = []
        for i in range(0, len(items), BATCH):
            stamps.append(new_generation())
            self.milvus.upsert(self.name, [_row(t, p, stamps[-1]) for t, p in items[i : i + BATCH]])
        return stamps

    def tombstone(self, info: TrackInfo) -> int:
        """Mark a track deleted (its row stays as a tombstone, :data:`TOMBSTONE_SECONDS`); the ``changed`` stamp."""
        stamp = new_generation()
        self.milvus.upsert(self.name, [_row(info, {}, stamp, deleted=True)])
        return stamp

    # ---------------------------------------------------------------- reads

    def get(self, track_id: str, level: str = STRONG) -> TrackInfo | None:
        return self.get_many([track_id], level).get(track_id)

    def get_many(self, track_ids: Iterable[str], level: str = STRONG) -> dict[str, TrackInfo]:
        """The live tracks among ``track_ids`` (unknown and deleted ones left out)."""
        ids = list(dict.fromkeys(track_ids))
        out: dict[str, TrackInfo] = {}
        for i in range(0, len(ids), 1024):
            expr = f"track_id in [{', '.join(quote(t) for t in ids[i : i + 1024])}] and deleted == false"
            for r in self.milvus.query(self.name, expr, INFO_FIELDS, level):
                out[r["track_id"]] = _info(r)
        return out

    def generations(self, track_ids: Iterable[str], level: str = STRONG) -> dict[str, int]:
        """The current generation of each live track among ``track_ids``."""
        ids = list(dict.fromkeys(track_ids))
        out: dict[str, int] = {}
        for i in range(0, len(ids), 1024):
            expr = f"track_id in [{', '.join(quote(t) for t in ids[i : i + 1024])}] and deleted == false"
            for r in self.milvus.query(self.name, expr, ["generation"], level):
                out[r["track_id"]] = int(r["generation"])
        return out

    def page(self, after: str, limit: int, level: str = STRONG) -> list[TrackInfo]:
        """Up to ``limit`` live tracks with id > ``after``, by id (a query iterator pages by primary key)."""
        it = self.milvus.scan(
            self.name, INFO_FIELDS, f"track_id > {quote(after)} and deleted == false", level, batch=max(1, limit)
        )
        out: list[TrackInfo] = []
        try:
            for r in it:
                out.append(_info(r))
                if len(out) >= limit:
                    break
        finally:
            it.close()
        return sorted(out, key=lambda i: i.track_id)

    def live(self, level: str = STRONG) -> dict[str, tuple[int, int]]:
        """Every live track: id -> (generation, num_segments)."""
        return {
            r["track_id"]: (int(r["generation"]), int(r["num_segments"]))
            for r in self.milvus.scan(self.name, ["generation", "num_segments"], "deleted == false", level)
        }

    def changed_since(self, stamp: int, seen: Iterable[int], level: str) -> list[tuple[str, int, bool, int]]:
        """Rows switched after ``stamp`` by writes other than those stamped ``seen``:
        (track id, generation, deleted, changed)."""
        known = ", ".join(str(int(c)) for c in seen)
        expr = f"changed > {int(stamp)}" + (f" and changed not in [{known}]" if known else "")
        rows = self.milvus.query(self.name, expr, ["generation", "deleted", "changed"], level)
        return [(r["track_id"], int(r["generation"]), bool(r["deleted"]), int(r["changed"])) for r in rows]

    def stats(self, parts: Sequence[str], level: str) -> tuple[int, int, dict[str, int]]:
        """(tracks, segments, present segments per part) of the live tracks, from their records."""
        tracks = segments = 0
        present = dict.fromkeys(parts, 0)
        for r in self.milvus.scan(self.name, ["num_segments", "present"], "deleted == false", level):
            tracks += 1
            segments += int(r["num_segments"])
            for p, n in (r["present"] or {}).items():
                if p in present:
                    present[p] += int(n)
        return tracks, segments, present
