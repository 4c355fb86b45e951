"""TLS for partsim's gRPC: server credentials from PEM files that follow their rotation, the peer check of
mTLS, and the credentials of the callers (the gateway to its backends, the client, the CLI).

Server side (every service; :meth:`.service.Service.server_credentials` and :func:`interceptors`):

- ``TLS_CERT`` + ``TLS_KEY``: the port speaks TLS. The files are watched: a handshake after they changed
  (cert-manager renewed the Secret, ``scripts/dev-certs.py`` reissued them) gets the new certificate,
  without a restart; connections already open keep theirs. A changed pair that does not load (a key that
  does not match its certificate, half written) is logged and the previous one kept until the files change
  again.
- ``TLS_CLIENT_CA``: mTLS. A caller must present a certificate signed by this CA, or the handshake fails.
- ``TLS_CLIENT_NAMES``: of those callers, only certificates naming one of these (a DNS SAN or the CN;
  ``partsim-gateway-client``: the gateway) may call anything but grpc.health.v1; the others get
  PERMISSION_DENIED. So a service's health check can present the service's own certificate (as compose's
  and the Kubernetes probes do) while the API admits the gateway alone.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc

from partsim.errors import InvalidArgument, PermissionDenied

log = logging.getLogger("partsim.services.tls")

HEALTH_PREFIX = "/grpc.health.v1.Health/"
PEER_NAME_KEYS = ("x509_subject_alternative_name", "x509_common_name")


def read_pem(path: str, what: str) -> bytes:
    """The bytes of a PEM file; InvalidArgument naming ``what`` (a setting) when it cannot be read."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InvalidArgument(f"{what}: cannot read {path}: {exc.strerror or exc}") from None


def file_signature(paths: Sequence[str]) -> tuple | None:
    """What changes when a file is replaced (also through a symlink, as Kubernetes updates Secret volumes)."""
    try:
        return tuple((s.st_mtime_ns, s.st_size, s.st_ino) for s in map(os.stat, paths))
    except OSError:
        return None


def check_files(cert: str = "", key: str = "", ca: str = "") -> str | None:
    """Why a certificate with its key, and a CA, do not load (as gRPC would load them), or None when they do."""
    for path in (cert, key, ca):
        try:
            if path:
                Path(path).read_bytes()
        except OSError as exc:
            return f"cannot read {path}: {exc.strerror or exc}"
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        if cert:
            ctx.load_cert_chain(cert, key or None)
        if ca:
            ctx.load_verify_locations(ca)
    except (OSError, ssl.SSLError) as exc:
        return f"not a usable PEM certificate, key or CA ({getattr(exc, 'reason', None) or exc})"
    return None


class ReloadingServerCertificate:
    """A TLS server's certificate configuration read from files, read again after they change.

    Args:
        cert, key: PEM certificate chain and private key.
        client_ca: PEM CA that callers' certificates must chain to (mTLS); empty: no client certificates.
        names: how to name the files in errors, e.g. ``("PARTSIM_SEARCHER_TLS_CERT", ...)``.

    Raises:
        InvalidArgument: the files do not load now (naming them).
    """

    def __init__(self, cert: str, key: str, client_ca: str = "", names: tuple[str, str, str] = ("cert", "key", "CA")):
        self.cert, self.key, self.client_ca = cert, key, client_ca
        self.files = [cert, key] + ([client_ca] if client_ca else [])
        self._lock = threading.Lock()
        self._loaded: tuple | None = None
        self._refused: tuple | None = None
        self.reloads = 0  # configurations handed to gRPC after the first
        problem = check_files(cert, key, client_ca)
        if problem:
            what = f"{names[0]}, {names[1]}" + (f", {names[2]}" if client_ca else "")
            raise InvalidArgument(f"{what}: {problem}")
        initial = self._load(file_signature(self.files))
        assert initial is not None
        self.initial = initial

    def _load(self, sig: tuple | None) -> grpc.ServerCertificateConfiguration | None:
        config = grpc.ssl_server_certificate_configuration(
            [(Path(self.key).read_bytes(), Path(self.cert).read_bytes())],
            root_certificates=Path(self.client_ca).read_bytes() if self.client_ca else None,
        )
        self._loaded = sig
        return config

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """gRPC asks before each handshake: a new configuration when the files changed, else None (keep)."""
        sig = file_signature(self.files)
        if sig is None or sig == self._loaded or sig == self._refused:
            return None
        with self._lock:
            if sig == self._loaded:
                return None
            problem = check_files(self.cert, self.key, self.client_ca)
            if problem:
                self._refused = sig
                log.warning("TLS files %s changed but do not load (%s); serving the previous ones", self.cert, problem)
                return None
            try:
                config = self._load(sig)
            except OSError as exc:  # replaced again while being read: the next handshake tries again
                log.warning("TLS files %s changed but cannot be read (%s); serving the previous ones", self.cert, exc)
                return None
            self.reloads += 1
            log.info("TLS certificate %s reloaded", self.cert)
            return config

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self.initial, self.fetch, require_client_authentication=bool(self.client_ca)
        )


def server_credentials(cfg) -> grpc.ServerCredentials | None:
    """TLS (mTLS with ``tls_client_ca``) credentials of a :class:`.config.ServerConfig`; None: plaintext."""
    if not cfg.tls_cert:
        return None
    from .config import env_name

    names = tuple(env_name(cfg.prefix, f) for f in ("tls_cert", "tls_key", "tls_client_ca"))
    return ReloadingServerCertificate(cfg.tls_cert, cfg.tls_key, cfg.tls_client_ca, names).credentials()  # type: ignore[arg-type]


def peer_names(context: grpc.ServicerContext) -> set[str]:
    """The names in the caller's verified certificate (DNS/IP SANs and CN); empty without one."""
    auth = context.auth_context() or {}
    return {v.decode(errors="replace") for k in PEER_NAME_KEYS for v in auth.get(k, [])}


def _checked(handler: grpc.RpcMethodHandler, check: Callable[[grpc.ServicerContext], None]) -> grpc.RpcMethodHandler:
    """``handler`` with ``check(context)`` run before its behaviour (what it raises becomes the status)."""
    for kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
        behavior = getattr(handler, kind)
        if behavior is not None:

            def guarded(request, context, behavior=behavior):
                check(context)
                return behavior(request, context)

            return handler._replace(**{kind: guarded})
    return handler


class PeerNameInterceptor(grpc.ServerInterceptor):
    """Admits only callers whose client certificate names one of ``names`` (health checks excepted)."""

    def __init__(self, names: Sequence[str]):
        self.names = frozenset(names)

    def check(self, context: grpc.ServicerContext) -> None:
        if not peer_names(context) & self.names:
            raise PermissionDenied("this service admits calls from the gateway only")

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(HEALTH_PREFIX):
            return handler
        return _checked(handler, self.check)


def split_names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def interceptors(cfg) -> list[grpc.ServerInterceptor]:
    """The TLS interceptors of a :class:`.config.ServerConfig`: the peer-name check when ``tls_client_names``."""
    names = split_names(cfg.tls_client_names)
    return [PeerNameInterceptor(names)] if names else []


def channel_credentials(
    ca: str = "", cert: str = "", key: str = "", names: tuple[str, str, str] = ("CA", "certificate", "key")
) -> grpc.ChannelCredentials:
    """Credentials of a TLS channel trusting ``ca`` (empty: the system's roots), presenting ``cert``/``key``
    when given (mTLS). ``names`` name the three settings in errors (e.g. ``PARTSIM_GATEWAY_BACKEND_TLS_CA``).

    Raises:
        InvalidArgument: only one of ``cert`` and ``key``; a file that does not load (unreadable, not PEM,
            a key that is not the certificate's).
    """
    if bool(cert) != bool(key):
        raise InvalidArgument(f"{names[1]} and {names[2]} go together")
    problem = check_files(cert, key, ca)
    if problem:
        given = ", ".join(n for n, f in zip(names, (ca, cert, key), strict=True) if f)
        raise InvalidArgument(f"{given}: {problem}")
    return grpc.ssl_channel_credentials(
        root_certificates=read_pem(ca, names[0]) if ca else None,
        private_key=read_pem(key, names[2]) if key else None,
        certificate_chain=read_pem(cert, names[1]) if cert else None,
    )


class ReloadingChannelCredentials:
    """Channel credentials (:func:`channel_credentials`) from PEM files that follow their rotation: after
    the files changed (checked by :meth:`changed` at most every ``interval`` s) new credentials are built;
    a changed set that does not load (half written, a key not the certificate's) is logged once and the
    previous credentials kept until the files change again.

    Raises:
        InvalidArgument: the files do not load now (as :func:`channel_credentials`).
    """

    def __init__(
        self,
        ca: str,
        cert: str = "",
        key: str = "",
        names: tuple[str, str, str] = ("CA", "certificate", "key"),
        interval: float = 1.0,
    ):
        self.args = (ca, cert, key, names)
        self.files = [f for f in (ca, cert, key) if f]
        self.interval, self._next = interval, 0.0
        self._lock = threading.Lock()
        self._seen = file_signature(self.files)
        self.credentials = channel_credentials(ca, cert, key, names)
        self.reloads = 0  # credentials built after the first

    def changed(self) -> grpc.ChannelCredentials | None:
        """New credentials when the files changed and load; else None (keep the current ones)."""
        now = time.monotonic()
        if now < self._next or not self._lock.acquire(blocking=False):
            return None
        try:
            self._next = now + self.interval
            sig = file_signature(self.files)
            if sig is None or sig == self._seen:  # unchanged, or a file missing for a moment
                return None
            self._seen = sig
            try:
                self.credentials = channel_credentials(*self.args)
            except InvalidArgument as exc:
                log.warning("TLS files changed but do not load (%s); keeping the previous ones", exc)
                return None
            self.reloads += 1
            log.info("TLS client certificate %s reloaded", self.args[1] or self.args[0])
            return self.credentials
        finally:
            self._lock.release()


def open_channel(
    address: str, credentials: grpc.ChannelCredentials | None, options: Sequence[tuple] = ()
) -> grpc.Channel:
    """A secure channel with ``credentials``, or a plaintext one when they are None."""
    if credentials is None:
        return grpc.insecure_channel(address, options=list(options))
    return grpc.secure_channel(address, credentials, options=list(options))
