"""Search filters (``partsim.v1.SearchFilter``): one predicate, two renderings.

:class:`Filter` is a checked filter (:func:`from_proto`: INVALID_ARGUMENT with the field path of each
bad value). It is applied to the searcher's segment rows, which carry their track's filter fields
(:func:`row_fields`, written at every upsert):

- ``tags``: ARRAY of VARCHAR, one element per tag, ``key=value`` (:func:`tag_element`: a ``=`` or ``\\``
  in the key is escaped with ``\\``, so ``{"a=b": "c"}`` and ``{"a": "b=c"}`` stay apart);
- ``bpm``: FLOAT, 0.0 when not known (a real tempo is 1..400; Milvus 2.3 servers have no nullable fields); ``key``: VARCHAR, the normal form (:func:`.tracks.normal_key`),
  empty when not known; ``duration``: DOUBLE, the track's duration_seconds; ``indexed_at``: DOUBLE.

The two renderings of the same predicate:

- :meth:`Filter.expression`: a Milvus boolean expression, passed to ``search`` (the approximate path)
  and to the query iterators (the exact path reading Milvus). Every string is a literal made by
  :func:`.searcher.milvus.quote` (quotes and backslashes escaped), every number a Python float's repr:
  nothing a caller sends becomes expression syntax.
- :meth:`Filter.matches`: the same test on a row's fields in Python (the mirror's exact path).

A missing BPM or key never matches a BPM or key condition (SQL-like: a comparison with null is false).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from partsim.errors import InvalidArgument

from .tracks import KEYS, MAX_FIELD_BYTES, MAX_TAGS, bpm_violation, normal_key

MAX_FILTER_TAGS = MAX_TAGS  # tags_any and tags_all together
MAX_FILTER_KEYS = len(KEYS)
TAG_ELEMENT_BYTES = 3 * MAX_FIELD_BYTES + 1  # an escaped key (at most twice its bytes), '=', the value
FIELDS = ("tags", "bpm", "key", "duration", "indexed_at")  # the filter fields of a segment row


_ESCAPES = {ord("\\"): "\\\\", ord('"'): '\\"', ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"}


def quote(text: str) -> str:
    """A Milvus expression string literal: backslashes and double quotes escaped, and line breaks and tabs
    (Milvus refuses a raw line break in a literal and reads no escape of other control characters, which
    it takes as they are). The searcher's one quoting rule: :mod:`.searcher.milvus` uses it for track
    ids and keys too."""
    return '"' + text.translate(_ESCAPES) + '"'


def tag_element(key: str, value: str) -> str:
    """A tag as an element of a row's ``tags`` array: ``key=value``, with ``\\`` and ``=`` in the key escaped."""
    return key.replace("\\", "\\\\").replace("=", "\\=") + "=" + value


def row_fields(
    tags: Mapping[str, str], bpm: float | None, key: str | None, duration: float, indexed_at: float
) -> dict[str, Any]:
    """The filter fields every segment row of a track carries (see the module doc)."""
    return {
        "tags": sorted(tag_element(k, v) for k, v in tags.items()),
        "bpm": 0.0 if bpm is None else float(np.float32(bpm)),  # 0.0: unknown
        "key": normal_key(key) if key else "",
        "duration": float(duration),
        "indexed_at": float(indexed_at),
    }


def _num(x: float) -> str:
    return repr(float(x))


@dataclass(frozen=True)
class Filter:
    """A checked search filter (tags as :func:`tag_element` strings, keys in normal form, BPM as float32)."""

    tags_any: tuple[str, ...] = ()
    tags_all: tuple[str, ...] = ()
    bpm_min: float | None = None
    bpm_max: float | None = None
    keys: tuple[str, ...] = ()
    duration_min: float | None = None
    duration_max: float | None = None
    indexed_after: float | None = None

    def __bool__(self) -> bool:
        return self != Filter()

    def expression(self) -> str:
        """The Milvus expression of this filter ('' when it has no condition)."""
        out = []
        if self.tags_any:
            out.append(f"array_contains_any(tags, [{', '.join(quote(t) for t in self.tags_any)}])")
        if self.tags_all:
            out.append(f"array_contains_all(tags, [{', '.join(quote(t) for t in self.tags_all)}])")
        if self.bpm_min is not None or self.bpm_max is not None:
            out.append("bpm > 0.0")  # a known tempo (0.0 stands for unknown)
        if self.bpm_min is not None:
            out.append(f"bpm >= {_num(self.bpm_min)}")
        if self.bpm_max is not None:
            out.append(f"bpm <= {_num(self.bpm_max)}")
        if self.keys:
            out.append(f"key in [{', '.join(quote(k) for k in self.keys)}]")
        if self.duration_min is not None:
            out.append(f"duration >= {_num(self.duration_min)}")
        if self.duration_max is not None:
            out.append(f"duration <= {_num(self.duration_max)}")
        if self.indexed_after is not None:
            out.append(f"indexed_at > {_num(self.indexed_after)}")
        return " and ".join(f"({c})" for c in out)

    def matches(self, row: Mapping[str, Any]) -> bool:
        """Whether a row's filter fields (:func:`row_fields`) pass, as :meth:`expression` decides in Milvus."""
        tags = set(row.get("tags") or ())
        if self.tags_any and not tags.intersection(self.tags_any):
            return False
        if self.tags_all and not tags.issuperset(self.tags_all):
            return False
        bpm = row.get("bpm") or None  # 0.0 (or null, in rows of an older write): unknown
        if self.bpm_min is not None and (bpm is None or not float(bpm) >= self.bpm_min):
            return False
        if self.bpm_max is not None and (bpm is None or not float(bpm) <= self.bpm_max):
            return False
        if self.keys and (row.get("key") or "") not in self.keys:
            return False
        duration = float(row.get("duration") or 0.0)
        if self.duration_min is not None and not duration >= self.duration_min:
            return False
        if self.duration_max is not None and not duration <= self.duration_max:
            return False
        return self.indexed_after is None or float(row.get("indexed_at") or 0.0) > self.indexed_after


ANY = Filter()  # no condition: every track


def combine(*expressions: str) -> str:
    """The conjunction of Milvus expressions, empty ones left out."""
    parts = [e for e in expressions if e]
    return parts[0] if len(parts) == 1 else " and ".join(f"({e})" for e in parts)


def _opt(msg: Any, name: str) -> float | None:
    return float(getattr(msg, name)) if msg.HasField(name) else None


def from_proto(msg: Any, prefix: str = "filter") -> Filter:
    """A ``partsim.v1.SearchFilter`` checked; InvalidArgument (reason INVALID_FILTER) naming each bad field
    (``filter.bpm_min``, ``filter.keys[2]``, ...): more than :data:`MAX_FILTER_TAGS` tags, a BPM bound
    outside 1..400 or min > max, a key :func:`.tracks.normal_key` does not read, a negative or
    non-finite duration, min > max, a non-finite time."""
    bad: list[tuple[str, str]] = []
    n_tags = len(msg.tags_any) + len(msg.tags_all)
    if n_tags > MAX_FILTER_TAGS:
        bad.append((f"{prefix}.tags_any", f"{prefix} has {n_tags} tags (tags_any + tags_all); the limit is {MAX_TAGS}"))
    for name in ("tags_any", "tags_all"):
        for i, t in enumerate(getattr(msg, name)):
            if max(len(t.key.encode()), len(t.value.encode())) > MAX_FIELD_BYTES:
                bad.append((f"{prefix}.{name}[{i}]", f"{prefix}.{name}[{i}]: over {MAX_FIELD_BYTES} bytes"))
    bpm_min, bpm_max = _opt(msg, "bpm_min"), _opt(msg, "bpm_max")
    for name, v in (("bpm_min", bpm_min), ("bpm_max", bpm_max)):
        if v is not None and (err := bpm_violation(v, f"{prefix}.{name}")) is not None:
            bad.append(err)
    if bpm_min is not None and bpm_max is not None and bpm_min > bpm_max:
        bad.append((f"{prefix}.bpm_min", f"{prefix}.bpm_min {bpm_min:g} is above {prefix}.bpm_max {bpm_max:g}"))
    keys: list[str] = []
    if len(msg.keys) > MAX_FILTER_KEYS:
        bad.append((f"{prefix}.keys", f"{prefix}.keys has {len(msg.keys)} keys; there are {MAX_FILTER_KEYS}"))
    for i, k in enumerate(msg.keys[:MAX_FILTER_KEYS]):
        try:
            keys.append(normal_key(k))
        except ValueError as exc:
            bad.append((f"{prefix}.keys[{i}]", f"{prefix}.keys[{i}]: {exc}"))
    dmin, dmax = _opt(msg, "duration_min_seconds"), _opt(msg, "duration_max_seconds")
    for name, v in (("duration_min_seconds", dmin), ("duration_max_seconds", dmax)):
        if v is not None and not (math.isfinite(v) and v >= 0):
            bad.append((f"{prefix}.{name}", f"{prefix}.{name} {v}: must be a finite number of seconds >= 0"))
    if dmin is not None and dmax is not None and dmin > dmax:
        bad.append(
            (f"{prefix}.duration_min_seconds", f"{prefix}.duration_min_seconds {dmin:g} is above the max {dmax:g}")
        )
    after = _opt(msg, "indexed_after")
    if after is not None and not math.isfinite(after):
        bad.append((f"{prefix}.indexed_after", f"{prefix}.indexed_after {after}: must be finite (seconds since 1970)"))
    if bad:
        message = "; ".join(d for _, d in bad[:3]) + ("; ..." if len(bad) > 3 else "")
        raise InvalidArgument(message, reason="INVALID_FILTER", field_violations=bad)
    return Filter(
        tags_any=tuple(sorted({tag_element(t.key, t.value) for t in msg.tags_any})),
        tags_all=tuple(sorted({tag_element(t.key, t.value) for t in msg.tags_all})),
        bpm_min=bpm_min,
        bpm_max=bpm_max,
        keys=tuple(sorted(set(keys))),
        duration_min=dmin,
        duration_max=dmax,
        indexed_after=after,
    )


def requested(request: Any, prefix: str = "filter") -> Filter:
    """The checked filter of a search request (an empty :class:`Filter` when it has none)."""
    return from_proto(request.filter, prefix) if request.HasField("filter") else ANY
