"""What every partsim service shares: the gRPC server with its interceptors, health, reflection,
Prometheus metrics (standard ``grpc_server_*`` series) and a graceful stop.

Usage::

    rt = ServiceRuntime("embedder", address="127.0.0.1:0", metrics_port=0, max_message_bytes=...)
    embedder_pb2_grpc.add_EmbedderServiceServicer_to_server(servicer, rt.server)
    rt.start(["partsim.internal.v1.EmbedderService"])   # health NOT_SERVING until rt.set_serving()
    rt.set_serving(True)
    ...
    rt.stop(grace=10)

A service does not use it directly: :class:`.service.Service` builds it from the service's
configuration and adds the lifecycle (load, serve, stop, ``main``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent import futures
from contextlib import contextmanager

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)

from .status import StatusInterceptor, code_for

LIVENESS = "liveness"  # health name SERVING while the process serves RPCs at all (ready or not): liveness probes
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class GrpcMetrics:
    """The py-grpc-prometheus series, registered on an injectable registry."""

    def __init__(self, registry: CollectorRegistry):
        labels = ["grpc_type", "grpc_service", "grpc_method"]
        self.started = Counter("grpc_server_started_total", "RPCs started on the server.", labels, registry=registry)
        self.handled = Counter(
            "grpc_server_handled_total",
            "RPCs completed on the server, by status code.",
            labels + ["grpc_code"],
            registry=registry,
        )
        self.latency = Histogram(
            "grpc_server_handling_seconds",
            "Time to handle an RPC to completion.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.received = Counter(
            "grpc_server_msg_received_total", "Messages received from clients.", labels, registry=registry
        )
        self.sent = Counter("grpc_server_msg_sent_total", "Messages sent to clients.", labels, registry=registry)

    def initialize(self, services: list[str]) -> None:
        """Export zero series for every method of ``services`` (as go-grpc-prometheus's
        InitializeMetrics does), so a rate over a window that starts before a method's first call
        sees that call, and dashboards show 0 rather than nothing for idle methods."""
        from google.protobuf import descriptor_pool

        pool = descriptor_pool.Default()
        for service in services:
            for m in pool.FindServiceByName(service).methods:
                kind = {
                    (False, False): "unary",
                    (True, False): "client_stream",
                    (False, True): "server_stream",
                    (True, True): "bidi_stream",
                }[(m.client_streaming, m.server_streaming)]
                lab = {"grpc_type": kind, "grpc_service": service, "grpc_method": m.name}
                for metric in (self.started, self.latency, self.received, self.sent):
                    metric.labels(**lab)
                self.handled.labels(**lab, grpc_code="OK")


def _split(method: str) -> tuple[str, str]:
    service, _, name = method.lstrip("/").partition("/")
    return service, name


class MetricsInterceptor(grpc.ServerInterceptor):
    """Counts and times every RPC (outermost, so it sees the status the status mapping chose)."""

    def __init__(self, metrics: GrpcMetrics):
        self.m = metrics

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        service, name = _split(handler_call_details.method)
        m = self.m

        def labels(kind):
            return {"grpc_type": kind, "grpc_service": service, "grpc_method": name}

        def finish(kind, context, start, exc):
            code = context.code() if hasattr(context, "code") else None
            if code is None:
                code = grpc.StatusCode.OK if exc is None else code_for(exc)
            m.handled.labels(**labels(kind), grpc_code=code.name).inc()
            m.latency.labels(**labels(kind)).observe(time.perf_counter() - start)

        def counted(it, kind):
            for item in it:
                m.received.labels(**labels(kind)).inc()
                yield item

        @contextmanager
        def observed(kind, context, streaming_in):
            m.started.labels(**labels(kind)).inc()
            start, exc = time.perf_counter(), None
            if not streaming_in:
                m.received.labels(**labels(kind)).inc()
            try:
                yield
            except BaseException as e:
                exc = e
                raise
            finally:
                finish(kind, context, start, exc)

        def unary(behavior, kind, streaming_in):
            def h(req, context):
                with observed(kind, context, streaming_in):
                    resp = behavior(counted(req, kind) if streaming_in else req, context)
                    m.sent.labels(**labels(kind)).inc()
                    return resp

            return h

        def stream(behavior, kind, streaming_in):
            def h(req, context):
                with observed(kind, context, streaming_in):
                    for resp in behavior(counted(req, kind) if streaming_in else req, context):
                        m.sent.labels(**labels(kind)).inc()
                        yield resp

            return h

        if handler.unary_unary:
            return handler._replace(unary_unary=unary(handler.unary_unary, "unary", False))
        if handler.stream_unary:
            return handler._replace(stream_unary=unary(handler.stream_unary, "client_stream", True))
        if handler.unary_stream:
            return handler._replace(unary_stream=stream(handler.unary_stream, "server_stream", False))
        if handler.stream_stream:
            return handler._replace(stream_stream=stream(handler.stream_stream, "bidi_stream", True))
        return handler


class ServiceRuntime:
    """A gRPC server with status mapping, metrics, health (grpc.health.v1) and reflection.

    Args:
        name: service name for logs.
        address: ``host:port`` to bind (port 0: the OS picks; see :attr:`port`).
        max_message_bytes: receive and send limit; larger messages get RESOURCE_EXHAUSTED.
        metrics_port: Prometheus /metrics HTTP port (0: the OS picks, None: no HTTP server).
        registry: metrics registry (injectable for tests); a new one by default.
        workers: handler threads.
        max_connection_age: seconds after which a client connection is closed (0: never), with
            ``grace`` seconds for its RPCs to finish. Clients then reconnect and re-resolve DNS, which
            is how a round_robin client behind a headless Service finds replicas added since.
        interceptors: the service's own interceptors (authentication, rate limits), inside the metrics
            and the status mapping: what they raise as :mod:`partsim.errors` becomes its status code.
        credentials: TLS (or mTLS) server credentials; None: a plaintext port.

    Besides the ``grpc_server_*`` series the registry gets ``process_*`` (CPU, memory, open files),
    ``python_info`` and ``partsim_health_serving`` (1 while grpc.health.v1 reports SERVING).

    Health: ``""`` and the service names are SERVING once the service is ready (:meth:`set_serving`;
    readiness); :data:`LIVENESS` is SERVING from :meth:`start` to :meth:`stop` (liveness probes: a
    gateway whose backends are away is not ready, but restarting it would not help).
    """

    def __init__(
        self,
        name: str,
        address: str,
        max_message_bytes: int,
        metrics_port: int | None = 0,
        metrics_host: str = "127.0.0.1",
        registry: CollectorRegistry | None = None,
        workers: int = 16,
        max_connection_age: float = 0.0,
        connection_age_grace: float = 30.0,
        interceptors: Sequence[grpc.ServerInterceptor] = (),
        credentials: grpc.ServerCredentials | None = None,
    ):
        self.name = name
        self.registry = registry or CollectorRegistry()
        self.metrics = GrpcMetrics(self.registry)
        for collector in (ProcessCollector, PlatformCollector):
            try:
                collector(registry=self.registry)
            except ValueError:  # a registry shared by two runtimes in one process has them already
                pass
        self._serving = Gauge(
            "partsim_health_serving", "1 while grpc.health.v1 reports SERVING for this service.", registry=self.registry
        )
        options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
        if max_connection_age > 0:
            options += [
                ("grpc.max_connection_age_ms", int(max_connection_age * 1000)),
                ("grpc.max_connection_age_grace_ms", int(connection_age_grace * 1000)),
            ]
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"{name}-rpc"),
            interceptors=[MetricsInterceptor(self.metrics), StatusInterceptor(), *interceptors],
            options=options,
        )
        if credentials is None:
            self.port = self.server.add_insecure_port(address)
        else:
            self.port = self.server.add_secure_port(address, credentials)
        if self.port == 0:
            raise OSError(f"{name}: cannot bind {address}")
        self.host = address.rsplit(":", 1)[0]
        self.health = health.HealthServicer(experimental_non_blocking=True)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self._services: list[str] = []
        self._metrics_server = None
        self.metrics_port: int | None = None
        if metrics_port is not None:
            self._metrics_server, thread = start_http_server(metrics_port, addr=metrics_host, registry=self.registry)
            self.metrics_port = self._metrics_server.server_port
        self._metrics_host = "127.0.0.1" if metrics_host in ("0.0.0.0", "") else metrics_host
        self._stopped = threading.Event()

    @property
    def address(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "[::]", "") else self.host
        return f"{host}:{self.port}"

    def start(self, service_names: list[str]) -> None:
        self._services = list(service_names)
        self.metrics.initialize(self._services)
        reflection.enable_server_reflection(
            [*self._services, reflection.SERVICE_NAME, health.SERVICE_NAME], self.server
        )
        self.set_serving(False)
        self.health.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
        self.server.start()
        # partsim up (partsim/cluster.py) reads this line to learn the addresses.
        metrics = f"metrics on {self._metrics_host}:{self.metrics_port}" if self.metrics_port else "no metrics"
        try:
            print(f"{self.name} serving on {self.address} ({metrics})", flush=True)
        except OSError:  # a standard output on a full disk does not stop the service
            pass

    def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for s in ["", *self._services]:
            self.health.set(s, status)
        self._serving.set(1 if serving else 0)

    def set_health(self, name: str, serving: bool) -> None:
        """Report ``name`` (beyond the service's own names), e.g. ``partsim.v1.PartsimService/searcher``: a
        backend's state as this service sees it. Ignored once stopping (everything is NOT_SERVING then)."""
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        self.health.set(name, status)

    def stop(self, grace: float = 10.0) -> None:
        """Stop accepting RPCs, let running ones finish for up to ``grace`` seconds."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._serving.set(0)
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()

    def wait(self) -> None:
        self.server.wait_for_termination()
