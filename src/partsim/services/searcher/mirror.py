"""In-memory mirror of every catalog vector, for the exact path (one matrix product per part).

Rows are (track, segment); for each part a float32 unit vector (zero where the part is absent).
Per track its filter fields (as its Milvus rows carry them), so a search filter is applied here with
:meth:`partsim.services.filters.Filter.matches`, the Python rendering of the expression Milvus applies.
Rows are appended; removing a track marks its rows dead, and the arrays are compacted once
dead rows are a quarter of them. It is a cache of Milvus (:mod:`.cache` fills it and keeps it
current); not thread-safe: :class:`.cache.MirrorCache` holds its lock.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from ..filters import Filter
from . import retrieval
from .records import MixHit, MixResult, StemHit


class Mirror:
    """Growable per-part matrices plus row -> (track ordinal, segment, start, end) arrays."""

    def __init__(self, parts: list[str], dim: int, capacity: int = 1024):
        self.parts = list(parts)
        self.dim = dim
        self.n = 0  # rows used (alive or dead)
        self.dead = 0
        self.names: list[str] = []  # track ordinal -> track id
        self._ordinal: dict[str, int] = {}
        self.rows: dict[str, np.ndarray] = {}  # track id -> its alive rows
        self.attrs: dict[str, dict] = {}  # track id -> its filter fields (filters.row_fields)
        # per part (parts, capacity, dim) unit vectors and (parts, capacity) presence; per row its track
        # ordinal, segment index, start and end seconds and whether it is alive (set by _alloc)
        self.vectors = np.zeros((len(self.parts), 0, dim), dtype=np.float32)
        self.present = np.zeros((len(self.parts), 0), dtype=bool)
        self.track = np.zeros(0, dtype=np.int64)
        self.segment = np.zeros(0, dtype=np.int64)
        self.start = np.zeros(0, dtype=np.float64)
        self.end = np.zeros(0, dtype=np.float64)
        self.alive = np.zeros(0, dtype=bool)
        self._alloc(capacity)

    def _alloc(self, capacity: int) -> None:
        old = self.n
        vec = np.zeros((len(self.parts), capacity, self.dim), dtype=np.float32)
        present = np.zeros((len(self.parts), capacity), dtype=bool)
        arrays = {"track": np.int64, "segment": np.int64, "start": np.float64, "end": np.float64, "alive": bool}
        fresh = {k: np.zeros(capacity, dtype=t) for k, t in arrays.items()}
        vec[:, :old] = self.vectors[:, :old]
        present[:, :old] = self.present[:, :old]
        for k in arrays:
            fresh[k][:old] = getattr(self, k)[:old]
        self.vectors, self.present = vec, present
        for k, a in fresh.items():
            setattr(self, k, a)

    @staticmethod
    def row_bytes(parts: int, dim: int) -> int:
        """Memory per row: the unit vectors and presence of every part, and the row's track, segment,
        start, end and alive arrays (the track id -> rows map adds about as much per track)."""
        return parts * (dim * 4 + 1) + 8 * 4 + 1

    @property
    def nbytes(self) -> int:
        return self.capacity * self.row_bytes(len(self.parts), self.dim) + 120 * len(self.names)

    def load(
        self,
        keys: list[tuple[str, int]],
        start: np.ndarray,
        end: np.ndarray,
        vectors: np.ndarray,
        present: np.ndarray,
        attrs: dict[str, dict] | None = None,
    ) -> None:
        """Fill an empty mirror at once: rows ``keys`` (track id, segment), vectors (parts, rows, dim) and
        presence (parts, rows) as filled in place by the caller (they become the mirror's arrays), and each
        track's filter fields."""
        n, cap = len(keys), vectors.shape[1]
        self.vectors, self.present = vectors, present
        self.track, self.segment = np.zeros(cap, dtype=np.int64), np.zeros(cap, dtype=np.int64)
        self.start, self.end = np.zeros(cap), np.zeros(cap)
        self.alive = np.zeros(cap, dtype=bool)
        by_track: dict[str, list[int]] = {}
        for row, (tid, seg) in enumerate(keys):
            by_track.setdefault(tid, []).append(row)
            self.track[row], self.segment[row] = self.ordinal(tid), seg
        self.start[:n], self.end[:n], self.alive[:n] = start[:n], end[:n], True
        self.rows = {t: np.asarray(r, dtype=np.int64) for t, r in by_track.items()}
        self.attrs = {t: (attrs or {}).get(t, {}) for t in self.rows}
        self.n = n

    @property
    def capacity(self) -> int:
        return self.vectors.shape[1]

    def matrix(self, part: str) -> np.ndarray:
        """(n, dim) unit vectors of ``part`` (dead rows included: mask them with :attr:`alive`)."""
        return self.vectors[self.parts.index(part), : self.n]

    def ordinal(self, track_id: str) -> int:
        o = self._ordinal.get(track_id)
        if o is None:
            o = self._ordinal[track_id] = len(self.names)
            self.names.append(track_id)
        return o

    def add(
        self,
        track_id: str,
        index: np.ndarray,
        start: np.ndarray,
        end: np.ndarray,
        units: np.ndarray,
        present: np.ndarray,
        attrs: dict | None = None,
    ) -> None:
        """Append one track's rows (replacing any it had). ``units``: (parts, S, dim); ``present``: (parts, S);
        ``attrs``: its filter fields."""
        self.remove(track_id)
        s = len(index)
        if self.n + s > self.capacity:
            self._alloc(max(self.n + s, int(self.capacity * 1.5) + 1024))
        rows = np.arange(self.n, self.n + s)
        self.vectors[:, rows] = units
        self.present[:, rows] = present
        self.track[rows] = self.ordinal(track_id)
        self.segment[rows], self.start[rows], self.end[rows] = index, start, end
        self.alive[rows] = True
        self.rows[track_id] = rows
        self.attrs[track_id] = dict(attrs or {})
        self.n += s

    def remove(self, track_id: str) -> int:
        """Drop a track's rows; returns how many it had."""
        rows = self.rows.pop(track_id, None)
        self.attrs.pop(track_id, None)
        if rows is None:
            return 0
        self.alive[rows] = False
        self.present[:, rows] = False
        self.dead += len(rows)
        if self.dead > max(4096, self.n // 4):
            self.compact()
        return len(rows)

    def compact(self) -> None:
        """Move alive rows to the front (order kept) and forget dead ones."""
        keep = np.flatnonzero(self.alive[: self.n])
        m = keep.size
        self.vectors[:, :m] = self.vectors[:, keep]
        self.present[:, :m] = self.present[:, keep]
        for k in ("track", "segment", "start", "end", "alive"):
            a = getattr(self, k)
            a[:m] = a[keep]
        self.alive[m : self.n] = False
        self.present[:, m : self.n] = False
        new_index = np.full(self.n, -1, dtype=np.int64)
        new_index[keep] = np.arange(m)
        self.rows = {t: new_index[r] for t, r in self.rows.items()}
        self.n, self.dead = m, 0

    @property
    def segments(self) -> int:
        return self.n - self.dead

    def present_counts(self) -> dict[str, int]:
        return {p: int(self.present[i, : self.n].sum()) for i, p in enumerate(self.parts)}


def _excluded_mask(m: Mirror, exclude: Iterable[str], where: Filter | None = None) -> np.ndarray:
    """The rows a search considers: alive, not excluded, of a track matching ``where``."""
    valid = m.alive[: m.n].copy()
    if where:
        ok = np.zeros(len(m.names), dtype=bool)
        for tid, attrs in m.attrs.items():
            if where.matches(attrs):
                ok[m._ordinal[tid]] = True
        valid &= ok[m.track[: m.n]]
    for tid in exclude:
        rows = m.rows.get(tid)
        if rows is not None:
            valid[rows] = False
    return valid


def mirror_mix(
    m: Mirror, queries: Sequence[retrieval.Query], top_k: int, exclude: Sequence[str], where: Filter | None = None
) -> MixResult:
    """SearchMix's exact path on the mirror: eq. 6.2 for every row, min per song."""
    if m.n == 0:
        return MixResult([], 0)
    total, per = retrieval.segment_distances(queries, [m.matrix(q.part) for q in queries])
    valid = _excluded_mask(m, exclude, where)
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


def mirror_stems(
    m: Mirror, query: retrieval.Query, top_k: int, exclude: Sequence[str], where: Filter | None = None
) -> list[StemHit]:
    """SearchStems' exact path on the mirror: one part's distance for every row, no grouping."""
    if m.n == 0:
        return []
    total, _ = retrieval.segment_distances([query], [m.matrix(query.part)])
    valid = _excluded_mask(m, exclude, where)
    rows = retrieval.rank(total, m.track[: m.n], m.segment[: m.n], m.names, top_k, valid, per_song=False)
    return [
        StemHit(m.names[m.track[r]], int(m.segment[r]), float(m.start[r]), float(m.end[r]), float(total[r]))
        for r in rows
    ]
