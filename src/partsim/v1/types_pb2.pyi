from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SampleFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SAMPLE_FORMAT_UNSPECIFIED: _ClassVar[SampleFormat]
    SAMPLE_FORMAT_FLOAT32LE: _ClassVar[SampleFormat]
    SAMPLE_FORMAT_INT16LE: _ClassVar[SampleFormat]

class SearchMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEARCH_MODE_UNSPECIFIED: _ClassVar[SearchMode]
    SEARCH_MODE_EXACT: _ClassVar[SearchMode]
    SEARCH_MODE_APPROXIMATE: _ClassVar[SearchMode]

class StemEncoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STEM_ENCODING_UNSPECIFIED: _ClassVar[StemEncoding]
    STEM_ENCODING_FLOAT32LE: _ClassVar[StemEncoding]
    STEM_ENCODING_FLAC: _ClassVar[StemEncoding]
SAMPLE_FORMAT_UNSPECIFIED: SampleFormat
SAMPLE_FORMAT_FLOAT32LE: SampleFormat
SAMPLE_FORMAT_INT16LE: SampleFormat
SEARCH_MODE_UNSPECIFIED: SearchMode
SEARCH_MODE_EXACT: SearchMode
SEARCH_MODE_APPROXIMATE: SearchMode
STEM_ENCODING_UNSPECIFIED: StemEncoding
STEM_ENCODING_FLOAT32LE: StemEncoding
STEM_ENCODING_FLAC: StemEncoding

class Audio(_message.Message):
    __slots__ = ("encoded", "pcm")
    ENCODED_FIELD_NUMBER: _ClassVar[int]
    PCM_FIELD_NUMBER: _ClassVar[int]
    encoded: bytes
    pcm: RawPcm
    def __init__(self, encoded: _Optional[bytes] = ..., pcm: _Optional[_Union[RawPcm, _Mapping]] = ...) -> None: ...

class RawPcm(_message.Message):
    __slots__ = ("data", "sample_rate", "channels", "format")
    DATA_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    sample_rate: int
    channels: int
    format: SampleFormat
    def __init__(self, data: _Optional[bytes] = ..., sample_rate: _Optional[int] = ..., channels: _Optional[int] = ..., format: _Optional[_Union[SampleFormat, str]] = ...) -> None: ...

class PartVector(_message.Message):
    __slots__ = ("part", "vector", "norm", "present", "power")
    PART_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    NORM_FIELD_NUMBER: _ClassVar[int]
    PRESENT_FIELD_NUMBER: _ClassVar[int]
    POWER_FIELD_NUMBER: _ClassVar[int]
    part: str
    vector: _containers.RepeatedScalarFieldContainer[float]
    norm: float
    present: bool
    power: float
    def __init__(self, part: _Optional[str] = ..., vector: _Optional[_Iterable[float]] = ..., norm: _Optional[float] = ..., present: _Optional[bool] = ..., power: _Optional[float] = ...) -> None: ...

class SegmentEmbedding(_message.Message):
    __slots__ = ("index", "start_seconds", "end_seconds", "parts")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    START_SECONDS_FIELD_NUMBER: _ClassVar[int]
    END_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PARTS_FIELD_NUMBER: _ClassVar[int]
    index: int
    start_seconds: float
    end_seconds: float
    parts: _containers.RepeatedCompositeFieldContainer[PartVector]
    def __init__(self, index: _Optional[int] = ..., start_seconds: _Optional[float] = ..., end_seconds: _Optional[float] = ..., parts: _Optional[_Iterable[_Union[PartVector, _Mapping]]] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("model_version", "parts", "subspace_dim", "model_segment_seconds", "sample_rate")
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    PARTS_FIELD_NUMBER: _ClassVar[int]
    SUBSPACE_DIM_FIELD_NUMBER: _ClassVar[int]
    MODEL_SEGMENT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    model_version: str
    parts: _containers.RepeatedScalarFieldContainer[str]
    subspace_dim: int
    model_segment_seconds: float
    sample_rate: int
    def __init__(self, model_version: _Optional[str] = ..., parts: _Optional[_Iterable[str]] = ..., subspace_dim: _Optional[int] = ..., model_segment_seconds: _Optional[float] = ..., sample_rate: _Optional[int] = ...) -> None: ...

class TrackMetadata(_message.Message):
    __slots__ = ("title", "artist", "tags", "bpm", "key")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TITLE_FIELD_NUMBER: _ClassVar[int]
    ARTIST_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    BPM_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    title: str
    artist: str
    tags: _containers.ScalarMap[str, str]
    bpm: float
    key: str
    def __init__(self, title: _Optional[str] = ..., artist: _Optional[str] = ..., tags: _Optional[_Mapping[str, str]] = ..., bpm: _Optional[float] = ..., key: _Optional[str] = ...) -> None: ...

class Track(_message.Message):
    __slots__ = ("track_id", "metadata", "num_segments", "duration_seconds", "segment_seconds", "model_version", "indexed_at", "version")
    TRACK_ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    NUM_SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    INDEXED_AT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    track_id: str
    metadata: TrackMetadata
    num_segments: int
    duration_seconds: float
    segment_seconds: float
    model_version: str
    indexed_at: float
    version: str
    def __init__(self, track_id: _Optional[str] = ..., metadata: _Optional[_Union[TrackMetadata, _Mapping]] = ..., num_segments: _Optional[int] = ..., duration_seconds: _Optional[float] = ..., segment_seconds: _Optional[float] = ..., model_version: _Optional[str] = ..., indexed_at: _Optional[float] = ..., version: _Optional[str] = ...) -> None: ...

class TagMatch(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: str
    def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class SearchFilter(_message.Message):
    __slots__ = ("tags_any", "tags_all", "bpm_min", "bpm_max", "keys", "duration_min_seconds", "duration_max_seconds", "indexed_after")
    TAGS_ANY_FIELD_NUMBER: _ClassVar[int]
    TAGS_ALL_FIELD_NUMBER: _ClassVar[int]
    BPM_MIN_FIELD_NUMBER: _ClassVar[int]
    BPM_MAX_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    DURATION_MIN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DURATION_MAX_SECONDS_FIELD_NUMBER: _ClassVar[int]
    INDEXED_AFTER_FIELD_NUMBER: _ClassVar[int]
    tags_any: _containers.RepeatedCompositeFieldContainer[TagMatch]
    tags_all: _containers.RepeatedCompositeFieldContainer[TagMatch]
    bpm_min: float
    bpm_max: float
    keys: _containers.RepeatedScalarFieldContainer[str]
    duration_min_seconds: float
    duration_max_seconds: float
    indexed_after: float
    def __init__(self, tags_any: _Optional[_Iterable[_Union[TagMatch, _Mapping]]] = ..., tags_all: _Optional[_Iterable[_Union[TagMatch, _Mapping]]] = ..., bpm_min: _Optional[float] = ..., bpm_max: _Optional[float] = ..., keys: _Optional[_Iterable[str]] = ..., duration_min_seconds: _Optional[float] = ..., duration_max_seconds: _Optional[float] = ..., indexed_after: _Optional[float] = ...) -> None: ...

class PartDistance(_message.Message):
    __slots__ = ("part", "distance")
    PART_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    part: str
    distance: float
    def __init__(self, part: _Optional[str] = ..., distance: _Optional[float] = ...) -> None: ...

class SegmentRef(_message.Message):
    __slots__ = ("index", "start_seconds", "end_seconds")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    START_SECONDS_FIELD_NUMBER: _ClassVar[int]
    END_SECONDS_FIELD_NUMBER: _ClassVar[int]
    index: int
    start_seconds: float
    end_seconds: float
    def __init__(self, index: _Optional[int] = ..., start_seconds: _Optional[float] = ..., end_seconds: _Optional[float] = ...) -> None: ...

class MixHit(_message.Message):
    __slots__ = ("track", "distance", "best_segment", "part_distances")
    TRACK_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    BEST_SEGMENT_FIELD_NUMBER: _ClassVar[int]
    PART_DISTANCES_FIELD_NUMBER: _ClassVar[int]
    track: Track
    distance: float
    best_segment: SegmentRef
    part_distances: _containers.RepeatedCompositeFieldContainer[PartDistance]
    def __init__(self, track: _Optional[_Union[Track, _Mapping]] = ..., distance: _Optional[float] = ..., best_segment: _Optional[_Union[SegmentRef, _Mapping]] = ..., part_distances: _Optional[_Iterable[_Union[PartDistance, _Mapping]]] = ...) -> None: ...

class StemHit(_message.Message):
    __slots__ = ("track", "segment", "distance")
    TRACK_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    track: Track
    segment: SegmentRef
    distance: float
    def __init__(self, track: _Optional[_Union[Track, _Mapping]] = ..., segment: _Optional[_Union[SegmentRef, _Mapping]] = ..., distance: _Optional[float] = ...) -> None: ...

class CatalogStats(_message.Message):
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

class StemInfo(_message.Message):
    __slots__ = ("name", "part")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PART_FIELD_NUMBER: _ClassVar[int]
    name: str
    part: str
    def __init__(self, name: _Optional[str] = ..., part: _Optional[str] = ...) -> None: ...

class SeparationHeader(_message.Message):
    __slots__ = ("model", "stems", "sample_rate", "channels", "total_frames", "encoding", "start_seconds", "end_seconds", "shifts")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STEMS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FRAMES_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    START_SECONDS_FIELD_NUMBER: _ClassVar[int]
    END_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SHIFTS_FIELD_NUMBER: _ClassVar[int]
    model: str
    stems: _containers.RepeatedCompositeFieldContainer[StemInfo]
    sample_rate: int
    channels: int
    total_frames: int
    encoding: StemEncoding
    start_seconds: float
    end_seconds: float
    shifts: int
    def __init__(self, model: _Optional[str] = ..., stems: _Optional[_Iterable[_Union[StemInfo, _Mapping]]] = ..., sample_rate: _Optional[int] = ..., channels: _Optional[int] = ..., total_frames: _Optional[int] = ..., encoding: _Optional[_Union[StemEncoding, str]] = ..., start_seconds: _Optional[float] = ..., end_seconds: _Optional[float] = ..., shifts: _Optional[int] = ...) -> None: ...

class StemChunk(_message.Message):
    __slots__ = ("stem", "offset", "data")
    STEM_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    stem: int
    offset: int
    data: bytes
    def __init__(self, stem: _Optional[int] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...
