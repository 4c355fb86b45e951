"""Gateway configuration (env ``PARTSIM_GATEWAY_*``, flags override), validated at start-up."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from ..config import MiB, ServerConfig, is_loopback, require, server_field
from .auth.settings import check_auth

PREFIX = "PARTSIM_GATEWAY"
LB_POLICIES = ("round_robin", "pick_first")

TARGETS = (
    "host:port, dns:///name:port (every address the name resolves to, e.g. a headless Service's pods) or "
    "ipv4:host:port,host:port (a fixed list; ipv6:[addr]:port,... likewise)"
)

MAX_TOP_K = 1000  # documented in protos/partsim/v1/gateway.proto
DEFAULT_TOP_K = 100


def _port_problem(port: str) -> str:
    return "" if port.isdigit() and 0 < int(port) < 65536 else f"port {port!r} is not a number within 1..65535"


def _host_port_problem(text: str) -> str:
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        return f"{text!r} is not host:port"
    if any(c in host for c in ",/ \t") or host.startswith(":"):
        return f"{host!r} is not a host name or address"
    return _port_problem(port)


def target_problem(target: str) -> str:
    """Why ``target`` is not a gRPC target the gateway dials ('' when it is one): ``host:port``,
    ``dns:[//authority/]name:port``, ``ipv4:ADDR:PORT[,ADDR:PORT...]``, ``ipv6:[ADDR]:PORT[,...]`` (gRPC's own
    static list: round_robin balances over it) or ``unix:PATH``."""
    if not target:
        return "empty"
    scheme, _, rest = target.partition(":")
    if scheme in ("ipv4", "ipv6"):
        for item in rest.split(","):
            host, sep, port = item.rpartition(":")
            try:
                ip = ipaddress.ip_address(host[1:-1] if scheme == "ipv6" and host.startswith("[") else host)
            except ValueError:
                return f"{item!r} in the {scheme}: list is not {'[address]' if scheme == 'ipv6' else 'address'}:port"
            if ip.version != int(scheme[-1]) or not sep:
                return f"{item!r} in the {scheme}: list is not an IPv{scheme[-1]} address:port"
            if problem := _port_problem(port):
                return f"{item!r} in the {scheme}: list: {problem}"
        return ""
    if scheme == "dns":
        name = rest[2:].partition("/")[2] if rest.startswith("//") else rest
        return _host_port_problem(name)
    if scheme == "unix":
        return "" if rest.strip("/") else "unix: needs a socket path"
    if "," in target:
        return f"a list of addresses needs gRPC's ipv4: (or ipv6:) scheme, e.g. ipv4:{target}"
    return _host_port_problem(target)


@dataclass
class GatewayConfig(ServerConfig):
    """partsim gateway: the public gRPC API (EmbedParts, IndexTrack, SearchMix, ...)."""

    prefix: ClassVar[str] = PREFIX
    address: str = server_field("address", "127.0.0.1:50051")
    metrics_port: int = server_field("metrics_port", 9091)
    workers: int = server_field("workers", 32)
    embedder: str = field(
        default="127.0.0.1:50052",
        metadata={
            "help": "embedder service address: a gRPC target, host:port, dns:///name:port of a headless Service "
            "to balance over its pods, or ipv4:host:port,host:port to balance over a fixed list"
        },
    )
    lb_policy: str = field(
        default="round_robin",
        metadata={"help": "gRPC load balancing over the addresses a target resolves to: round_robin or pick_first"},
    )
    searcher: str = field(
        default="127.0.0.1:50053",
        metadata={
            "help": "searcher service address, a gRPC target as EMBEDDER's: searcher replicas on one Milvus server "
            "all serve one catalog, e.g. ipv4:127.0.0.1:50053,127.0.0.1:50063"
        },
    )
    separator: str = field(
        default="",
        metadata={
            "help": "separator service address, a gRPC target as EMBEDDER's (empty: none; GetStems "
            "and the signal-level mode then fail with a clear error)"
        },
    )
    backend_tls_ca: str = field(
        default="", metadata={"help": "PEM CA of the embedder, searcher and separator: dial them over TLS"}
    )
    backend_tls_cert: str = field(
        default="", metadata={"help": "PEM client certificate the gateway presents to them (mTLS)"}
    )
    backend_tls_key: str = field(default="", metadata={"help": "PEM private key of BACKEND_TLS_CERT"})
    store_audio: bool = field(
        default=True, metadata={"help": "keep indexed tracks' audio (for GetStems) under AUDIO_DIR"}
    )
    audio_dir: str = field(default="", metadata={"help": "folder of the kept audio (default DATA_DIR/audio)"})
    redis_url: str = field(
        default="",
        metadata={"help": "redis://host:port/db for cache and ingest queue; empty: in-process cache, jobs in DATA_DIR"},
    )
    redis_password_file: str = field(
        default="",
        metadata={"help": "file holding the Redis password (AUTH), e.g. a mounted Secret; or redis://:PASSWORD@host"},
    )
    data_dir: str = field(default="", metadata={"help": "folder for local job state (needed without Redis)"})
    allowed_roots: str = field(default="", metadata={"help": "colon-separated folders ingest URIs may point into"})
    segment_seconds: float = field(default=10.0, metadata={"help": "catalog segment length (thesis MixQuery: 10)"})
    max_upload_mb: float = field(
        default=60.0,
        metadata={"help": "largest audio upload (IndexTrack, EmbedParts); keep it under the embedder's max_message_mb"},
    )
    max_query_segments: int = field(default=64, metadata={"help": "most query embeddings in one SearchMix"})
    consumer: str = field(
        default="",
        metadata={
            "help": "ingest consumer name: stable across restarts of one "
            "replica, unique per replica (default: the host name)"
        },
    )
    ingest_workers: int = field(default=2, metadata={"help": "threads indexing ingest jobs (0: API only)"})
    deadline_seconds: float = field(default=120.0, metadata={"help": "deadline of calls to the other services"})
    cache_mb: float = field(default=256.0, metadata={"help": "in-process embedding cache size (without Redis)"})
    auth: str = field(default="none", metadata={"help": "who may call: none (anyone), keys, jwt or keys+jwt"})
    auth_keys_file: str = field(default="", metadata={"help": "the API keys file that `partsim keys` edits"})
    auth_jwks_file: str = field(default="", metadata={"help": "JWKS file of the identity provider's public keys"})
    auth_jwt_issuer: str = field(default="", metadata={"help": "the iss a JWT must carry"})
    auth_jwt_audience: str = field(default="", metadata={"help": "the aud a JWT must carry"})
    auth_jwt_role_claim: str = field(default="partsim_role", metadata={"help": "JWT claim naming the role(s)"})
    auth_rate_per_second: float = field(default=50.0, metadata={"help": "calls a second per caller (0: no limit)"})
    auth_rate_burst: int = field(default=100, metadata={"help": "calls a caller may make at once"})
    http_port: int = field(
        default=-1,
        metadata={
            "help": "port of the HTTP/JSON API, the OpenAPI document and the web app (0: any, -1: none); HTTPS "
            "with TLS_CERT; its calls pass the gRPC server's auth and rate limits"
        },
    )
    http_host: str = field(
        default="",
        metadata={"help": "interface of the HTTP port (empty: the host of ADDRESS); beyond loopback as ADDRESS"},
    )
    web_dir: str = field(default="", metadata={"help": "folder of the web app served at / (default: the shipped one)"})

    def validate(self) -> None:
        super().validate()
        p = PREFIX
        for name in ("embedder", "searcher", "separator"):
            value = getattr(self, name)
            if name != "separator" or value:
                problem = target_problem(value)
                require(not problem, p, name, f"{problem}; expected {TARGETS}")
        require(
            self.lb_policy in LB_POLICIES,
            p,
            "lb_policy",
            f"expected one of {', '.join(LB_POLICIES)}, got {self.lb_policy!r}",
        )
        require(
            not self.store_audio or bool(self.audio_dir or self.data_dir),
            p,
            "audio_dir",
            "needed (or DATA_DIR) when STORE_AUDIO is on",
        )
        require(
            self.redis_url == "" or self.redis_url.startswith(("redis://", "rediss://", "unix://")),
            p,
            "redis_url",
            f"expected redis://host:port/db, got {self.redis_url!r}",
        )
        require(not self.redis_password_file or bool(self.redis_url), p, "redis_password_file", "needs REDIS_URL")
        require(
            bool(self.redis_url) or bool(self.data_dir),
            p,
            "data_dir",
            "needed when no Redis is configured (ingest jobs must survive a restart)",
        )
        require(1.0 <= self.segment_seconds <= 60.0, p, "segment_seconds", "must be within 1..60")
        require(0 < self.max_upload_mb <= 2000, p, "max_upload_mb", "must be within (0, 2000]")
        require(1 <= self.max_query_segments <= 10000, p, "max_query_segments", "must be within 1..10000")
        require(
            0 <= self.ingest_workers <= 64,
            p,
            "ingest_workers",
            "must be within 0..64 (0: this replica serves the API only)",
        )
        require(self.deadline_seconds > 0, p, "deadline_seconds", "must be positive")
        require(
            bool(self.backend_tls_key) == bool(self.backend_tls_cert), p, "backend_tls_key", "set with BACKEND_TLS_CERT"
        )
        require(
            bool(self.backend_tls_ca) or not self.backend_tls_cert, p, "backend_tls_ca", "needed with BACKEND_TLS_CERT"
        )
        for f in ("backend_tls_ca", "backend_tls_cert", "backend_tls_key"):
            path = getattr(self, f)
            require(not path or os.path.isfile(path), p, f, f"no such file: {path}")
        require(self.cache_mb >= 0, p, "cache_mb", "must be 0 or more")
        for root in self.roots():
            require(root.is_dir(), p, "allowed_roots", f"{root} is not a folder")
        check_auth(self)
        self.validate_http()

    def validate_http(self) -> None:
        """The HTTP port's checks: a port, -1 or 0; beyond loopback only as ADDRESS may (TLS and auth, or
        INSECURE); not with TLS_CLIENT_CA (its calls reach the gRPC server on a local socket, where a client
        certificate cannot be checked)."""
        p = PREFIX
        require(-1 <= self.http_port <= 65535, p, "http_port", "must be a port, 0 (any) or -1 (none)")
        if self.http_port < 0:
            return
        require(
            not self.tls_client_ca,
            p,
            "http_port",
            f"the HTTP API cannot check client certificates ({p}_TLS_CLIENT_CA): set {p}_HTTP_PORT=-1 (no HTTP), "
            f"or leave out {p}_TLS_CLIENT_CA (callers are authenticated by their tokens, {p}_AUTH)",
        )
        missing = self.unprotected()
        require(
            is_loopback(f"{self.http_bind_host}:0") or self.insecure or not missing,
            p,
            "http_host",
            f"{self.http_bind_host} is not a loopback address: serving HTTP on it needs {' and '.join(missing)}, or "
            f"{p}_INSECURE=true (--insecure)",
        )
        require(not self.web_dir or Path(self.web_dir).is_dir(), p, "web_dir", f"{self.web_dir} is not a folder")

    @property
    def http_bind_host(self) -> str:
        """The interface of the HTTP port: HTTP_HOST, else the host of ADDRESS."""
        return self.http_host or self.address.rsplit(":", 1)[0].strip("[]") or "0.0.0.0"

    def audio_folder(self) -> Path | None:
        if not self.store_audio:
            return None
        return Path(self.audio_dir) if self.audio_dir else Path(self.data_dir) / "audio"

    def roots(self) -> list[Path]:
        return [Path(r).resolve() for r in self.allowed_roots.split(os.pathsep) if r.strip()]

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * MiB)

    @property
    def max_message_bytes(self) -> int:
        """An upload and the rest of its request."""
        return self.max_upload_bytes + 4 * MiB
