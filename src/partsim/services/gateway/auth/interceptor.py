"""The gateway's server interceptor: who is calling, may they, how often, and the audit line.

Every call of ``partsim.v1.PartsimService`` passes :meth:`AuthInterceptor.admit` before its handler
runs: the bearer token (metadata ``authorization: Bearer <token>``) names a caller (an API key or a
JWT, per the ``AUTH`` setting), the caller's role must reach the method's (:mod:`.roles`), and the
caller's token bucket must hold a token (:mod:`..ratelimit`). Refusals raise :mod:`partsim.errors`,
which the status mapping around this interceptor turns into UNAUTHENTICATED (always the same message:
nothing says whether the token was missing, malformed, unknown, revoked or expired), PERMISSION_DENIED
or RESOURCE_EXHAUSTED (with ``retry_after_seconds``). Health and reflection need no token.

Writes and deletes (and refusals of them) get an audit line (:mod:`.audit`) with their outcome. With
``AUTH=none`` every caller is ``anonymous`` with the admin role, unlimited, and still audited.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import grpc

from partsim.errors import PartsimError, PermissionDenied, ResourceExhausted, Unauthenticated

from ...status import code_for
from ..ratelimit import TokenBuckets
from .audit import audit
from .keys import ApiKey, KeyRing, key_id_of
from .roles import ANONYMOUS, OPEN_SERVICES, SERVICE, Principal, allows, audited
from .settings import modes

if TYPE_CHECKING:
    from ..config import GatewayConfig

UNAUTHENTICATED = "missing or invalid credentials"


class Verifiers:
    """The token checks a mode enables: API keys, JWTs, or both (a ``psk_`` token is an API key)."""

    def __init__(self, keys: KeyRing | None, jwt: Callable[[str], Principal | None] | None):
        self.keys = keys
        self.jwt = jwt

    def principal(self, token: str) -> Principal | None:
        if self.keys is not None and key_id_of(token) is not None:
            key = self.keys.find(token)
            return None if key is None else Principal(id=key.id, name=key.name, role=key.role, kind="key")
        if self.jwt is not None and token.count(".") == 2:
            return self.jwt(token)
        return None


def bearer(metadata) -> str | None:
    """The token of the one ``authorization: Bearer <token>`` metadata entry; None otherwise."""
    values = [v for k, v in metadata or () if k == "authorization"]
    if len(values) != 1 or not isinstance(values[0], str):
        return None
    scheme, _, token = values[0].strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token and token.isprintable() else None


class AuthInterceptor(grpc.ServerInterceptor):
    """Admits or refuses each call (see the module); ``verifiers`` None: authentication is off.

    Args:
        verifiers: the token checks (None: ``AUTH=none``).
        buckets: per-caller rate limits (None: unlimited).
        failures: Counter by ``reason`` (unauthenticated, permission_denied, rate_limited).
    """

    def __init__(self, verifiers: Verifiers | None, buckets: TokenBuckets | None, failures):
        self.verifiers = verifiers
        self.buckets = buckets
        self.failures = failures

    def admit(self, method: str, metadata) -> Principal:
        """The caller of ``method`` when it may go ahead; raises Unauthenticated, PermissionDenied or
        ResourceExhausted otherwise."""
        who = self.authenticate(metadata)
        self.authorize(who, method)
        return who

    def authenticate(self, metadata) -> Principal:
        if self.verifiers is None:
            return ANONYMOUS
        token = bearer(metadata)
        who = None if token is None else self.verifiers.principal(token)
        if who is None:
            self.failures.labels("unauthenticated").inc()
            raise Unauthenticated(UNAUTHENTICATED)
        return who

    def authorize(self, who: Principal, method: str) -> None:
        if self.verifiers is None:
            return
        if not allows(who.role, method):
            self.failures.labels("permission_denied").inc()
            raise PermissionDenied(f"this key's role may not call {method}")
        wait = 0.0 if self.buckets is None else self.buckets.take(who.id)
        if wait > 0:
            self.failures.labels("rate_limited").inc()
            raise ResourceExhausted(
                f"this key's rate limit is reached: retry in {wait:.2f} s",
                reason="RATE_LIMITED",
                retry_after_seconds=wait,
            )

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        service, _, method = handler_call_details.method.lstrip("/").partition("/")
        if service in OPEN_SERVICES:
            return handler
        if service != SERVICE:
            method = handler_call_details.method  # not in the table: denied
        metadata = handler_call_details.invocation_metadata
        if handler.unary_unary:
            return handler._replace(unary_unary=self._unary(handler.unary_unary, method, metadata, False))
        if handler.stream_unary:
            return handler._replace(stream_unary=self._unary(handler.stream_unary, method, metadata, True))
        if handler.unary_stream:
            return handler._replace(unary_stream=self._stream(handler.unary_stream, method, metadata))
        if handler.stream_stream:
            return handler._replace(stream_stream=self._stream(handler.stream_stream, method, metadata))
        return handler

    def _unary(self, behavior, method: str, metadata, streaming_in: bool):
        def handler(request, context):
            if not audited(method):
                self.admit(method, metadata)
                return behavior(request, context)
            record = AuditRecord(method, peer(context, metadata))
            try:
                # a stream's header is read by the handler: only an admitted caller's upload is read at all
                request = record.watch(request) if streaming_in else record.note(request)
                record.who = self.authenticate(metadata)
                self.authorize(record.who, method)
                response = behavior(request, context)
                record.note(response)
            except BaseException as exc:
                record.done(exc, context)
                raise
            record.done(None, context)
            return response

        return handler

    def _stream(self, behavior, method: str, metadata):
        def handler(request, context):
            self.admit(method, metadata)
            yield from behavior(request, context)

        return handler


def peer(context, metadata) -> str:
    """Who is on the other end, for the audit line: gRPC's peer; for a call of the gateway's own HTTP server
    (on its local socket, which only that process reaches) the HTTP client's address it forwards."""
    where = context.peer() or ""
    if where.startswith("unix"):
        forwarded = [v for k, v in metadata or () if k == "x-forwarded-for"]
        if len(forwarded) == 1:
            return f"http:{forwarded[0][:64]}"
    return where


class AuditRecord:
    """The audit line of one write or delete: who, what (track or job id), outcome."""

    def __init__(self, method: str, peer: str):
        self.method = method
        self.peer = peer
        self.who: Principal | None = None
        self.target: dict[str, str] = {}
        self.started = time.perf_counter()

    def note(self, message):
        """Take the track id or job id a request or response names (the first one seen wins)."""
        for m in (message, getattr(message, "header", None), getattr(message, "track", None)):
            for field in ("track_id", "job_id"):
                value = getattr(m, field, None)
                if isinstance(value, str) and value and field not in self.target:
                    self.target[field] = value[:256]
        return message

    def watch(self, requests: Iterator) -> Iterator:
        for n, request in enumerate(requests):
            if n == 0:
                self.note(request)
            yield request

    def done(self, exc: BaseException | None, context) -> None:
        if exc is None:
            code = grpc.StatusCode.OK
        elif isinstance(exc, grpc.RpcError) and callable(getattr(exc, "code", None)):
            code = exc.code()
        elif not isinstance(exc, PartsimError) and context.code() not in (None, grpc.StatusCode.OK):
            code = context.code()  # context.abort() raised
        else:
            code = code_for(exc)
        who = self.who
        audit(
            "rpc",
            method=self.method,
            **self.target,
            code=code.name,
            principal=who.id if who else None,
            name=who.name if who else None,
            role=who.role if who else None,
            peer=self.peer,
            seconds=round(time.perf_counter() - self.started, 3),
        )


def key_changes(keys: dict[str, ApiKey]) -> None:
    """Audit line of a (re)reading of the keys file by the gateway."""
    audit("keys.loaded", keys=len(keys), revoked=sum(k.revoked for k in keys.values()))


def auth_interceptor(cfg: GatewayConfig, registry) -> AuthInterceptor:
    """The interceptor the gateway's ``AUTH_*`` settings ask for, its failures counted on ``registry``."""
    from ..metrics import auth_failures

    kinds = modes(cfg)
    verifiers = None
    if kinds:
        keys = KeyRing(cfg.auth_keys_file, on_reload=key_changes) if "keys" in kinds else None
        jwt = None
        if "jwt" in kinds:
            from .oidc import JwtVerifier

            v = JwtVerifier(cfg.auth_jwks_file, cfg.auth_jwt_issuer, cfg.auth_jwt_audience, cfg.auth_jwt_role_claim)
            jwt = v.verify
        verifiers = Verifiers(keys, jwt)
    rate = cfg.auth_rate_per_second
    buckets = TokenBuckets(rate, cfg.auth_rate_burst) if verifiers is not None and rate > 0 else None
    return AuthInterceptor(verifiers, buckets, auth_failures(registry))
