"""The gateway: the public ``partsim.v1.PartsimService``.

It validates, turns each stem query into embeddings (from the catalog, from uploaded audio via
the embedder and the cache, or given), averages them per part (eq. 6.1), and asks the searcher
for the retrieval function (eq. 6.2, min over a song's segments). Ingestion runs as jobs from
a queue that survives restarts (Redis Stream, or SQLite in the data folder).

The servicer here only translates protobuf requests into calls of the modules beside it and their
results into responses; start reading there:

* :mod:`.backends` - channels to the embedder, searcher and separator, readiness;
* :mod:`.embedding` - embeddings of received audio (cache, audio power, the signal-level path);
* :mod:`.queries` - stem queries to the searcher's per-part queries (eq. 6.1/6.2 inputs, presence
  and silence rules, warnings);
* :mod:`.ingest` - indexing a track, IndexTrack uploads, ingest jobs, URI sandboxing;
* :mod:`.stems` - GetStems; :mod:`.jobs` - the job queue; :mod:`.metrics` - the gateway's metrics.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from pathlib import Path

import grpc

from partsim.errors import InvalidArgument
from partsim.internal.v1 import searcher_pb2
from partsim.v1 import gateway_pb2, gateway_pb2_grpc, types_pb2

from ..runtime import ServiceRuntime
from ..separator.client import header_and_chunks
from ..service import Service
from ..tracks import check_track_id
from .audio_store import AudioStore
from .auth.interceptor import auth_interceptor
from .auth.roles import SERVICE
from .backends import Backends
from .cache import make_cache
from .config import GatewayConfig
from .embedding import Embeddings
from .http import start_http
from .http.server import HttpGateway, bridge_target
from .ingest import Indexer, IngestWorkers, job_items, upload
from .jobs import JobStatus, make_job_queue
from .metrics import GatewayMetrics
from .queries import Queries, search_filter, top_k
from .redis_conn import read_password
from .stems import stem_stream

log = logging.getLogger("partsim.gateway")


JOB_STATES = {
    "queued": gateway_pb2.JOB_STATE_QUEUED,
    "running": gateway_pb2.JOB_STATE_RUNNING,
    "done": gateway_pb2.JOB_STATE_DONE,
}


def _job_proto(st: JobStatus) -> gateway_pb2.IngestJob:
    return gateway_pb2.IngestJob(
        job_id=st.job_id,
        state=JOB_STATES[st.state],
        total=st.total,
        succeeded=st.succeeded,
        failed=st.failed,
        failures=[gateway_pb2.ItemFailure(track_id=t, error=e) for t, e in st.failures],
        created_at=st.created_at,
        updated_at=st.updated_at,
    )


class Gateway(gateway_pb2_grpc.PartsimServiceServicer):
    """UNAVAILABLE until :meth:`connect` found every backend; then each RPC checks the request's shape,
    calls the modules and builds the response."""

    def __init__(self, cfg: GatewayConfig, runtime: ServiceRuntime):
        self.cfg = cfg
        self.rt = runtime
        self.stopping = threading.Event()
        self.backends = Backends(cfg)
        self.ready = self.backends.ready
        self._health_lock = threading.Lock()
        folder = cfg.audio_folder()
        self.audio = AudioStore(folder) if folder is not None else None
        redis_password = read_password(cfg.redis_password_file)  # Redis AUTH (or in the URL): redis_conn.py
        self.cache = make_cache(
            cfg.redis_url or None,
            max_bytes=int(cfg.cache_mb * (1 << 20)),
            registry=runtime.registry,
            redis_password=redis_password,
        )
        self.jobs = make_job_queue(
            cfg.redis_url or None,
            Path(cfg.data_dir) if cfg.data_dir else None,
            consumer=cfg.consumer or socket.gethostname(),
            redis_password=redis_password,
        )
        self.metrics = GatewayMetrics(runtime.registry)
        self.metrics.watch(self.jobs)
        self.embeddings = Embeddings(self.backends, self.cache, cfg.segment_seconds, cfg.max_upload_bytes)
        self.queries = Queries(self.backends, self.embeddings.embed, cfg.segment_seconds, cfg.max_query_segments)
        self.indexer = Indexer(self.backends, self.embeddings, self.audio, cfg.segment_seconds)
        self.ingest = IngestWorkers(
            self.jobs, self.indexer, cfg.roots, cfg.max_upload_bytes, self.metrics, self.stopping
        )

    # ------------------------------------------------------------------------------------------
    # lifecycle
    def connect(self, timeout: float | None = None) -> bool:
        """Watch the backends' health; wait until the embedder and searcher answer; then start the ingest
        workers and serve (while both backends do: :meth:`backend_health`)."""
        self.backends.watch(self.stopping, self.backend_health)
        if not self.backends.wait_ready(self.stopping, timeout) or self.stopping.is_set():
            return False
        self.ingest.start(self.cfg.ingest_workers)
        self.ready.set()
        self.backend_health()
        model = self.backends.require_model()
        log.info("gateway ready: model %s, parts %s", model.model_version, list(model.parts))
        return True

    def backend_health(self, name: str = "", serving: bool = False) -> None:
        """Health: ``SERVICE/<name>`` is each backend's as last checked; ``""`` and ``SERVICE`` are SERVING
        while the gateway is ready and the embedder and searcher serve (the separator is optional)."""
        with self._health_lock:
            if name:
                self.rt.set_health(f"{SERVICE}/{name}", serving)
            self.rt.set_serving(self.ready.is_set() and self.backends.healthy())

    def close(self) -> None:
        """Stop the ingest workers and release the queue; once they have ended (and after the RPC server
        stopped), the backend channels too."""
        self.stopping.set()
        if self.ingest.join(timeout=30):
            self.backends.close()
        self.jobs.close()
        self.cache.close()

    # ------------------------------------------------------------------------------------------
    # embedding and indexing
    def EmbedParts(self, request, context):
        resp = self.embeddings.embed(request.audio, request.segment_seconds, request.hop_seconds, request.mode)
        return gateway_pb2.EmbedPartsResponse(
            model=resp.model, segments=resp.segments, duration_seconds=resp.duration_seconds
        )

    def IndexTrack(self, request_iterator, context):
        header, chunks = header_and_chunks(request_iterator, "the IndexTrack stream (header, then chunks)")
        check_track_id(header.track_id)
        audio = upload(header, chunks, self.cfg.max_upload_bytes)
        track, replaced = self.indexer.index(header.track_id, header.metadata, audio, header.mode)
        return gateway_pb2.IndexTrackResponse(track=track, replaced=replaced)

    def SubmitIngestJob(self, request, context):
        self.backends.require_model()
        items = job_items(request.items, self.cfg.roots())
        return gateway_pb2.SubmitIngestJobResponse(job_id=self.jobs.submit(items))

    def GetIngestJob(self, request, context):
        return gateway_pb2.GetIngestJobResponse(job=self._job(request.job_id))

    def ListIngestJobs(self, request, context):
        jobs, token = self.jobs.list(request.page_size, request.page_token)
        return gateway_pb2.ListIngestJobsResponse(jobs=[_job_proto(st) for st in jobs], next_page_token=token)

    def RetryIngestJob(self, request, context):
        if not request.job_id:
            raise InvalidArgument("job_id is empty")
        requeued = self.jobs.retry(request.job_id)
        return gateway_pb2.RetryIngestJobResponse(requeued=requeued, job=self._job(request.job_id))

    def _job(self, job_id: str) -> gateway_pb2.IngestJob:
        if not job_id:
            raise InvalidArgument("job_id is empty")
        return _job_proto(self.jobs.get(job_id))

    # ------------------------------------------------------------------------------------------
    # search and listening
    def SearchMix(self, request, context):
        model = self.backends.require_model()
        started = time.perf_counter()
        if not request.queries:
            raise InvalidArgument("the query set is empty: give at least one stem query (part + source)")
        k = top_k(request)
        where = search_filter(request)
        parts, total, warnings = self.queries.part_queries(request.queries, dict(request.part_weights))
        self.metrics.query_embeddings.observe(total)
        resp = self.backends.searcher.SearchMix(
            searcher_pb2.SearchMixRequest(
                parts=parts, top_k=k, exclude_track_ids=request.exclude_track_ids, mode=request.mode, filter=where
            ),
            timeout=self.backends.deadline,
        )
        self.metrics.searched("SearchMix", request.mode, started, warnings)
        return gateway_pb2.SearchMixResponse(
            hits=resp.hits, model_version=model.model_version, candidates=resp.candidates, warnings=warnings
        )

    def SearchStems(self, request, context):
        model = self.backends.require_model()
        started = time.perf_counter()
        if not request.HasField("query"):
            raise InvalidArgument("query is missing: give one stem query (part + source)")
        k = top_k(request)
        where = search_filter(request)
        parts, _, warnings = self.queries.part_queries([request.query], {})
        resp = self.backends.searcher.SearchStems(
            searcher_pb2.SearchStemsRequest(
                query=parts[0], top_k=k, exclude_track_ids=request.exclude_track_ids, mode=request.mode, filter=where
            ),
            timeout=self.backends.deadline,
        )
        self.metrics.searched("SearchStems", request.mode, started, warnings)
        return gateway_pb2.SearchStemsResponse(hits=resp.hits, model_version=model.model_version, warnings=warnings)

    def GetStems(self, request, context):
        self.backends.require_model()
        self.backends.require_separator("GetStems")
        if not request.HasField("segment"):
            raise InvalidArgument("segment is missing: give a track id and a time or segment index")
        track, idx = self.queries.segment(request.segment, "segment")
        yield from stem_stream(self.backends, self.audio, self.cache, track, idx, request.encoding)

    # ------------------------------------------------------------------------------------------
    # catalog
    def GetTrack(self, request, context):
        check_track_id(request.track_id)
        return gateway_pb2.GetTrackResponse(track=self.backends.track(request.track_id))

    def ListTracks(self, request, context):
        page = self.backends.searcher.ListTracks(
            searcher_pb2.ListTracksRequest(page_size=request.page_size, page_token=request.page_token),
            timeout=self.backends.deadline,
        )
        return gateway_pb2.ListTracksResponse(tracks=page.tracks, next_page_token=page.next_page_token)

    def DeleteTrack(self, request, context):
        check_track_id(request.track_id)
        resp = self.backends.searcher.DeleteTrack(
            searcher_pb2.DeleteTrackRequest(track_id=request.track_id), timeout=self.backends.deadline
        )
        if self.audio is not None:  # the deleted version's only: a write under way keeps its own
            self.audio.delete(request.track_id, resp.version)
        return gateway_pb2.DeleteTrackResponse(version=resp.version)

    def GetCatalogStats(self, request, context):
        model = self.backends.require_model()
        st = self.backends.searcher.GetStats(searcher_pb2.GetStatsRequest(), timeout=self.backends.deadline)
        stats = types_pb2.CatalogStats(
            tracks=st.tracks,
            segments=st.segments,
            present_segments_by_part=st.present_segments_by_part,
            backend=st.backend,
        )
        return gateway_pb2.GetCatalogStatsResponse(stats=stats, model_version=model.model_version)


class GatewayServer(Service[GatewayConfig]):
    """The gateway: gRPC, health and metrics from :meth:`serve`; :meth:`load` looks for the backends in the
    background and health turns SERVING once they answer (:meth:`Gateway.connect`)."""

    name = "gateway"
    grpc_service = SERVICE
    config = GatewayConfig

    http: HttpGateway | None = None
    bridge: str = ""  # the gRPC server's local socket that the HTTP server calls it through

    def add_servicer(self, rt: ServiceRuntime) -> Gateway:
        gateway = Gateway(self.cfg, rt)
        gateway_pb2_grpc.add_PartsimServiceServicer_to_server(gateway, rt.server)
        if self.cfg.http_port >= 0:  # before the server starts: ports cannot be added later
            self.bridge = bridge_target()
            if rt.server.add_insecure_port(self.bridge) == 0:
                raise OSError(f"{self.name}: cannot bind the HTTP bridge socket {self.bridge}")
        return gateway

    def serve(self) -> GatewayServer:
        """gRPC as every service (:meth:`Service.serve`), then the HTTP/JSON API and the web app on HTTP_PORT
        (:mod:`.http`), whose calls go through the gRPC server's interceptors and handlers."""
        super().serve()
        if self.cfg.http_port < 0:
            return self
        try:
            self.http = start_http(self.cfg, self.bridge, self.servicer.audio, self.registry)
        except BaseException:
            self.stop(0)
            raise
        # partsim up (partsim/cluster.py) reads this line to learn the address
        try:
            print(f"{self.name} HTTP/JSON API and web app on {self.http.url}", flush=True)
        except OSError:  # a standard output on a full disk does not stop the service
            pass
        return self

    @property
    def http_url(self) -> str | None:
        """``http://host:port/`` (https with TLS) of the HTTP/JSON API and web app; None when off."""
        return self.http.url if self.http is not None else None

    def interceptors(self) -> list[grpc.ServerInterceptor]:
        """Who may call (API keys, JWTs, roles), per-caller rate limits and the audit log: :mod:`.auth`."""
        return [*super().interceptors(), auth_interceptor(self.cfg, self.registry)]

    def load(self) -> None:
        """Start looking for the backends; returns at once (they may start after the gateway)."""
        threading.Thread(target=self.servicer.connect, name="gateway-connect", daemon=True).start()

    def stop(self, grace: float | None = None) -> None:
        if self.servicer is not None:
            self.servicer.stopping.set()  # a connect() under way gives up, the ingest workers take no new item
        http, self.http = self.http, None
        if http is not None:
            http.close_listener()  # no new HTTP requests; those under way finish within the gRPC grace
        super().stop(grace)
        if http is not None:
            http.stop()

    def close(self) -> None:
        self.servicer.close()


def main(argv: list[str] | None = None) -> int:
    return GatewayServer.main(argv)
