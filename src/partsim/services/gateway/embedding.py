"""Per-segment part embeddings of audio the gateway receives, through the embedding cache.

Every embedding the gateway makes carries, per segment and part, the mean power of the audio the
vector came from: the mix at feature level; at signal level (thesis Ch. 3) the part's own stem,
which the separator produces and the embedder embeds on its own. Cache keys name the model
version, the level and :data:`CACHE_FORMAT`, so a new model or a new entry format never reads an
old entry.
"""

from __future__ import annotations

import hashlib
import io
import math

import numpy as np
import soundfile as sf

from partsim.errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from partsim.internal.v1 import embedder_pb2, separator_pb2
from partsim.v1 import gateway_pb2, types_pb2

from ..audio import decode_audio_message
from .backends import Backends
from .cache import EmbeddingCache, cache_key
from .queries import segment_powers

# Embedding cache entries carry each part's audio power since this version of the key.
CACHE_FORMAT = "power1"

MODES = (gateway_pb2.EMBED_MODE_UNSPECIFIED, gateway_pb2.EMBED_MODE_FEATURE, gateway_pb2.EMBED_MODE_SIGNAL)


class Embeddings:
    """``embed(audio, segment, hop, mode)``: validated, cached, with each part's audio power set."""

    def __init__(self, backends: Backends, cache: EmbeddingCache, segment_seconds: float, max_upload_bytes: int):
        self.backends = backends
        self.cache = cache
        self.segment_seconds = segment_seconds
        self.max_upload_bytes = max_upload_bytes

    def embed(
        self, audio: types_pb2.Audio, segment: float, hop: float, mode: int = gateway_pb2.EMBED_MODE_FEATURE
    ) -> embedder_pb2.EmbedResponse:
        """Segments of ``segment`` seconds every ``hop`` seconds (0: the catalog's segment length)."""
        model = self.backends.require_model()
        signal_level = mode == gateway_pb2.EMBED_MODE_SIGNAL
        if signal_level:
            self.backends.require_separator("the signal-level mode")
        if not (math.isfinite(segment) and math.isfinite(hop)) or segment < 0 or hop < 0:
            raise InvalidArgument(
                f"segment_seconds and hop_seconds must be positive (or 0: the defaults), got {segment} and {hop}"
            )
        segment = segment or self.segment_seconds
        hop = hop or segment
        if mode not in MODES:
            raise InvalidArgument(f"unknown embed mode {mode}")
        which = audio.WhichOneof("source")
        if which is None:
            raise InvalidArgument("audio is empty: set audio.encoded or audio.pcm")
        size = len(audio.encoded) if which == "encoded" else len(audio.pcm.data)
        if size == 0:
            raise InvalidArgument("audio is empty (0 bytes)")
        if size > self.max_upload_bytes:
            raise ResourceExhausted(f"audio of {size} bytes exceeds the limit of {self.max_upload_bytes} bytes")
        digest = hashlib.sha256(audio.SerializeToString(deterministic=True)).hexdigest()
        key = cache_key(
            f"{model.model_version}{'+signal' if signal_level else ''}+{CACHE_FORMAT}", digest, segment, hop
        )
        hit = self.cache.get(key)
        if hit is not None:
            return embedder_pb2.EmbedResponse.FromString(hit)
        if signal_level:
            resp = self._embed_signal(model, audio, segment, hop)
        else:
            resp = self.backends.embed(audio, segment, hop)
            self._add_power(resp, audio)
        if resp.model.model_version != model.model_version:
            raise FailedPrecondition(
                f"the embedder now serves model {resp.model.model_version}, the gateway "
                f"started with {model.model_version}; restart the gateway"
            )
        self.cache.put(key, resp.SerializeToString())
        return resp

    def _add_power(
        self, resp: embedder_pb2.EmbedResponse, audio: types_pb2.Audio, parts: set[str] | None = None
    ) -> None:
        """Set PartVector.power of ``parts`` (default all) in every segment, from the audio embedded."""
        samples, rate = self._decode(audio, resp)
        for seg, pw in zip(resp.segments, segment_powers(samples, rate, resp.segments)):
            for pv in seg.parts:
                if parts is None or pv.part in parts:
                    pv.power = pw

    def _decode(self, audio: types_pb2.Audio, resp: embedder_pb2.EmbedResponse) -> tuple[np.ndarray, int]:
        """The audio the embedder accepted, mono at its own rate (power needs no resampling), and that rate."""
        rate = self.backends.require_model().sample_rate
        if audio.WhichOneof("source") == "pcm":
            rate = audio.pcm.sample_rate or rate
        else:
            try:
                rate = int(sf.info(io.BytesIO(audio.encoded)).samplerate)
            except Exception:  # noqa: BLE001 - unreadable header: decode (and resample) as the embedder did
                pass
        samples = decode_audio_message(audio, rate, mono=True, max_seconds=resp.duration_seconds + 1.0)
        return samples, rate

    def _embed_signal(
        self, model: types_pb2.ModelInfo, audio: types_pb2.Audio, segment: float, hop: float
    ) -> embedder_pb2.EmbedResponse:
        """Separate, embed each part's own stem, keep that stem's own subspace (thesis Ch. 3 path).

        Parts the separator does not produce keep the subspace (and the power) computed from the mix.
        """
        header, stems = self.backends.separate(
            separator_pb2.SeparateRequest(audio=audio, encoding=types_pb2.STEM_ENCODING_FLOAT32LE)
        )
        mix = self.backends.embed(audio, segment, hop)
        self._add_power(mix, audio)
        per_part = {}
        for info, data in zip(header.stems, stems):
            if info.part in model.parts:
                pcm = types_pb2.RawPcm(
                    data=data,
                    sample_rate=header.sample_rate,
                    channels=header.channels,
                    format=types_pb2.SAMPLE_FORMAT_FLOAT32LE,
                )
                stem = types_pb2.Audio(pcm=pcm)
                per_part[info.part] = self.backends.embed(stem, segment, hop)
                self._add_power(per_part[info.part], stem, {info.part})
        out = embedder_pb2.EmbedResponse(model=mix.model, duration_seconds=mix.duration_seconds)
        for k, seg in enumerate(mix.segments):
            s = out.segments.add(index=seg.index, start_seconds=seg.start_seconds, end_seconds=seg.end_seconds)
            for j, part in enumerate(model.parts):
                src = per_part.get(part)
                pv = src.segments[k].parts[j] if src is not None and k < len(src.segments) else seg.parts[j]
                s.parts.add().CopyFrom(pv)
        return out
