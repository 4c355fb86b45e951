from partsim.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class UpsertTrackRequest(_message.Message):
    __slots__ = ("track", "segments")
    TRACK_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    track: _types_pb2.Track
    segments: _containers.RepeatedCompositeFieldContainer[_types_pb2.SegmentEmbedding]
    def __init__(self, track: _Optional[_Union[_types_pb2.Track, _Mapping]] = ..., segments: _Optional[_Iterable[_Union[_types_pb2.SegmentEmbedding, _Mapping]]] = ...) -> None: ...

class UpsertTrackResponse(_message.Message):
    __slots__ = ("replaced", "replaced_version")
    REPLACED_FIELD_NUMBER: _ClassVar[int]
    REPLACED_VERSION_FIELD_NUMBER: _ClassVar[int]
    replaced: bool
    replaced_version: str
    def __init__(self, replaced: _Optional[bool] = ..., replaced_version: _Optional[str] = ...) -> None: ...

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

class GetSegmentRequest(_message.Message):
    __slots__ = ("track_id", "segment_index")
    TRACK_ID_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_INDEX_FIELD_NUMBER: _ClassVar[int]
    track_id: str
    segment_index: int
    def __init__(self, track_id: _Optional[str] = ..., segment_index: _Optional[int] = ...) -> None: ...

class GetSegmentResponse(_message.Message):
    __slots__ = ("track", "segment")
    TRACK_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_FIELD_NUMBER: _ClassVar[int]
    track: _types_pb2.Track
    segment: _types_pb2.SegmentEmbedding
    def __init__(self, track: _Optional[_Union[_types_pb2.Track, _Mapping]] = ..., segment: _Optional[_Union[_types_pb2.SegmentEmbedding, _Mapping]] = ...) -> None: ...

class PartQuery(_message.Message):
    __slots__ = ("part", "vector", "weight")
    PART_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    part: str
    vector: _containers.RepeatedScalarFieldContainer[float]
    weight: float
    def __init__(self, part: _Optional[str] = ..., vector: _Optional[_Iterable[float]] = ..., weight: _Optional[float] = ...) -> None: ...

class SearchMixRequest(_message.Message):
    __slots__ = ("parts", "top_k", "exclude_track_ids", "mode", "filter")
    PARTS_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_TRACK_IDS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    parts: _containers.RepeatedCompositeFieldContainer[PartQuery]
    top_k: int
    exclude_track_ids: _containers.RepeatedScalarFieldContainer[str]
    mode: _types_pb2.SearchMode
    filter: _types_pb2.SearchFilter
    def __init__(self, parts: _Optional[_Iterable[_Union[PartQuery, _Mapping]]] = ..., top_k: _Optional[int] = ..., exclude_track_ids: _Optional[_Iterable[str]] = ..., mode: _Optional[_Union[_types_pb2.SearchMode, str]] = ..., filter: _Optional[_Union[_types_pb2.SearchFilter, _Mapping]] = ...) -> None: ...

class SearchMixResponse(_message.Message):
    __slots__ = ("hits", "candidates")
    HITS_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[_types_pb2.MixHit]
    candidates: int
    def __init__(self, hits: _Optional[_Iterable[_Union[_types_pb2.MixHit, _Mapping]]] = ..., candidates: _Optional[int] = ...) -> None: ...

class SearchStemsRequest(_message.Message):
    __slots__ = ("query", "top_k", "exclude_track_ids", "mode", "filter")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_TRACK_IDS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    query: PartQuery
    top_k: int
    exclude_track_ids: _containers.RepeatedScalarFieldContainer[str]
    mode: _types_pb2.SearchMode
    filter: _types_pb2.SearchFilter
    def __init__(self, query: _Optional[_Union[PartQuery, _Mapping]] = ..., top_k: _Optional[int] = ..., exclude_track_ids: _Optional[_Iterable[str]] = ..., mode: _Optional[_Union[_types_pb2.SearchMode, str]] = ..., filter: _Optional[_Union[_types_pb2.SearchFilter, _Mapping]] = ...) -> None: ...

class SearchStemsResponse(_message.Message):
    __slots__ = ("hits",)
    HITS_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[_types_pb2.StemHit]
    def __init__(self, hits: _Optional[_Iterable[_Union[_types_pb2.StemHit, _Mapping]]] = ...) -> None: ...

class GetStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStatsResponse(_message.Message):
    __slots__ = ("tracks", "segments", "present_segments_by_part", "backend")
    class PresentSegmentsByPartEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    TRACKS_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    PRESENT_SEGMENTS_BY_PART_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    tracks: int
    segments: int
    present_segments_by_part: _containers.ScalarMap[str, int]
    backend: str
    def __init__(self, tracks: _Optional[int] = ..., segments: _Optional[int] = ..., present_segments_by_part: _Optional[_Mapping[str, int]] = ..., backend: _Optional[str] = ...) -> None: ...
