"""Bulk ingestion jobs that survive a gateway restart.

A job is a list of :class:`IngestItem`; :meth:`JobQueue.submit` stores the job record and one
queue entry per item, :meth:`JobQueue.work` (any number of threads, any number of gateways
for Redis) consumes entries and keeps the per-job counts. Delivery is at-least-once:

* a worker *claims* an entry, calls ``process(item)``, *accounts* the outcome (counts, failure
  message) and then *acknowledges* the entry (which also deletes the uploaded audio);
* an entry claimed but never acknowledged is delivered again: immediately when a new queue object
  with the same ``consumer`` name starts working (the gateway restarted), or to anyone once it has
  been idle longer than the visibility timeout (the claiming gateway is gone or stuck);
* accounting is deduplicated per item (a per-job set of accounted item indexes), so a redelivered
  item never counts twice and ``succeeded + failed <= total`` always holds. An item found already
  accounted is acknowledged without calling ``process`` again.

Two back ends with the same semantics: :class:`RedisJobQueue` (a Redis Stream ``partsim:ingest``
with consumer group ``ingesters``; job records in hashes) and :class:`LocalJobQueue` (SQLite in
``data_dir/jobs.sqlite3``, uploads spooled under ``data_dir/ingest-spool/``), chosen by
:func:`make_job_queue`. Finished job records expire after ``job_ttl_seconds`` (default 7 days).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from abc import ABC, abstractmethod
from contextlib import contextmanager
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from partsim.errors import InvalidArgument, NotFound, PartsimError, Unavailable

log = logging.getLogger("partsim.gateway.jobs")

DEFAULT_VISIBILITY_TIMEOUT = 60.0
DEFAULT_JOB_TTL = 7 * 86400


@dataclass
class IngestItem:
    """One track to index: exactly one of ``uri`` (local path / file:// URI) or ``audio`` (encoded bytes)."""

    track_id: str
    metadata: dict  # {"title": str, "artist": str, "tags": {str: str}}
    uri: str | None = None
    audio: bytes | None = None


@dataclass
class JobStatus:
    job_id: str
    state: str  # "queued" | "running" | "done"
    total: int
    succeeded: int
    failed: int
    failures: list[tuple[str, str]] = field(default_factory=list)  # (track_id, error message)
    created_at: float = 0.0
    updated_at: float = 0.0


@dataclass
class _Delivery:
    """A claimed queue entry: enough to load the item, account it and acknowledge it."""

    token: Any  # stream entry id (Redis) or row id (SQLite)
    job_id: str
    idx: int
    track_id: str
    metadata: dict
    uri: str | None
    audio_ref: str | None  # Redis key or spool file path of uploaded bytes


def _state(total: int, succeeded: int, failed: int, started: bool) -> str:
    if succeeded + failed >= total:
        return "done"
    return "running" if started else "queued"


def _failure_message(exc: Exception) -> str:
    if isinstance(exc, PartsimError):
        return str(exc)
    return f"internal error: {type(exc).__name__}: {exc}"


def _check_items(items: list[IngestItem]) -> None:
    if not items:
        raise InvalidArgument("an ingest job needs at least one item")
    for i, it in enumerate(items):
        if not it.track_id:
            raise InvalidArgument(f"ingest item {i}: empty track_id")
        if (it.uri is None) == (it.audio is None):
            raise InvalidArgument(f"ingest item {i} ({it.track_id}): give exactly one of uri or audio")
        try:
            json.dumps(it.metadata)
        except (TypeError, ValueError) as exc:
            raise InvalidArgument(f"ingest item {i} ({it.track_id}): metadata is not JSON-serializable: {exc}") from None


class JobQueue(ABC):
    """Ingest jobs: submit, inspect, consume. Thread-safe; :meth:`work` may run in several threads."""

    def __init__(self, consumer: str, visibility_timeout: float, job_ttl_seconds: int):
        if visibility_timeout <= 0:
            raise InvalidArgument(f"visibility_timeout must be > 0, got {visibility_timeout}")
        if job_ttl_seconds <= 0:
            raise InvalidArgument(f"job_ttl_seconds must be > 0, got {job_ttl_seconds}")
        self.consumer = consumer
        self.visibility_timeout = float(visibility_timeout)
        self.job_ttl_seconds = job_ttl_seconds
        self._lock = threading.RLock()
        self._recovered = False
        self._backend_down = False
        self._closed = False

    # -- public interface ------------------------------------------------------------------
    @abstractmethod
    def submit(self, items: list[IngestItem]) -> str:
        """Store a new job and queue its items; returns the job id (uuid4 hex)."""

    @abstractmethod
    def get(self, job_id: str) -> JobStatus:
        """The job's status; :class:`NotFound` for an unknown (or expired) id."""

    @abstractmethod
    def depth(self) -> int:
        """Items waiting: queued or claimed, not yet acknowledged."""

    @abstractmethod
    def lag_seconds(self) -> float:
        """Age in seconds of the oldest unacknowledged item, 0 if none."""

    def close(self) -> None:
        """Release connections. Stop :meth:`work` threads first; unacknowledged claims stay pending."""
        self._closed = True

    def work(self, process: Callable[[IngestItem], None], stop: threading.Event, poll_seconds: float = 0.5) -> None:
        """Consume items until ``stop`` is set (see the module docstring for the guarantees).

        ``process(item)`` returning counts as success; an :class:`Exception` counts as a failure
        with its message (``PartsimError`` messages as they are, others as
        ``internal error: <type>: <msg>``). A :class:`BaseException` that is not an ``Exception``
        (SystemExit, KeyboardInterrupt) propagates and leaves the item unacknowledged, as a crash
        would. Back-end outages are logged once and retried every ``poll_seconds``.
        """
        poll_seconds = min(max(poll_seconds, 0.01), 10.0)
        while not (stop.is_set() or self._closed):
            d: _Delivery | None = None
            try:
                self._recover_once()
                d = self._claim(stop, poll_seconds)
                if d is not None and self._begin(d):  # already accounted, or its job record is gone
                    self._ack(d)
                    d = None
                item = self._load(d) if d is not None else None
            except Unavailable as exc:  # nothing accounted: the claim is redelivered later
                self._backend_error(exc)
                stop.wait(poll_seconds)
                continue
            except PartsimError as exc:  # the item cannot be loaded (its upload is gone)
                item, ok, message = None, False, str(exc)
            except Exception:  # noqa: BLE001 - a bug must not kill the worker thread silently
                log.exception("ingest worker error; retrying")
                stop.wait(poll_seconds)
                continue
            self._backend_ok()
            if d is None:
                continue
            if item is not None:
                try:
                    process(item)
                    ok, message = True, ""
                except Exception as exc:  # noqa: BLE001 - every failure is recorded against the item
                    if not isinstance(exc, PartsimError):
                        log.exception("ingest of track %r (job %s) failed", d.track_id, d.job_id)
                    ok, message = False, _failure_message(exc)
            try:
                self._account(d, ok, message)
                self._ack(d)
            except Unavailable as exc:  # stays pending: redelivered after the visibility timeout
                self._backend_error(exc)
            except Exception:  # noqa: BLE001 - same: keep the worker alive, the item comes back
                log.exception("ingest worker could not record track %r (job %s)", d.track_id, d.job_id)

    # -- back-end primitives ---------------------------------------------------------------
    def _recover_once(self) -> None:
        with self._lock:
            if self._recovered:
                return
            self._recover()
            self._recovered = True

    @abstractmethod
    def _recover(self) -> None:
        """Make this consumer's own unacknowledged claims (from a previous run) deliverable now."""

    @abstractmethod
    def _claim(self, stop: threading.Event, poll_seconds: float) -> _Delivery | None:
        """The next deliverable entry, claimed for this consumer; None after waiting ~poll_seconds."""

    @abstractmethod
    def _begin(self, d: _Delivery) -> bool:
        """Mark the job running; True if the item needs no processing (already accounted / job gone)."""

    @abstractmethod
    def _load(self, d: _Delivery) -> IngestItem:
        """The item, with uploaded bytes read back; a PartsimError if they are gone."""

    @abstractmethod
    def _account(self, d: _Delivery, ok: bool, message: str) -> None:
        """Count the outcome once per item (idempotent)."""

    @abstractmethod
    def _ack(self, d: _Delivery) -> None:
        """Remove the entry from the queue and delete its uploaded bytes."""

    def _backend_error(self, exc: Exception) -> None:
        if not self._backend_down:
            log.warning("ingest queue back end unavailable (%s); retrying", exc)
            self._backend_down = True

    def _backend_ok(self) -> None:
        if self._backend_down:
            log.info("ingest queue back end reachable again")
            self._backend_down = False


# ---------------------------------------------------------------------------------------------
# Redis


# Count an item once: KEYS job hash, accounted set, failures list;
# ARGV item index, "1"|"0", failure JSON, now, ttl. Returns 1 counted, 0 already counted, -1 job gone.
_ACCOUNT_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if redis.call('SADD', KEYS[2], ARGV[1]) == 0 then return 0 end
if ARGV[2] == '1' then
  redis.call('HINCRBY', KEYS[1], 'succeeded', 1)
else
  redis.call('HINCRBY', KEYS[1], 'failed', 1)
  redis.call('RPUSH', KEYS[3], ARGV[3])
end
redis.call('HSET', KEYS[1], 'updated_at', ARGV[4])
local v = redis.call('HMGET', KEYS[1], 'total', 'succeeded', 'failed')
if tonumber(v[2]) + tonumber(v[3]) >= tonumber(v[1]) then
  redis.call('HSET', KEYS[1], 'finished_at', ARGV[4])
  for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[5]) end
end
return 1
"""

# KEYS job hash, accounted set; ARGV item index, now. Returns 1 if the item needs no processing.
_BEGIN_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 1 end
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then return 1 end
if redis.call('HSETNX', KEYS[1], 'started_at', ARGV[2]) == 1 then
  redis.call('HSET', KEYS[1], 'updated_at', ARGV[2])
end
return 0
"""


class RedisJobQueue(JobQueue):
    """Redis Streams back end (shared by every gateway replica pointing at the same Redis).

    Keys (``prefix`` defaults to ``partsim``): stream ``<prefix>:ingest`` with group ``ingesters``;
    job hash ``<prefix>:job:{<id>}``, accounted-item set ``...:done``, failures list
    ``...:failures``; uploaded bytes ``<prefix>:upload:{<id>}:<index>``. Acknowledging an entry
    XACKs and XDELs it (so XLEN is the number of unacknowledged items) and deletes its upload.
    """

    stream_name = "ingest"
    group = "ingesters"

    def __init__(self, redis_url: str, consumer: str = "gateway-0", *,
                 visibility_timeout: float = DEFAULT_VISIBILITY_TIMEOUT, job_ttl_seconds: int = DEFAULT_JOB_TTL,
                 prefix: str = "partsim"):
        super().__init__(consumer, visibility_timeout, job_ttl_seconds)
        import redis  # local import: the embedded default does not need it
        from redis.backoff import ExponentialWithJitterBackoff
        from redis.retry import Retry

        self._redis_mod = redis
        self._url = redis_url
        try:  # a few quick retries; an outage surfaces as Unavailable within about a second
            self._r = redis.Redis.from_url(redis_url, socket_connect_timeout=5, socket_timeout=30,
                                           health_check_interval=30,
                                           retry=Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.5), 3))
        except ValueError as exc:
            raise InvalidArgument(f"bad Redis URL {redis_url!r}: {exc}") from None
        self._prefix = prefix
        self._stream = f"{prefix}:{self.stream_name}"
        self._account_script = self._r.register_script(_ACCOUNT_LUA)
        self._begin_script = self._r.register_script(_BEGIN_LUA)
        self._autoclaim_cursor = "0-0"
        self._next_autoclaim = 0.0
        self._backlog: deque[_Delivery] = deque()
        self._ensure_group()

    @contextmanager
    def _errors(self):
        """Turn Redis connection/timeout errors into :class:`Unavailable`; recreate a vanished group
        (Redis restarted without persistence, or the stream was deleted) and report it the same way."""
        try:
            yield
        except (self._redis_mod.ConnectionError, self._redis_mod.TimeoutError) as exc:
            raise Unavailable(f"Redis at {self._url} unreachable: {exc}") from exc
        except self._redis_mod.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            log.warning("ingest stream %s or its group %s vanished; recreating it", self._stream, self.group)
            self._ensure_group()
            raise Unavailable(f"ingest stream {self._stream} on {self._url} was recreated") from exc

    def _ensure_group(self) -> None:
        try:
            self._r.xgroup_create(self._stream, self.group, id="0", mkstream=True)
        except self._redis_mod.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        except (self._redis_mod.ConnectionError, self._redis_mod.TimeoutError) as exc:
            raise Unavailable(f"Redis at {self._url} unreachable: {exc}") from exc

    def _job_key(self, job_id: str) -> str:
        return f"{self._prefix}:job:{{{job_id}}}"

    def _upload_key(self, job_id: str, idx: int) -> str:
        return f"{self._prefix}:upload:{{{job_id}}}:{idx}"

    def submit(self, items: list[IngestItem]) -> str:
        _check_items(items)
        job_id = uuid.uuid4().hex
        now = time.time()
        pipe = self._r.pipeline(transaction=True)
        pipe.hset(self._job_key(job_id), mapping={"total": len(items), "succeeded": 0, "failed": 0,
                                                  "created_at": repr(now), "updated_at": repr(now)})
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

    def get(self, job_id: str) -> JobStatus:
        key = self._job_key(job_id)
        pipe = self._r.pipeline(transaction=True)
        pipe.hgetall(key)
        pipe.lrange(key + ":failures", 0, -1)
        with self._errors():
            h, failures = pipe.execute()
        if not h:
            raise NotFound(f"no ingest job {job_id!r} (unknown, or finished and expired)")
        h = {k.decode(): v.decode() for k, v in h.items()}
        total, ok, bad = int(h["total"]), int(h["succeeded"]), int(h["failed"])
        return JobStatus(job_id=job_id, state=_state(total, ok, bad, "started_at" in h), total=total,
                         succeeded=ok, failed=bad, failures=[tuple(json.loads(f)) for f in failures],
                         created_at=float(h["created_at"]), updated_at=float(h["updated_at"]))

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
    def _delivery(self, entry_id: bytes, fields: dict) -> _Delivery:
        f = {k.decode(): v.decode() for k, v in fields.items()}
        return _Delivery(token=entry_id, job_id=f["job"], idx=int(f["idx"]), track_id=f["track"],
                         metadata=json.loads(f["meta"]), uri=f.get("uri"), audio_ref=f.get("audio"))

    def _recover(self) -> None:
        with self._errors():
            pending = self._r.xpending_range(self._stream, self.group, min="-", max="+", count=10_000,
                                             consumername=self.consumer)
            ids = [p["message_id"] for p in pending]
            for i in range(0, len(ids), 500):
                for entry_id, fields in self._r.xclaim(self._stream, self.group, self.consumer, 0, ids[i:i + 500]):
                    if fields:  # deleted entries come back empty (Redis < 7) or not at all
                        self._backlog.append(self._delivery(entry_id, fields))
        if ids:
            log.info("redelivering %d ingest item(s) left unacknowledged by %s", len(ids), self.consumer)

    def _claim(self, stop: threading.Event, poll_seconds: float) -> _Delivery | None:
        with self._lock:
            if self._backlog:
                return self._backlog.popleft()
            autoclaim = time.monotonic() >= self._next_autoclaim
            if autoclaim:  # at most one scan per interval while nothing stale turns up
                self._next_autoclaim = time.monotonic() + min(1.0, self.visibility_timeout / 2)
                cursor = self._autoclaim_cursor
        if autoclaim:
            with self._errors():
                res = self._r.xautoclaim(self._stream, self.group, self.consumer,
                                         min_idle_time=int(self.visibility_timeout * 1000),
                                         start_id=cursor, count=1)
            with self._lock:
                self._autoclaim_cursor = res[0]
                claimed = [(i, f) for i, f in res[1] if i is not None and f]
                if claimed:
                    self._next_autoclaim = 0.0  # there may be more: look again next time
                    log.info("took over ingest item %s (idle > %.0f s)", claimed[0][0], self.visibility_timeout)
                    return self._delivery(*claimed[0])
        with self._errors():
            resp = self._r.xreadgroup(self.group, self.consumer, {self._stream: ">"}, count=1,
                                      block=max(1, int(poll_seconds * 1000)))
        if not resp:
            return None
        entry_id, fields = resp[0][1][0]
        return self._delivery(entry_id, fields)

    def _begin(self, d: _Delivery) -> bool:
        key = self._job_key(d.job_id)
        with self._errors():
            return bool(self._begin_script(keys=[key, key + ":done"], args=[d.idx, repr(time.time())]))

    def _load(self, d: _Delivery) -> IngestItem:
        audio = None
        if d.audio_ref is not None:
            with self._errors():
                audio = self._r.get(d.audio_ref)
            if audio is None:
                raise NotFound(f"uploaded audio of track {d.track_id!r} is gone from Redis ({d.audio_ref})")
        return IngestItem(track_id=d.track_id, metadata=d.metadata, uri=d.uri, audio=audio)

    def _account(self, d: _Delivery, ok: bool, message: str) -> None:
        key = self._job_key(d.job_id)
        with self._errors():
            self._account_script(keys=[key, key + ":done", key + ":failures"],
                                 args=[d.idx, "1" if ok else "0", json.dumps([d.track_id, message]),
                                       repr(time.time()), self.job_ttl_seconds])

    def _ack(self, d: _Delivery) -> None:
        pipe = self._r.pipeline(transaction=True)
        pipe.xack(self._stream, self.group, d.token)
        pipe.xdel(self._stream, d.token)
        if d.audio_ref is not None:
            pipe.delete(d.audio_ref)
        with self._errors():
            pipe.execute()


# ---------------------------------------------------------------------------------------------
# SQLite (embedded default)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, total INTEGER NOT NULL, succeeded INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL, updated_at REAL NOT NULL,
    started_at REAL, finished_at REAL);
CREATE TABLE IF NOT EXISTS items (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL, idx INTEGER NOT NULL,
    track_id TEXT NOT NULL, metadata TEXT NOT NULL, uri TEXT, spool TEXT,
    enqueued_at REAL NOT NULL, claimed_by TEXT, claimed_at REAL);
CREATE TABLE IF NOT EXISTS accounted (job_id TEXT NOT NULL, idx INTEGER NOT NULL, PRIMARY KEY (job_id, idx));
CREATE TABLE IF NOT EXISTS failures (job_id TEXT NOT NULL, track_id TEXT NOT NULL, message TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS failures_job ON failures (job_id);
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished_at);
"""


class LocalJobQueue(JobQueue):
    """SQLite back end for a single gateway: ``data_dir/jobs.sqlite3`` (WAL) and ``data_dir/ingest-spool/``.

    One connection guarded by a lock; claims use ``BEGIN IMMEDIATE`` so several queue objects on
    the same folder are still safe. Acknowledging deletes the item row and its spool file; the
    ``accounted`` table is the per-item dedupe set.
    """

    def __init__(self, data_dir: Path, consumer: str = "gateway-0", *,
                 visibility_timeout: float = DEFAULT_VISIBILITY_TIMEOUT, job_ttl_seconds: int = DEFAULT_JOB_TTL):
        super().__init__(consumer, visibility_timeout, job_ttl_seconds)
        self.data_dir = Path(data_dir)
        self.spool = self.data_dir / "ingest-spool"
        try:
            self.spool.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.data_dir / "jobs.sqlite3", timeout=30, isolation_level=None,
                                       check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise Unavailable(f"cannot open the ingest job store in {self.data_dir}: {exc}") from exc
        self._next_purge = 0.0
        self._purge()
        self._sweep_spool()

    @contextmanager
    def _tx(self, immediate: bool = True):
        """One transaction under the lock; SQLite operational errors become :class:`Unavailable`."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                raise Unavailable(f"ingest job store {self.data_dir}: {exc}") from exc

    def _purge(self) -> None:
        """Delete finished jobs older than the TTL (rate-limited to once a minute)."""
        now = time.time()
        if now < self._next_purge:
            return
        self._next_purge = now + 60
        with self._tx() as db:
            old = [r[0] for r in db.execute("SELECT id FROM jobs WHERE finished_at < ?", (now - self.job_ttl_seconds,))]
            for table, col in (("failures", "job_id"), ("accounted", "job_id"), ("jobs", "id")):
                db.executemany(f"DELETE FROM {table} WHERE {col} = ?", [(j,) for j in old])

    def _sweep_spool(self) -> None:
        """Remove spool files no item refers to (a submit that died half-way), if over an hour old."""
        with self._lock:
            referenced = {r[0] for r in self._db.execute("SELECT spool FROM items WHERE spool IS NOT NULL")}
        cutoff = time.time() - 3600
        for p in self.spool.iterdir():
            try:
                if str(p) not in referenced and p.stat().st_mtime < cutoff:
                    p.unlink()
            except OSError:
                pass

    def submit(self, items: list[IngestItem]) -> str:
        _check_items(items)
        self._purge()
        job_id = uuid.uuid4().hex
        now = time.time()
        written: list[Path] = []
        rows = []
        try:
            for idx, it in enumerate(items):
                spool = None
                if it.audio is not None:
                    path = self.spool / f"{job_id}-{idx}.audio"
                    tmp = path.with_suffix(".tmp")
                    tmp.write_bytes(it.audio)
                    os.replace(tmp, path)
                    written.append(path)
                    spool = str(path)
                rows.append((job_id, idx, it.track_id, json.dumps(it.metadata), it.uri, spool, now))
            with self._tx() as db:
                db.execute("INSERT INTO jobs (id, total, created_at, updated_at) VALUES (?, ?, ?, ?)",
                           (job_id, len(items), now, now))
                db.executemany("INSERT INTO items (job_id, idx, track_id, metadata, uri, spool, enqueued_at) "
                               "VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        except BaseException as exc:
            for p in written:
                p.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise Unavailable(f"cannot spool uploaded audio under {self.spool}: {exc}") from exc
            raise
        return job_id

    def get(self, job_id: str) -> JobStatus:
        with self._tx(immediate=False) as db:
            row = db.execute("SELECT total, succeeded, failed, created_at, updated_at, started_at, finished_at "
                             "FROM jobs WHERE id = ?", (job_id,)).fetchone()
            failures = db.execute("SELECT track_id, message FROM failures WHERE job_id = ? ORDER BY rowid",
                                  (job_id,)).fetchall()
        if row is None or (row[6] is not None and row[6] < time.time() - self.job_ttl_seconds):
            raise NotFound(f"no ingest job {job_id!r} (unknown, or finished and expired)")
        total, ok, bad, created, updated, started, _ = row
        return JobStatus(job_id=job_id, state=_state(total, ok, bad, started is not None), total=total,
                         succeeded=ok, failed=bad, failures=[(t, m) for t, m in failures],
                         created_at=created, updated_at=updated)

    def depth(self) -> int:
        with self._tx(immediate=False) as db:
            return db.execute("SELECT COUNT(*) FROM items").fetchone()[0]

    def lag_seconds(self) -> float:
        with self._tx(immediate=False) as db:
            oldest = db.execute("SELECT MIN(enqueued_at) FROM items").fetchone()[0]
        return 0.0 if oldest is None else max(0.0, time.time() - oldest)

    def close(self) -> None:
        super().close()
        with self._lock:
            self._db.close()

    # -- primitives --
    def _recover(self) -> None:
        with self._tx() as db:
            n = db.execute("UPDATE items SET claimed_by = NULL, claimed_at = NULL WHERE claimed_by = ?",
                           (self.consumer,)).rowcount
        if n:
            log.info("redelivering %d ingest item(s) left unacknowledged by %s", n, self.consumer)

    def _claim(self, stop: threading.Event, poll_seconds: float) -> _Delivery | None:
        now = time.time()
        with self._tx() as db:
            row = db.execute("SELECT seq, job_id, idx, track_id, metadata, uri, spool, claimed_by FROM items "
                             "WHERE claimed_at IS NULL OR claimed_at < ? ORDER BY seq LIMIT 1",
                             (now - self.visibility_timeout,)).fetchone()
            if row is not None:
                db.execute("UPDATE items SET claimed_by = ?, claimed_at = ? WHERE seq = ?",
                           (self.consumer, now, row[0]))
        if row is None:
            self._purge()
            stop.wait(poll_seconds)
            return None
        if row[7] is not None:
            log.info("took over ingest item %s of job %s (idle > %.0f s)", row[3], row[1], self.visibility_timeout)
        return _Delivery(token=row[0], job_id=row[1], idx=row[2], track_id=row[3], metadata=json.loads(row[4]),
                         uri=row[5], audio_ref=row[6])

    def _begin(self, d: _Delivery) -> bool:
        now = time.time()
        with self._tx() as db:
            if db.execute("SELECT 1 FROM accounted WHERE job_id = ? AND idx = ?", (d.job_id, d.idx)).fetchone():
                return True
            n = db.execute("UPDATE jobs SET started_at = ?, updated_at = ? WHERE id = ? AND started_at IS NULL",
                           (now, now, d.job_id)).rowcount
            if n == 0 and db.execute("SELECT 1 FROM jobs WHERE id = ?", (d.job_id,)).fetchone() is None:
                return True  # job record purged: nothing to account for
        return False

    def _load(self, d: _Delivery) -> IngestItem:
        audio = None
        if d.audio_ref is not None:
            try:
                audio = Path(d.audio_ref).read_bytes()
            except FileNotFoundError:
                raise NotFound(f"uploaded audio of track {d.track_id!r} is gone from the spool ({d.audio_ref})") from None
        return IngestItem(track_id=d.track_id, metadata=d.metadata, uri=d.uri, audio=audio)

    def _account(self, d: _Delivery, ok: bool, message: str) -> None:
        now = time.time()
        with self._tx() as db:
            if db.execute("INSERT OR IGNORE INTO accounted (job_id, idx) VALUES (?, ?)", (d.job_id, d.idx)).rowcount == 0:
                return
            col = "succeeded" if ok else "failed"
            db.execute(f"UPDATE jobs SET {col} = {col} + 1, updated_at = ? WHERE id = ?", (now, d.job_id))
            if not ok:
                db.execute("INSERT INTO failures (job_id, track_id, message) VALUES (?, ?, ?)",
                           (d.job_id, d.track_id, message))
            db.execute("UPDATE jobs SET finished_at = ? WHERE id = ? AND succeeded + failed >= total", (now, d.job_id))

    def _ack(self, d: _Delivery) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM items WHERE seq = ?", (d.token,))
        if d.audio_ref is not None:
            Path(d.audio_ref).unlink(missing_ok=True)


def make_job_queue(redis_url: str | None, data_dir: Path | None, consumer: str = "gateway-0", *,
                   visibility_timeout: float = DEFAULT_VISIBILITY_TIMEOUT,
                   job_ttl_seconds: int = DEFAULT_JOB_TTL) -> JobQueue:
    """Redis when ``redis_url`` is set, else SQLite under ``data_dir``.

    ``consumer`` must be stable across restarts of one gateway and unique among gateways sharing
    a Redis (e.g. the pod name): a restarted gateway immediately redelivers its own unfinished items.
    """
    if redis_url:
        return RedisJobQueue(redis_url, consumer, visibility_timeout=visibility_timeout,
                             job_ttl_seconds=job_ttl_seconds)
    if data_dir is None:
        raise InvalidArgument("the ingest job queue needs a Redis URL or a data directory")
    return LocalJobQueue(Path(data_dir), consumer, visibility_timeout=visibility_timeout,
                         job_ttl_seconds=job_ttl_seconds)
