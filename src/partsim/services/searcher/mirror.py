"""In-memory mirror of every catalog vector, for the exact path (one matrix product per part).

Rows are (track, segment); for each part a float32 unit vector (zero where the part is absent).
Rows are appended; removing a track marks its rows dead, and the arrays are compacted once
dead rows are a quarter of them. Not thread-safe: :class:`SearchStore` holds its lock.
"""

from __future__ import annotations

import numpy as np


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
    ) -> None:
        """Append one track's rows (replacing any it had). ``units``: (parts, S, dim); ``present``: (parts, S)."""
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
        self.n += s

    def remove(self, track_id: str) -> int:
        """Drop a track's rows; returns how many it had."""
        rows = self.rows.pop(track_id, None)
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
