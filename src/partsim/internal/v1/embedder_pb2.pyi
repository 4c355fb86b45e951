from partsim.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EmbedRequest(_message.Message):
    __slots__ = ("audio", "segment_seconds", "hop_seconds")
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    HOP_SECONDS_FIELD_NUMBER: _ClassVar[int]
    audio: _types_pb2.Audio
    segment_seconds: float
    hop_seconds: float
    def __init__(self, audio: _Optional[_Union[_types_pb2.Audio, _Mapping]] = ..., segment_seconds: _Optional[float] = ..., hop_seconds: _Optional[float] = ...) -> None: ...

class EmbedResponse(_message.Message):
    __slots__ = ("model", "segments", "duration_seconds")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    model: _types_pb2.ModelInfo
    segments: _containers.RepeatedCompositeFieldContainer[_types_pb2.SegmentEmbedding]
    duration_seconds: float
    def __init__(self, model: _Optional[_Union[_types_pb2.ModelInfo, _Mapping]] = ..., segments: _Optional[_Iterable[_Union[_types_pb2.SegmentEmbedding, _Mapping]]] = ..., duration_seconds: _Optional[float] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetModelResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: _types_pb2.ModelInfo
    def __init__(self, model: _Optional[_Union[_types_pb2.ModelInfo, _Mapping]] = ...) -> None: ...
