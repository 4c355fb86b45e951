"""Getting tracks into the catalog: indexing one track, IndexTrack uploads, and ingest jobs.

An ingest job item is a local file (a path or ``file://`` URI inside the allowed roots, checked
when the job is submitted and again when the item runs, since the roots may have changed) or
uploaded encoded audio. The jobs live in the queue of :mod:`.jobs`; :class:`IngestWorkers` index
their items, retrying a backend outage with backoff before an item fails.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import grpc

from partsim.errors import InvalidArgument, NotFound, PermissionDenied, ResourceExhausted, Unavailable
from partsim.internal.v1 import searcher_pb2
from partsim.v1 import gateway_pb2, types_pb2

from ..status import backend_error
from ..tracks import check_metadata, check_track_id
from .audio_store import AudioStore
from .backends import Backends
from .config import PREFIX
from .embedding import Embeddings
from .jobs import IngestItem, JobQueue
from .metrics import GatewayMetrics

log = logging.getLogger("partsim.gateway")

MAX_ATTEMPTS = 6  # per ingest item; waits of 1, 2, 4, 8 and 15 s between them
# a failed UpsertTrack with these codes may have been applied all the same (its answer was lost)
MAYBE_APPLIED = (
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
)
MAX_URI = 4096  # characters of an ingest item's URI


def resolve_uri(uri: str, roots: Sequence[Path]) -> Path:
    """The file a job item's URI names (a local absolute path or ``file://`` URI), resolved.

    Messages name no more than the caller sent (not the roots, not the resolved path: those are logged).

    Raises:
        InvalidArgument: longer than :data:`MAX_URI`, another scheme, a remote ``file://`` host, a
            relative path, or a control character (NUL included).
        PermissionDenied: the resolved file (symbolic links and ``..`` followed) is outside every root.
        NotFound: no such file.
    """
    if len(uri) > MAX_URI:
        raise InvalidArgument(f"the URI is {len(uri)} characters long; the limit is {MAX_URI}", reason="INVALID_URI")
    if uri.startswith("file://"):
        parsed = urlparse(uri)
        if parsed.netloc not in ("", "localhost"):
            raise InvalidArgument(f"URI {uri!r}: only local file:// URIs are supported")
        path = Path(unquote(parsed.path))
    elif "://" in uri:
        raise InvalidArgument(f"URI {uri!r}: only file paths and file:// URIs are supported")
    else:
        path = Path(uri)
    if any(ord(c) < 32 or ord(c) == 127 for c in str(path)):
        raise InvalidArgument(f"URI {uri!r} contains a control character", reason="INVALID_URI")
    if not path.is_absolute():
        raise InvalidArgument(f"URI {uri!r} must be an absolute path")
    real = path.resolve()
    if not any(real == r or r in real.parents for r in roots):
        log.info("ingest URI %r resolves to %s, outside the allowed roots %s", uri, real, [str(r) for r in roots])
        which = "the operator sets them" if roots else "none configured; the operator sets them"
        raise PermissionDenied(f"{uri!r} is outside the allowed roots ({which}: {PREFIX}_ALLOWED_ROOTS)")
    if not real.is_file():
        raise NotFound(f"{uri}: no such file")
    return real


def job_items(items: Sequence[gateway_pb2.IngestItem], roots: Sequence[Path]) -> list[IngestItem]:
    """A SubmitIngestJob request's items, checked: valid distinct track ids, URIs inside ``roots``,
    uploads as encoded audio bytes."""
    if not items:
        raise InvalidArgument("the job has no items")
    out: list[IngestItem] = []
    seen: set[str] = set()
    for i, it in enumerate(items):
        try:
            check_track_id(it.track_id)
        except InvalidArgument as exc:
            raise InvalidArgument(f"item {i}: {exc}") from None
        if it.track_id in seen:
            raise InvalidArgument(f"item {i}: track_id {it.track_id!r} appears twice in the job")
        seen.add(it.track_id)
        check_metadata(it.metadata, f"items[{i}].metadata")
        meta: dict[str, Any] = {
            "title": it.metadata.title,
            "artist": it.metadata.artist,
            "tags": dict(it.metadata.tags),
        }
        if it.metadata.HasField("bpm"):
            meta["bpm"] = float(it.metadata.bpm)
        if it.metadata.key:
            meta["key"] = it.metadata.key
        which = it.WhichOneof("source")
        if which == "uri":
            resolve_uri(it.uri, roots)
            out.append(IngestItem(it.track_id, meta, uri=it.uri))
        elif which == "audio":
            if it.audio.WhichOneof("source") != "encoded" or not it.audio.encoded:
                raise InvalidArgument(f"item {i} ({it.track_id}): job uploads must be encoded audio bytes")
            out.append(IngestItem(it.track_id, meta, audio=it.audio.encoded))
        else:
            raise InvalidArgument(f"item {i} ({it.track_id}): set uri or audio")
    return out


def upload(header: gateway_pb2.IndexTrackHeader, chunks: Iterable[bytes], max_bytes: int) -> types_pb2.Audio:
    """An IndexTrack upload's audio: the chunks joined, as raw PCM if the header gives its format (its
    metadata checked first)."""
    check_metadata(header.metadata, "header.metadata")
    parts: list[bytes] = []
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > max_bytes:
            raise ResourceExhausted(f"upload exceeds the limit of {max_bytes} bytes")
        parts.append(chunk)
    data = b"".join(parts)
    if not header.HasField("pcm_format"):
        return types_pb2.Audio(encoded=data)
    pcm = types_pb2.RawPcm()
    pcm.CopyFrom(header.pcm_format)
    pcm.data = data
    return types_pb2.Audio(pcm=pcm)


class Indexer:
    """Index one track: embed it (cached), keep its audio (for GetStems), upsert it into the catalog.

    Writes of one track id are *versioned*, not locked: each write is an upload with its own id
    (``Track.version``). Its audio goes to a file of that version beside the current one; then the
    searcher replaces the track's vectors and metadata with it in one atomic switch and answers the
    version it replaced, whose audio this writer deletes (a failed write deletes its own instead).
    However many writes of one id run at once, from however many gateways, the catalog ends with the
    last switch's vectors and metadata and the audio file of that same upload (GetStems reads the
    version the catalog names), and a failed write leaves the previous version whole.

    Chosen over a per-track lease (a local lock, and a Redis ``SET NX PX`` lease with renewal across
    replicas) because the searcher, the one writer of its catalog, already serialises the switch: no
    lock service to configure or lose, no lease that expires under a paused writer and lets two write
    at once, and no moment when the new audio is kept but the old vectors are served (a lease still
    overwrites the audio before the upsert that may fail).
    """

    def __init__(self, backends: Backends, embeddings: Embeddings, audio: AudioStore | None, segment_seconds: float):
        self.backends = backends
        self.embeddings = embeddings
        self.audio = audio
        self.segment_seconds = segment_seconds

    def index(
        self,
        track_id: str,
        metadata: types_pb2.TrackMetadata,
        audio: types_pb2.Audio,
        mode: int = gateway_pb2.EMBED_MODE_FEATURE,
        version: str = "",
    ) -> tuple[types_pb2.Track, bool]:
        """The catalog's new record of the track, and whether it replaced one. ``version``: the upload's
        id (a new one when empty; a retry of the same upload may give the same id again)."""
        version = version or uuid.uuid4().hex
        model = self.backends.require_model()
        check_track_id(track_id)
        seg = self.segment_seconds
        resp = self.embeddings.embed(audio, seg, seg, mode)
        track = types_pb2.Track(
            track_id=track_id,
            metadata=metadata,
            num_segments=len(resp.segments),
            duration_seconds=resp.duration_seconds,
            segment_seconds=seg,
            model_version=model.model_version,
            indexed_at=time.time(),
            version=version,
        )
        if self.audio is not None:  # before the catalog knows this version: GetStems never misses it
            self.audio.put(track_id, audio, version)
        try:
            up = self.backends.searcher.UpsertTrack(
                searcher_pb2.UpsertTrackRequest(track=track, segments=resp.segments), timeout=self.backends.deadline
            )
        except Exception as exc:
            self._discard(track_id, version, exc)
            raise
        if self.audio is not None and up.replaced and up.replaced_version != version:
            self.audio.delete(track_id, up.replaced_version)
        return track, up.replaced

    def _discard(self, track_id: str, version: str, exc: Exception) -> None:
        """Delete a failed write's audio, unless the write may have been applied after all (its answer
        lost) and the catalog names this version, or that cannot be told now (a retry with the same
        version, or the next write of the track, settles it)."""
        if self.audio is None:
            return
        if isinstance(exc, grpc.RpcError) and exc.code() in MAYBE_APPLIED:
            try:
                if self.backends.track(track_id).version == version:
                    return
            except grpc.RpcError as err:
                if err.code() != grpc.StatusCode.NOT_FOUND:
                    log.warning("kept the audio of %r (version %s): its write may have happened", track_id, version)
                    return
        self.audio.delete(track_id, version)


class IngestWorkers:
    """Threads consuming the job queue, each item indexed by :meth:`process`; ``roots()``: the allowed roots."""

    def __init__(
        self,
        jobs: JobQueue,
        indexer: Indexer,
        roots: Callable[[], Sequence[Path]],
        max_upload_bytes: int,
        metrics: GatewayMetrics,
        stopping: threading.Event,
    ):
        self.jobs = jobs
        self.indexer = indexer
        self.roots = roots
        self.max_upload_bytes = max_upload_bytes
        self.metrics = metrics
        self.stopping = stopping
        self.threads: list[threading.Thread] = []

    def start(self, n: int) -> None:
        for i in range(n):
            t = threading.Thread(
                target=self.jobs.work, args=(self.process, self.stopping), name=f"ingest-{i}", daemon=True
            )
            t.start()
            self.threads.append(t)

    def join(self, timeout: float = 30) -> bool:
        """Wait for the threads (``stopping`` must be set); True if all have ended."""
        for t in self.threads:
            t.join(timeout=timeout)
        return not any(t.is_alive() for t in self.threads)

    def process(self, item: IngestItem) -> None:
        """Index one job item (counted in ``partsim_ingest_items_total``); see :meth:`retrying`."""
        start = time.perf_counter()
        try:
            self.retrying(item)
        except Exception:  # what JobQueue.work records as the item's failure (not a crash's BaseException)
            self.metrics.ingested.labels("failed").inc()
            raise
        else:
            self.metrics.ingested.labels("indexed").inc()
        finally:
            self.metrics.ingest_seconds.observe(time.perf_counter() - start)

    def retrying(self, item: IngestItem) -> None:
        """Index one job item; a backend outage is retried with backoff before the item fails."""
        delay = 1.0
        version = uuid.uuid4().hex  # one upload, however many attempts
        for attempt in range(MAX_ATTEMPTS):
            try:
                return self.once(item, version)
            except (Unavailable, grpc.RpcError) as exc:
                transient = isinstance(exc, Unavailable) or (
                    isinstance(exc, grpc.RpcError)
                    and exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
                )
                if not transient or attempt == MAX_ATTEMPTS - 1 or self.stopping.wait(delay):
                    if isinstance(exc, grpc.RpcError):  # the backend's status (an outage named by its role only)
                        raise backend_error(exc) from None
                    raise
                self.metrics.ingest_retries.inc()
                log.warning("ingest %s: %s; retrying in %.0f s", item.track_id, exc, delay)
                delay = min(delay * 2, 15.0)

    def once(self, item: IngestItem, version: str = "") -> None:
        if item.uri is not None:
            path = resolve_uri(item.uri, self.roots())  # roots may have changed since submission
            size = path.stat().st_size
            if size > self.max_upload_bytes:
                raise ResourceExhausted(f"{item.uri} is {size} bytes; the limit is {self.max_upload_bytes}")
            data = path.read_bytes()
        else:
            data = item.audio or b""
        meta = types_pb2.TrackMetadata(
            title=item.metadata.get("title", ""),
            artist=item.metadata.get("artist", ""),
            tags=item.metadata.get("tags", {}),
            bpm=item.metadata.get("bpm"),
            key=item.metadata.get("key", ""),
        )
        self.indexer.index(item.track_id, meta, types_pb2.Audio(encoded=data), version=version)
