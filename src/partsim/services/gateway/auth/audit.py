"""The audit log: one JSON line per write, delete and keys change, on logger ``partsim.audit``.

Each line says who (``principal``: the key id or ``jwt:<subject>``, its ``name`` and ``role``), what
(``event``, the ``method`` and the ``track_id`` or ``job_id`` concerned), when (``time``, UTC ISO 8601)
and the outcome (``code``, the gRPC status name). Tokens never appear in it. Route the logger to a file
or the log collector like any other; the gateway logs it at INFO.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from datetime import UTC, datetime

log = logging.getLogger("partsim.audit")


def utc_now(timespec: str = "milliseconds") -> str:
    """Now, UTC, ISO 8601 with a ``Z``: ``2026-05-01T12:00:00.123Z``."""
    return datetime.now(UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def audit(event: str, **fields: object) -> None:
    """Log one audit line: ``{"time": ..., "event": event, **fields}``."""
    log.info(json.dumps({"time": utc_now(), "event": event, **fields}, separators=(",", ":")))


@contextlib.contextmanager
def audit_to_stderr():
    """For a command line tool (``partsim keys``): the audit lines logged meanwhile also go to stderr."""
    handler = logging.StreamHandler(sys.stderr)
    level = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
