"""The one shape of a partsim service: :class:`Service`, and the ``main`` that runs it.

Each of the four services (gateway, embedder, searcher, separator) is a subclass::

    svc = EmbedderServer(cfg).serve()   # listening: gRPC, health (NOT_SERVING), reflection, /metrics
    svc.load()                          # ready: model loaded and warm (index open, backends found): SERVING
    ...
    svc.stop(grace)                     # NOT_SERVING; running RPCs get ``grace`` s; then released

:meth:`Service.start` is ``serve()`` then ``load()`` (stopping again when loading fails); its
``main`` (:meth:`Service.main`) reads the configuration, starts it and serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import abc
import logging
import signal
import sys
import threading
from typing import Any, ClassVar, Generic, TypeVar

import grpc
from prometheus_client import CollectorRegistry

from partsim.errors import PartsimError

from .config import ServerConfig, load
from .logs import configure as configure_logging
from .runtime import ServiceRuntime
from .tls import interceptors as tls_interceptors
from .tls import server_credentials as tls_server_credentials

log = logging.getLogger("partsim.services")

C = TypeVar("C", bound=ServerConfig)
S = TypeVar("S", bound="Service")


class Service(abc.ABC, Generic[C]):
    """A gRPC servicer on a :class:`~.runtime.ServiceRuntime` and what it needs to answer.

    A subclass sets :attr:`name`, :attr:`grpc_service` and :attr:`config`, builds its servicer in
    :meth:`add_servicer`, makes it ready in :meth:`load` and releases what that opened in
    :meth:`close`.

    Args:
        cfg: the service's configuration (checked again by :meth:`serve`).
        registry: where the metrics go (injectable for tests); a new one by default.
    """

    name: ClassVar[str]  # "embedder": the runtime's name in logs; the program is partsim-<name>
    grpc_service: ClassVar[str]  # "partsim.internal.v1.EmbedderService": the name health and reflection report
    config: ClassVar[type[ServerConfig]]  # the configuration class main() reads

    def __init__(self, cfg: C, registry: CollectorRegistry | None = None):
        self.cfg = cfg
        self.registry = registry if registry is not None else CollectorRegistry()
        self.rt: ServiceRuntime | None = None
        self.servicer: Any = None
        self._stopped = False

    # -- what a service defines -------------------------------------------------------------------
    @abc.abstractmethod
    def add_servicer(self, rt: ServiceRuntime) -> Any:
        """Build the servicer (its metrics on ``rt.registry``), add it to ``rt.server``, return it."""

    @abc.abstractmethod
    def load(self) -> None:
        """Get ready (load the model, open the index, find the backends) and turn health SERVING.

        Blocks until ready, except where readiness waits on other services (the gateway): then it
        returns at once and health turns SERVING when they answer.
        """

    def close(self) -> None:
        """Release what :meth:`load` opened; runs once the server has stopped."""

    def interceptors(self) -> list[grpc.ServerInterceptor]:
        """The service's own server interceptors (authentication, rate limits); none by default."""
        return []

    def server_credentials(self) -> grpc.ServerCredentials | None:
        """TLS credentials for the gRPC port from the TLS_* settings (:mod:`.tls`: reloaded when the files
        change; mTLS with TLS_CLIENT_CA); None without TLS_CERT: plaintext."""
        return tls_server_credentials(self.cfg)

    # -- the lifecycle ----------------------------------------------------------------------------
    def serve(self: S) -> S:
        """Bind and start the server (health NOT_SERVING until :meth:`load` is done); returns ``self``.

        Raises:
            InvalidArgument: the configuration is invalid (naming the variable).
            OSError: the address cannot be bound.
        """
        cfg = self.cfg
        cfg.validate()
        warning = cfg.insecure_warning()
        if warning:
            log.warning("%s: %s", self.name, warning)
        rt = ServiceRuntime(
            self.name,
            cfg.address,
            cfg.max_message_bytes,
            metrics_port=None if cfg.metrics_port < 0 else cfg.metrics_port,
            metrics_host=cfg.metrics_host,
            registry=self.registry,
            workers=cfg.workers,
            max_connection_age=cfg.max_connection_age_seconds,
            interceptors=[*tls_interceptors(cfg), *self.interceptors()],
            credentials=self.server_credentials(),
        )
        try:
            self.servicer = self.add_servicer(rt)
            rt.start([self.grpc_service])
        except BaseException:
            rt.stop(0)
            raise
        self.rt = rt
        return self

    def start(self: S) -> S:
        """:meth:`serve` then :meth:`load`; when loading fails, stop again and raise."""
        self.serve()
        try:
            self.load()
        except BaseException:
            self.stop(0)
            raise
        return self

    def stop(self, grace: float | None = None) -> None:
        """Turn NOT_SERVING, let running RPCs finish for ``grace`` seconds (default the configured
        ``grace_seconds``), stop the server, then :meth:`close`. Stopping twice does nothing."""
        if self._stopped or self.rt is None:
            return
        self._stopped = True
        self.rt.set_serving(False)
        self.rt.stop(self.cfg.grace_seconds if grace is None else grace)
        self.close()

    # -- where it listens -------------------------------------------------------------------------
    def _runtime(self) -> ServiceRuntime:
        if self.rt is None:
            raise RuntimeError(f"the {self.name} is not serving yet: call serve() or start()")
        return self.rt

    @property
    def address(self) -> str:
        """``host:port`` to reach the gRPC server at (the bound port when the configured one was 0)."""
        return self._runtime().address

    @property
    def port(self) -> int:
        return self._runtime().port

    @property
    def metrics_port(self) -> int | None:
        """The /metrics HTTP port (None: no metrics server)."""
        return self._runtime().metrics_port

    # -- the process ------------------------------------------------------------------------------
    @classmethod
    def main(cls, argv: list[str] | None = None) -> int:
        """``python -m partsim.services.<name>``: configuration from the environment and ``argv``
        (default ``sys.argv[1:]``; a bad value exits 2 naming it), then :func:`run_until_signalled`."""
        prog = f"partsim-{cls.name}"
        cfg: Any = load(cls.config, cls.config.prefix, sys.argv[1:] if argv is None else argv, prog=prog)  # a C
        return run_until_signalled(prog, cls(cfg), cfg.grace_seconds)


def run_until_signalled(prog: str, service: Service, grace: float) -> int:
    """Start ``service``, serve until SIGTERM/SIGINT, stop it within ``grace`` seconds; the exit status.

    A service that cannot start (PartsimError, OSError) exits 1 with one line naming why.
    """
    configure_logging()  # a full disk or an unread pipe never blocks or stops the service (services/logs.py)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    try:
        service.start()
    except (PartsimError, OSError) as exc:
        print(f"{prog}: cannot start: {exc}", flush=True)
        return 1
    done.wait()
    log.info("%s stopping (grace %.0f s)", prog, grace)
    service.stop(grace)
    return 0
