"""Configuration: environment variables, with command-line flags as overrides, read and
validated once at start-up.

Each service declares a dataclass; field ``max_batch`` of service prefix ``PARTSIM_EMBEDDER``
is read from ``PARTSIM_EMBEDDER_MAX_BATCH`` and overridden by ``--max-batch``. Field
metadata ``help`` documents it. The dataclass's ``validate()`` raises
:class:`partsim.errors.InvalidArgument` naming the variable; :func:`load` exits with that
message (status 2) so a misconfigured pod fails fast and says why.

The settings of the gRPC server itself (address, metrics, grace, connection age, handler threads,
message limit) are declared and checked once, in :class:`ServerConfig` and
:class:`InternalServerConfig`; a service's config inherits them and sets its own defaults with
:func:`server_field`.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from partsim.errors import InvalidArgument

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")


def _parse(kind: str, text: str, what: str) -> Any:
    try:
        if kind == "bool":
            low = text.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(text)
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
        return text
    except ValueError:
        raise InvalidArgument(f"{what}: expected {kind}, got {text!r}") from None


def _kind(field: dataclasses.Field) -> str:
    t = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", str(field.type))
    t = t.replace(" ", "")
    for k in ("bool", "int", "float"):
        if t == k or t.startswith(k + "|") or t.endswith("|" + k):
            return k
    return "str"


def env_name(prefix: str, field: str) -> str:
    return f"{prefix}_{field.upper()}"


def parse(
    cls: type[T],
    prefix: str,
    argv: list[str] | None = None,
    environ: Mapping[str, str] | None = None,
    prog: str | None = None,
) -> T:
    """Build ``cls`` from ``environ`` then ``argv``; raises InvalidArgument on a bad value."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    parser = argparse.ArgumentParser(
        prog=prog,
        description=cls.__doc__,
        epilog=f"Every option can also be set as an environment variable {prefix}_<NAME>.",
    )
    for f in dataclasses.fields(cls):
        kind = _kind(f)
        name = env_name(prefix, f.name)
        if name in environ:
            values[f.name] = _parse(kind, environ[name], name)
        flag = "--" + f.name.replace("_", "-")
        helptext = f.metadata.get("help", "") + f" (env {name})"
        if kind == "bool":
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=helptext)
        else:
            parser.add_argument(flag, dest=f.name, default=None, help=helptext)
    args = parser.parse_args(argv if argv is not None else [])
    for f in dataclasses.fields(cls):
        v = getattr(args, f.name)
        if v is not None:
            values[f.name] = v if isinstance(v, bool) else _parse(_kind(f), v, "--" + f.name.replace("_", "-"))
    cfg = cls(**values)
    validate = getattr(cfg, "validate", None)
    if validate is not None:
        validate()
    return cfg


def load(cls: type[T], prefix: str, argv: list[str] | None = None, prog: str | None = None) -> T:
    """:func:`parse` for a service's ``main``: a bad value exits 2 with one line naming it."""
    try:
        return parse(cls, prefix, argv, prog=prog)
    except InvalidArgument as exc:
        print(f"{prog or prefix.lower()}: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def require(cond: bool, prefix: str, field: str, message: str) -> None:
    """For ``validate()``: raise InvalidArgument naming the env variable when ``cond`` is false."""
    if not cond:
        raise InvalidArgument(f"{env_name(prefix, field)} (--{field.replace('_', '-')}): {message}")


MiB = 1 << 20


def is_loopback(address: str) -> bool:
    """True when ``address`` (``host:port``, or a ``unix:`` socket) is reachable from this machine only."""
    if address.startswith(("unix:", "unix-abstract:")):
        return True
    host = address.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name, or empty (every interface)
        return False


@dataclass
class ServerConfig:
    """The settings of a service's gRPC server, shared by every service (``prefix``: its env prefix)."""

    prefix: ClassVar[str] = "PARTSIM"

    address: str = field(
        default="127.0.0.1:0",
        metadata={"help": "host:port to serve on (beyond loopback: with TLS and caller authentication, or INSECURE)"},
    )
    metrics_port: int = field(default=-1, metadata={"help": "Prometheus /metrics port (0: any, -1: none)"})
    metrics_host: str = field(
        default="127.0.0.1", metadata={"help": "interface of the /metrics server (0.0.0.0: every interface)"}
    )
    grace_seconds: float = field(default=10.0, metadata={"help": "graceful-stop grace period"})
    max_connection_age_seconds: float = field(
        default=0.0,
        metadata={
            "help": "close client connections after this long (0: never), so clients re-resolve DNS and spread "
            "over new replicas"
        },
    )
    workers: int = field(default=16, metadata={"help": "RPC handler threads"})
    # TLS (services/tls.py): PEM files, reloaded when they change
    tls_cert: str = field(default="", metadata={"help": "PEM certificate chain: serve TLS (with TLS_KEY)"})
    tls_key: str = field(default="", metadata={"help": "PEM private key of TLS_CERT"})
    tls_client_ca: str = field(
        default="", metadata={"help": "PEM CA: callers must present a certificate it signed (mTLS)"}
    )
    tls_client_names: str = field(
        default="",
        metadata={
            "help": "comma-separated certificate names (DNS SAN or CN) that may call the API under mTLS; others "
            "reach health only (empty: any certificate of TLS_CLIENT_CA)"
        },
    )
    insecure: bool = field(
        default=False,
        metadata={"help": "serve a non-loopback ADDRESS without TLS and caller authentication (trusted networks only)"},
    )

    def validate(self) -> None:
        """The server settings' checks; a service's ``validate()`` calls it first, then checks its own."""
        p = self.prefix
        require(":" in self.address, p, "address", f"expected host:port, got {self.address!r}")
        require(-1 <= self.metrics_port <= 65535, p, "metrics_port", "must be a port, 0 (any) or -1 (none)")
        require(self.grace_seconds >= 0, p, "grace_seconds", "must be 0 or more")
        require(self.max_connection_age_seconds >= 0, p, "max_connection_age_seconds", "must be 0 (never) or more")
        require(1 <= self.workers <= 1024, p, "workers", "must be within 1..1024")
        require(bool(self.tls_key) or not self.tls_cert, p, "tls_key", "needed with TLS_CERT")
        require(bool(self.tls_cert) or not self.tls_key, p, "tls_cert", "needed with TLS_KEY")
        require(bool(self.tls_cert) or not self.tls_client_ca, p, "tls_client_ca", "needs TLS_CERT and TLS_KEY")
        require(bool(self.tls_client_ca) or not self.tls_client_names, p, "tls_client_names", "needs TLS_CLIENT_CA")
        for f in ("tls_cert", "tls_key", "tls_client_ca"):
            path = getattr(self, f)
            require(not path or os.path.isfile(path), p, f, f"no such file: {path}")
        missing = self.unprotected()
        require(
            is_loopback(self.address) or self.insecure or not missing,
            p,
            "address",
            f"{self.address} is not a loopback address: serving it needs {' and '.join(missing)}, "
            f"or {env_name(p, 'insecure')}=true (--insecure)",
        )

    def unprotected(self) -> list[str]:
        """What serving beyond loopback lacks (empty: nothing): TLS, and authentication of the callers —
        tokens at the gateway (its ``auth`` setting), client certificates (mTLS) at the internal services.
        The one rule for every service; :meth:`validate` refuses a non-loopback ADDRESS while it is not
        empty, unless INSECURE is set."""
        p = self.prefix
        missing = []
        if not (self.tls_cert and self.tls_key):
            missing.append(f"TLS ({env_name(p, 'tls_cert')}, {env_name(p, 'tls_key')})")
        if "auth" in self.__dataclass_fields__:  # the gateway: bearer tokens
            if getattr(self, "auth", "none") in ("", "none"):
                missing.append(f"caller authentication ({env_name(p, 'auth')})")
        elif not self.tls_client_ca:  # an internal service: the gateway's client certificate
            missing.append(f"client certificates ({env_name(p, 'tls_client_ca')})")
        return missing

    def insecure_warning(self) -> str | None:
        """One line to log at start-up when INSECURE lets a non-loopback ADDRESS serve unprotected."""
        missing = self.unprotected()
        if is_loopback(self.address) or not missing:
            return None
        return (
            f"serving {self.address} without {' and '.join(missing)} ({env_name(self.prefix, 'insecure')} is set): "
            "anyone who reaches it can call every method"
        )

    @property
    def max_message_bytes(self) -> int:
        """The server's receive and send limit (larger messages get RESOURCE_EXHAUSTED)."""
        raise NotImplementedError(f"{type(self).__name__} sets no message limit")


@dataclass
class InternalServerConfig(ServerConfig):
    """An internal service's server: its message limit is a setting of its own (the gateway's follows from
    its upload limit)."""

    max_message_mb: float = field(default=64.0, metadata={"help": "largest request/response message"})

    def validate(self) -> None:
        super().validate()
        require(0 < self.max_message_mb < 2048, self.prefix, "max_message_mb", "must be within (0, 2048)")

    @property
    def max_message_bytes(self) -> int:
        return int(self.max_message_mb * MiB)


def server_field(name: str, default: Any, help_text: str | None = None) -> Any:
    """A :class:`ServerConfig` field with a service's own default (and help, if given), e.g.
    ``address: str = server_field("address", "127.0.0.1:50052")``."""
    shared = InternalServerConfig.__dataclass_fields__[name]
    return field(default=default, metadata={"help": help_text or shared.metadata["help"]})
