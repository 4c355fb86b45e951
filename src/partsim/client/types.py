"""What :class:`partsim.client.PartsimClient` hands out: plain dataclasses, never protobuf messages.

Each result type has ``from_proto`` (the one place a gateway message becomes it) and ``to_json`` (a dict of
plain JSON values: what the CLI's ``--json`` prints).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any, cast

from partsim.v1 import gateway_pb2, types_pb2


class _Json:
    def to_json(self) -> dict:
        return asdict(cast(Any, self))  # every subclass is a dataclass


@dataclass
class Stem:
    """One stem query: a part and exactly one source (an indexed segment, a clip, or a vector)."""

    part: str
    track_id: str | None = None
    seconds: float | None = None
    segment_index: int | None = None
    audio: bytes | None = None
    vector: list[float] | None = None

    def to_proto(self) -> gateway_pb2.StemQuery:
        q = gateway_pb2.StemQuery(part=self.part)
        given = [self.track_id is not None, self.audio is not None, self.vector is not None]
        if sum(given) != 1:
            raise ValueError("a Stem needs exactly one of track_id (with seconds or segment_index), audio, vector")
        if self.track_id is not None:
            q.indexed.track_id = self.track_id
            if self.segment_index is not None:
                q.indexed.segment_index = self.segment_index
            else:
                q.indexed.seconds = float(self.seconds or 0.0)
        elif self.audio is not None:
            q.audio.encoded = self.audio
        else:
            q.vector.vector.extend(self.vector)
        return q


@dataclass
class QueryWarning(_Json):
    """A caveat about one stem query of an answered search (gateway.proto QueryWarning)."""

    code: str  # e.g. "PART_JUDGED_ABSENT" (WarningCode without its prefix)
    message: str
    query_index: int
    part: str
    track_id: str  # empty for an uploaded clip
    segment_index: int
    start: float
    end: float
    norm: float
    power: float

    @classmethod
    def from_proto(cls, w: gateway_pb2.QueryWarning) -> QueryWarning:
        name = gateway_pb2.WarningCode.Name(w.code) if w.code in gateway_pb2.WarningCode.values() else str(w.code)
        return cls(
            name.removeprefix("WARNING_CODE_"),
            w.message,
            w.query_index,
            w.part,
            w.track_id,
            w.segment_index,
            w.start_seconds,
            w.end_seconds,
            w.norm,
            w.power,
        )


class SearchResult(list):
    """The hits of a search, best first (a plain list of them), plus ``warnings`` about the query."""

    def __init__(self, hits: Iterable = (), warnings: Iterable[QueryWarning] = (), model_version: str = ""):
        super().__init__(hits)
        self.warnings: list[QueryWarning] = list(warnings)
        self.model_version = model_version


@dataclass
class MixHit(_Json):
    track_id: str
    distance: float
    best_segment: int
    best_start: float
    best_end: float
    per_part: dict[str, float]
    metadata: dict = field(default_factory=dict)  # title, artist, tags

    @classmethod
    def from_proto(cls, h: types_pb2.MixHit) -> MixHit:
        b = h.best_segment
        per_part = {p.part: p.distance for p in h.part_distances}
        return cls(
            h.track.track_id, h.distance, b.index, b.start_seconds, b.end_seconds, per_part, _metadata(h.track.metadata)
        )


def _metadata(m: types_pb2.TrackMetadata) -> dict:
    out: dict[str, Any] = {"title": m.title, "artist": m.artist, "tags": dict(m.tags)}
    if m.HasField("bpm"):
        out["bpm"] = m.bpm
    if m.key:
        out["key"] = m.key
    return out


FILTER_GRAMMAR = """\
filters (each --filter one condition; a track must meet all of them):
  tag:KEY=VALUE          has this tag; several tag: filters: any of them
  tag-all:KEY=VALUE      has this tag; several tag-all: filters: all of them
  bpm:LO..HI             BPM known and within LO..HI (bpm:LO.. / bpm:..HI / bpm:X)
  key:KEY                musical key, e.g. "A minor", "F#m", "Bb" (several: any of them)
  duration:LO..HI        duration in seconds within LO..HI (duration:..240 / duration:60..)
  indexed-after:WHEN     indexed after WHEN: a date or date-time (ISO 8601, UTC unless it gives
                         an offset, e.g. 2026-01-01 or 2026-01-01T12:00+02:00) or seconds since 1970"""


def _range(text: str, what: str) -> tuple[float | None, float | None]:
    """``LO..HI`` (either side may be empty) or a single number (``X``: X..X)."""
    lo, sep, hi = text.partition("..")
    if not sep:
        lo = hi = text
    try:
        out = (float(lo) if lo.strip() else None, float(hi) if hi.strip() else None)
    except ValueError:
        raise ValueError(f"expected {what}:LO..HI (numbers; either side may be left out)") from None
    if out == (None, None):
        raise ValueError(f"give at least one bound ({what}:LO..HI, {what}:LO.. or {what}:..HI)")
    return out


def _when(text: str) -> float:
    """Seconds since the epoch of a number, or an ISO 8601 date or date-time (UTC unless it has an offset)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        t = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            "expected a date (2026-01-01), a date-time (2026-01-01T12:00, UTC unless it gives an offset) or "
            "seconds since 1970"
        ) from None
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()


@dataclass
class SearchFilter(_Json):
    """Which tracks a search may answer (``partsim.v1.SearchFilter``): a track must meet every condition given.

    ``tags_any``: it has at least one of these (key, value) tags; ``tags_all``: every one; ``bpm_min`` /
    ``bpm_max``: its BPM is known and within; ``keys``: its musical key is one of these; ``duration_min`` /
    ``duration_max``: seconds; ``indexed_after``: seconds since the epoch. :meth:`parse` reads the CLI's
    ``--filter`` grammar (:data:`FILTER_GRAMMAR`).
    """

    tags_any: list[tuple[str, str]] = field(default_factory=list)
    tags_all: list[tuple[str, str]] = field(default_factory=list)
    bpm_min: float | None = None
    bpm_max: float | None = None
    keys: list[str] = field(default_factory=list)
    duration_min: float | None = None
    duration_max: float | None = None
    indexed_after: float | None = None

    def to_proto(self) -> types_pb2.SearchFilter:
        f = types_pb2.SearchFilter(
            tags_any=[types_pb2.TagMatch(key=k, value=v) for k, v in self.tags_any],
            tags_all=[types_pb2.TagMatch(key=k, value=v) for k, v in self.tags_all],
            keys=self.keys,
        )
        for name, proto_name in (
            ("bpm_min", "bpm_min"),
            ("bpm_max", "bpm_max"),
            ("duration_min", "duration_min_seconds"),
            ("duration_max", "duration_max_seconds"),
            ("indexed_after", "indexed_after"),
        ):
            value = getattr(self, name)
            if value is not None:
                setattr(f, proto_name, value)
        return f

    @classmethod
    def parse(cls, specs: Iterable[str]) -> SearchFilter:
        """A filter from ``--filter`` conditions (:data:`FILTER_GRAMMAR`); ValueError (one line) for a bad one."""
        f = cls()
        for spec in specs:
            try:
                f._add(spec)
            except ValueError as exc:
                raise ValueError(f"{spec!r}: {exc}") from None
        return f

    def _add(self, spec: str) -> None:
        kinds = "tag, tag-all, bpm, key, duration, indexed-after"
        kind, sep, value = spec.partition(":")
        kind = kind.strip().lower()
        if not sep or not value.strip():
            raise ValueError(f"expected KIND:VALUE, KIND one of {kinds}")
        if kind in ("tag", "tag-all"):
            k, eq, v = value.partition("=")
            if not eq or not k:
                raise ValueError(f"expected {kind}:KEY=VALUE")
            (self.tags_any if kind == "tag" else self.tags_all).append((k, v))
        elif kind == "bpm":
            self.bpm_min, self.bpm_max = _range(value, "bpm")
        elif kind == "duration":
            self.duration_min, self.duration_max = _range(value, "duration")
        elif kind == "key":
            self.keys.append(value.strip())
        elif kind == "indexed-after":
            self.indexed_after = _when(value)
        else:
            raise ValueError(f"unknown kind {kind!r}; one of {kinds}")


@dataclass
class Track(_Json):
    """An indexed track (GetTrack, ListTracks, IndexTrack): its metadata, segments and the model it was indexed with."""

    track_id: str
    title: str
    artist: str
    tags: dict[str, str]
    num_segments: int
    duration_seconds: float
    segment_seconds: float
    model_version: str
    indexed_at: float  # seconds since the Unix epoch
    version: str  # the upload this version of the track was indexed from ("" when none was named)
    bpm: float | None = None  # tempo, where known
    key: str = ""  # musical key in normal form ("A minor"), "" where not known

    @classmethod
    def from_proto(cls, t: types_pb2.Track) -> Track:
        m = t.metadata
        return cls(
            t.track_id,
            m.title,
            m.artist,
            dict(m.tags),
            t.num_segments,
            t.duration_seconds,
            t.segment_seconds,
            t.model_version,
            t.indexed_at,
            t.version,
            m.bpm if m.HasField("bpm") else None,
            m.key,
        )


@dataclass
class IndexResult(_Json):
    """What IndexTrack answered: the track as indexed, and whether it replaced one of the same id."""

    track: Track
    replaced: bool


@dataclass
class CatalogStats(_Json):
    tracks: int
    segments: int
    present_segments_by_part: dict[str, int]
    backend: str
    model_version: str

    @classmethod
    def from_proto(cls, r: gateway_pb2.GetCatalogStatsResponse) -> CatalogStats:
        s = r.stats
        return cls(s.tracks, s.segments, dict(s.present_segments_by_part), s.backend, r.model_version)


@dataclass
class ModelInfo(_Json):
    model_version: str
    parts: list[str]
    subspace_dim: int
    model_segment_seconds: float
    sample_rate: int


@dataclass
class PartEmbedding(_Json):
    """One part's subspace of one segment: the raw vector, its norm, the presence decision, and the mean
    power of the audio it came from (None where unknown)."""

    part: str
    vector: list[float]
    norm: float
    present: bool
    power: float | None


@dataclass
class SegmentEmbedding(_Json):
    index: int
    start_seconds: float
    end_seconds: float
    parts: list[PartEmbedding]  # in the model's part order


@dataclass
class Embedding(_Json):
    """What EmbedParts answered: the model, and per segment each part's embedding."""

    model: ModelInfo
    segments: list[SegmentEmbedding]
    duration_seconds: float

    @classmethod
    def from_proto(cls, r: gateway_pb2.EmbedPartsResponse) -> Embedding:
        m = r.model
        model = ModelInfo(m.model_version, list(m.parts), m.subspace_dim, m.model_segment_seconds, m.sample_rate)
        segments = [
            SegmentEmbedding(
                s.index,
                s.start_seconds,
                s.end_seconds,
                [
                    PartEmbedding(p.part, list(p.vector), p.norm, p.present, p.power if p.HasField("power") else None)
                    for p in s.parts
                ],
            )
            for s in r.segments
        ]
        return cls(model, segments, r.duration_seconds)


class JobState(IntEnum):
    """An ingest job's state (gateway.proto JobState; equal to its protobuf value)."""

    UNSPECIFIED = 0
    QUEUED = 1
    RUNNING = 2
    DONE = 3


@dataclass
class ItemFailure(_Json):
    track_id: str
    error: str


@dataclass
class IngestJob(_Json):
    """An ingest job's status (GetIngestJob, ListIngestJobs)."""

    job_id: str
    state: JobState
    total: int
    succeeded: int
    failed: int
    failures: list[ItemFailure]
    created_at: float
    updated_at: float

    @classmethod
    def from_proto(cls, r: gateway_pb2.IngestJob) -> IngestJob:
        return cls(
            r.job_id,
            JobState(r.state) if r.state in JobState._value2member_map_ else JobState.UNSPECIFIED,
            r.total,
            r.succeeded,
            r.failed,
            [ItemFailure(f.track_id, f.error) for f in r.failures],
            r.created_at,
            r.updated_at,
        )

    def to_json(self) -> dict:
        return {**asdict(self), "state": self.state.name}


@dataclass
class IngestJobPage(_Json):
    """One page of ListIngestJobs: jobs newest first, and the token of the next page ("" after the last one)."""

    jobs: list[IngestJob]
    next_page_token: str

    @classmethod
    def from_proto(cls, r: gateway_pb2.ListIngestJobsResponse) -> IngestJobPage:
        return cls([IngestJob.from_proto(j) for j in r.jobs], r.next_page_token)

    def to_json(self) -> dict:
        return {"jobs": [j.to_json() for j in self.jobs], "next_page_token": self.next_page_token}


@dataclass
class RetryResult(_Json):
    """What RetryIngestJob answered: the failed items queued again by this call, and the job after it."""

    requeued: int
    job: IngestJob

    def to_json(self) -> dict:
        return {"requeued": self.requeued, "job": self.job.to_json()}


STEM_FORMATS = {"flac": types_pb2.STEM_ENCODING_FLAC, "float32le": types_pb2.STEM_ENCODING_FLOAT32LE}


@dataclass
class StemAudio:
    """One separated stem: the model's source name, the catalog part it is ("" for a stem to listen to
    only), and its audio in the :class:`Stems`' ``format``."""

    name: str
    part: str
    data: bytes


@dataclass
class Stems:
    """The separated stems of one indexed segment (GetStems). ``format``: "flac" (one complete FLAC file per
    stem) or "float32le" (raw interleaved little-endian float32 frames, ``channels`` per frame)."""

    track_id: str
    segment_index: int
    start_seconds: float
    end_seconds: float
    model: str
    format: str
    sample_rate: int
    channels: int
    total_frames: int
    stems: list[StemAudio]

    @classmethod
    def from_proto(cls, header: gateway_pb2.GetStemsHeader, data: Iterable[bytes]) -> Stems:
        sep = header.separation
        fmt = next((k for k, v in STEM_FORMATS.items() if v == sep.encoding), "float32le")
        return cls(
            header.track_id,
            header.segment_index,
            header.start_seconds,
            header.end_seconds,
            sep.model,
            fmt,
            sep.sample_rate,
            sep.channels,
            sep.total_frames,
            [StemAudio(s.name, s.part, bytes(d)) for s, d in zip(sep.stems, data, strict=True)],
        )

    def by_part(self) -> dict[str, bytes]:
        """The audio of each stem that is a catalog part, by part."""
        return {s.part: s.data for s in self.stems if s.part}
