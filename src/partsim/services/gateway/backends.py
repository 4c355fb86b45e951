"""The gateway's channels to the embedder, searcher and (optional) separator, and the model they serve.

Every channel balances over all addresses its target resolves to (``round_robin`` over the pods
behind a headless Service, or over a static ``ipv4:`` list), sends calls only to addresses whose health
says SERVING, and retries UNAVAILABLE with backoff (:func:`service_config`); every call carries the
configured deadline. :meth:`Backends.wait_ready` blocks until the required ones (embedder, searcher) answer;
:meth:`Backends.watch` then checks each backend's grpc.health.v1 status on its channel every second
(the gateway's own health follows the required ones; the separator is optional). Those checks also
notice a renewed backend client certificate (its files changed): new channels with it are swapped in and
the old ones closed once the calls on them had time to end.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from partsim.errors import FailedPrecondition, InvalidArgument, Unavailable
from partsim.internal.v1 import (
    embedder_pb2,
    embedder_pb2_grpc,
    searcher_pb2,
    searcher_pb2_grpc,
    separator_pb2,
    separator_pb2_grpc,
)
from partsim.v1 import types_pb2

from ..separator.client import collect
from ..status import bounded_stub
from ..tls import ReloadingChannelCredentials, open_channel
from ..tracks import check_track_id
from .config import PREFIX, GatewayConfig

log = logging.getLogger("partsim.gateway")

EMBEDDER = "partsim.internal.v1.EmbedderService"
SEARCHER = "partsim.internal.v1.SearcherService"
SEPARATOR = "partsim.internal.v1.SeparatorService"
REQUIRED = ("embedder", "searcher")  # the gateway serves only while both do; the separator is optional
HEALTH_INTERVAL = 1.0  # seconds between two health checks of a backend
HEALTH_TIMEOUT = 3.0  # a check not answered in time counts as a miss; two misses in a row: NOT_SERVING
RECONNECT_BACKOFF_MS = 2000  # a restarted backend is found within ~2 s (gRPC's default grows to 120 s)


SERVICES = (EMBEDDER, SEARCHER, SEPARATOR)


def _said(serving: bool) -> str:
    return "is SERVING" if serving else "is unreachable or NOT_SERVING"


HEALTH = "grpc.health.v1.Health"
# gRPC caps maxAttempts at 5; 4 attempts with backoff 0.1, 0.2, 0.4 s (each drawn 0..that) ride over a replica
# that dies under a call: round_robin has dropped it by the next pick, so a retry lands on another one
RETRY_POLICY = {
    "maxAttempts": 4,
    "initialBackoff": "0.1s",
    "maxBackoff": "2s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}


def service_config(services: list[str], lb_policy: str = "round_robin") -> str:
    """gRPC service config of a channel to a backend.

    - ``round_robin`` (or ``pick_first``) over every address the target resolves to: the pods behind a
      headless Service (``dns:///name:port``) or a static list (``ipv4:host:port,host:port``).
    - Client-side health checking (``healthCheckConfig``): each address's grpc.health.v1 Watch of the
      service; round_robin picks only addresses that say SERVING, so a replica that is still loading or is
      stopping (NOT_SERVING during its grace) gets no calls, and a dead one none once its connection broke.
    - A retry policy on UNAVAILABLE for every method of the service and for health checks: a call that was
      under way on a replica that died (or that answered UNAVAILABLE: still loading, its Milvus away) is
      sent again, to the next replica. The reads (searches, GetTrack, ListTracks, GetSegment, GetStats)
      are idempotent; so are the searcher's writes, by primary key (UpsertTrack replaces the track's
      rows; a DeleteTrack whose first attempt took effect before its replica died answers NOT_FOUND
      on the retry: the track is gone either way), and the embedder's and separator's calls compute and
      store nothing. gRPC retries only calls that got no response yet (headers included), so
      a streamed answer is never retried halfway.
    """
    return json.dumps(
        {
            "loadBalancingConfig": [{lb_policy: {}}],
            "healthCheckConfig": {"serviceName": services[0]},
            "methodConfig": [
                {"name": [{"service": s} for s in [*services, HEALTH]], "retryPolicy": RETRY_POLICY},
            ],
        }
    )


def channel(
    address: str,
    max_message_bytes: int,
    services: list[str],
    lb_policy: str = "round_robin",
    credentials: grpc.ChannelCredentials | None = None,
) -> grpc.Channel:
    """A channel to a backend: TLS with ``credentials`` (:func:`backend_credentials`), else plaintext."""
    return open_channel(
        address,
        credentials,
        [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.enable_retries", 1),
            # gRPC keeps a call's request to send it again, but only up to 256 KiB by default: a larger one (an
            # UpsertTrack of a long track, an Embed of a clip) would not be retried at all
            ("grpc.per_rpc_retry_buffer_size", max_message_bytes),
            ("grpc.max_reconnect_backoff_ms", RECONNECT_BACKOFF_MS),
            ("grpc.service_config", service_config(services, lb_policy)),
        ],
    )


def backend_credentials(cfg: GatewayConfig) -> ReloadingChannelCredentials | None:
    """TLS to the backends when BACKEND_TLS_CA is set, presenting BACKEND_TLS_CERT (mTLS) when that is;
    the files are watched (:meth:`Backends.rotate`)."""
    if not cfg.backend_tls_ca:
        return None
    names = (f"{PREFIX}_BACKEND_TLS_CA", f"{PREFIX}_BACKEND_TLS_CERT", f"{PREFIX}_BACKEND_TLS_KEY")
    return ReloadingChannelCredentials(cfg.backend_tls_ca, cfg.backend_tls_cert, cfg.backend_tls_key, names)


class Backends:
    """Stubs to the three services; ``model`` is the embedder's model once :meth:`wait_ready` succeeded.

    ``ready`` is set by the gateway once it serves (after its ingest workers started); until then
    :meth:`require_model` answers UNAVAILABLE.
    """

    def __init__(self, cfg: GatewayConfig):
        self.cfg, self.deadline = cfg, cfg.deadline_seconds
        self.tls = backend_credentials(cfg)
        self._lock = threading.Lock()
        self._closed = False  # set by close(): a renewal racing it must not open channels nobody closes
        self._channels: list[grpc.Channel] = []
        self._dial(self.tls.credentials if self.tls else None)
        self.model: types_pb2.ModelInfo | None = None
        self.separator_model = ""
        self.ready = threading.Event()
        self.serving = dict.fromkeys(self._health, False)  # each backend's last health, by name

    def _dial(self, tls: grpc.ChannelCredentials | None) -> list[grpc.Channel]:
        """Open channels to the backends with ``tls`` and swap them and their stubs in; the previous channels."""
        cfg, msg = self.cfg, self.cfg.max_message_bytes
        addresses = [cfg.embedder, cfg.searcher] + ([cfg.separator] if cfg.separator else [])
        channels = [channel(a, msg, [s], cfg.lb_policy, tls) for a, s in zip(addresses, SERVICES, strict=False)]
        # every call bounded by the caller's deadline; a failure names the backend, not its address
        embedder = bounded_stub(embedder_pb2_grpc.EmbedderServiceStub(channels[0]), "embedder")
        searcher = bounded_stub(searcher_pb2_grpc.SearcherServiceStub(channels[1]), "searcher")
        separator = None
        if cfg.separator:
            separator = bounded_stub(separator_pb2_grpc.SeparatorServiceStub(channels[2]), "separator")
        names = ["embedder", "searcher", "separator"]
        health = {n: (health_pb2_grpc.HealthStub(ch), s) for n, ch, s in zip(names, channels, SERVICES, strict=False)}
        with self._lock:
            if self._closed:
                for ch in channels:
                    ch.close()
                return []
            old, self._channels = self._channels, channels
            self.embedder, self.searcher, self._health = embedder, searcher, health
            self.separator: separator_pb2_grpc.SeparatorServiceStub | None = separator
        return old

    def rotate(self) -> bool:
        """New channels when the backend client certificate's files changed and load (checked at most once
        a second; the health checks call this); the old ones are closed after the longest call's deadline."""
        tls = self.tls.changed() if self.tls else None
        if tls is None:
            return False
        old = self._dial(tls)
        log.info("backend client certificate renewed: new channels to the backends")
        closer = threading.Timer(self.deadline * 5, lambda: [ch.close() for ch in old])
        closer.daemon = True
        closer.start()
        return True

    def healthy(self) -> bool:
        """Whether the required backends (embedder, searcher) were SERVING at their last check."""
        return all(self.serving[n] for n in REQUIRED)

    def watch(
        self,
        stopping: threading.Event,
        on_change: Callable[[str, bool], None],
        interval: float = HEALTH_INTERVAL,
        timeout: float = HEALTH_TIMEOUT,
    ) -> None:
        """Check each backend's grpc.health.v1 status (its own service name) every ``interval`` s on its
        channel, one thread each, until ``stopping``; ``on_change(name, serving)`` once at the first check
        and on every change. Unreachable or NOT_SERVING turns it off at once; a check that times out
        does so only the second time in a row (a busy backend is not a dead one)."""
        for name in self._health:
            threading.Thread(
                target=self._watch,
                args=(name, stopping, on_change, interval, timeout),
                name=f"health-{name}",
                daemon=True,
            ).start()

    def _watch(self, name: str, stopping: threading.Event, on_change, interval: float, timeout: float) -> None:
        first, misses = True, 0
        while not stopping.is_set():
            self.rotate()
            stub, service = self._health[name]
            try:
                status = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout).status
                serving, misses = status == health_pb2.HealthCheckResponse.SERVING, 0
            except grpc.RpcError as exc:
                misses += 1
                late = exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED and misses < 2
                serving = self.serving[name] and late
            except ValueError:  # the channel is closed: the gateway has stopped (or it was swapped)
                if self._health[name][0] is stub:
                    return
                continue
            if name == "separator" and serving and not self.serving[name]:
                serving = self._ask_separator_model()
            if first or serving != self.serving[name]:
                self.serving[name], first = serving, False
                log.log(logging.INFO if serving else logging.WARNING, "backend %s %s", name, _said(serving))
                on_change(name, serving)
            stopping.wait(interval)

    def _ask_separator_model(self) -> bool:
        """The separator's model name (the stems cache keys on it); False when it cannot be asked."""
        assert self.separator is not None
        try:
            self.separator_model = self.separator.GetSeparatorModel(
                separator_pb2.GetSeparatorModelRequest(), timeout=5
            ).model.name
        except grpc.RpcError as exc:
            log.info("separator: no model name yet: %s", exc.code().name)
            return False
        return True

    def wait_ready(self, stopping: threading.Event, timeout: float | None = None) -> bool:
        """Ask the embedder and searcher once a second until both answer; False if ``stopping`` is set or
        ``timeout`` passes. The separator is optional: :meth:`watch` asks for its model once it serves."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not stopping.is_set():
            try:
                self.model = self.embedder.GetModel(embedder_pb2.GetModelRequest(), timeout=5).model
                self.searcher.GetStats(searcher_pb2.GetStatsRequest(), timeout=5)
                return True
            except grpc.RpcError as exc:
                log.info("waiting for backends: %s", exc.details() if hasattr(exc, "details") else exc)
                if deadline is not None and time.monotonic() > deadline:
                    return False
                stopping.wait(1.0)
        return False

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for ch in self._channels:
                ch.close()

    def require_model(self) -> types_pb2.ModelInfo:
        if not self.ready.is_set() or self.model is None:
            raise Unavailable(
                "the gateway is starting: the embedder or searcher is not reachable yet", retry_after_seconds=1.0
            )
        return self.model

    def require_separator(self, what: str) -> separator_pb2_grpc.SeparatorServiceStub:
        if self.separator is None:
            raise FailedPrecondition(f"{what} needs a separator; none is configured ({PREFIX}_SEPARATOR=host:port)")
        return self.separator

    def embed(self, audio: types_pb2.Audio, segment: float, hop: float) -> embedder_pb2.EmbedResponse:
        """One Embed call (no cache, no power: see :mod:`.embedding`)."""
        return self.embedder.Embed(
            embedder_pb2.EmbedRequest(audio=audio, segment_seconds=segment, hop_seconds=hop), timeout=self.deadline
        )

    def separate(self, request: separator_pb2.SeparateRequest) -> tuple[types_pb2.SeparationHeader, list[bytes]]:
        """The separator's stream, collected: (header, [bytes of each stem])."""
        sep = self.require_separator("separation")
        try:
            return collect(sep.Separate(request, timeout=self.deadline * 5))
        except InvalidArgument as exc:  # a malformed stream is the separator's fault, not the caller's
            raise Unavailable(f"the separator sent an inconsistent stream: {exc}") from None

    def track(self, track_id: str) -> types_pb2.Track:
        """The catalog's record of ``track_id`` (checked first); NOT_FOUND from the searcher if unknown."""
        check_track_id(track_id)
        return self.searcher.GetTrack(searcher_pb2.GetTrackRequest(track_id=track_id), timeout=self.deadline).track

    def segment(self, track_id: str, index: int) -> types_pb2.SegmentEmbedding:
        return self.searcher.GetSegment(
            searcher_pb2.GetSegmentRequest(track_id=track_id, segment_index=index), timeout=self.deadline
        ).segment
