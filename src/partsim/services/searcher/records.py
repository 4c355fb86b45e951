"""What the searcher's index takes and hands out: a track's segments to index, search hits, a stored segment."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from partsim.hits import StemHit

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
