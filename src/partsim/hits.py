"""Search hits that the searcher's index and the Python client both hand out."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class StemHit:
    """One segment a stem search found: its track, segment index, span in seconds, and cosine distance."""

    track_id: str
    segment: int
    start: float
    end: float
    distance: float
    metadata: dict = field(default_factory=dict)  # title, artist, tags (the client fills them in)

    def to_json(self) -> dict:
        return asdict(self)
