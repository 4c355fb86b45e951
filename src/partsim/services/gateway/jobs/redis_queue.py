"""The Redis Streams back end of the ingest job queue: one stream shared by every gateway replica
pointing at the same Redis (see the package docstring for the delivery guarantees).

The module is not named ``redis.py`` so that it never shadows the ``redis`` package it imports.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import deque
from contextlib import contextmanager
from typing import Any

from partsim.errors import NotFound, Unavailable

from ..redis_conn import auth_refused, redacted, redis_client
from . import redis_scripts
from .base import (
    DEFAULT_JOB_TTL,
    DEFAULT_VISIBILITY_TIMEOUT,
    Delivery,
    IngestItem,
    JobQueue,
    JobRecord,
    ListedRecords,
    ListPosition,
)

log = logging.getLogger("partsim.gateway.jobs")

TRIM_INTERVAL = 60.0  # seconds between two trims of the job index by submit
TRIM_BATCH = 1000  # the oldest index entries one trim looks at


class RedisJobQueue(JobQueue):
    """Redis Streams back end (shared by every gateway replica pointing at the same Redis).

    Keys (``prefix`` defaults to ``partsim``): stream ``<prefix>:ingest`` with group ``ingesters``;
    job hash ``<prefix>:job:{<id>}``, accounted-item set ``...:done``, failures list
    ``...:failures``, failed items kept for a retry ``...:retry``; uploaded bytes
    ``<prefix>:upload:{<id>}:<index>``; the job index ``<prefix>:jobs`` (a sorted set of job ids by
    created_at, for :meth:`list`: added with the job hash, an expired job dropped when a listing or a
    submit's trim finds its hash gone). Acknowledging an entry XACKs and XDELs it (so XLEN is the
    number of unacknowledged items) and deletes its upload unless a retry may need it (the atomic
    steps are the Lua scripts of :mod:`.redis_scripts`).
    """

    stream_name = "ingest"
    group = "ingesters"

    def __init__(
        self,
        redis_url: str,
        consumer: str = "gateway-0",
        *,
        visibility_timeout: float = DEFAULT_VISIBILITY_TIMEOUT,
        job_ttl_seconds: int = DEFAULT_JOB_TTL,
        prefix: str = "partsim",
        password: str | None = None,
    ):
        super().__init__(consumer, visibility_timeout, job_ttl_seconds)
        import redis  # local import: the embedded default does not need it
        from redis.backoff import ExponentialWithJitterBackoff
        from redis.retry import Retry

        self._redis_mod = redis
        self._url = redacted(redis_url)
        # Any: redis-py annotates replies for both decode_responses settings; this client's replies are bytes
        # a few quick retries; an outage surfaces as Unavailable within about a second
        self._r: Any = redis_client(
            redis_url,
            password,
            socket_connect_timeout=5,
            socket_timeout=30,
            health_check_interval=30,
            retry=Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.5), 3),
        )
        self._prefix = prefix
        self._stream = f"{prefix}:{self.stream_name}"
        # Jobs submitted before the index existed (by an older gateway) are not in it: list() never shows
        # them, though get() and retry() still find them until they expire.
        self._index = f"{prefix}:jobs"
        self._next_trim = 0.0
        self._account_script = self._r.register_script(redis_scripts.ACCOUNT)
        self._begin_script = self._r.register_script(redis_scripts.BEGIN)
        self._ack_script = self._r.register_script(redis_scripts.ACK)
        self._retry_script = self._r.register_script(redis_scripts.RETRY)
        self._list_script = self._r.register_script(redis_scripts.LIST)
        self._trim_script = self._r.register_script(redis_scripts.TRIM)
        self._autoclaim_cursor = "0-0"
        self._next_autoclaim = 0.0
        self._backlog: deque[Delivery] = deque()
        self._ensure_group()

    @contextmanager
    def _errors(self):
        """Turn Redis connection/timeout errors into :class:`Unavailable`; recreate a vanished group
        (Redis restarted without persistence, or the stream was deleted) and report it the same way."""
        try:
            yield
        except (self._redis_mod.ConnectionError, self._redis_mod.TimeoutError) as exc:
            log.warning("Redis at %s unreachable: %s", self._url, exc)  # the address (and password) only here
            raise Unavailable("the job queue's Redis is unreachable") from exc
        except self._redis_mod.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            log.warning("ingest stream %s or its group %s vanished; recreating it", self._stream, self.group)
            self._ensure_group()
            raise Unavailable(f"ingest stream {self._stream} was recreated") from exc

    def _ensure_group(self) -> None:
        try:
            self._r.xgroup_create(self._stream, self.group, id="0", mkstream=True)
        except self._redis_mod.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        except self._redis_mod.AuthenticationError as exc:  # a wrong or missing password: say so, at start-up
            raise auth_refused(self._url, exc) from None
        except (self._redis_mod.ConnectionError, self._redis_mod.TimeoutError) as exc:
            log.warning("Redis at %s unreachable: %s", self._url, exc)  # the address (and password) only here
            raise Unavailable("the job queue's Redis is unreachable") from exc

    def _job_key(self, job_id: str) -> str:
        return f"{self._prefix}:job:{{{job_id}}}"

    def _upload_key(self, job_id: str, idx: int) -> str:
        return f"{self._prefix}:upload:{{{job_id}}}:{idx}"

    def _store(self, items: list[IngestItem]) -> str:
        job_id = uuid.uuid4().hex
        now = time.time()
        self._trim_index(now)
        pipe = self._r.pipeline(transaction=True)
        pipe.hset(
            self._job_key(job_id),
            mapping={
                "total": len(items),
                "succeeded": 0,
                "failed": 0,
                "created_at": repr(now),
                "updated_at": repr(now),
            },
        )
        pipe.zadd(self._index, {job_id: now})
        for idx, it in enumerate(items):
            entry = {"job": job_id, "idx": idx, "track": it.track_id, "meta": json.dumps(it.metadata)}
            if it.audio is not None:
                entry["audio"] = self._upload_key(job_id, idx)
                pipe.set(entry["audio"], it.audio)
            else:
                entry["uri"] = it.uri
            pipe.xadd(self._stream, entry)
        with self._errors():
            pipe.execute()
        return job_id

    def _job_record(self, job_id: str) -> JobRecord | None:
        key = self._job_key(job_id)
        pipe = self._r.pipeline(transaction=True)
        pipe.hgetall(key)
        pipe.lrange(key + ":failures", 0, -1)
        with self._errors():
            h, failures = pipe.execute()
        if not h:
            return None
        return _record({k.decode(): v.decode() for k, v in h.items()}, failures)

    def _list_records(self, after: ListPosition | None, limit: int) -> ListedRecords:
        args = ["+inf", ""] if after is None else [repr(after.created_at), after.job_id]
        with self._errors():
            rows = self._list_script(keys=[self._index], args=[*args, limit, self._prefix])
        return [
            (job_id.decode(), _record({h[i].decode(): h[i + 1].decode() for i in range(0, len(h), 2)}, failures))
            for job_id, h, failures in rows
        ]

    def _trim_index(self, now: float) -> None:
        """Drop expired jobs from the index (at most once a :data:`TRIM_INTERVAL`), so that it stays bounded
        when nobody lists. Unfinished jobs never expire: :data:`TRIM_BATCH` of them at the old end would stop
        this trim (not a listing's)."""
        with self._lock:
            if now < self._next_trim:
                return
            self._next_trim = now + TRIM_INTERVAL
        with self._errors():
            self._trim_script(keys=[self._index], args=[repr(now - self.job_ttl_seconds), self._prefix, TRIM_BATCH])

    def depth(self) -> int:
        with self._errors():
            return int(self._r.xlen(self._stream))

    def lag_seconds(self) -> float:
        with self._errors():
            first = self._r.xrange(self._stream, count=1)
            if not first:
                return 0.0
            sec, usec = self._r.time()
        entry_ms = int(first[0][0].split(b"-")[0])
        return max(0.0, (sec * 1000 + usec / 1000 - entry_ms) / 1000)

    def close(self) -> None:
        super().close()
        self._r.close()

    # -- primitives --
    def _delivery(self, entry_id: bytes, fields: dict) -> Delivery:
        f = {k.decode(): v.decode() for k, v in fields.items()}
        return Delivery(
            token=entry_id,
            job_id=f["job"],
            idx=int(f["idx"]),
            track_id=f["track"],
            metadata=json.loads(f["meta"]),
            uri=f.get("uri"),
            audio_ref=f.get("audio"),
        )

    def _recover(self) -> None:
        with self._errors():
            pending = self._r.xpending_range(
                self._stream, self.group, min="-", max="+", count=10_000, consumername=self.consumer
            )
            ids = [p["message_id"] for p in pending]
            for i in range(0, len(ids), 500):
                for entry_id, fields in self._r.xclaim(self._stream, self.group, self.consumer, 0, ids[i : i + 500]):
                    if fields:  # deleted entries come back empty (Redis < 7) or not at all
                        self._backlog.append(self._delivery(entry_id, fields))
        if ids:
            log.info("redelivering %d ingest item(s) left unacknowledged by %s", len(ids), self.consumer)

    def _claim(self, stop: threading.Event, poll_seconds: float) -> Delivery | None:
        with self._lock:
            if self._backlog:
                return self._backlog.popleft()
            autoclaim = time.monotonic() >= self._next_autoclaim
            if autoclaim:  # at most one scan per interval while nothing stale turns up
                self._next_autoclaim = time.monotonic() + min(1.0, self.visibility_timeout / 2)
                cursor = self._autoclaim_cursor
        if autoclaim:
            with self._errors():
                res = self._r.xautoclaim(
                    self._stream,
                    self.group,
                    self.consumer,
                    min_idle_time=int(self.visibility_timeout * 1000),
                    start_id=cursor,
                    count=1,
                )
            with self._lock:
                self._autoclaim_cursor = res[0]
                claimed = [(i, f) for i, f in res[1] if i is not None and f]
                if claimed:
                    self._next_autoclaim = 0.0  # there may be more: look again next time
                    log.info("took over ingest item %s (idle > %.0f s)", claimed[0][0], self.visibility_timeout)
                    return self._delivery(*claimed[0])
        with self._errors():
            resp = self._r.xreadgroup(
                self.group, self.consumer, {self._stream: ">"}, count=1, block=max(1, int(poll_seconds * 1000))
            )
        if not resp:
            return None
        entry_id, fields = resp[0][1][0]
        return self._delivery(entry_id, fields)

    def _begin(self, d: Delivery) -> bool:
        key = self._job_key(d.job_id)
        with self._errors():
            return bool(self._begin_script(keys=[key, key + ":done"], args=[d.idx, repr(time.time())]))

    def _load(self, d: Delivery) -> IngestItem:
        audio = None
        if d.audio_ref is not None:
            with self._errors():
                audio = self._r.get(d.audio_ref)
            if audio is None:
                raise NotFound(f"uploaded audio of track {d.track_id!r} is gone from Redis ({d.audio_ref})")
        return IngestItem(track_id=d.track_id, metadata=d.metadata, uri=d.uri, audio=audio)

    def _account(self, d: Delivery, ok: bool, message: str) -> None:
        key = self._job_key(d.job_id)
        failure = json.dumps([d.track_id, message])
        source = {"audio": d.audio_ref} if d.audio_ref is not None else {"uri": d.uri}
        kept = {"job": d.job_id, "track": d.track_id, "meta": json.dumps(d.metadata), **source, "failure": failure}
        with self._errors():
            self._account_script(
                keys=[key, key + ":done", key + ":failures", key + ":retry"],
                args=[d.idx, "1" if ok else "0", failure, repr(time.time()), self.job_ttl_seconds, json.dumps(kept)],
            )

    def _ack(self, d: Delivery) -> None:
        key = self._job_key(d.job_id)
        with self._errors():
            self._ack_script(
                keys=[self._stream, key, key + ":done", key + ":retry"],
                args=[self.group, d.token, d.idx, d.audio_ref or ""],
            )

    def _retry(self, job_id: str) -> int | None:
        key = self._job_key(job_id)
        with self._errors():
            n = int(
                self._retry_script(
                    keys=[key, key + ":done", key + ":failures", key + ":retry", self._stream], args=[repr(time.time())]
                )
            )
        return None if n < 0 else n


def _record(h: dict[str, str], failures: list[bytes]) -> JobRecord:
    """A job's record from its hash (decoded) and its failures list (JSON ``[track_id, message]`` each)."""
    return JobRecord(
        total=int(h["total"]),
        succeeded=int(h["succeeded"]),
        failed=int(h["failed"]),
        started="started_at" in h,
        failures=[tuple(json.loads(f)) for f in failures],
        created_at=float(h["created_at"]),
        updated_at=float(h["updated_at"]),
    )
