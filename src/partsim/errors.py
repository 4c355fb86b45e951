"""Domain errors.

Every error a user can cause is a :class:`PartsimError` whose message is one line that names
the problem (a path, a value, a limit). The CLI prints it as ``partsim: error: <message>`` and
exits non-zero; the gRPC layer (``partsim.services.status``) maps the same classes to status
codes in one place, with google.rpc.Status details built from what an error carries:

* ``reason``: a stable UPPER_SNAKE name a program can branch on (a default per class, e.g.
  ``INVALID_ARGUMENT``; a raise may name a finer one, e.g. ``METADATA_TOO_LARGE``);
* ``field_violations``: ``(field path, description)`` pairs of an invalid request;
* ``retry_after_seconds``: when retrying helps, after how long.
"""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Iterable


class PartsimError(Exception):
    """Base class: a problem with the caller's input or environment, never a bug."""

    default_reason = "PARTSIM_ERROR"

    def __init__(
        self,
        message: str = "",
        *,
        reason: str | None = None,
        field_violations: Iterable[tuple[str, str]] = (),
        retry_after_seconds: float | None = None,
    ):
        super().__init__(message)
        self.reason = reason or self.default_reason
        self.field_violations = list(field_violations)
        self.retry_after_seconds = retry_after_seconds


class InvalidArgument(PartsimError):
    """A value given by the caller is out of range or malformed."""

    default_reason = "INVALID_ARGUMENT"


class NotFound(PartsimError):
    """A file, folder or record the caller named does not exist."""

    default_reason = "NOT_FOUND"


class DatasetError(PartsimError):
    """A data set on disk is incomplete, inconsistent or holds an undecodable file."""

    default_reason = "INVALID_DATASET"


class SoundFontError(PartsimError):
    """A SoundFont is missing, unreadable or lacks what the generator needs."""

    default_reason = "SOUNDFONT_UNUSABLE"


class ResourceExhausted(PartsimError):
    """A request is larger than a configured limit (upload size, segments, top_k), a caller's rate is
    over its limit, or a disk is full."""

    default_reason = "LIMIT_EXCEEDED"


class FailedPrecondition(PartsimError):
    """The system is not in a state to do this (e.g. a vector from another model version)."""

    default_reason = "FAILED_PRECONDITION"


class Unavailable(PartsimError):
    """A backend (Milvus, Redis, another service) cannot be reached right now; retrying may help."""

    default_reason = "BACKEND_UNAVAILABLE"


class DeadlineExceeded(Unavailable):
    """A call to another service did not finish within its deadline (the caller's or the configured one)."""

    default_reason = "DEADLINE_EXCEEDED"


class Unauthenticated(PartsimError):
    """The caller presented no credentials, or ones that are not valid (no detail of why is given)."""

    default_reason = "UNAUTHENTICATED"


class PermissionDenied(PartsimError):
    """The caller asked for something outside what it may touch (e.g. a path outside the allowed roots)."""

    default_reason = "PERMISSION_DENIED"


DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
SQLITE_FULL = 13  # sqlite3's result code "database or disk is full"


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (an OSError, a sqlite3 error, or one that wraps either) says a disk or quota is full."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS:
            return True
        if isinstance(e, sqlite3.Error) and getattr(e, "sqlite_errorcode", None) == SQLITE_FULL:
            return True
        text = str(e).lower()
        if "no space left on device" in text or "disk quota exceeded" in text or "database or disk is full" in text:
            return True
        e = e.__cause__ or e.__context__
    return False


def storage_error(exc: BaseException, what: str) -> PartsimError:
    """The domain error for a failed write or read of ``what`` (e.g. "the audio store"; never a path):
    ResourceExhausted with reason STORAGE_FULL when the disk is full (not worth retrying at once; free
    space first), else Unavailable."""
    if is_disk_full(exc):
        return ResourceExhausted(f"{what}: no space left on the device", reason="STORAGE_FULL")
    detail = (exc.strerror if isinstance(exc, OSError) else None) or str(exc) or type(exc).__name__  # no file name
    return Unavailable(f"{what} failed: {detail}", reason="STORAGE_UNAVAILABLE")
