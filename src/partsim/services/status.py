"""The one place where domain errors become gRPC status codes (and back, for clients).

Servicers raise :mod:`partsim.errors` exceptions; :class:`StatusInterceptor` turns each into
its status code with the exception's one-line message. Anything else is a bug: INTERNAL with
a generic message (the traceback goes to the log, not to the caller).
"""

from __future__ import annotations

import logging

import grpc

from partsim import errors

log = logging.getLogger("partsim.services")

CODES: list[tuple[type[errors.PartsimError], grpc.StatusCode]] = [
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.DatasetError, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.SoundFontError, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
]


def code_for(exc: BaseException) -> grpc.StatusCode:
    for cls, code in CODES:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL


def error_for(code: grpc.StatusCode, message: str) -> errors.PartsimError:
    """The domain error for a status received from another service (so it passes through unchanged)."""
    for cls, c in CODES:
        if c == code and cls not in (errors.DatasetError, errors.SoundFontError):
            return cls(message)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return errors.Unavailable(f"deadline exceeded: {message}")
    return errors.Unavailable(message) if code == grpc.StatusCode.UNAVAILABLE else errors.PartsimError(message)


def abort_with(context: grpc.ServicerContext, exc: BaseException, method: str) -> None:
    code = code_for(exc)
    if code == grpc.StatusCode.INTERNAL and not isinstance(exc, errors.PartsimError):
        log.exception("internal error in %s", method)
        context.abort(code, f"internal error in {method}; see the server log")
    context.abort(code, str(exc))


def _wrap_unary(behavior, method: str):
    def handler(request_or_iterator, context):
        try:
            return behavior(request_or_iterator, context)
        except errors.PartsimError as exc:
            abort_with(context, exc, method)
        except grpc.RpcError as exc:  # a call to another service failed: pass its status on
            if hasattr(exc, "code") and callable(exc.code):
                context.abort(exc.code(), exc.details() or str(exc))
            raise
        except Exception as exc:
            if context.code() is not None and context.code() != grpc.StatusCode.OK:
                raise  # context.abort() already set the status
            abort_with(context, exc, method)

    return handler


def _wrap_stream(behavior, method: str):
    def handler(request_or_iterator, context):
        try:
            yield from behavior(request_or_iterator, context)
        except errors.PartsimError as exc:
            abort_with(context, exc, method)
        except grpc.RpcError as exc:
            if hasattr(exc, "code") and callable(exc.code):
                context.abort(exc.code(), exc.details() or str(exc))
            raise
        except Exception as exc:
            if context.code() is not None and context.code() != grpc.StatusCode.OK:
                raise
            abort_with(context, exc, method)

    return handler


class StatusInterceptor(grpc.ServerInterceptor):
    """Maps :class:`partsim.errors.PartsimError` raised by any handler to its status code."""

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
