"""The gateway's Redis connections (embedding cache, ingest queue): one way to open them, with Redis AUTH
and TLS.

``PARTSIM_GATEWAY_REDIS_URL`` is a redis-py URL: ``redis://host:6379/0``, ``rediss://host:6380/0`` (TLS;
the CA as a query argument, e.g. ``?ssl_ca_certs=/etc/partsim/redis-tls/ca.crt``; a client certificate
with ``ssl_certfile``/``ssl_keyfile``), or ``unix:///path/redis.sock?db=0``. The password (Redis AUTH)
comes from ``PARTSIM_GATEWAY_REDIS_PASSWORD_FILE`` (a mounted Kubernetes Secret: the file is the
secret, the URL stays in a ConfigMap) or from the URL itself (``redis://:PASSWORD@host:6379/0``,
percent-encoded; compose does this); a password in the URL wins. Logs and errors show the URL with
its password replaced by ``***`` (:func:`redacted`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from partsim.errors import InvalidArgument

AUTH_HINT = "check PARTSIM_GATEWAY_REDIS_PASSWORD_FILE or the password in PARTSIM_GATEWAY_REDIS_URL"


def redacted(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``: what logs and error messages show."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def read_password(path: str) -> str | None:
    """The password in file ``path`` (one line; a trailing newline is dropped); None for an empty path."""
    if not path:
        return None
    try:
        password = Path(path).read_text().rstrip("\r\n")
    except OSError as exc:
        raise InvalidArgument(f"PARTSIM_GATEWAY_REDIS_PASSWORD_FILE: cannot read {path}: {exc.strerror}") from None
    if not password:
        raise InvalidArgument(f"PARTSIM_GATEWAY_REDIS_PASSWORD_FILE: {path} is empty")
    return password


def redis_client(url: str, password: str | None = None, **options: Any) -> Any:
    """A ``redis.Redis`` for ``url`` (``options``: redis-py connection options); ``password`` is used when the
    URL carries none. Nothing is sent until the first command. Raises InvalidArgument for a bad URL."""
    import redis  # local import: the embedded default does not need it

    try:
        return redis.Redis.from_url(url, password=password, **options)
    except ValueError as exc:
        raise InvalidArgument(f"bad Redis URL {redacted(url)!r}: {exc}") from None


def auth_refused(url: str, exc: Exception) -> InvalidArgument:
    """The one error for a password Redis refuses (WRONGPASS) or a missing one (NOAUTH)."""
    return InvalidArgument(f"Redis at {redacted(url)}: AUTH failed ({exc}): {AUTH_HINT}")
