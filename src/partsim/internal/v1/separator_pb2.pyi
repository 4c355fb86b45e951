from partsim.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

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
    encoding: _types_pb2.StemEncoding
    shifts: int
    def __init__(self, audio: _Optional[_Union[_types_pb2.Audio, _Mapping]] = ..., start_seconds: _Optional[float] = ..., end_seconds: _Optional[float] = ..., encoding: _Optional[_Union[_types_pb2.StemEncoding, str]] = ..., shifts: _Optional[int] = ...) -> None: ...

class SeparateResponse(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: _types_pb2.SeparationHeader
    chunk: _types_pb2.StemChunk
    def __init__(self, header: _Optional[_Union[_types_pb2.SeparationHeader, _Mapping]] = ..., chunk: _Optional[_Union[_types_pb2.StemChunk, _Mapping]] = ...) -> None: ...

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
