from google.api import annotations_pb2 as _annotations_pb2
from partsim.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EmbedMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EMBED_MODE_UNSPECIFIED: _ClassVar[EmbedMode]
    EMBED_MODE_FEATURE: _ClassVar[EmbedMode]
    EMBED_MODE_SIGNAL: _ClassVar[EmbedMode]

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_DONE: _ClassVar[JobState]

class WarningCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WARNING_CODE_UNSPECIFIED: _ClassVar[WarningCode]
    WARNING_CODE_PART_JUDGED_ABSENT: _ClassVar[WarningCode]
EMBED_MODE_UNSPECIFIED: EmbedMode
EMBED_MODE_FEATURE: EmbedMode
EMBED_MODE_SIGNAL: EmbedMode
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_DONE: JobState
WARNING_CODE_UNSPECIFIED: WarningCode
WARNING_CODE_PART_JUDGED_ABSENT: WarningCode

class EmbedPartsRequest(_message.Message):
    __slots__ = ("audio", "segment_seconds", "hop_seconds", "mode")
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    HOP_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    audio: _types_pb2.Audio
    segment_seconds: float
    hop_seconds: float
    mode: EmbedMode
    def __init__(self, audio: _Optional[_Union[_types_pb2.Audio, _Mapping]] = ..., segment_seconds: _Optional[float] = ..., hop_seconds: _Optional[float] = ..., mode: _Optional[_Union[EmbedMode, str]] = ...) -> None: ...

class EmbedPartsResponse(_message.Message):
    __slots__ = ("model", "segments", "duration_seconds")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    model: _types_pb2.ModelInfo
    segments: _containers.RepeatedCompositeFieldContainer[_types_pb2.SegmentEmbedding]
    duration_seconds: float
    def __init__(self, model: _Optional[_Union[_types_pb2.ModelInfo, _Mapping]] = ..., segments: _Optional[_Iterable[_Union[_types_pb2.SegmentEmbedding, _Mapping]]] = ..., duration_seconds: _Optional[float] = ...) -> None: ...

class IndexTrackHeader(_message.Message):
    __slots__ = ("track_id", "metadata", "pcm_format", "mode")
    TRACK_ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    PCM_FORMAT_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    track_id: str
    metadata: _types_pb2.TrackMetadata
    pcm_format: _types_pb2.RawPcm
    mode: EmbedMode
    def __init__(self, track_id: _Optional[str] = ..., metadata: _Optional[_Union[_types_pb2.TrackMetadata, _Mapping]] = ..., pcm_format: _Optional[_Union[_types_pb2.RawPcm, _Mapping]] = ..., mode: _Optional[_Union[EmbedMode, str]] = ...) -> None: ...

class IndexTrackRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: IndexTrackHeader
    chunk: bytes
    def __init__(self, header: _Optional[_Union[IndexTrackHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class IndexTrackResponse(_message.Message):
    __slots__ = ("track", "replaced")
    TRACK_FIELD_NUMBER: _ClassVar[int]
    REPLACED_FIELD_NUMBER: _ClassVar[int]
    track: _types_pb2.Track
    replaced: bool
    def __init__(self, track: _Optional[_Union[_types_pb2.Track, _Mapping]] = ..., replaced: _Optional[bool] = ...) -> None: ...

class IngestItem(_message.Message):
    __slots__ = ("track_id", "metadata", "uri", "audio")
    TRACK_ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    track_id: str
    metadata: _types_pb2.TrackMetadata
    uri: str
    audio: _types_pb2.Audio
    def __init__(self, track_id: _Optional[str] = ..., metadata: _Optional[_Union[_types_pb2.TrackMetadata, _Mapping]] = ..., uri: _Optional[str] = ..., audio: _Optional[_Union[_types_pb2.Audio, _Mapping]] = ...) -> None: ...

class SubmitIngestJobRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[IngestItem]
    def __init__(self, items: _Optional[_Iterable[_Union[IngestItem, _Mapping]]] = ...) -> None: ...

class SubmitIngestJobResponse(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class ItemFailure(_message.Message):
    __slots__ = ("track_id", "error")
    TRACK_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    track_id: str
    error: str
    def __init__(self, track_id: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class GetIngestJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class IngestJob(_message.Message):
    __slots__ = ("job_id", "state", "total", "succeeded", "failed", "failures", "created_at", "updated_at")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    SUCCEEDED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    state: JobState
    total: int
    succeeded: int
    failed: int
    failures: _containers.RepeatedCompositeFieldContainer[ItemFailure]
    created_at: float
    updated_at: float
    def __init__(self, job_id: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., total: _Optional[int] = ..., succeeded: _Optional[int] = ..., failed: _Optional[int] = ..., failures: _Optional[_Iterable[_Union[ItemFailure, _Mapping]]] = ..., created_at: _Optional[float] = ..., updated_at: _Optional[float] = ...) -> None: ...

class GetIngestJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: IngestJob
    def __init__(self, job: _Optional[_Union[IngestJob, _Mapping]] = ...) -> None: ...

class ListIngestJobsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListIngestJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[IngestJob]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[IngestJob, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class RetryIngestJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class RetryIngestJobResponse(_message.Message):
    __slots__ = ("requeued", "job")
    REQUEUED_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    requeued: int
    job: IngestJob
    def __init__(self, requeued: _Optional[int] = ..., job: _Optional[_Union[IngestJob, _Mapping]] = ...) -> None: ...

class IndexedSegment(_message.Message):
    __slots__ = ("track_id", "seconds", "segment_index")
    TRACK_ID_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_INDEX_FIELD_NUMBER: _ClassVar[int]
    track_id: str
    seconds: float
    segment_index: int
    def __init__(self, track_id: _Optional[str] = ..., seconds: _Optional[float] = ..., segment_index: _Optional[int] = ...) -> None: ...

class VectorQuery(_message.Message):
    __slots__ = ("vector",)
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    vector: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, vector: _Optional[_Iterable[float]] = ...) -> None: ...

class StemQuery(_message.Message):
    __slots__ = ("part", "indexed", "audio", "vector")
    PART_FIELD_NUMBER: _ClassVar[int]
    INDEXED_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    part: str
    indexed: IndexedSegment
    audio: _types_pb2.Audio
    vector: VectorQuery
    def __init__(self, part: _Optional[str] = ..., indexed: _Optional[_Union[IndexedSegment, _Mapping]] = ..., audio: _Optional[_Union[_types_pb2.Audio, _Mapping]] = ..., vector: _Optional[_Union[VectorQuery, _Mapping]] = ...) -> None: ...

class SearchMixRequest(_message.Message):
    __slots__ = ("queries", "top_k", "part_weights", "exclude_track_ids", "mode", "filter")
    class PartWeightsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    PART_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_TRACK_IDS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    queries: _containers.RepeatedCompositeFieldContainer[StemQuery]
    top_k: int
    part_weights: _containers.ScalarMap[str, float]
    exclude_track_ids: _containers.RepeatedScalarFieldContainer[str]
    mode: _types_pb2.SearchMode
    filter: _types_pb2.SearchFilter
    def __init__(self, queries: _Optional[_Iterable[_Union[StemQuery, _Mapping]]] = ..., top_k: _Optional[int] = ..., part_weights: _Optional[_Mapping[str, float]] = ..., exclude_track_ids: _Optional[_Iterable[str]] = ..., mode: _Optional[_Union[_types_pb2.SearchMode, str]] = ..., filter: _Optional[_Union[_types_pb2.SearchFilter, _Mapping]] = ...) -> None: ...

class QueryWarning(_message.Message):
    __slots__ = ("code", "message", "query_index", "part", "track_id", "segment_index", "start_seconds", "end_seconds", "norm", "power")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    QUERY_INDEX_FIELD_NUMBER: _ClassVar[int]
    PART_FIELD_NUMBER: _ClassVar[int]
    TRACK_ID_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_INDEX_FIELD_NUMBER: _ClassVar[int]
    START_SECONDS_FIELD_NUMBER: _ClassVar[int]
    END_SECONDS_FIELD_NUMBER: _ClassVar[int]
    NORM_FIELD_NUMBER: _ClassVar[int]
    POWER_FIELD_NUMBER: _ClassVar[int]
    code: WarningCode
    message: str
    query_index: int
    part: str
    track_id: str
    segment_index: int
    start_seconds: float
    end_seconds: float
    norm: float
    power: float
    def __init__(self, code: _Optional[_Union[WarningCode, str]] = ..., message: _Optional[str] = ..., query_index: _Optional[int] = ..., part: _Optional[str] = ..., track_id: _Optional[str] = ..., segment_index: _Optional[int] = ..., start_seconds: _Optional[float] = ..., end_seconds: _Optional[float] = ..., norm: _Optional[float] = ..., power: _Optional[float] = ...) -> None: ...

class SearchMixResponse(_message.Message):
    __slots__ = ("hits", "model_version", "candidates", "warnings")
    HITS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[_types_pb2.MixHit]
    model_version: str
    candidates: int
    warnings: _containers.RepeatedCompositeFieldContainer[QueryWarning]
    def __init__(self, hits: _Optional[_Iterable[_Union[_types_pb2.MixHit, _Mapping]]] = ..., model_version: _Optional[str] = ..., candidates: _Optional[int] = ..., warnings: _Optional[_Iterable[_Union[QueryWarning, _Mapping]]] = ...) -> None: ...

class SearchStemsRequest(_message.Message):
    __slots__ = ("query", "top_k", "exclude_track_ids", "mode", "filter")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_TRACK_IDS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    query: StemQuery
    top_k: int
    exclude_track_ids: _containers.RepeatedScalarFieldContainer[str]
    mode: _types_pb2.SearchMode
    filter: _types_pb2.SearchFilter
    def __init__(self, query: _Optional[_Union[StemQuery, _Mapping]] = ..., top_k: _Optional[int] = ..., exclude_track_ids: _Optional[_Iterable[str]] = ..., mode: _Optional[_Union[_types_pb2.SearchMode, str]] = ..., filter: _Optional[_Union[_types_pb2.SearchFilter, _Mapping]] = ...) -> None: ...

class SearchStemsResponse(_message.Message):
    __slots__ = ("hits", "model_version", "warnings")
    HITS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[_types_pb2.StemHit]
    model_version: str
    warnings: _containers.RepeatedCompositeFieldContainer[QueryWarning]
    def __init__(self, hits: _Optional[_Iterable[_Union[_types_pb2.StemHit, _Mapping]]] = ..., model_version: _Optional[str] = ..., warnings: _Optional[_Iterable[_Union[QueryWarning, _Mapping]]] = ...) -> None: ...

class GetCatalogStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetCatalogStatsResponse(_message.Message):
    __slots__ = ("stats", "model_version")
    STATS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    stats: _types_pb2.CatalogStats
    model_version: str
    def __init__(self, stats: _Optional[_Union[_types_pb2.CatalogStats, _Mapping]] = ..., model_version: _Optional[str] = ...) -> None: ...

class GetStemsRequest(_message.Message):
    __slots__ = ("segment", "encoding")
    SEGMENT_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    segment: IndexedSegment
    encoding: _types_pb2.StemEncoding
    def __init__(self, segment: _Optional[_Union[IndexedSegment, _Mapping]] = ..., encoding: _Optional[_Union[_types_pb2.StemEncoding, str]] = ...) -> None: ...

class GetStemsHeader(_message.Message):
    __slots__ = ("track_id", "segment_index", "start_seconds", "end_seconds", "separation")
    TRACK_ID_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_INDEX_FIELD_NUMBER: _ClassVar[int]
    START_SECONDS_FIELD_NUMBER: _ClassVar[int]
    END_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SEPARATION_FIELD_NUMBER: _ClassVar[int]
    track_id: str
    segment_index: int
    start_seconds: float
    end_seconds: float
    separation: _types_pb2.SeparationHeader
    def __init__(self, track_id: _Optional[str] = ..., segment_index: _Optional[int] = ..., start_seconds: _Optional[float] = ..., end_seconds: _Optional[float] = ..., separation: _Optional[_Union[_types_pb2.SeparationHeader, _Mapping]] = ...) -> None: ...

class GetStemsResponse(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: GetStemsHeader
    chunk: _types_pb2.StemChunk
    def __init__(self, header: _Optional[_Union[GetStemsHeader, _Mapping]] = ..., chunk: _Optional[_Union[_types_pb2.StemChunk, _Mapping]] = ...) -> None: ...

class GetTrackRequest(_message.Message):
    __slots__ = ("track_id",)
    TRACK_ID_FIELD_NUMBER: _ClassVar[int]
    track_id: str
    def __init__(self, track_id: _Optional[str] = ...) -> None: ...

class GetTrackResponse(_message.Message):
    __slots__ = ("track",)
    TRACK_FIELD_NUMBER: _ClassVar[int]
    track: _types_pb2.Track
    def __init__(self, track: _Optional[_Union[_types_pb2.Track, _Mapping]] = ...) -> None: ...

class ListTracksRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListTracksResponse(_message.Message):
    __slots__ = ("tracks", "next_page_token")
    TRACKS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    tracks: _containers.RepeatedCompositeFieldContainer[_types_pb2.Track]
    next_page_token: str
    def __init__(self, tracks: _Optional[_Iterable[_Union[_types_pb2.Track, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteTrackRequest(_message.Message):
    __slots__ = ("track_id",)
    TRACK_ID_FIELD_NUMBER: _ClassVar[int]
    track_id: str
    def __init__(self, track_id: _Optional[str] = ...) -> None: ...

class DeleteTrackResponse(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: str
    def __init__(self, version: _Optional[str] = ...) -> None: ...
