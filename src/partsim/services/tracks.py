"""What every service checks about a track: its id (it keys Milvus rows and files), its metadata, and
that a vector's norm fits in float32 (:func:`check_norm_fits`).

The metadata limits hold at the gateway (IndexTrack, SubmitIngestJob) and again at the searcher
(UpsertTrack), so a direct caller of the searcher cannot store more: every search answer and
ListTracks page carries the metadata of its tracks, so one huge record would slow or break them
for every caller.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import numpy as np

from partsim.errors import InvalidArgument

MAX_TRACK_ID = 256
MAX_FIELD_BYTES = 512  # title, artist, and each tag's key and value (UTF-8)
MAX_TAGS = 64
MAX_METADATA_BYTES = 16 << 10  # title + artist + every tag key and value (UTF-8)
FLOAT32_MAX = float(np.finfo(np.float32).max)


class Metadata(Protocol):
    """``partsim.v1.TrackMetadata`` (or anything with its fields)."""

    @property
    def title(self) -> str: ...
    @property
    def artist(self) -> str: ...
    @property
    def tags(self) -> Mapping[str, str]: ...


def check_track_id(track_id: str) -> str:
    """``track_id`` itself, or InvalidArgument unless it has 1..256 characters and no control characters."""
    if not track_id:
        raise InvalidArgument("track_id is empty", reason="INVALID_TRACK_ID")
    if len(track_id) > MAX_TRACK_ID:
        raise InvalidArgument(
            f"track_id is {len(track_id)} characters long; the limit is {MAX_TRACK_ID}", reason="INVALID_TRACK_ID"
        )
    if any(ord(c) < 32 or ord(c) == 127 for c in track_id):
        raise InvalidArgument(f"track_id {track_id!r} contains a control character", reason="INVALID_TRACK_ID")
    return track_id


def _short(text: str, n: int = 40) -> str:
    return repr(text if len(text) <= n else text[:n] + "...")


def metadata_violations(meta: Metadata, prefix: str = "metadata") -> list[tuple[str, str]]:
    """``(field path, description)`` of each limit ``meta`` breaks (field paths under ``prefix``)."""
    out: list[tuple[str, str]] = []
    total = 0
    for name in ("title", "artist"):
        size = len(getattr(meta, name).encode())
        total += size
        if size > MAX_FIELD_BYTES:
            out.append((f"{prefix}.{name}", f"{prefix}.{name} is {size} bytes; the limit is {MAX_FIELD_BYTES}"))
    tags = meta.tags
    if len(tags) > MAX_TAGS:
        out.append((f"{prefix}.tags", f"{prefix}.tags has {len(tags)} tags; the limit is {MAX_TAGS}"))
    for key, value in tags.items():
        k, v = len(key.encode()), len(value.encode())
        total += k + v
        if max(k, v) > MAX_FIELD_BYTES and len(out) < 10:
            path = f"{prefix}.tags[{_short(key)}]"
            what = "key" if k > MAX_FIELD_BYTES else "value"
            out.append((path, f"{path}: the tag's {what} is {max(k, v)} bytes; the limit is {MAX_FIELD_BYTES}"))
    if total > MAX_METADATA_BYTES:
        out.append(
            (prefix, f"{prefix} is {total} bytes in all (title, artist, tags); the limit is {MAX_METADATA_BYTES}")
        )
    return out


def check_metadata(meta: Metadata, prefix: str = "metadata") -> None:
    """InvalidArgument (reason METADATA_TOO_LARGE, a field violation per broken limit) unless title, artist
    and each tag key and value have at most :data:`MAX_FIELD_BYTES` bytes, there are at most
    :data:`MAX_TAGS` tags and :data:`MAX_METADATA_BYTES` bytes in all."""
    violations = metadata_violations(meta, prefix)
    if violations:
        message = "; ".join(d for _, d in violations[:3]) + ("; ..." if len(violations) > 3 else "")
        raise InvalidArgument(message, reason="METADATA_TOO_LARGE", field_violations=violations)


def check_norm_fits(vector: np.ndarray, what: str) -> None:
    """InvalidArgument (reason INVALID_VECTOR) when ``vector`` is finite but its norm overflows in float32 (the
    squares of its values add up beyond :data:`FLOAT32_MAX`), so it cannot be normalised where the services
    compute in float32; other vectors pass (zero and NaN have their own checks and words)."""
    v = np.asarray(vector, dtype=np.float32)
    with np.errstate(over="ignore"):
        overflows = bool(np.all(np.isfinite(v))) and not np.isfinite(np.linalg.norm(v))
    if overflows:
        raise InvalidArgument(
            f"{what}: the vector's values are finite but its norm overflows float32 (their squares add up "
            f"beyond {FLOAT32_MAX:.3g}; the largest is {float(np.max(np.abs(v))):.3g}); scale it down: only its "
            "direction counts",
            reason="INVALID_VECTOR",
        )
