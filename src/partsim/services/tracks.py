"""Track ids: the one rule every service checks (they key Milvus rows and files)."""

from __future__ import annotations

from partsim.errors import InvalidArgument

MAX_TRACK_ID = 256


def check_track_id(track_id: str) -> str:
    """``track_id`` itself, or InvalidArgument unless it has 1..256 characters and no control characters."""
    if not track_id:
        raise InvalidArgument("track_id is empty")
    if len(track_id) > MAX_TRACK_ID:
        raise InvalidArgument(f"track_id is {len(track_id)} characters long; the limit is {MAX_TRACK_ID}")
    if any(ord(c) < 32 or ord(c) == 127 for c in track_id):
        raise InvalidArgument(f"track_id {track_id!r} contains a control character")
    return track_id
