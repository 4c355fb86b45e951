"""Embedding cache for uploaded audio: the serialized per-segment vectors of one audio file under one
model version and segmentation, keyed by :func:`cache_key`.

Two implementations behind :class:`EmbeddingCache`, chosen by :func:`make_cache`:

* :class:`RedisCache` — ``SET key value EX ttl`` / ``GET``, shared by every gateway replica. The
  cache is an optimisation, never a dependency: when Redis is unreachable a lookup is a miss
  (counted as ``result="error"``), a store is dropped, the outage is logged once, and Redis is
  left alone for ``retry_after`` seconds so requests do not each wait for a connect timeout.
* :class:`MemoryCache` — an in-process LRU bounded by the total size of the stored values.

Both count lookups in ``partsim_cache_requests_total{result="hit"|"miss"|"error"}`` on the
Prometheus registry given to :func:`make_cache` (not registered anywhere when it is None).
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from partsim.errors import InvalidArgument

from .redis_conn import redacted, redis_client

log = logging.getLogger("partsim.gateway.cache")

KEY_PREFIX = "partsim:emb"


def cache_key(model_version: str, audio_digest: str, segment_seconds: float, hop_seconds: float) -> str:
    """``partsim:emb:<model_version>:<audio_digest>:<segment>:<hop>``; equal floats give equal keys."""
    if not model_version or not audio_digest:
        raise InvalidArgument("cache_key needs a model version and an audio digest")
    if not (segment_seconds > 0 and hop_seconds > 0):
        raise InvalidArgument(f"cache_key: segment and hop must be > 0, got {segment_seconds}, {hop_seconds}")
    return f"{KEY_PREFIX}:{model_version}:{audio_digest}:{float(segment_seconds)!r}:{float(hop_seconds)!r}"


class EmbeddingCache(ABC):
    """Bytes by key. ``get`` returns None on a miss (and on any back-end trouble); ``put`` never raises
    for back-end trouble either."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.requests = Counter(
            "partsim_cache_requests", "Embedding cache lookups by result.", ["result"], registry=registry
        )
        for result in ("hit", "miss", "error"):
            self.requests.labels(result)  # export zeros from the start

    @abstractmethod
    def get(self, key: str) -> bytes | None: ...

    @abstractmethod
    def put(self, key: str, value: bytes) -> None: ...

    def close(self) -> None:  # noqa: B027 - a deliberate no-op default; only the Redis cache holds connections
        """Release connections (no-op for the in-process cache)."""

    def _count(self, result: str) -> None:
        self.requests.labels(result).inc()


class MemoryCache(EmbeddingCache):
    """Thread-safe LRU holding at most ``max_bytes`` of values; entries also expire after ``ttl_seconds``.

    A value larger than ``max_bytes`` is not stored; ``max_bytes=0`` disables caching.
    """

    def __init__(
        self, max_bytes: int = 256 << 20, ttl_seconds: int = 7 * 86400, registry: CollectorRegistry | None = None
    ):
        if max_bytes < 0 or ttl_seconds <= 0:
            raise InvalidArgument(f"cache: max_bytes must be >= 0 and ttl_seconds > 0, got {max_bytes}, {ttl_seconds}")
        super().__init__(registry)
        self.max_bytes = max_bytes
        self.ttl_seconds = ttl_seconds
        self._items: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str) -> bytes | None:
        with self._lock:
            entry = self._items.get(key)
            if entry is not None and entry[1] <= time.monotonic():
                self._drop(key)
                entry = None
            if entry is None:
                self._count("miss")
                return None
            self._items.move_to_end(key)
            self._count("hit")
            return entry[0]

    def put(self, key: str, value: bytes) -> None:
        value = bytes(value)
        with self._lock:
            if key in self._items:
                self._drop(key)
            if len(value) > self.max_bytes:
                return
            self._items[key] = (value, time.monotonic() + self.ttl_seconds)
            self._bytes += len(value)
            while self._bytes > self.max_bytes:
                self._drop(next(iter(self._items)))

    def _drop(self, key: str) -> None:
        value, _ = self._items.pop(key)
        self._bytes -= len(value)


class RedisCache(EmbeddingCache):
    """Redis-backed cache: ``SET EX ttl_seconds``; outages degrade to misses (see the module docstring)."""

    def __init__(
        self,
        redis_url: str,
        ttl_seconds: int = 7 * 86400,
        registry: CollectorRegistry | None = None,
        timeout_seconds: float = 0.5,
        retry_after: float = 5.0,
        password: str | None = None,
    ):
        if ttl_seconds <= 0:
            raise InvalidArgument(f"cache: ttl_seconds must be > 0, got {ttl_seconds}")
        super().__init__(registry)
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self._redis_mod = redis
        self.url = redacted(redis_url)
        self.ttl_seconds = ttl_seconds
        self.retry_after = retry_after
        # Any: redis-py annotates replies for both decode_responses settings; this client's replies are bytes
        # no client-side retries: a slow cache is worse than a miss
        self._r: Any = redis_client(
            redis_url,
            password,
            socket_connect_timeout=timeout_seconds,
            socket_timeout=timeout_seconds,
            retry=Retry(NoBackoff(), 0),
        )
        self._down_until = 0.0
        self._down = False
        self._state_lock = threading.Lock()

    def _available(self) -> bool:
        return time.monotonic() >= self._down_until

    def _failed(self, what: str, exc: Exception) -> None:
        with self._state_lock:
            self._down_until = time.monotonic() + self.retry_after
            if not self._down:
                self._down = True
                log.warning(
                    "embedding cache: Redis at %s unavailable during %s (%s); treating lookups as "
                    "misses, retrying every %g s",
                    self.url,
                    what,
                    exc,
                    self.retry_after,
                )

    def _succeeded(self) -> None:
        if self._down:
            with self._state_lock:
                if self._down:
                    self._down = False
                    log.info("embedding cache: Redis at %s reachable again", self.url)

    def get(self, key: str) -> bytes | None:
        if not self._available():
            self._count("error")
            return None
        try:
            value = self._r.get(key)
        except self._redis_mod.RedisError as exc:
            self._failed("GET", exc)
            self._count("error")
            return None
        self._succeeded()
        self._count("miss" if value is None else "hit")
        return value

    def put(self, key: str, value: bytes) -> None:
        if not self._available():
            return
        try:
            self._r.set(key, value, ex=self.ttl_seconds)
        except self._redis_mod.RedisError as exc:
            self._failed("SET", exc)
            return
        self._succeeded()

    def close(self) -> None:
        self._r.close()


def make_cache(
    redis_url: str | None,
    max_bytes: int = 256 << 20,
    ttl_seconds: int = 7 * 86400,
    registry: CollectorRegistry | None = None,
    redis_password: str | None = None,
) -> EmbeddingCache:
    """A :class:`RedisCache` when ``redis_url`` is set, else a :class:`MemoryCache` of ``max_bytes``."""
    if redis_url:
        return RedisCache(redis_url, ttl_seconds=ttl_seconds, registry=registry, password=redis_password)
    return MemoryCache(max_bytes=max_bytes, ttl_seconds=ttl_seconds, registry=registry)
