"""The HTTP server of the HTTP/JSON API, the OpenAPI document and the web app (stdlib ``http.server``).

Each API call goes to the gateway's own gRPC server through a channel on an abstract unix socket that only
this process binds (:class:`Bridge`), with the caller's ``Authorization`` header as the call's
``authorization`` metadata: the caller is authenticated, authorised, rate-limited (per token), audited,
counted and answered by exactly the interceptors and handlers a gRPC caller meets. The caller's address
travels as ``x-forwarded-for`` (the audit line's peer).

Bounded: request bodies (413 beyond the gateway's upload limit, base64 in JSON counted at 4/3), connections
at once (503 beyond), socket reads (a client that stops sending is dropped) and each call's deadline (600 s, or
less when the client's ``X-Server-Timeout`` header asks).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from prometheus_client import CollectorRegistry, Counter, Histogram

from ..audio_store import AudioStore
from .handler import CALL_TIMEOUT, Handler
from .routes import Route, parse_template, route_table
from .tls import ReloadingContext

log = logging.getLogger("partsim.gateway.http")

OPENAPI_FILE = Path(__file__).with_name("openapi.json")
WEB_DIR = Path(__file__).resolve().parent.parent / "web"
MEDIA_ROUTES = [
    Route("GET", parse_template("/v1/tracks/{track_id}/stems/{file}"), "media:stem"),
    Route("GET", parse_template("/v1/tracks/{track_id}/audio.wav"), "media:audio", extra={"file": "audio.wav"}),
    Route("GET", parse_template("/v1/tracks/{track_id}/audio.flac"), "media:audio", extra={"file": "audio.flac"}),
]


def max_body_bytes(max_upload_bytes: int) -> int:
    """The largest request body: an upload as base64 in JSON (4/3) and the rest of its request."""
    return max_upload_bytes * 4 // 3 + (4 << 20)


class Bridge:
    """Calls of ``service``'s methods on the gateway's gRPC server at ``target``, by their descriptors."""

    def __init__(self, target: str, service: ServiceDescriptor, max_message_bytes: int):
        opts = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]
        self.channel = grpc.insecure_channel(target, options=opts)
        self.calls = {m.name: self._callable(m) for m in service.methods}

    def _callable(self, m: MethodDescriptor):
        path = f"/{m.containing_service.full_name}/{m.name}"
        out = message_factory.GetMessageClass(m.output_type)
        kind = {(False, False): "unary_unary", (True, False): "stream_unary", (False, True): "unary_stream"}.get(
            (m.client_streaming, m.server_streaming), "stream_stream"
        )
        return getattr(self.channel, kind)(
            path, request_serializer=lambda r: r.SerializeToString(), response_deserializer=out.FromString
        )

    def call(self, method: str, request, metadata: list[tuple[str, str]], timeout: float = CALL_TIMEOUT):
        """The answer of ``method`` (a list of messages for a server stream) within ``timeout`` seconds;
        grpc.RpcError when it fails (DEADLINE_EXCEEDED when the time ran out)."""
        answer = self.calls[method](request, metadata=metadata, timeout=timeout)
        return list(answer) if not hasattr(answer, "SerializeToString") else answer

    def close(self) -> None:
        self.channel.close()


class HttpMetrics:
    def __init__(self, registry: CollectorRegistry | None):
        self.requests = Counter(
            "partsim_gateway_http_requests",
            "HTTP requests the gateway answered, by route (method and path template) and HTTP status.",
            ["route", "code"],
            registry=registry,
        )
        self.seconds = Histogram(
            "partsim_gateway_http_request_seconds",
            "Time to answer an HTTP request, by route.",
            ["route"],
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )


class HttpApi:
    """What the handler needs: the routes, the bridge, the limits, the audio store, the web app's folder."""

    def __init__(
        self,
        service: ServiceDescriptor,
        bridge: Bridge,
        max_upload_bytes: int,
        audio: AudioStore | None = None,
        web_dir: Path | None = WEB_DIR,
        registry: CollectorRegistry | None = None,
    ):
        self.routes = route_table(service) + MEDIA_ROUTES
        self.bridge = bridge
        self.max_upload_bytes = max_upload_bytes
        self.max_body = max_body_bytes(max_upload_bytes)
        self.audio = audio
        self.web_dir = web_dir.resolve() if web_dir is not None else None
        self.metrics = HttpMetrics(registry)
        self._openapi: bytes | None = None

    def openapi(self) -> bytes:
        """The OpenAPI document (scripts/gen-openapi.py writes it from the protos), read once."""
        if self._openapi is None:
            self._openapi = OPENAPI_FILE.read_bytes()
        return self._openapi


class HttpServer(ThreadingHTTPServer):
    """At most ``max_connections`` connections served at once; HTTPS when ``tls`` is given."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], api: HttpApi, tls: ReloadingContext | None, max_connections: int):
        self.api = api
        self.tls = tls
        self.slots = threading.BoundedSemaphore(max_connections)
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)

    def get_request(self):
        sock, addr = super().get_request()
        if self.tls is not None:  # the handshake runs in the connection's thread, under its read timeout
            sock = self.tls.context().wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def process_request(self, request, client_address):
        if not self.slots.acquire(blocking=False):
            try:
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request, client_address) -> None:
        log.debug("HTTP connection from %s failed", client_address, exc_info=True)


class HttpGateway:
    """The running HTTP server: :meth:`start` binds and serves in a thread, :meth:`stop` ends it."""

    def __init__(
        self, host: str, port: int, api: HttpApi, tls: ReloadingContext | None = None, max_connections: int = 64
    ):
        self.server = HttpServer((host, port), api, tls, max_connections)
        self.api = api
        self.scheme = "https" if tls is not None else "http"
        self.host = host
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"{self.scheme}://{host}:{self.port}/"

    def start(self) -> HttpGateway:
        self._thread = threading.Thread(target=self.server.serve_forever, name="gateway-http", daemon=True)
        self._thread.start()
        return self

    def close_listener(self) -> None:
        """Accept no more connections (requests under way go on)."""
        if self._thread is not None:
            self.server.shutdown()
            self._thread = None
        self.server.server_close()

    def stop(self) -> None:
        """Stop serving and close the bridge (calls still under way through it fail)."""
        self.close_listener()
        self.api.bridge.close()


def bridge_target() -> str:
    """A fresh abstract unix socket name for this process's gRPC server (no file: works on a read-only root)."""
    return f"unix-abstract:partsim-gateway-{os.getpid()}-{secrets.token_hex(8)}"
