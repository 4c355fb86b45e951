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
SAMPLE_FORMAT_UNSPECIFIED: SampleFormat
SAMPLE_FORMAT_FLOAT32LE: SampleFormat
SAMPLE_FORMAT_INT16LE: SampleFormat

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
    __slots__ = ("title", "artist", "tags")
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
    title: str
    artist: str
    tags: _containers.ScalarMap[str, str]
    def __init__(self, title: _Optional[str] = ..., artist: _Optional[str] = ..., tags: _Optional[_Mapping[str, str]] = ...) -> None: ...
