from partsim.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StemEncoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STEM_ENCODING_UNSPECIFIED: _ClassVar[StemEncoding]
    STEM_ENCODING_FLOAT32LE: _ClassVar[StemEncoding]
    STEM_ENCODING_FLAC: _ClassVar[StemEncoding]
STEM_ENCODING_UNSPECIFIED: StemEncoding
STEM_ENCODING_FLOAT32LE: StemEncoding
STEM_ENCODING_FLAC: StemEncoding

class SeparateRequest(_message.Message):
    __slots__ = ("audio", "start_seconds", "end_seconds", "encoding", "shifts")
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    START_SECONDS_FIELD_NUMBER: _ClassVar[int]
    END_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    SHIFTS_FIELD_NUMBER: _ClassVar[int]
    audio: _types_pb2.Audio
    start_seconds: float
    end_seconds: float
    encoding: StemEncoding
    shifts: int
    def __init__(self, audio: _Optional[_Union[_types_pb2.Audio, _Mapping]] = ..., start_seconds: _Optional[float] = ..., end_seconds: _Optional[float] = ..., encoding: _Optional[_Union[StemEncoding, str]] = ..., shifts: _Optional[int] = ...) -> None: ...

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

class SeparateResponse(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: SeparationHeader
    chunk: StemChunk
    def __init__(self, header: _Optional[_Union[SeparationHeader, _Mapping]] = ..., chunk: _Optional[_Union[StemChunk, _Mapping]] = ...) -> None: ...

class GetSeparatorModelRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SeparatorModel(_message.Message):
    __slots__ = ("name", "sources", "sample_rate", "channels", "parts", "segment_seconds", "overlap", "default_shifts", "max_shifts", "max_audio_seconds")
    class PartsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    PARTS_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    OVERLAP_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_SHIFTS_FIELD_NUMBER: _ClassVar[int]
    MAX_SHIFTS_FIELD_NUMBER: _ClassVar[int]
    MAX_AUDIO_SECONDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    sources: _containers.RepeatedScalarFieldContainer[str]
    sample_rate: int
    channels: int
    parts: _containers.ScalarMap[str, str]
    segment_seconds: float
    overlap: float
    default_shifts: int
    max_shifts: int
    max_audio_seconds: float
    def __init__(self, name: _Optional[str] = ..., sources: _Optional[_Iterable[str]] = ..., sample_rate: _Optional[int] = ..., channels: _Optional[int] = ..., parts: _Optional[_Mapping[str, str]] = ..., segment_seconds: _Optional[float] = ..., overlap: _Optional[float] = ..., default_shifts: _Optional[int] = ..., max_shifts: _Optional[int] = ..., max_audio_seconds: _Optional[float] = ...) -> None: ...

class GetSeparatorModelResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: SeparatorModel
    def __init__(self, model: _Optional[_Union[SeparatorModel, _Mapping]] = ...) -> None: ...
