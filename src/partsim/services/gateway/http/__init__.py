"""The gateway's HTTP/JSON API: every public RPC at the path its ``google.api.http`` annotation gives
(AIP-127: ``POST /v1/search:mix``, ``GET /v1/tracks/{track_id}``, ...), bodies and answers in protobuf's
JSON mapping, errors as google.rpc.Status JSON with the HTTP status of their code; plus playable stems and
audio, the OpenAPI document (``/v1/openapi.json``) and the web app (``/``). Served by the gateway process
itself beside its gRPC port (``PARTSIM_GATEWAY_HTTP_PORT``), each call passing through that gRPC server.

* :mod:`.routes` - the route table from the annotations; :mod:`.transcode` - HTTP <-> protobuf, errors;
* :mod:`.uploads` - IndexTrack's bodies; :mod:`.media` - stems and audio files;
* :mod:`.server` - the HTTP server and the bridge to gRPC; :mod:`.openapi` - the OpenAPI document.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from partsim.v1 import gateway_pb2

if TYPE_CHECKING:
    from ..audio_store import AudioStore
    from ..config import GatewayConfig

SERVICE = gateway_pb2.DESCRIPTOR.services_by_name["PartsimService"]


def start_http(cfg: GatewayConfig, target: str, audio: AudioStore | None, registry, web_dir=None):
    """The gateway's HTTP server, serving: calls go to the gRPC server at ``target`` (the bridge)."""
    from .server import WEB_DIR, Bridge, HttpApi, HttpGateway
    from .tls import ReloadingContext

    api = HttpApi(
        SERVICE,
        Bridge(target, SERVICE, cfg.max_message_bytes),
        cfg.max_upload_bytes,
        audio,
        web_dir=Path(web_dir or cfg.web_dir or WEB_DIR),
        registry=registry,
    )
    tls = ReloadingContext(cfg.tls_cert, cfg.tls_key) if cfg.tls_cert else None
    try:
        server = HttpGateway(cfg.http_bind_host, cfg.http_port, api, tls, max_connections=cfg.workers * 2)
    except BaseException:
        api.bridge.close()
        raise
    return server.start()
