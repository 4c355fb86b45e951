"""The gateway: the public ``partsim.v1.PartsimService``.

It validates, turns each stem query into embeddings (from the catalog, from uploaded audio via
the embedder and the cache, or given), averages them per part (eq. 6.1), and asks the searcher
for the retrieval function (eq. 6.2, min over a song's segments). Ingestion runs as jobs from
a queue that survives restarts (Redis Stream, or SQLite in the data folder).

Query embeddings are normalised to unit length before the per-part mean, so a loud and a quiet
clip of the same sound weigh the same and catalog segments and uploaded audio are treated
alike.

Presence and silence: every embedding the gateway makes carries, per segment and part, the mean
power of the audio the vector came from (the mix; at signal level the part's own stem), and the
catalog keeps it with the raw vectors. A stem query on a segment whose audio is silent (power <
``SILENCE_POWER``) is refused (INVALID_ARGUMENT). Where the model judges the part absent but the
audio plays, the query embedding is the part's raw subspace vector, normalised like any other,
and the response carries a ``QueryWarning`` (``WARNING_CODE_PART_JUDGED_ABSENT``).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import socket
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import grpc
import numpy as np
import soundfile as sf
from prometheus_client import Counter, Gauge, Histogram

from partsim.errors import (FailedPrecondition, InvalidArgument, NotFound, PermissionDenied,
                            ResourceExhausted, Unavailable)
from partsim.model.features import SILENCE_POWER, mean_power
from partsim.v1 import (embedder_pb2, embedder_pb2_grpc, gateway_pb2, gateway_pb2_grpc, searcher_pb2,
                        searcher_pb2_grpc, separator_pb2, separator_pb2_grpc, types_pb2)

from ..audio import decode_audio_message
from ..config import load
from ..runtime import ServiceRuntime, run_until_signalled
from ..status import error_for
from ..tracks import check_track_id
from ..separator.client import collect
from .audio_store import AudioStore
from .cache import cache_key, make_cache
from .config import DEFAULT_TOP_K, MAX_TOP_K, PREFIX, GatewayConfig
from .jobs import IngestItem, make_job_queue

log = logging.getLogger("partsim.gateway")

SERVICE = "partsim.v1.PartsimService"


def service_config(services: list[str], lb_policy: str = "round_robin") -> str:
    """gRPC service config: balance over every address the target resolves to (``round_robin``
    spreads calls over the pods behind a headless Service), and retry UNAVAILABLE (all these calls
    are idempotent) with backoff."""
    return json.dumps({
        "loadBalancingConfig": [{lb_policy: {}}],
        "methodConfig": [{
            "name": [{"service": s} for s in services],
            "retryPolicy": {"maxAttempts": 4, "initialBackoff": "0.1s", "maxBackoff": "2s",
                            "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]},
        }]})


def channel(address: str, max_message_bytes: int, services: list[str], lb_policy: str = "round_robin") -> grpc.Channel:
    return grpc.insecure_channel(address, options=[
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.enable_retries", 1),
        ("grpc.service_config", service_config(services, lb_policy)),
    ])


def _unit(v: np.ndarray) -> np.ndarray | None:
    n = float(np.linalg.norm(v))
    return v / n if n > 1e-12 and math.isfinite(n) else None


# Embedding cache entries carry each part's audio power since this version of the key.
CACHE_FORMAT = "power1"


def segment_powers(samples: np.ndarray, sr: int, segments) -> list[float]:
    """Mean power of ``samples`` (mono, at ``sr``) over each segment's span, as the embedder cut it."""
    out = []
    for seg in segments:
        a, b = int(round(seg.start_seconds * sr)), int(round(seg.end_seconds * sr))
        out.append(float(mean_power(samples[a:b])) if b > a else 0.0)
    return out


def _span(track_id: str, index: int, start: float, end: float) -> str:
    where = f"track {track_id}" if track_id else "the clip"
    return f"segment {index} ({start:g}-{end:g} s) of {where}"


def absent_warning(query_index: int, part: str, track_id: str, seg, pv) -> gateway_pb2.QueryWarning:
    """WARNING_CODE_PART_JUDGED_ABSENT for one query segment (``seg``: SegmentEmbedding, ``pv``: its part)."""
    span = _span(track_id, seg.index, seg.start_seconds, seg.end_seconds)
    msg = (f"query {query_index}: the model judges the {part} part absent in {span} (subspace norm {pv.norm:.3g}), "
           f"but the audio there is not silent (mean power {pv.power:.2e} >= {SILENCE_POWER:g}); the query uses "
           f"the {part} subspace vector as it is, normalised, so the results may be weak")
    return gateway_pb2.QueryWarning(
        code=gateway_pb2.WARNING_CODE_PART_JUDGED_ABSENT, message=msg, query_index=query_index, part=part,
        track_id=track_id, segment_index=seg.index, start_seconds=seg.start_seconds, end_seconds=seg.end_seconds,
        norm=pv.norm, power=pv.power)


class Gateway(gateway_pb2_grpc.PartsimServiceServicer):
    def __init__(self, cfg: GatewayConfig, runtime: ServiceRuntime):
        self.cfg = cfg
        self.rt = runtime
        msg = cfg.max_upload_bytes + (4 << 20)
        self.embedder = embedder_pb2_grpc.EmbedderServiceStub(
            channel(cfg.embedder, msg, ["partsim.v1.EmbedderService"], cfg.lb_policy))
        self.searcher = searcher_pb2_grpc.SearcherServiceStub(
            channel(cfg.searcher, msg, ["partsim.v1.SearcherService"], cfg.lb_policy))
        self.separator = (separator_pb2_grpc.SeparatorServiceStub(
            channel(cfg.separator, msg, ["partsim.v1.SeparatorService"], cfg.lb_policy)) if cfg.separator else None)
        folder = cfg.audio_folder()
        self.audio = AudioStore(folder) if folder is not None else None
        self.cache = make_cache(cfg.redis_url or None, max_bytes=int(cfg.cache_mb * (1 << 20)),
                                registry=runtime.registry)
        self.jobs = make_job_queue(cfg.redis_url or None, Path(cfg.data_dir) if cfg.data_dir else None,
                                   consumer=cfg.consumer or socket.gethostname())
        self.model: types_pb2.ModelInfo | None = None
        self.separator_model = ""
        self.ready = threading.Event()
        self.stopping = threading.Event()
        r = runtime.registry
        self.search_seconds = Histogram("partsim_gateway_search_seconds", "SearchMix/SearchStems latency.",
                                        ["rpc", "mode"], registry=r,
                                        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.query_embeddings = Histogram("partsim_gateway_query_embeddings", "Query embeddings per search.",
                                          buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=r)
        self.query_warnings = Counter("partsim_gateway_query_warnings", "Warnings in search responses, by code "
                                      "(one per query segment concerned).", ["code"], registry=r)
        for code in gateway_pb2.WarningCode.keys()[1:]:
            self.query_warnings.labels(code)
        for rpc in ("SearchMix", "SearchStems"):  # export zeros from the start
            for mode in searcher_pb2.SearchMode.keys():
                self.search_seconds.labels(rpc, mode)
        self.ingested = Counter("partsim_ingest_items", "Ingest job items this replica finished, by result "
                                "(indexed or failed).", ["result"], registry=r)
        self.ingest_retries = Counter("partsim_ingest_retries", "Ingest attempts retried after a backend outage.",
                                      registry=r)
        self.ingest_seconds = Histogram("partsim_ingest_item_seconds", "Time to index one ingest item (retries "
                                        "included).", registry=r, buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300))
        for result in ("indexed", "failed"):
            self.ingested.labels(result)
        Gauge("partsim_ingest_queue_depth", "Ingest items waiting.", registry=r).set_function(self._depth)
        Gauge("partsim_ingest_queue_lag_seconds", "Age of the oldest waiting ingest item.",
              registry=r).set_function(self._lag)
        self._workers: list[threading.Thread] = []

    # ------------------------------------------------------------------------------------------
    # lifecycle
    def _depth(self) -> float:
        try:
            return float(self.jobs.depth())
        except Exception:  # noqa: BLE001 - a metric must not raise
            return float("nan")

    def _lag(self) -> float:
        try:
            return float(self.jobs.lag_seconds())
        except Exception:  # noqa: BLE001
            return float("nan")

    def connect(self, timeout: float | None = None) -> bool:
        """Wait until the embedder, searcher (and separator, if any) answer; then serve and start the ingest workers."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.stopping.is_set():
            try:
                self.model = self.embedder.GetModel(embedder_pb2.GetModelRequest(), timeout=5).model
                self.searcher.GetStats(searcher_pb2.GetStatsRequest(), timeout=5)
                if self.separator is not None:
                    self.separator_model = self.separator.GetModel(
                        separator_pb2.GetSeparatorModelRequest(), timeout=5).model.name
                break
            except grpc.RpcError as exc:
                log.info("waiting for backends: %s", exc.details() if hasattr(exc, "details") else exc)
                if deadline is not None and time.monotonic() > deadline:
                    return False
                self.stopping.wait(1.0)
        if self.stopping.is_set():
            return False
        for i in range(self.cfg.ingest_workers):
            t = threading.Thread(target=self.jobs.work, args=(self._ingest_item, self.stopping),
                                 name=f"ingest-{i}", daemon=True)
            t.start()
            self._workers.append(t)
        self.ready.set()
        self.rt.set_serving(True)
        log.info("gateway ready: model %s, parts %s", self.model.model_version, list(self.model.parts))
        return True

    def close(self) -> None:
        self.stopping.set()
        for t in self._workers:
            t.join(timeout=30)
        self.jobs.close()

    def _require_ready(self) -> types_pb2.ModelInfo:
        if not self.ready.is_set() or self.model is None:
            raise Unavailable("the gateway is starting: the embedder or searcher is not reachable yet")
        return self.model

    # ------------------------------------------------------------------------------------------
    # embedding (with the cache)
    def _embed(self, audio: types_pb2.Audio, segment: float, hop: float,
               mode: int = gateway_pb2.EMBED_MODE_FEATURE) -> embedder_pb2.EmbedResponse:
        model = self._require_ready()
        signal_level = mode == gateway_pb2.EMBED_MODE_SIGNAL
        if signal_level:
            self._require_separator("the signal-level mode")
        if not (math.isfinite(segment) and math.isfinite(hop)) or segment < 0 or hop < 0:
            raise InvalidArgument(f"segment_seconds and hop_seconds must be positive (or 0: the defaults), "
                                  f"got {segment} and {hop}")
        segment = segment or self.cfg.segment_seconds  # 0: the catalog's segment length
        hop = hop or segment
        if mode not in (gateway_pb2.EMBED_MODE_UNSPECIFIED, gateway_pb2.EMBED_MODE_FEATURE, gateway_pb2.EMBED_MODE_SIGNAL):
            raise InvalidArgument(f"unknown embed mode {mode}")
        which = audio.WhichOneof("source")
        if which is None:
            raise InvalidArgument("audio is empty: set audio.encoded or audio.pcm")
        size = len(audio.encoded) if which == "encoded" else len(audio.pcm.data)
        if size == 0:
            raise InvalidArgument("audio is empty (0 bytes)")
        if size > self.cfg.max_upload_bytes:
            raise ResourceExhausted(f"audio of {size} bytes exceeds the limit of {self.cfg.max_upload_bytes} bytes")
        digest = hashlib.sha256(audio.SerializeToString(deterministic=True)).hexdigest()
        key = cache_key(f"{model.model_version}{'+signal' if signal_level else ''}+{CACHE_FORMAT}", digest,
                        segment, hop)
        hit = self.cache.get(key)
        if hit is not None:
            return embedder_pb2.EmbedResponse.FromString(hit)
        if signal_level:
            resp = self._embed_signal(audio, segment, hop)
        else:
            resp = self.embedder.Embed(embedder_pb2.EmbedRequest(audio=audio, segment_seconds=segment,
                                                                 hop_seconds=hop), timeout=self.cfg.deadline_seconds)
            self._add_power(resp, *self._decode(audio, resp))
        if resp.model.model_version != model.model_version:
            raise FailedPrecondition(f"the embedder now serves model {resp.model.model_version}, the gateway "
                                     f"started with {model.model_version}; restart the gateway")
        self.cache.put(key, resp.SerializeToString())
        return resp

    def _decode(self, audio: types_pb2.Audio, resp: embedder_pb2.EmbedResponse) -> tuple[np.ndarray, int]:
        """The audio the embedder accepted, mono at its own rate (power needs no resampling), and that rate."""
        model = self._require_ready()
        rate = model.sample_rate
        if audio.WhichOneof("source") == "pcm":
            rate = audio.pcm.sample_rate or rate
        else:
            try:
                rate = int(sf.info(io.BytesIO(audio.encoded)).samplerate)
            except Exception:  # noqa: BLE001 - unreadable header: decode (and resample) as the embedder did
                pass
        samples = decode_audio_message(audio, rate, mono=True, max_seconds=resp.duration_seconds + 1.0)
        return samples, rate

    def _add_power(self, resp: embedder_pb2.EmbedResponse, samples: np.ndarray, rate: int, parts=None) -> None:
        """Set PartVector.power of ``parts`` (default all) in every segment from ``samples`` at ``rate``."""
        for seg, pw in zip(resp.segments, segment_powers(samples, rate, resp.segments)):
            for pv in seg.parts:
                if parts is None or pv.part in parts:
                    pv.power = pw

    # ------------------------------------------------------------------------------------------
    # separation: the signal-level path and GetStems
    def _require_separator(self, what: str):
        if self.separator is None:
            raise FailedPrecondition(f"{what} needs a separator; none is configured "
                                     f"({PREFIX}_SEPARATOR=host:port)")
        return self.separator

    def _separate(self, request: separator_pb2.SeparateRequest):
        """The separator's stream, collected: (header, [bytes of each stem])."""
        sep = self._require_separator("separation")
        try:
            return collect(sep.Separate(request, timeout=self.cfg.deadline_seconds * 5))
        except InvalidArgument as exc:  # a malformed stream is the separator's fault, not the caller's
            raise Unavailable(f"the separator sent an inconsistent stream: {exc}") from None

    def _embed_signal(self, audio: types_pb2.Audio, segment: float, hop: float) -> embedder_pb2.EmbedResponse:
        """Separate, embed each part's own stem, keep that stem's own subspace (thesis Ch. 3 path).

        Parts the separator does not produce keep the subspace computed from the mix.
        """
        model = self._require_ready()
        header, stems = self._separate(separator_pb2.SeparateRequest(
            audio=audio, encoding=separator_pb2.STEM_ENCODING_FLOAT32LE))
        def embed(a: types_pb2.Audio) -> embedder_pb2.EmbedResponse:
            return self.embedder.Embed(embedder_pb2.EmbedRequest(audio=a, segment_seconds=segment, hop_seconds=hop),
                                       timeout=self.cfg.deadline_seconds)
        mix = embed(audio)
        self._add_power(mix, *self._decode(audio, mix))  # parts the separator does not produce: the mix's power
        per_part = {}
        for info, data in zip(header.stems, stems):
            if info.part in model.parts:
                pcm = types_pb2.RawPcm(data=data, sample_rate=header.sample_rate, channels=header.channels,
                                       format=types_pb2.SAMPLE_FORMAT_FLOAT32LE)
                stem = types_pb2.Audio(pcm=pcm)
                per_part[info.part] = embed(stem)
                self._add_power(per_part[info.part], *self._decode(stem, per_part[info.part]), {info.part})
        out = embedder_pb2.EmbedResponse(model=mix.model, duration_seconds=mix.duration_seconds)
        for k, seg in enumerate(mix.segments):
            s = out.segments.add(index=seg.index, start_seconds=seg.start_seconds, end_seconds=seg.end_seconds)
            for j, part in enumerate(model.parts):
                src = per_part.get(part)
                pv = src.segments[k].parts[j] if src is not None and k < len(src.segments) else seg.parts[j]
                s.parts.add().CopyFrom(pv)
        return out

    def _resolve_segment(self, ref, where: str) -> tuple[searcher_pb2.Track, int]:
        check_track_id(ref.track_id)
        track = self.searcher.GetTrack(searcher_pb2.GetTrackRequest(track_id=ref.track_id),
                                       timeout=self.cfg.deadline_seconds).track
        if ref.WhichOneof("at") == "segment_index":
            idx = ref.segment_index
            if not 0 <= idx < track.num_segments:
                raise NotFound(f"{where}: track {ref.track_id} has segments 0..{track.num_segments - 1}; "
                               f"there is no segment {idx}")
        else:
            sec = ref.seconds
            end = track.num_segments * track.segment_seconds
            if not (math.isfinite(sec) and 0 <= sec < end):
                raise NotFound(f"{where}: {sec:g} s is outside track {ref.track_id}, whose "
                               f"{track.num_segments} segments cover 0..{end:g} s")
            idx = int(sec // track.segment_seconds)
        return track, idx

    def GetStems(self, request, context):
        self._require_ready()
        self._require_separator("GetStems")
        if not request.HasField("segment"):
            raise InvalidArgument("segment is missing: give a track id and a time or segment index")
        track, idx = self._resolve_segment(request.segment, "segment")
        if self.audio is None:
            raise FailedPrecondition(f"this gateway keeps no audio ({PREFIX}_STORE_AUDIO is off)")
        audio = self.audio.get(track.track_id)
        if audio is None:
            raise FailedPrecondition(f"the audio of track {track.track_id} was not kept when it was indexed; "
                                     "index it again to listen to its stems")
        start = idx * track.segment_seconds
        end = min(start + track.segment_seconds, track.duration_seconds)
        digest = hashlib.sha256(audio.SerializeToString()).hexdigest()
        key = f"stems:{self.separator_model}:{digest}:{start:g}-{end:g}:{int(request.encoding)}"
        cached = self.cache.get(key)
        if cached is not None:
            msgs = _unpack(cached)
        else:
            header, stems = self._separate(separator_pb2.SeparateRequest(
                audio=audio, start_seconds=start, end_seconds=end, encoding=request.encoding))
            msgs = [gateway_pb2.GetStemsResponse(header=gateway_pb2.GetStemsHeader(
                track_id=track.track_id, segment_index=idx, start_seconds=start, end_seconds=end,
                separation=header))]
            for i, data in enumerate(stems):
                for off in range(0, len(data), 1 << 20):
                    msgs.append(gateway_pb2.GetStemsResponse(chunk=separator_pb2.StemChunk(
                        stem=i, offset=off, data=data[off:off + (1 << 20)])))
            self.cache.put(key, _pack(msgs))
        yield from msgs

    def EmbedParts(self, request, context):
        resp = self._embed(request.audio, request.segment_seconds, request.hop_seconds, request.mode)
        return gateway_pb2.EmbedPartsResponse(model=resp.model, segments=resp.segments,
                                              duration_seconds=resp.duration_seconds)

    # ------------------------------------------------------------------------------------------
    # indexing
    def _index(self, track_id: str, metadata: types_pb2.TrackMetadata, audio: types_pb2.Audio,
               mode: int = gateway_pb2.EMBED_MODE_FEATURE):
        model = self._require_ready()
        check_track_id(track_id)
        seg = self.cfg.segment_seconds
        resp = self._embed(audio, seg, seg, mode)
        track = searcher_pb2.Track(track_id=track_id, metadata=metadata, num_segments=len(resp.segments),
                                   duration_seconds=resp.duration_seconds, segment_seconds=seg,
                                   model_version=model.model_version, indexed_at=time.time())
        if self.audio is not None:  # before the catalog knows the track: GetStems never misses it
            self.audio.put(track_id, audio)
        up = self.searcher.UpsertTrack(searcher_pb2.UpsertTrackRequest(track=track, segments=resp.segments),
                                       timeout=self.cfg.deadline_seconds)
        return track, up.replaced

    def IndexTrack(self, request_iterator, context):
        header = None
        chunks: list[bytes] = []
        size = 0
        for msg in request_iterator:
            kind = msg.WhichOneof("payload")
            if header is None:
                if kind != "header":
                    raise InvalidArgument("the first IndexTrack message must be the header (track_id, metadata)")
                header = msg.header
                check_track_id(header.track_id)
                continue
            if kind != "chunk":
                raise InvalidArgument("only the first IndexTrack message may be a header; the rest are chunks")
            size += len(msg.chunk)
            if size > self.cfg.max_upload_bytes:
                raise ResourceExhausted(f"upload exceeds the limit of {self.cfg.max_upload_bytes} bytes")
            chunks.append(msg.chunk)
        if header is None:
            raise InvalidArgument("IndexTrack received no messages")
        data = b"".join(chunks)
        if header.HasField("pcm_format"):
            pcm = types_pb2.RawPcm()
            pcm.CopyFrom(header.pcm_format)
            pcm.data = data
            audio = types_pb2.Audio(pcm=pcm)
        else:
            audio = types_pb2.Audio(encoded=data)
        track, replaced = self._index(header.track_id, header.metadata, audio, header.mode)
        return gateway_pb2.IndexTrackResponse(track=track, replaced=replaced)

    # ------------------------------------------------------------------------------------------
    # ingestion jobs
    def _resolve_uri(self, uri: str) -> Path:
        if uri.startswith("file://"):
            parsed = urlparse(uri)
            if parsed.netloc not in ("", "localhost"):
                raise InvalidArgument(f"URI {uri!r}: only local file:// URIs are supported")
            path = Path(unquote(parsed.path))
        elif "://" in uri:
            raise InvalidArgument(f"URI {uri!r}: only file paths and file:// URIs are supported")
        else:
            path = Path(uri)
        if not path.is_absolute():
            raise InvalidArgument(f"URI {uri!r} must be an absolute path")
        real = path.resolve()
        roots = self.cfg.roots()
        if not any(real == r or r in real.parents for r in roots):
            allowed = ", ".join(str(r) for r in roots) or "none configured"
            raise PermissionDenied(f"{uri} is outside the allowed roots ({allowed}; "
                                   f"set {PREFIX}_ALLOWED_ROOTS)")
        if not real.is_file():
            raise NotFound(f"{uri}: no such file")
        return real

    def SubmitIngestJob(self, request, context):
        self._require_ready()
        if not request.items:
            raise InvalidArgument("the job has no items")
        items, seen = [], set()
        for i, it in enumerate(request.items):
            try:
                check_track_id(it.track_id)
            except InvalidArgument as exc:
                raise InvalidArgument(f"item {i}: {exc}") from None
            if it.track_id in seen:
                raise InvalidArgument(f"item {i}: track_id {it.track_id!r} appears twice in the job")
            seen.add(it.track_id)
            meta = {"title": it.metadata.title, "artist": it.metadata.artist, "tags": dict(it.metadata.tags)}
            which = it.WhichOneof("source")
            if which == "uri":
                self._resolve_uri(it.uri)
                items.append(IngestItem(it.track_id, meta, uri=it.uri))
            elif which == "audio":
                if it.audio.WhichOneof("source") != "encoded" or not it.audio.encoded:
                    raise InvalidArgument(f"item {i} ({it.track_id}): job uploads must be encoded audio bytes")
                items.append(IngestItem(it.track_id, meta, audio=it.audio.encoded))
            else:
                raise InvalidArgument(f"item {i} ({it.track_id}): set uri or audio")
        return gateway_pb2.SubmitIngestJobResponse(job_id=self.jobs.submit(items))

    def _ingest_item(self, item: IngestItem) -> None:
        """Index one job item (counted in ``partsim_ingest_items_total``); see :meth:`_ingest_retrying`."""
        start = time.perf_counter()
        try:
            self._ingest_retrying(item)
        except Exception:  # what JobQueue.work records as the item's failure (not a crash's BaseException)
            self.ingested.labels("failed").inc()
            raise
        else:
            self.ingested.labels("indexed").inc()
        finally:
            self.ingest_seconds.observe(time.perf_counter() - start)

    def _ingest_retrying(self, item: IngestItem) -> None:
        """Index one job item; a backend outage is retried with backoff before the item fails."""
        delay = 1.0
        for attempt in range(6):
            try:
                return self._ingest_once(item)
            except (Unavailable, grpc.RpcError) as exc:
                transient = isinstance(exc, Unavailable) or (
                    isinstance(exc, grpc.RpcError) and exc.code() in (grpc.StatusCode.UNAVAILABLE,
                                                                      grpc.StatusCode.DEADLINE_EXCEEDED))
                if not transient or attempt == 5 or self.stopping.wait(delay):
                    if isinstance(exc, grpc.RpcError):  # the backend's own status and message
                        raise error_for(exc.code(), exc.details() or exc.code().name) from None
                    raise
                self.ingest_retries.inc()
                log.warning("ingest %s: %s; retrying in %.0f s", item.track_id, exc, delay)
                delay = min(delay * 2, 15.0)

    def _ingest_once(self, item: IngestItem) -> None:
        if item.uri is not None:
            path = self._resolve_uri(item.uri)  # roots may have changed since submission
            size = path.stat().st_size
            if size > self.cfg.max_upload_bytes:
                raise ResourceExhausted(f"{item.uri} is {size} bytes; the limit is {self.cfg.max_upload_bytes}")
            data = path.read_bytes()
        else:
            data = item.audio or b""
        meta = types_pb2.TrackMetadata(title=item.metadata.get("title", ""), artist=item.metadata.get("artist", ""),
                                       tags=item.metadata.get("tags", {}))
        self._index(item.track_id, meta, types_pb2.Audio(encoded=data))

    def GetIngestJob(self, request, context):
        if not request.job_id:
            raise InvalidArgument("job_id is empty")
        st = self.jobs.get(request.job_id)
        state = {"queued": gateway_pb2.JOB_STATE_QUEUED, "running": gateway_pb2.JOB_STATE_RUNNING,
                 "done": gateway_pb2.JOB_STATE_DONE}[st.state]
        return gateway_pb2.GetIngestJobResponse(
            job_id=st.job_id, state=state, total=st.total, succeeded=st.succeeded, failed=st.failed,
            failures=[gateway_pb2.ItemFailure(track_id=t, error=e) for t, e in st.failures],
            created_at=st.created_at, updated_at=st.updated_at)

    # ------------------------------------------------------------------------------------------
    # queries
    def _query_vectors(self, q: gateway_pb2.StemQuery, where: str,
                       index: int) -> tuple[list[np.ndarray], list[gateway_pb2.QueryWarning]]:
        """The unit query embeddings of one stem query (one per usable segment), and its warnings.

        A segment is usable when its audio is not silent and the model judges the part present; a
        segment where the part is judged absent but the audio plays is used with a warning (for a
        clip, only when none of its segments is usable otherwise).
        """
        model = self._require_ready()
        parts = list(model.parts)
        if not q.part:
            raise InvalidArgument(f"{where}: part is empty; one of {parts}")
        if q.part not in parts:
            raise InvalidArgument(f"{where}: unknown part {q.part!r}; the model's parts are {parts}")
        j = parts.index(q.part)
        which = q.WhichOneof("source")
        if which == "vector":
            v = np.asarray(q.vector.vector, dtype=np.float32)
            if v.shape != (model.subspace_dim,):
                raise InvalidArgument(f"{where}: vector has {v.size} values; the {q.part} subspace has "
                                      f"{model.subspace_dim}")
            u = _unit(v)
            if u is None:
                raise InvalidArgument(f"{where}: vector is zero or not finite")
            return [u], []
        if which == "indexed":
            ref = q.indexed
            track, idx = self._resolve_segment(ref, where)
            seg = self.searcher.GetSegment(searcher_pb2.GetSegmentRequest(track_id=ref.track_id, segment_index=idx),
                                           timeout=self.cfg.deadline_seconds).segment
            pv = seg.parts[j]
            span = _span(ref.track_id, idx, seg.start_seconds, seg.end_seconds)
            if pv.HasField("power") and pv.power < SILENCE_POWER:
                raise InvalidArgument(f"{where}: the audio of {span} is silent (mean power {pv.power:.2e} < "
                                      f"{SILENCE_POWER:g}), so the {q.part} part is silent there; pick a time where "
                                      "it plays")
            u = _unit(np.asarray(pv.vector, dtype=np.float32)) if len(pv.vector) else None
            if pv.present and u is not None:
                return [u], []
            if u is not None and pv.HasField("power"):  # judged absent, audible: answer with a warning
                return [u], [absent_warning(index, q.part, ref.track_id, seg, pv)]
            if u is None and len(pv.vector):
                raise InvalidArgument(f"{where}: the {q.part} part is silent in {span} (its subspace vector is "
                                      "zero); pick a time where it plays")
            raise InvalidArgument(f"{where}: the {q.part} part is judged absent in {span}, which was indexed before "
                                  "the catalog kept raw vectors and audio power, so whether it plays there is "
                                  f"unknown; re-index track {ref.track_id} to query it, or pick a time where it plays")
        if which == "audio":
            seg_s = self.cfg.segment_seconds
            resp = self._embed(q.audio, seg_s, seg_s)
            present, absent = [], []
            for s in resp.segments:
                pv = s.parts[j]
                u = _unit(np.asarray(pv.vector, dtype=np.float32))
                if u is None or (pv.HasField("power") and pv.power < SILENCE_POWER):
                    continue  # a silent segment is never a query
                if pv.present:
                    present.append(u)
                elif pv.HasField("power"):
                    absent.append((u, s, pv))
            if present:
                return present, []
            if absent:
                return ([u for u, _, _ in absent],
                        [absent_warning(index, q.part, "", s, pv) for _, s, pv in absent])
            raise InvalidArgument(f"{where}: the clip is silent in every {seg_s:g}-s segment (mean power < "
                                  f"{SILENCE_POWER:g}), so the {q.part} part is not present in any segment of it")
        raise InvalidArgument(f"{where}: set one of indexed, audio or vector")

    def _part_queries(self, queries, weights) -> tuple[list[searcher_pb2.PartQuery], int,
                                                       list[gateway_pb2.QueryWarning]]:
        model = self._require_ready()
        per_part: dict[str, list[np.ndarray]] = {}
        warnings: list[gateway_pb2.QueryWarning] = []
        for i, q in enumerate(queries):
            vectors, warned = self._query_vectors(q, f"query {i}", i)
            per_part.setdefault(q.part, []).extend(vectors)
            warnings.extend(warned)
        total = sum(len(v) for v in per_part.values())
        if total > self.cfg.max_query_segments:
            raise ResourceExhausted(f"the query set has {total} query embeddings; at most "
                                    f"{self.cfg.max_query_segments} (shorter clips or fewer stems)")
        for part, w in weights.items():
            if part not in model.parts:
                raise InvalidArgument(f"part_weights: unknown part {part!r}; the model's parts are {list(model.parts)}")
            if part not in per_part:
                raise InvalidArgument(f"part_weights: {part} has a weight but no query")
            if not (math.isfinite(w) and w > 0):
                raise InvalidArgument(f"part_weights: the weight of {part} must be a positive number, got {w}")
        out = []
        for part in model.parts:  # the model's order: deterministic requests
            if part in per_part:
                mean = np.mean(per_part[part], axis=0)  # eq. 6.1
                out.append(searcher_pb2.PartQuery(part=part, vector=mean.tolist(), weight=float(weights.get(part, 1.0))))
        return out, total, warnings

    def _count(self, warnings: list[gateway_pb2.QueryWarning]) -> None:
        for w in warnings:
            self.query_warnings.labels(gateway_pb2.WarningCode.Name(w.code)).inc()

    @staticmethod
    def _top_k(request) -> int:
        if not request.HasField("top_k"):
            return DEFAULT_TOP_K
        k = request.top_k
        if not 1 <= k <= MAX_TOP_K:
            raise InvalidArgument(f"top_k must be within 1..{MAX_TOP_K}, got {k}")
        return k

    def SearchMix(self, request, context):
        model = self._require_ready()
        started = time.perf_counter()
        if not request.queries:
            raise InvalidArgument("the query set is empty: give at least one stem query (part + source)")
        top_k = self._top_k(request)
        parts, total, warnings = self._part_queries(request.queries, dict(request.part_weights))
        self.query_embeddings.observe(total)
        resp = self.searcher.SearchMix(searcher_pb2.SearchMixVectorsRequest(
            parts=parts, top_k=top_k, exclude_track_ids=request.exclude_track_ids, mode=request.mode),
            timeout=self.cfg.deadline_seconds)
        self.search_seconds.labels("SearchMix", searcher_pb2.SearchMode.Name(request.mode)).observe(
            time.perf_counter() - started)
        self._count(warnings)
        return gateway_pb2.SearchMixResponse(hits=resp.hits, model_version=model.model_version,
                                             candidates=resp.candidates, warnings=warnings)

    def SearchStems(self, request, context):
        model = self._require_ready()
        started = time.perf_counter()
        if not request.HasField("query"):
            raise InvalidArgument("query is missing: give one stem query (part + source)")
        top_k = self._top_k(request)
        parts, _, warnings = self._part_queries([request.query], {})
        resp = self.searcher.SearchStems(searcher_pb2.SearchStemsVectorsRequest(
            query=parts[0], top_k=top_k, exclude_track_ids=request.exclude_track_ids, mode=request.mode),
            timeout=self.cfg.deadline_seconds)
        self.search_seconds.labels("SearchStems", searcher_pb2.SearchMode.Name(request.mode)).observe(
            time.perf_counter() - started)
        self._count(warnings)
        return gateway_pb2.SearchStemsResponse(hits=resp.hits, model_version=model.model_version,
                                               warnings=warnings)

    # ------------------------------------------------------------------------------------------
    # catalog
    def GetTrack(self, request, context):
        check_track_id(request.track_id)
        return self.searcher.GetTrack(request, timeout=self.cfg.deadline_seconds)

    def ListTracks(self, request, context):
        return self.searcher.ListTracks(request, timeout=self.cfg.deadline_seconds)

    def DeleteTrack(self, request, context):
        check_track_id(request.track_id)
        resp = self.searcher.DeleteTrack(request, timeout=self.cfg.deadline_seconds)
        if self.audio is not None:
            self.audio.delete(request.track_id)
        return resp

    def GetCatalogStats(self, request, context):
        model = self._require_ready()
        stats = self.searcher.GetStats(searcher_pb2.GetStatsRequest(), timeout=self.cfg.deadline_seconds)
        return gateway_pb2.GetCatalogStatsResponse(stats=stats, model_version=model.model_version)


def _pack(msgs: list) -> bytes:
    """Length-prefixed serialised messages (for the stems cache)."""
    return b"".join(len(b).to_bytes(4, "little") + b for b in (m.SerializeToString() for m in msgs))


def _unpack(data: bytes) -> list:
    out, i = [], 0
    while i < len(data):
        n = int.from_bytes(data[i:i + 4], "little")
        out.append(gateway_pb2.GetStemsResponse.FromString(data[i + 4:i + 4 + n]))
        i += 4 + n
    return out


def serve(cfg: GatewayConfig, registry=None) -> tuple[ServiceRuntime, Gateway]:
    """Start a gateway (returns at once; it turns SERVING once the backends answer)."""
    cfg.validate()
    rt = ServiceRuntime("gateway", cfg.address, cfg.max_upload_bytes + (4 << 20),
                        metrics_port=None if cfg.metrics_port < 0 else cfg.metrics_port,
                        metrics_host=cfg.metrics_host, registry=registry, workers=cfg.workers,
                        max_connection_age=cfg.max_connection_age_seconds)
    gw = Gateway(cfg, rt)
    gateway_pb2_grpc.add_PartsimServiceServicer_to_server(gw, rt.server)
    rt.start([SERVICE])
    threading.Thread(target=gw.connect, name="gateway-connect", daemon=True).start()
    return rt, gw


def stop(rt: ServiceRuntime, gw: Gateway, grace: float) -> None:
    """Graceful stop: NOT_SERVING, let running RPCs finish, stop the ingest workers."""
    rt.set_serving(False)
    gw.stopping.set()
    rt.stop(grace)
    gw.close()


def main(argv: list[str] | None = None) -> int:
    cfg = load(GatewayConfig, PREFIX, argv, prog="partsim-gateway")
    return run_until_signalled("partsim-gateway", lambda: serve(cfg),
                               lambda started: stop(*started, cfg.grace_seconds), cfg.grace_seconds)
