"""The one place where domain errors become gRPC statuses (and back, for clients and the gateway).

Servicers raise :mod:`partsim.errors` exceptions; :class:`StatusInterceptor` turns each into its
status code with the exception's one-line message and google.rpc.Status details: an ErrorInfo
(the error's stable ``reason``, domain ``partsim.v1``) always, a BadRequest when it names field
violations, a RetryInfo when it says when to retry. Anything else is a bug: INTERNAL with a generic
message (the traceback goes to the log, not to the caller).

HTTP: :data:`HTTP_STATUS` is the HTTP status of each code (the HTTP/JSON API of the gateway answers the
google.rpc.Status as JSON with it, as Google's HTTP APIs do).

Back: :func:`error_from_rpc` is the domain error of a failed call, details kept (the Python client
raises it); :func:`backend_error` is what the gateway answers when one of its backends fails: the
caller's own problems (INVALID_ARGUMENT, NOT_FOUND, ...) pass through, an outage becomes "the
searcher is unavailable" (its address and gRPC's own words go to the log only).

Deadlines: while a handler runs, :func:`call_timeout` bounds a configured timeout of a downstream
call by the time the caller has left, so the caller's deadline bounds every call made for it.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar, cast

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from partsim import errors

log = logging.getLogger("partsim.services")

DOMAIN = "partsim.v1"
MAX_MESSAGE_CHARS = 2000  # a status travels in trailers (twice: grpc-message and the details)
MAX_VIOLATIONS = 20
T = TypeVar("T")

CODES: list[tuple[type[errors.PartsimError], grpc.StatusCode]] = [
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.DatasetError, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.SoundFontError, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
]

# codes a backend answers about the caller's request: the gateway passes them on as they are
CALLER_CODES = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.ABORTED,
)


# the HTTP status of each code (google/rpc/code.proto's mapping); codes not named here: 500
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def http_status(code: grpc.StatusCode | int) -> int:
    """The HTTP status of a gRPC status code (or its number, as in google.rpc.Status.code)."""
    if isinstance(code, int):
        code = _BY_NUMBER.get(code, grpc.StatusCode.UNKNOWN)
    return HTTP_STATUS.get(code, 500)


def code_for(exc: BaseException) -> grpc.StatusCode:
    for cls, code in CODES:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL


def _clip(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 3] + "..."


def status_proto(code: grpc.StatusCode, exc: errors.PartsimError) -> status_pb2.Status:
    """google.rpc.Status of ``exc`` answered with ``code``: message, ErrorInfo, BadRequest, RetryInfo."""
    status = status_pb2.Status(code=code.value[0], message=_clip(str(exc)))
    status.details.add().Pack(error_details_pb2.ErrorInfo(reason=exc.reason, domain=DOMAIN))
    if exc.field_violations:
        bad = error_details_pb2.BadRequest()
        for path, description in exc.field_violations[:MAX_VIOLATIONS]:
            bad.field_violations.add(field=path, description=_clip(description))
        status.details.add().Pack(bad)
    if exc.retry_after_seconds is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(max(exc.retry_after_seconds, 0.0) * 1e9))
        status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    return status


def error_for(code: grpc.StatusCode, message: str, status: status_pb2.Status | None = None) -> errors.PartsimError:
    """The domain error for a status received from another service (so it passes through unchanged),
    with the reason, field violations and retry delay of ``status``'s details when it has them."""
    kw: dict = {}
    for any_ in status.details if status is not None else ():
        if any_.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            any_.Unpack(info)
            kw["reason"] = info.reason or None
        elif any_.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            any_.Unpack(bad)
            kw["field_violations"] = [(v.field, v.description) for v in bad.field_violations]
        elif any_.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            any_.Unpack(retry)
            kw["retry_after_seconds"] = retry.retry_delay.ToNanoseconds() / 1e9
    for cls, c in CODES:
        if c == code and cls not in (errors.DatasetError, errors.SoundFontError):
            return cls(message, **kw)
    return errors.PartsimError(message, **kw)


def rich_status(exc: grpc.RpcError) -> status_pb2.Status | None:
    """The google.rpc.Status a failed call carried in its trailers, if any."""
    trailers = exc.trailing_metadata() if callable(getattr(exc, "trailing_metadata", None)) else None
    for key, value in trailers or ():
        if key == rpc_status.GRPC_DETAILS_METADATA_KEY:
            try:
                return status_pb2.Status.FromString(value)
            except Exception:  # noqa: BLE001 - a peer's malformed details: the code and message remain
                return None
    return None


def error_from_rpc(exc: grpc.RpcError) -> errors.PartsimError:
    """The domain error of a failed call, with its details (reason, field violations, retry delay)."""
    code = exc.code() if callable(getattr(exc, "code", None)) else grpc.StatusCode.UNKNOWN
    details = exc.details() if callable(getattr(exc, "details", None)) else None
    return error_for(code, details or code.name, rich_status(exc))


def backend_error(exc: grpc.RpcError, name: str | None = None) -> errors.PartsimError:
    """What a service answers its caller when its call to a backend failed: a status about the caller's
    request passes through; a deadline or an outage is named by the backend's role only (``name``, or
    the one :func:`bounded_stub` gave the call, e.g. "searcher"); the address and gRPC's own words, which
    name it, are logged here."""
    name = name or getattr(exc, BACKEND_ATTR, None) or "backend service"
    err = error_from_rpc(exc)
    code = exc.code() if callable(getattr(exc, "code", None)) else grpc.StatusCode.UNKNOWN
    if code in CALLER_CODES:
        return err
    log.warning("call to the %s failed: %s: %s", name, code.name, err)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return errors.DeadlineExceeded(f"the {name} did not answer within the deadline")
    return errors.Unavailable(f"the {name} is unavailable", retry_after_seconds=err.retry_after_seconds)


# ------------------------------------------------------------------------------------ deadlines
_serving = threading.local()
BACKEND_ATTR = "partsim_backend"  # set on a failed call of a bounded_stub: the backend's role


@contextmanager
def _serving_call(context: grpc.ServicerContext) -> Iterator[None]:
    """While the block runs, :func:`call_timeout` in this thread is bounded by ``context``'s deadline."""
    previous = getattr(_serving, "context", None)
    _serving.context = context
    try:
        yield
    finally:
        _serving.context = previous


def call_timeout(configured: float) -> float:
    """The timeout of a downstream call: ``configured``, or less when the call this thread serves has
    less time left (its caller's deadline). DeadlineExceeded when none is left."""
    context = getattr(_serving, "context", None)
    left = context.time_remaining() if context is not None else None
    if left is None:
        return configured
    if left <= 0:
        raise errors.DeadlineExceeded("the caller's deadline has passed")
    return min(configured, left)


class _BoundedStub:
    """A stub whose calls :func:`bounded_stub` describes."""

    def __init__(self, stub: object, role: str):
        self._stub, self._role = stub, role

    def __getattr__(self, method: str):
        fn, role = getattr(self._stub, method), self._role

        def call(request, timeout: float | None = None, **kw):
            left = call_timeout(math.inf if timeout is None else timeout)
            try:
                out = fn(request, timeout=None if math.isinf(left) else left, **kw)
            except grpc.RpcError as exc:
                setattr(exc, BACKEND_ATTR, role)
                raise
            if isinstance(out, grpc.RpcError):  # a response stream is the error it raises when it fails
                setattr(out, BACKEND_ATTR, role)
            return out

        return call


def bounded_stub(stub: T, role: str) -> T:
    """``stub`` (of another service, whose ``role`` is e.g. "searcher") whose every call's timeout is bounded
    by :func:`call_timeout` (the deadline of the caller this thread serves) and whose failures (still
    grpc.RpcError) carry ``role``, so :func:`backend_error` names the backend by it, not by its address."""
    return cast(T, _BoundedStub(stub, role))


# ------------------------------------------------------------------------------------ the interceptor
def abort_with(context: grpc.ServicerContext, exc: BaseException, method: str) -> None:
    code = code_for(exc)
    if not isinstance(exc, errors.PartsimError):
        log.exception("internal error in %s", method)
        exc = errors.PartsimError(f"internal error in {method}; see the server log", reason="INTERNAL")
    context.abort_with_status(rpc_status.to_status(status_proto(code, exc)))


def _answer(context: grpc.ServicerContext, exc: Exception, method: str) -> None:
    """Abort the call with the status of ``exc`` raised by its handler (re-raise when already aborted)."""
    if isinstance(exc, grpc.RpcError) and callable(getattr(exc, "code", None)):
        abort_with(context, backend_error(exc), method)  # a call to another service failed
    if not isinstance(exc, errors.PartsimError) and context.code() not in (None, grpc.StatusCode.OK):
        raise exc  # context.abort() already set the status
    abort_with(context, exc, method)


def _wrap_unary(behavior, method: str):
    def handler(request_or_iterator, context):
        try:
            with _serving_call(context):
                return behavior(request_or_iterator, context)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a status; _answer re-raises an abort
            _answer(context, exc, method)

    return handler


def _wrap_stream(behavior, method: str):
    def handler(request_or_iterator, context):
        responses = None
        try:
            with _serving_call(context):
                responses = iter(behavior(request_or_iterator, context))
            while True:
                with _serving_call(context):  # only while the handler runs: the generator may resume elsewhere
                    try:
                        response = next(responses)
                    except StopIteration:
                        return
                yield response
        except Exception as exc:  # noqa: BLE001 - every failure becomes a status; _answer re-raises an abort
            _answer(context, exc, method)
        finally:
            close = getattr(responses, "close", None)
            if close is not None:
                close()

    return handler


class StatusInterceptor(grpc.ServerInterceptor):
    """Maps :class:`partsim.errors.PartsimError` raised by any handler to its status code and details."""

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        if handler.unary_unary:
            return handler._replace(unary_unary=_wrap_unary(handler.unary_unary, method))
        if handler.stream_unary:
            return handler._replace(stream_unary=_wrap_unary(handler.stream_unary, method))
        if handler.unary_stream:
            return handler._replace(unary_stream=_wrap_stream(handler.unary_stream, method))
        if handler.stream_stream:
            return handler._replace(stream_stream=_wrap_stream(handler.stream_stream, method))
        return handler
