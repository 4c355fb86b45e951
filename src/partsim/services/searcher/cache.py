"""The in-memory mirror as a cache of Milvus: filled in the background, bounded, checked at every answer.

Correctness never depends on it: until it is complete (or when the catalog exceeds its memory
budget) the exact path reads Milvus instead (:mod:`.exact`).

- **Fill** (a background thread started at open): read the live tracks' generations from the
  ``tracks`` collection, then every part's rows, keeping those of each track's current generation.
  The same pass sweeps the segment rows of no current version (an interrupted write or replace,
  or a deleted track) whose generation began more than ``grace`` seconds ago: younger ones may
  belong to another replica's write still in flight (:func:`.tracktable.new_generation`). A
  catalog whose mirror would exceed ``budget`` bytes (:meth:`.Mirror.row_bytes`) is only swept.
- **Freshness**: before a search answers from the mirror, :meth:`MirrorCache.fresh` asks (for a level
  other than Strong, at most once per ``interval`` seconds, ``PARTSIM_SEARCHER_FRESHNESS_SECONDS``) the
  ``tracks`` collection for the rows switched since the cache last looked (``changed`` >
  watermark, at the search's consistency level) and applies them: a track deleted or replaced by
  another replica is dropped or re-read from Milvus. The watermark trails the last look by
  :data:`LAG_SECONDS`, which covers a Bounded read's staleness, the clocks of replicas disagreeing,
  and a switch's own duration; the writes of that window already applied are left out of the
  question by their stamps (``changed not in [...]``: one stamp per write call), so a look with
  nothing new returns nothing, even during a bulk ingest (measured: 2-3 ms on Milvus Lite). A
  change it cannot apply (rows not readable yet) answers that search from Milvus and is retried at
  the next look. This process's own writes are applied directly (:meth:`put`, :meth:`forget`).
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np

from ..filters import FIELDS as FILTER_FIELDS
from .milvus import STRONG, Milvus, generation_of, pk, quote
from .mirror import Mirror
from .tracktable import TrackTable, generation_ms, stamp_at

log = logging.getLogger("partsim.searcher")

LAG_SECONDS = 30.0
ROW_FIELDS = ["track_id", "segment", "start", "end", "present"]
MIRROR_FIELDS = [*ROW_FIELDS, "vector", *FILTER_FIELDS]  # what the mirror keeps of a row


class MirrorCache:
    """The mirror (:class:`.Mirror`) of the catalog's unit vectors, kept as a cache (see the module doc).

    Args:
        milvus: the open connection.
        tracks: the catalog's track records.
        collections: part -> collection name.
        dim: the subspace dimension.
        budget: the most bytes the mirror may hold (0: no mirror, the sweep only).
        level: the consistency level of the freshness check (the searches' level).
        grace: seconds an orphaned row's generation must be old before the sweep deletes it.
        interval: seconds after a look during which :meth:`fresh` answers without another (not for Strong).
    """

    def __init__(
        self,
        milvus: Milvus,
        tracks: TrackTable,
        collections: dict[str, str],
        dim: int,
        budget: int,
        level: str,
        grace: float,
        interval: float = 0.0,
    ):
        self.milvus, self.tracks, self.collections = milvus, tracks, collections
        self.parts, self.dim = list(collections), dim
        self.budget, self.level, self.grace = budget, level, grace
        self.interval = interval if level != STRONG else 0.0
        self._looked = -float("inf")  # time.monotonic() when the last successful look began
        self.lock = threading.RLock()  # the mirror, gens and watermark
        self.mirror: Mirror | None = None  # set once complete
        self.gens: dict[str, int] = {}  # the generation each mirrored track holds
        self.watermark = 0
        self.seen: set[int] = set()  # stamps of the writes after the watermark already applied
        self.state = "empty"  # filling, complete, over budget, failed
        self.fill_seconds = 0.0
        self._sync = threading.Lock()
        self._stop = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- fill

    def start(self) -> None:
        self.state = "filling"
        self._thread = threading.Thread(target=self._fill_safely, name="searcher-mirror", daemon=True)
        self._thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the fill (and sweep) has finished; True when it has."""
        return self._done.wait(timeout)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)

    def _fill_safely(self) -> None:
        try:
            self.fill()
        except Exception:  # searches go on through Milvus
            if not self._stop.is_set():
                log.exception("filling the mirror failed; exact searches read Milvus")
            self.state = "failed"
        finally:
            self._done.set()

    def fill(self) -> None:
        t0 = time.perf_counter()
        began_ms = time.time() * 1000
        live = self.tracks.live(STRONG)
        total = sum(n for _, n in live.values())
        keep = self.budget > 0 and Mirror.row_bytes(len(self.parts), self.dim) * total <= self.budget
        if not keep and self.budget > 0:
            log.warning(
                "the catalog's %d segments need %.0f MiB of mirror, over the budget of %.0f MiB: exact searches "
                "read Milvus (slow at this size; approximate ones are unaffected)",
                total,
                Mirror.row_bytes(len(self.parts), self.dim) * total / 2**20,
                self.budget / 2**20,
            )
        cap = total if keep else 0
        vectors = np.zeros((len(self.parts), cap, self.dim), dtype=np.float32)
        present = np.zeros((len(self.parts), cap), dtype=bool)
        start, end = np.zeros(cap), np.zeros(cap)
        index: dict[tuple[str, int], int] = {}
        attrs: dict[str, dict] = {}  # each track's filter fields, as its rows carry them
        cutoff_ms = time.time() * 1000 - self.grace * 1000
        for p, name in enumerate(self.collections.values()):
            orphans = []
            for r in self.milvus.scan(name, MIRROR_FIELDS if keep else ROW_FIELDS):
                if self._stop.is_set():
                    return
                tid, seg = r["track_id"], int(r["segment"])
                cur = live.get(tid)
                if cur is None or r["pk"] != pk(tid, seg, cur[0]):
                    if generation_ms(generation_of(r["pk"])) < cutoff_ms:
                        orphans.append(r["pk"])
                    continue
                if not keep:
                    continue
                row = index.setdefault((tid, seg), len(index))
                if row >= vectors.shape[1]:  # more rows than the records say: grow
                    grow = max(1024, row // 2)
                    vectors = np.concatenate([vectors, np.zeros((len(self.parts), grow, self.dim), np.float32)], 1)
                    present = np.concatenate([present, np.zeros((len(self.parts), grow), bool)], 1)
                    start, end = np.concatenate([start, np.zeros(grow)]), np.concatenate([end, np.zeros(grow)])
                vectors[p, row], present[p, row] = r["vector"], bool(r["present"])
                if tid not in attrs:
                    attrs[tid] = {f: r.get(f) for f in FILTER_FIELDS}
                start[row], end[row] = float(r["start"]), float(r["end"])
            if orphans:
                log.warning(
                    "%s: deleting %d rows of no current version (an interrupted write or replace, or a deleted track)",
                    name,
                    len(orphans),
                )
                self.milvus.delete_keys(name, orphans)
        self.fill_seconds = time.perf_counter() - t0
        if not keep:
            self.state = "over budget" if self.budget > 0 else "off"
            return
        mirror = Mirror(self.parts, self.dim, capacity=0)
        mirror.load(list(index), start, end, vectors, present, attrs)
        missing = set(live) - set(mirror.rows)
        if missing:
            log.warning("%d tracks have records but no vectors in Milvus (e.g. %s)", len(missing), sorted(missing)[:3])
        with self.lock:
            self.mirror = mirror
            self.gens = {tid: live[tid][0] for tid in mirror.rows}
            self.watermark = stamp_at(began_ms - LAG_SECONDS * 1000)
            self.seen = set()
        self.state = "complete"
        self.sync(STRONG)
        log.info("mirror filled: %d tracks, %d segments in %.1f s", len(mirror.rows), mirror.n, self.fill_seconds)

    # ---------------------------------------------------------------- freshness

    def fresh(self) -> bool:
        """True when the mirror is complete and holds every change up to now, or (``interval``) up to a look
        begun less than ``interval`` seconds ago (the caller then reads it under :attr:`lock`); False: answer
        from Milvus. This process's own writes are in it at once either way."""
        if self.state != "complete":
            return False
        if time.monotonic() - self._looked < self.interval:
            return True
        return self.sync(self.level)

    def sync(self, level: str) -> bool:
        """Apply the tracks switched since the watermark; False if some could not be applied (yet)."""
        with self._sync:
            began_ms, began = time.time() * 1000, time.monotonic()
            with self.lock:
                since, seen = self.watermark, list(self.seen)
            changes = self.tracks.changed_since(since, seen, level)
            with self.lock:
                todo = {}
                for tid, gen, deleted, _ in changes:
                    if deleted:
                        self._remove(tid)
                    elif self.gens.get(tid) != gen:
                        todo[tid] = gen
                before = {t: self.gens.get(t) for t in todo}
            ok = self._read(todo, before) if todo else True
            if ok:
                with self.lock:
                    self.seen.update(c for *_, c in changes)
                    self.watermark = max(self.watermark, stamp_at(began_ms - LAG_SECONDS * 1000))
                    self.seen = {c for c in self.seen if c > self.watermark}
                self._looked = began
            return ok and self.state == "complete"

    def _read(self, todo: dict[str, int], before: dict[str, int | None]) -> bool:
        """Read the given tracks' rows of the given generations from Milvus into the mirror."""
        got: dict[str, dict[int, list]] = {t: {} for t in todo}
        for p, name in enumerate(self.collections.values()):
            tids = list(todo)
            for i in range(0, len(tids), 256):
                expr = f"track_id in [{', '.join(quote(t) for t in tids[i : i + 256])}]"
                for r in self.milvus.query(name, expr, MIRROR_FIELDS, STRONG):
                    tid = r["track_id"]
                    if generation_of(r["pk"]) == todo[tid]:
                        slot = got[tid].setdefault(int(r["segment"]), [r["start"], r["end"], {}])
                        slot[2][p] = (r["vector"], bool(r["present"]))
                        slot.append({f: r.get(f) for f in FILTER_FIELDS})
        ok = True
        with self.lock:
            for tid, segs in got.items():
                if self.gens.get(tid) != before[tid]:
                    continue  # this process wrote it meanwhile: that is newer
                if not segs or any(len(s[2]) != len(self.parts) for s in segs.values()):
                    ok = False  # rows not all readable yet: answer from Milvus, retry at the next look
                    continue
                self._put(tid, todo[tid], segs)
        return ok

    def _put(self, tid: str, gen: int, segs: dict[int, list]) -> None:
        index = sorted(segs)
        units = np.zeros((len(self.parts), len(index), self.dim), dtype=np.float32)
        present = np.zeros((len(self.parts), len(index)), dtype=bool)
        for j, s in enumerate(index):
            for p, (vec, pr) in segs[s][2].items():
                units[p, j], present[p, j] = vec, pr
        starts = np.array([segs[s][0] for s in index], dtype=np.float64)
        ends = np.array([segs[s][1] for s in index], dtype=np.float64)
        attrs: dict = next((x for s in index for x in segs[s][3:]), {})
        self.put(tid, gen, np.asarray(index), starts, ends, units, present, attrs)

    def put(
        self,
        tid: str,
        gen: int,
        index: np.ndarray,
        start: np.ndarray,
        end: np.ndarray,
        units: np.ndarray,
        present: np.ndarray,
        attrs: dict | None = None,
    ) -> None:
        """A track's current version (this process's write, or one read from Milvus), with its filter fields."""
        with self.lock:
            m = self.mirror
            if m is None:
                return
            m.add(tid, index, start, end, units, present, attrs)
            self.gens[tid] = gen
            if m.nbytes > self.budget:
                log.warning(
                    "the mirror outgrew its budget of %.0f MiB: exact searches read Milvus", self.budget / 2**20
                )
                self.mirror, self.gens, self.state = None, {}, "over budget"

    def rows_of(self, tids: list[str], segments: np.ndarray, generations: list[int]) -> np.ndarray:
        """The mirror row of each (track, segment, generation) row (call under :attr:`lock`, the mirror complete):
        -1 where the mirror does not hold that row as its track's current version."""
        m = self.mirror
        out = np.full(len(tids), -1, dtype=np.int64)
        if m is None:
            return out
        by_track: dict[str, dict[int, int]] = {}
        for j, (tid, seg, gen) in enumerate(zip(tids, segments.tolist(), generations)):
            if self.gens.get(tid) != gen:
                continue
            by_seg = by_track.get(tid)
            if by_seg is None:
                rows = m.rows.get(tid)
                by_seg = by_track[tid] = {} if rows is None else dict(zip(m.segment[rows].tolist(), rows.tolist()))
            out[j] = by_seg.get(seg, -1)
        return out

    def forget(self, tid: str) -> None:
        with self.lock:
            self._remove(tid)

    def saw(self, stamps: list[int]) -> None:
        """This process's writes stamped so are applied already (:meth:`put`, :meth:`forget`)."""
        with self.lock:
            if self.mirror is not None:
                self.seen.update(s for s in stamps if s > self.watermark)

    def _remove(self, tid: str) -> None:
        if self.mirror is not None:
            self.mirror.remove(tid)
        self.gens.pop(tid, None)

    def stats(self) -> dict | None:
        """Tracks, segments and present segments per part in the mirror (None: there is none)."""
        with self.lock:
            m = self.mirror
            return None if m is None else {"tracks": len(m.rows), "segments": m.segments, "present": m.present_counts()}

    def describe(self) -> dict[str, object]:
        with self.lock:
            m = self.mirror
            return {"state": self.state, "bytes": m.nbytes if m else 0, "tracks": len(m.rows) if m else 0}
