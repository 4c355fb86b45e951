"""The searcher's index: one Milvus collection per part, an in-memory mirror, track metadata.

Layout (per part ``p``, collection ``partsim_<p>``): one row per (track, segment) with primary
key ``"<track_id>#<segment>"`` (deterministic, so writes are idempotent), fields track_id,
segment, start, end, present (the model's judgement, eq. 4.4), norm (the raw subspace norm),
vector: the L2-normalised subspace vector (a zero vector where the part is absent), metric IP,
so IP = cosine, the only field searches read; raw: the subspace vector as indexed (float32,
present or not, so nothing the model said is lost); power: the mean power of the segment's
audio that vector came from (the mix, or the part's stem at signal level), ``-1`` unknown.

Catalogs written before raw and power were kept (no such fields) are migrated when opened: each
collection is copied into a new one (``<name>__migrating``, raw = unit vector x norm where the
part is present, empty where it is absent, power -1), which then replaces it. An interrupted
migration is finished or redone on the next open; the search fields are copied unchanged, so
search results are identical.

- Milvus URI: a local path ending in ``.db`` is Milvus Lite (embedded); ``http://host:19530``
  a Milvus server. Collections are created with Strong consistency: reads see writes.
- Exact path: brute force over :class:`Mirror`, loaded from Milvus at open and kept in sync.
- Approximate path: per query part a Milvus ``search`` (K' = ``ann_candidates`` neighbours),
  union of the candidate segments, their vectors of the other query parts fetched from Milvus
  by primary key, exact re-rank with :mod:`.retrieval`, min per song.
- Metadata: :class:`MetaDB`, a SQLite file beside the vectors.

A track is re-indexed by deleting its old rows then inserting the new ones, so a shorter new
version leaves no stale segments. One searcher process writes a given catalog (the mirror
is per process).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence, TypeVar

import numpy as np

from partsim.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable

from ..tracks import MAX_TRACK_ID
from . import retrieval
from .meta import MetaDB, TrackInfo
from .mirror import Mirror

log = logging.getLogger("partsim.searcher")


class _NoLiteMvccWarning(logging.Filter):
    """pymilvus warns on every query iterator that Milvus Lite has no MVCC timestamp: expected, drop it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "mvccTs" not in record.getMessage()

INDEX_TYPES = ("FLAT", "IVF_FLAT", "HNSW")
POWER_UNKNOWN = -1.0       # the power field of a row whose audio power was not recorded
MIGRATING = "__migrating"  # suffix of the collection a migration copies into
REMOTE_SCHEMES = ("http://", "https://", "tcp://", "unix:")
MILVUS_MAX_LIMIT = 16384   # Milvus's largest search limit (topk)
_BATCH = 4096              # rows per insert / get / delete call

T = TypeVar("T")


# the fields of every collection partsim's searcher has written (raw and power came later)
_LEGACY_FIELDS = {"pk", "track_id", "segment", "start", "end", "present", "norm", "vector"}


def pk(track_id: str, segment: int) -> str:
    """Primary key of one (track, segment) row (the last '#' separates the two)."""
    return f"{track_id}#{int(segment)}"


def _quote(text: str) -> str:
    """A Milvus filter string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _keys(keys: Sequence[str]) -> str:
    """Filter selecting rows by primary key (pymilvus's ``ids=`` mis-quotes keys holding ' or \\)."""
    return f"pk in [{', '.join(_quote(k) for k in keys)}]"


@dataclass
class Segments:
    """One track's segments: (S,) index/start/end, raw vectors (parts, S, dim), presence (parts, S),
    and the audio's mean power (parts, S; negative or None: unknown)."""

    index: np.ndarray
    start: np.ndarray
    end: np.ndarray
    vectors: np.ndarray
    present: np.ndarray
    power: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.index)


@dataclass
class MixHit:
    track_id: str
    distance: float
    segment: int
    start: float
    end: float
    part_distances: dict[str, float] = field(default_factory=dict)


@dataclass
class StemHit:
    track_id: str
    segment: int
    start: float
    end: float
    distance: float


@dataclass
class MixResult:
    hits: list[MixHit]
    candidates: int
    # Approximate path only: hits at or below this distance are certainly exact (retrieval.candidate_bound).
    exact_below: float = float("inf")


@dataclass
class SegmentRecord:
    """One stored segment as :meth:`SearchStore.get_segment` returns it."""

    index: int
    start: float
    end: float
    vectors: dict[str, np.ndarray | None]   # the raw vector; None: not kept (an absent part of a migrated row)
    norms: dict[str, float]
    present: dict[str, bool]
    power: dict[str, float | None] = field(default_factory=dict)   # None: unknown


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

    def __init__(self, uri: str, meta_path: str | Path, parts: Sequence[str], dim: int, index_type: str = "HNSW",
                 ann_candidates: int = 1000, hnsw_m: int = 16, hnsw_ef_construction: int = 100, hnsw_ef: int = 0,
                 ivf_nlist: int = 256, ivf_nprobe: int = 32, flush_rows: int = 4096,
                 collection_prefix: str = "partsim_"):
        if index_type not in INDEX_TYPES:
            raise InvalidArgument(f"index_type {index_type!r}: expected one of {', '.join(INDEX_TYPES)}")
        if not 1 <= ann_candidates <= MILVUS_MAX_LIMIT:
            raise InvalidArgument(f"ann_candidates {ann_candidates}: must be within 1..{MILVUS_MAX_LIMIT}")
        if len(set(parts)) != len(parts) or not parts:
            raise InvalidArgument(f"parts {list(parts)}: need at least one, without duplicates")
        self.uri = uri
        self.lite = not uri.startswith(REMOTE_SCHEMES)
        if self.lite and not uri.endswith(".db"):
            raise InvalidArgument(f"Milvus URI {uri!r}: expected http://host:port (a Milvus server) or a Milvus Lite "
                                  "path ending in .db")
        if self.lite:
            self.uri = os.path.abspath(uri)
            Path(self.uri).parent.mkdir(parents=True, exist_ok=True)
        self.parts = list(parts)
        self.dim = int(dim)
        self.index_type = index_type
        self.ann_candidates = ann_candidates
        self.hnsw = {"M": hnsw_m, "efConstruction": hnsw_ef_construction, "ef": hnsw_ef}
        self.ivf = {"nlist": ivf_nlist, "nprobe": ivf_nprobe}
        self.flush_rows = flush_rows
        self.collections = {p: f"{collection_prefix}{p}" for p in self.parts}
        self.meta = MetaDB(meta_path)
        self.mirror = Mirror(self.parts, self.dim)
        self._lock = threading.Lock()        # the mirror
        self._write = threading.Lock()       # one writer at a time
        self._pending = 0
        self._pool = ThreadPoolExecutor(max_workers=len(self.parts), thread_name_prefix="searcher-milvus")
        self.client = None

    # ---------------------------------------------------------------- lifecycle

    def _milvus(self, what: str, fn: Callable[[], T]) -> T:
        from pymilvus.exceptions import MilvusException

        try:
            return fn()
        except MilvusException as exc:
            raise Unavailable(f"Milvus ({self.backend}) failed to {what}: {exc}") from exc

    @property
    def backend(self) -> str:
        return f"milvus-lite {self.uri}" if self.lite else f"milvus {self.uri}"

    def open(self) -> "SearchStore":
        """Connect, create or check the collections, load them, and fill the mirror."""
        from pymilvus import MilvusClient

        t0 = time.perf_counter()
        if self.lite:
            quiet = logging.getLogger("pymilvus.client.iterator.query_iterator")
            if not any(isinstance(f, _NoLiteMvccWarning) for f in quiet.filters):
                quiet.addFilter(_NoLiteMvccWarning())
        try:
            self.client = MilvusClient(uri=self.uri)
        except Exception as exc:  # noqa: BLE001 - any connection failure: say which URI
            raise Unavailable(f"cannot open Milvus at {self.uri}: {exc}") from exc
        try:
            for part, name in self.collections.items():
                self._recover_migration(name)
                if self._milvus("list collections", lambda: self.client.has_collection(name)):
                    if self._check_collection(name):
                        self._migrate(name)
                else:
                    self._create_collection(name)
                self._milvus(f"load {name}", lambda: self.client.load_collection(name))
            self._load_mirror()
        except BaseException:
            self.close()
            raise
        log.info("searcher index open: %s, %d tracks, %d segments, parts %s, dim %d, %s (%.1f s)", self.backend,
                 len(self.mirror.rows), self.mirror.segments, self.parts, self.dim, self.index_type,
                 time.perf_counter() - t0)
        return self

    def _index_params(self):
        params = self.client.prepare_index_params()
        build = ({"M": self.hnsw["M"], "efConstruction": self.hnsw["efConstruction"]} if self.index_type == "HNSW"
                 else {"nlist": self.ivf["nlist"]} if self.index_type == "IVF_FLAT" else {})
        params.add_index(field_name="vector", index_type=self.index_type, metric_type="IP", params=build)
        if self.lite and build:
            # pymilvus 3 sends build parameters as flat key/value pairs (what a Milvus server reads);
            # milvus-lite 3.2 reads only the older JSON "params" pair, so send both.
            params[0].get_index_configs()["params"] = build
        return params

    def _create_collection(self, name: str) -> None:
        from pymilvus import DataType, MilvusClient

        s = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        s.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=MAX_TRACK_ID * 4 + 16)
        s.add_field("track_id", DataType.VARCHAR, max_length=MAX_TRACK_ID * 4)
        s.add_field("segment", DataType.INT32)
        s.add_field("start", DataType.DOUBLE)
        s.add_field("end", DataType.DOUBLE)
        s.add_field("present", DataType.BOOL)
        s.add_field("norm", DataType.FLOAT)
        s.add_field("power", DataType.FLOAT)
        s.add_field("raw", DataType.ARRAY, element_type=DataType.FLOAT, max_capacity=self.dim)
        s.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
        self._milvus(f"create {name}", lambda: self.client.create_collection(
            name, schema=s, consistency_level="Strong"))
        # sync=False: the collection is empty, nothing to wait for (pymilvus would poll every 0.5 s)
        self._milvus(f"index {name}", lambda: self.client.create_index(name, self._index_params(), sync=False))
        log.info("created collection %s (dim %d, %s, IP)", name, self.dim, self.index_type)

    def _check_collection(self, name: str) -> bool:
        """Check an existing collection; True when it predates the raw and power fields (to migrate)."""
        desc = self._milvus(f"describe {name}", lambda: self.client.describe_collection(name))
        vec = next((f for f in desc["fields"] if f["name"] == "vector"), None)
        dim = int(vec["params"]["dim"]) if vec else None
        if dim != self.dim:
            raise FailedPrecondition(f"collection {name} at {self.uri} holds {dim}-d vectors but the model's "
                                     f"subspace_dim is {self.dim}: use another data dir / Milvus URI or drop it")
        have = {f["name"] for f in desc["fields"]}
        missing = sorted(_LEGACY_FIELDS - have)
        if missing:
            raise FailedPrecondition(f"collection {name} at {self.uri} lacks the fields {missing}: it was not "
                                     "written by partsim's searcher; use another data dir / Milvus URI or drop it")
        new = have & {"raw", "power"}
        if new == {"raw", "power"}:
            return False
        if new:
            raise FailedPrecondition(f"collection {name} at {self.uri} has {sorted(new)} but not "
                                     f"{sorted({'raw', 'power'} - new)}: a schema partsim never wrote; drop it")
        return True

    def _recover_migration(self, name: str) -> None:
        """Finish or undo a migration of ``name`` that a crash interrupted."""
        tmp = name + MIGRATING
        if not self._milvus("list collections", lambda: self.client.has_collection(tmp)):
            return
        if self._milvus("list collections", lambda: self.client.has_collection(name)):
            # the copy may be partial (the old collection is dropped only after it completes): redo it
            log.warning("%s: dropping %s, an interrupted migration's partial copy", name, tmp)
            self._milvus(f"drop {tmp}", lambda: self.client.drop_collection(tmp))
        else:
            log.warning("%s: finishing an interrupted migration (renaming %s)", name, tmp)
            self._milvus(f"rename {tmp}", lambda: self.client.rename_collection(tmp, name))

    def _migrate(self, name: str) -> None:
        """Copy a collection written before raw vectors and audio power were kept into the current
        schema, then put the copy in its place. Search fields are copied as they are; raw = unit
        vector x norm where the part is present, empty where it is absent (that direction was not
        kept); power unknown."""
        tmp = name + MIGRATING
        t0 = time.perf_counter()
        log.warning("%s predates raw vectors and audio power: migrating it (rows keep their search fields; "
                    "re-index tracks to query their absent parts)", name)
        self._milvus(f"load {name}", lambda: self.client.load_collection(name))
        self._create_collection(tmp)
        self._milvus(f"load {tmp}", lambda: self.client.load_collection(tmp))
        copied, batch = 0, []

        def put() -> None:
            self._milvus(f"insert into {tmp}", lambda: self.client.insert(tmp, batch))

        for r in self._iterate(name, ["track_id", "segment", "start", "end", "present", "norm", "vector"]):
            vec = np.asarray(r["vector"], dtype=np.float32)
            raw = (vec * np.float32(r["norm"])).tolist() if r["present"] else []
            batch.append({"pk": r["pk"], "track_id": r["track_id"], "segment": int(r["segment"]),
                          "start": float(r["start"]), "end": float(r["end"]), "present": bool(r["present"]),
                          "norm": float(r["norm"]), "power": POWER_UNKNOWN, "raw": raw, "vector": vec})
            if len(batch) >= _BATCH:
                put()
                copied += len(batch)
                batch = []
        if batch:
            put()
            copied += len(batch)
        self._milvus(f"flush {tmp}", lambda: self.client.flush(tmp))
        self._milvus(f"drop {name}", lambda: self.client.drop_collection(name))
        self._milvus(f"rename {tmp}", lambda: self.client.rename_collection(tmp, name))
        log.warning("%s migrated: %d rows in %.1f s", name, copied, time.perf_counter() - t0)

    def _load_mirror(self) -> None:
        """Read every row of every part into the mirror; delete rows of tracks without metadata."""
        known = self.meta.ids()
        seg_info: dict[tuple[str, int], tuple[float, float]] = {}
        vecs: list[dict[tuple[str, int], tuple[np.ndarray, bool]]] = []
        for part, name in self.collections.items():
            rows: dict[tuple[str, int], tuple[np.ndarray, bool]] = {}
            orphans = []
            for r in self._iterate(name, ["track_id", "segment", "start", "end", "present", "vector"]):
                if r["track_id"] not in known:
                    orphans.append(r["pk"])
                    continue
                key = (r["track_id"], int(r["segment"]))
                rows[key] = (r["vector"], bool(r["present"]))
                seg_info[key] = (float(r["start"]), float(r["end"]))
            if orphans:
                log.warning("%s: deleting %d rows of tracks without metadata (an interrupted write)", name,
                            len(orphans))
                for i in range(0, len(orphans), _BATCH):
                    self._milvus(f"delete from {name}",
                                 lambda: self.client.delete(name, filter=_keys(orphans[i:i + _BATCH])))
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
                self.mirror.add(tid, np.array(segs), np.array([a for a, _ in info]), np.array([b for _, b in info]),
                                units, present)
        missing = known - set(by_track)
        if missing:
            log.warning("%d tracks have metadata but no vectors in Milvus (e.g. %s); they cannot be found",
                        len(missing), sorted(missing)[:3])

    def _iterate(self, name: str, fields: list[str]) -> Iterable[dict]:
        it = self._milvus(f"read {name}", lambda: self.client.query_iterator(
            name, batch_size=MILVUS_MAX_LIMIT // 2, filter="", output_fields=fields))
        try:
            while True:
                batch = self._milvus(f"read {name}", it.next)
                if not batch:
                    return
                yield from batch
        finally:
            it.close()

    def flush(self) -> None:
        """Seal what was written so far (Milvus builds its index on sealed segments)."""
        for name in self.collections.values():
            self._milvus(f"flush {name}", lambda: self.client.flush(name))
        self._pending = 0

    def wait_for_index(self, timeout: float = 600.0) -> None:
        """Flush, then wait until Milvus has indexed every sealed row (for benchmarks and tests).

        Milvus server: polls describe_index. Milvus Lite builds indexes on a background thread
        inside this process and reports no progress, so this drains that thread through its
        (private) collection object, best effort.
        """
        self.flush()
        deadline = time.monotonic() + timeout
        for name in self.collections.values():
            if self.lite:
                col = self._lite_collection(name)
                if col is not None and hasattr(col, "_wait_for_bg"):
                    col._wait_for_bg(timeout=max(1.0, deadline - time.monotonic()))  # noqa: SLF001
                continue
            while time.monotonic() < deadline:
                d = self._milvus(f"describe index of {name}", lambda: self.client.describe_index(name, "vector"))
                if not d or int(d.get("pending_index_rows", 0)) == 0:
                    break
                time.sleep(0.5)

    def _lite_collection(self, name: str):
        try:
            from milvus_lite.server_manager import server_manager_instance as mgr

            entry = mgr._servers.get(self.uri)  # noqa: SLF001
            return entry[1].get_collection(name) if entry else None
        except Exception:  # noqa: BLE001 - another milvus-lite version: nothing to wait for
            return None

    def close(self) -> None:
        """Flush, disconnect, and (Milvus Lite) stop the embedded database so its files are closed."""
        if self.client is not None:
            try:
                self.flush()
            except Unavailable:
                log.exception("flush at close failed")
            self.client.close()
            self.client = None
            if self.lite:
                try:
                    from milvus_lite.server_manager import server_manager_instance

                    server_manager_instance.release_server(self.uri)
                except Exception:  # noqa: BLE001
                    log.exception("stopping Milvus Lite at %s failed", self.uri)
        self.meta.close()
        self._pool.shutdown(wait=True)

    # ---------------------------------------------------------------- writes

    def upsert(self, track: TrackInfo, segments: Segments) -> bool:
        """Index one track (replacing any previous version). Returns True if it replaced one."""
        return self.upsert_many([(track, segments)])[0]

    def upsert_many(self, items: Sequence[tuple[TrackInfo, Segments]]) -> list[bool]:
        """Index several tracks with batched Milvus writes (a track given twice: the last wins).

        Returns, per distinct track in order, whether it replaced an indexed version.
        """
        last = {t.track_id: i for i, (t, _) in enumerate(items)}   # a track twice in one batch: the last wins
        items = [it for i, it in enumerate(items) if last[it[0].track_id] == i]
        with self._write:
            replaced = [t.track_id in self.mirror.rows or self.meta.get(t.track_id) is not None for t, _ in items]
            prepared = []
            for track, seg in items:
                raw = np.asarray(seg.vectors, dtype=np.float32)
                norms = np.linalg.norm(raw, axis=2)
                present = np.asarray(seg.present, dtype=bool) & (norms > 1e-12)
                units = np.where(present[:, :, None], raw / np.maximum(norms, 1e-12)[:, :, None], 0.0)
                power = (np.full(present.shape, POWER_UNKNOWN) if seg.power is None
                         else np.where(np.asarray(seg.power) >= 0, seg.power, POWER_UNKNOWN))
                prepared.append((track, seg, units.astype(np.float32), present, norms.astype(np.float32),
                                 raw, power))
            old_keys = [k for t, _ in items for k in self._old_keys(t.track_id)]
            again = [t.track_id for (t, _), r in zip(items, replaced) if r]
            try:
                for pi, name in enumerate(self.collections.values()):
                    # the old version's rows: by key (fast), then a sweep by track id for any the mirror lacks
                    for i in range(0, len(old_keys), _BATCH):
                        self._milvus(f"delete from {name}",
                                     lambda: self.client.delete(name, filter=_keys(old_keys[i:i + _BATCH])))
                    for i in range(0, len(again), 256):
                        expr = f"track_id in [{', '.join(_quote(t) for t in again[i:i + 256])}]"
                        self._milvus(f"delete from {name}", lambda: self.client.delete(name, filter=expr))
                    rows = [{"pk": pk(track.track_id, seg.index[j]), "track_id": track.track_id,
                             "segment": int(seg.index[j]), "start": float(seg.start[j]), "end": float(seg.end[j]),
                             "present": bool(present[pi, j]), "norm": float(norms[pi, j]),
                             "power": float(power[pi, j]), "raw": raw[pi, j].tolist(), "vector": units[pi, j]}
                            for track, seg, units, present, norms, raw, power in prepared
                            for j in range(len(seg))]
                    for i in range(0, len(rows), _BATCH):
                        self._milvus(f"insert into {name}", lambda: self.client.insert(name, rows[i:i + _BATCH]))
                self.meta.put_many([t for t, _ in items])
            except BaseException:
                # half-written: serve none of these tracks from the mirror until an upsert succeeds
                with self._lock:
                    for t, _ in items:
                        self.mirror.remove(t.track_id)
                raise
            with self._lock:
                for track, seg, units, present, *_ in prepared:
                    self.mirror.add(track.track_id, np.asarray(seg.index), np.asarray(seg.start),
                                    np.asarray(seg.end), units, present)
            self._pending += sum(len(s) for _, s in items)
            if self._pending >= self.flush_rows:
                self.flush()
            return replaced

    def _old_keys(self, track_id: str) -> list[str]:
        with self._lock:
            rows = self.mirror.rows.get(track_id)
            return [] if rows is None else [pk(track_id, s) for s in self.mirror.segment[rows]]

    def delete(self, track_id: str) -> None:
        """Remove a track's metadata and rows; NotFound if it is not indexed."""
        with self._write:
            had_meta = self.meta.delete(track_id)
            keys = self._old_keys(track_id)
            if not had_meta and not keys:
                raise NotFound(f"track {track_id!r} is not indexed")
            for name in self.collections.values():
                if keys:
                    self._milvus(f"delete from {name}", lambda: self.client.delete(name, filter=_keys(keys)))
                # sweep rows the mirror does not know of (none, unless another process wrote them)
                self._milvus(f"delete from {name}",
                             lambda: self.client.delete(name, filter=f"track_id == {_quote(track_id)}"))
            with self._lock:
                self.mirror.remove(track_id)

    # ---------------------------------------------------------------- reads

    def get_track(self, track_id: str) -> TrackInfo:
        info = self.meta.get(track_id)
        if info is None:
            raise NotFound(f"track {track_id!r} is not indexed")
        return info

    def list_tracks(self, after: str, limit: int) -> list[TrackInfo]:
        return self.meta.page(after, limit)

    def get_segment(self, track_id: str, index: int) -> tuple[TrackInfo, SegmentRecord]:
        """One stored segment (all parts) read from Milvus; NotFound for an unknown track or index."""
        info = self.get_track(track_id)
        rec = SegmentRecord(index, 0.0, 0.0, {}, {}, {}, {})
        for part, name in self.collections.items():
            got = self._milvus(f"read {name}", lambda: self.client.query(
                name, filter=_keys([pk(track_id, index)]), output_fields=["start", "end", "present", "norm", "power",
                                                                         "raw"]))
            if not got:
                with self._lock:
                    rows = self.mirror.rows.get(track_id)
                    have = sorted(self.mirror.segment[rows].tolist()) if rows is not None else []
                span = f"segments {have[0]}..{have[-1]}" if have else "no segments"
                raise NotFound(f"track {track_id!r} has no segment {index} (it has {span})")
            r = got[0]
            rec.start, rec.end = float(r["start"]), float(r["end"])
            rec.norms[part], rec.present[part] = float(r["norm"]), bool(r["present"])
            rec.power[part] = float(r["power"]) if r["power"] >= 0 else None
            rec.vectors[part] = np.asarray(r["raw"], dtype=np.float32) if len(r["raw"]) else None
        return info, rec

    def stats(self) -> dict:
        with self._lock:
            return {"tracks": len(self.mirror.rows), "segments": self.mirror.segments,
                    "present": self.mirror.present_counts(),
                    "backend": f"{self.backend} ({self.index_type}, IP)"}

    # ---------------------------------------------------------------- search

    def _excluded_mask(self, exclude: Iterable[str]) -> np.ndarray:
        valid = self.mirror.alive[:self.mirror.n].copy()
        for tid in exclude:
            rows = self.mirror.rows.get(tid)
            if rows is not None:
                valid[rows] = False
        return valid

    def search_mix(self, queries: Sequence[retrieval.Query], top_k: int, exclude: Sequence[str] = (),
                   exact: bool = True) -> MixResult:
        """Songs by eq. 6.2 (min over segments), ascending; exact brute force or the ANN path."""
        if not exact:
            return self._search_mix_ann(queries, top_k, exclude)
        with self._lock:
            m = self.mirror
            if m.n == 0:
                return MixResult([], 0)
            total, per = retrieval.segment_distances(queries, [m.matrix(q.part) for q in queries])
            valid = self._excluded_mask(exclude)
            rows = retrieval.rank_songs(total, m.track[:m.n], m.segment[:m.n], m.names, top_k, valid)
            hits = [MixHit(m.names[m.track[r]], float(total[r]), int(m.segment[r]), float(m.start[r]),
                           float(m.end[r]), {q.part: float(per[i, r]) for i, q in enumerate(queries)})
                    for r in rows]
            return MixResult(hits, int(valid.sum()))

    def search_stems(self, query: retrieval.Query, top_k: int, exclude: Sequence[str] = (),
                     exact: bool = True) -> list[StemHit]:
        """Segments by cosine distance of one part, no grouping by song."""
        if not exact:
            return self._search_stems_ann(query, top_k, exclude)
        with self._lock:
            m = self.mirror
            if m.n == 0:
                return []
            total, _ = retrieval.segment_distances([query], [m.matrix(query.part)])
            rows = retrieval.rank_segments(total, m.track[:m.n], m.segment[:m.n], m.names, top_k,
                                           self._excluded_mask(exclude))
            return [StemHit(m.names[m.track[r]], int(m.segment[r]), float(m.start[r]), float(m.end[r]),
                            float(total[r])) for r in rows]

    def _search_params(self, limit: int) -> dict:
        if self.index_type == "HNSW":
            return {"metric_type": "IP", "params": {"ef": max(self.hnsw["ef"], limit, 64)}}
        if self.index_type == "IVF_FLAT":
            return {"metric_type": "IP", "params": {"nprobe": self.ivf["nprobe"]}}
        return {"metric_type": "IP", "params": {}}

    def _ann(self, part: str, vector: np.ndarray, limit: int, exclude: Sequence[str]) -> list[dict]:
        name = self.collections[part]
        expr = f"track_id not in [{', '.join(_quote(t) for t in exclude)}]" if exclude else ""
        res = self._milvus(f"search {name}", lambda: self.client.search(
            name, data=[retrieval.unit(vector).tolist()], anns_field="vector", limit=limit, filter=expr,
            search_params=self._search_params(limit),
            output_fields=["track_id", "segment", "start", "end", "vector"]))
        return list(res[0]) if res else []

    def _search_mix_ann(self, queries: Sequence[retrieval.Query], top_k: int, exclude: Sequence[str]) -> MixResult:
        k = min(self.ann_candidates, MILVUS_MAX_LIMIT)
        # 1. per query part, its K' nearest segments (the parts' searches run concurrently)
        found = list(self._pool.map(lambda q: self._ann(q.part, q.vector, k, exclude), queries))
        cand: dict[str, tuple[str, int, float, float]] = {}
        vectors: list[dict[str, np.ndarray]] = []
        kth: list[float] = []
        for hits in found:
            got = {}
            for h in hits:
                e, key = h["entity"], h.get("pk", h.get("id"))
                cand.setdefault(key, (e["track_id"], int(e["segment"]), float(e["start"]), float(e["end"])))
                got[key] = np.asarray(e["vector"], dtype=np.float32)
            vectors.append(got)
            # the K'-th neighbour's distance; a shorter list holds every row, so it bounds nothing
            kth.append(1.0 - float(hits[-1]["distance"]) if len(hits) >= k else 2.0)
        if not cand:
            return MixResult([], 0)
        # 2. the union's vectors of the other query parts, by primary key
        keys = list(cand)
        missing = list(self._pool.map(lambda qg: self._fetch(qg[0].part, [c for c in keys if c not in qg[1]]),
                                      zip(queries, vectors)))
        zero = np.zeros(self.dim, dtype=np.float32)
        mats = [np.stack([got.get(c, extra.get(c, zero)) for c in keys]) for got, extra in zip(vectors, missing)]
        # 3. exact re-rank (eq. 6.2) and min per song
        total, per = retrieval.segment_distances(queries, mats)
        ordinal: dict[str, int] = {}
        track = np.array([ordinal.setdefault(cand[c][0], len(ordinal)) for c in keys])
        segment = np.array([cand[c][1] for c in keys])
        rows = retrieval.rank_songs(total, track, segment, list(ordinal), top_k)
        hits = []
        for r in rows:
            tid, seg, start, end = cand[keys[r]]
            hits.append(MixHit(tid, float(total[r]), seg, start, end,
                               {q.part: float(per[i, r]) for i, q in enumerate(queries)}))
        bound = retrieval.candidate_bound(kth, [q.weight for q in queries])
        return MixResult(hits, len(keys), bound)

    def _fetch(self, part: str, keys: list[str]) -> dict[str, np.ndarray]:
        """Unit vectors of ``part`` for the given primary keys (missing keys are left out)."""
        name = self.collections[part]
        out = {}
        for i in range(0, len(keys), _BATCH):
            got = self._milvus(f"read {name}", lambda: self.client.query(
                name, filter=_keys(keys[i:i + _BATCH]), output_fields=["vector"]))
            for r in got:
                out[r["pk"]] = np.asarray(r["vector"], dtype=np.float32)
        return out

    def _search_stems_ann(self, query: retrieval.Query, top_k: int, exclude: Sequence[str]) -> list[StemHit]:
        hits = self._ann(query.part, query.vector, top_k, exclude)
        if not hits:
            return []
        info = [(h["entity"]["track_id"], int(h["entity"]["segment"]), float(h["entity"]["start"]),
                 float(h["entity"]["end"])) for h in hits]
        mat = np.stack([np.asarray(h["entity"]["vector"], dtype=np.float32) for h in hits])
        total, _ = retrieval.segment_distances([query], [mat])
        ordinal: dict[str, int] = {}
        track = np.array([ordinal.setdefault(t, len(ordinal)) for t, *_ in info])
        rows = retrieval.rank_segments(total, track, np.array([s for _, s, *_ in info]), list(ordinal), top_k)
        return [StemHit(info[r][0], info[r][1], info[r][2], info[r][3], float(total[r])) for r in rows]
