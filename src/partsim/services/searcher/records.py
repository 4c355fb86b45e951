"""What the searcher's index takes and hands out: a track's segments to index, search hits, a stored segment."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from partsim.hits import StemHit

from ..filters import row_fields
from .milvus import POWER_UNKNOWN, pk

__all__ = ["MixHit", "MixResult", "SegmentRecord", "Segments", "StemHit"]


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

    def rows(
        self, track_id: str, generation: int, fields: dict | None = None
    ) -> tuple[list[list[dict]], np.ndarray, np.ndarray]:
        """The track's Milvus rows per part (keys of the write's ``generation``; each with the track's filter
        ``fields``, :func:`partsim.services.filters.row_fields`; none given: those of a track with no tags, BPM,
        key, duration or time), and for the mirror the unit vectors
        (parts, S, dim; zero where absent) and presence (judged present and not a zero vector)."""
        extra = fields if fields is not None else row_fields({}, None, None, 0.0, 0.0)
        raw = np.asarray(self.vectors, dtype=np.float32)
        norms = np.linalg.norm(raw, axis=2)
        present = np.asarray(self.present, dtype=bool) & (norms > 1e-12)
        units = np.where(present[:, :, None], raw / np.maximum(norms, 1e-12)[:, :, None], 0.0).astype(np.float32)
        power = (
            np.full(present.shape, POWER_UNKNOWN)
            if self.power is None
            else np.where(np.asarray(self.power) >= 0, self.power, POWER_UNKNOWN)
        )
        rows = [
            [
                {
                    "pk": pk(track_id, self.index[j], generation),
                    "track_id": track_id,
                    "segment": int(self.index[j]),
                    "start": float(self.start[j]),
                    "end": float(self.end[j]),
                    "present": bool(present[p, j]),
                    "norm": float(norms[p, j]),
                    "power": float(power[p, j]),
                    "raw": raw[p, j].tolist(),
                    "vector": units[p, j],
                    **extra,
                }
                for j in range(len(self))
            ]
            for p in range(raw.shape[0])
        ]
        return rows, units, present


@dataclass
class MixHit:
    track_id: str
    distance: float
    segment: int
    start: float
    end: float
    part_distances: dict[str, float] = field(default_factory=dict)


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
    vectors: dict[str, np.ndarray | None]  # the raw vector; None: not kept (an absent part of a migrated row)
    norms: dict[str, float]
    present: dict[str, bool]
    power: dict[str, float | None] = field(default_factory=dict)  # None: unknown
