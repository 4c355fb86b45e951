"""What every service checks about a track: its id (it keys Milvus rows and files), its metadata (sizes,
BPM range, the musical key's form: :func:`normal_key`), and that a vector's norm fits in float32
(:func:`check_norm_fits`).

The metadata limits hold at the gateway (IndexTrack, SubmitIngestJob) and again at the searcher
(UpsertTrack), so a direct caller of the searcher cannot store more: every search answer and
ListTracks page carries the metadata of its tracks, so one huge record would slow or break them
for every caller.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Protocol

import numpy as np

from partsim.errors import InvalidArgument

MAX_TRACK_ID = 256
MAX_FIELD_BYTES = 512  # title, artist, and each tag's key and value (UTF-8)
MAX_TAGS = 64
MAX_METADATA_BYTES = 16 << 10  # title + artist + every tag key and value (UTF-8)
FLOAT32_MAX = float(np.finfo(np.float32).max)
BPM_RANGE = (1.0, 400.0)  # a track's tempo, where given
TONICS = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")  # the normal form's spelling
KEYS = tuple(f"{t} {m}" for m in ("major", "minor") for t in TONICS)  # every key in its normal form
_NATURAL = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
_KEY = re.compile(r"^\s*([a-g])\s*(#|b|♯|♭|sharp|flat)?\s*(major|maj|minor|min|m|M)?\s*$", re.IGNORECASE)


class Metadata(Protocol):
    """``partsim.v1.TrackMetadata`` (or anything with its fields)."""

    @property
    def title(self) -> str: ...
    @property
    def artist(self) -> str: ...
    @property
    def tags(self) -> Mapping[str, str]: ...


def normal_key(text: str) -> str:
    """A musical key in its normal form ``"<tonic> major|minor"``, tonic spelled with a sharp (:data:`KEYS`).

    Accepted: a tonic A..G (any case), an optional accidental (``#``, ``b``, ``♯``, ``♭``, ``sharp``,
    ``flat``), then ``major`` / ``maj`` / ``M`` / nothing (major) or ``minor`` / ``min`` / ``m`` (minor).
    Enharmonic spellings are one key: ``"Db major"`` is ``"C# major"``, ``"Cb"`` ``"B major"``.
    ValueError for anything else.
    """
    m = _KEY.match(text)
    if m is None:
        raise ValueError(
            f"key {_short(text)} is not a musical key: give a tonic A..G, optionally # or b, then major or minor "
            '(e.g. "A minor", "F# major", "Bbm")'
        )
    tonic, acc, mode = m.groups()
    shift = 0 if not acc else 1 if acc.lower() in ("#", "♯", "sharp") else -1
    minor = mode is not None and (mode == "m" or mode.lower() in ("minor", "min"))
    return f"{TONICS[(_NATURAL[tonic.upper()] + shift) % 12]} {'minor' if minor else 'major'}"


def bpm_violation(bpm: float, path: str) -> tuple[str, str] | None:
    """``(path, description)`` unless ``bpm`` is a finite tempo within :data:`BPM_RANGE`."""
    lo, hi = BPM_RANGE
    if not (math.isfinite(bpm) and lo <= bpm <= hi):
        return path, f"{path} {bpm}: a tempo must be within {lo:g}..{hi:g} beats per minute"
    return None


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
    has_bpm = getattr(meta, "HasField", None)
    bpm = getattr(meta, "bpm", None) if has_bpm is None or has_bpm("bpm") else None
    if bpm is not None and (bad := bpm_violation(float(bpm), f"{prefix}.bpm")) is not None:
        out.append(bad)
    key = getattr(meta, "key", "") or ""
    if key:
        try:
            normal_key(key)
        except ValueError as exc:
            out.append((f"{prefix}.key", f"{prefix}.{exc}"))
    return out


def check_metadata(meta: Metadata, prefix: str = "metadata") -> None:
    """InvalidArgument (a field violation per broken limit) unless title, artist and each tag key and value
    have at most :data:`MAX_FIELD_BYTES` bytes, there are at most :data:`MAX_TAGS` tags and
    :data:`MAX_METADATA_BYTES` bytes in all (reason METADATA_TOO_LARGE), a BPM given is within
    :data:`BPM_RANGE` and a key given is one :func:`normal_key` reads (reason INVALID_METADATA)."""
    violations = metadata_violations(meta, prefix)
    if violations:
        message = "; ".join(d for _, d in violations[:3]) + ("; ..." if len(violations) > 3 else "")
        too_large = any(not p.endswith((".bpm", ".key")) for p, _ in violations)
        reason = "METADATA_TOO_LARGE" if too_large else "INVALID_METADATA"
        raise InvalidArgument(message, reason=reason, field_violations=violations)


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
