"""HTTPS for the HTTP/JSON API with the gRPC port's certificate (``TLS_CERT``/``TLS_KEY``), reloaded as the
gRPC server reloads it (:mod:`partsim.services.tls`): a connection after the files changed gets the new
pair; a changed pair that does not load is logged and the previous one kept."""

from __future__ import annotations

import logging
import ssl
import threading

from ...tls import check_files, file_signature

log = logging.getLogger("partsim.gateway.http")


class ReloadingContext:
    def __init__(self, cert: str, key: str):
        self.cert, self.key = cert, key
        self._lock = threading.Lock()
        self._sig = file_signature([cert, key])
        self._refused: tuple | None = None
        self.current = self._build()
        self.reloads = 0

    def _build(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert, self.key)
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx

    def context(self) -> ssl.SSLContext:
        """The context for the next connection (a new one when the files changed and load)."""
        sig = file_signature([self.cert, self.key])
        if sig is None or sig == self._sig or sig == self._refused:
            return self.current
        with self._lock:
            if sig == self._sig:
                return self.current
            problem = check_files(self.cert, self.key)
            if problem:
                self._refused = sig
                log.warning("TLS files %s changed but do not load (%s); serving the previous ones", self.cert, problem)
                return self.current
            self.current, self._sig = self._build(), sig
            self.reloads += 1
            log.info("HTTPS certificate %s reloaded", self.cert)
            return self.current
