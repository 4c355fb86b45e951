"""The SQLite back end of the ingest job queue, the embedded default for a single gateway:
``data_dir/jobs.sqlite3`` (WAL) and uploads spooled under ``data_dir/ingest-spool/``."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

from partsim.errors import NotFound, Unavailable, storage_error

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
CREATE TABLE IF NOT EXISTS failed_items (
    job_id TEXT NOT NULL, idx INTEGER NOT NULL, track_id TEXT NOT NULL, metadata TEXT NOT NULL, uri TEXT,
    spool TEXT, PRIMARY KEY (job_id, idx));
CREATE INDEX IF NOT EXISTS failures_job ON failures (job_id);
CREATE INDEX IF NOT EXISTS items_spool ON items (spool);
CREATE INDEX IF NOT EXISTS failed_items_spool ON failed_items (spool);
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished_at);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created_at, id);
"""


class LocalJobQueue(JobQueue):
    """SQLite back end for a single gateway: ``data_dir/jobs.sqlite3`` (WAL) and ``data_dir/ingest-spool/``.

    One connection guarded by a lock; claims use ``BEGIN IMMEDIATE`` so several queue objects on
    the same folder are still safe. Acknowledging deletes the item row, and its spool file once no
    row refers to it; the ``accounted`` table is the per-item dedupe set; ``failed_items`` keeps a
    failed item (and so its spool file) for :meth:`retry`.
    """

    def __init__(
        self,
        data_dir: Path,
        consumer: str = "gateway-0",
        *,
        visibility_timeout: float = DEFAULT_VISIBILITY_TIMEOUT,
        job_ttl_seconds: int = DEFAULT_JOB_TTL,
    ):
        super().__init__(consumer, visibility_timeout, job_ttl_seconds)
        self.data_dir = Path(data_dir)
        self.spool = self.data_dir / "ingest-spool"
        try:
            self.spool.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.data_dir / "jobs.sqlite3", timeout=30, isolation_level=None, check_same_thread=False
            )
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
        """One transaction under the lock; SQLite operational errors become :class:`Unavailable` (disk full: ResourceExhausted)."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.OperationalError as exc:  # disk full: RESOURCE_EXHAUSTED (STORAGE_FULL), no path
                raise storage_error(exc, "the ingest job store") from exc

    def _purge(self) -> None:
        """Delete finished jobs older than the TTL (rate-limited to once a minute)."""
        now = time.time()
        if now < self._next_purge:
            return
        self._next_purge = now + 60
        with self._tx() as db:
            old = [r[0] for r in db.execute("SELECT id FROM jobs WHERE finished_at < ?", (now - self.job_ttl_seconds,))]
            kept = [
                r[0]
                for j in old
                for r in db.execute("SELECT spool FROM failed_items WHERE job_id = ? AND spool IS NOT NULL", (j,))
            ]
            for table, col in (
                ("failures", "job_id"),
                ("accounted", "job_id"),
                ("failed_items", "job_id"),
                ("jobs", "id"),
            ):
                db.executemany(f"DELETE FROM {table} WHERE {col} = ?", [(j,) for j in old])
        for spool in kept:
            Path(spool).unlink(missing_ok=True)

    def _sweep_spool(self) -> None:
        """Remove spool files no item refers to (a submit that died half-way), if over an hour old."""
        with self._lock:
            referenced = {
                r[0]
                for r in self._db.execute(
                    "SELECT spool FROM items WHERE spool IS NOT NULL UNION SELECT spool FROM failed_items"
                )
            }
        cutoff = time.time() - 3600
        for p in self.spool.iterdir():
            try:
                if str(p) not in referenced and p.stat().st_mtime < cutoff:
                    p.unlink()
            except OSError:
                pass

    def _store(self, items: list[IngestItem]) -> str:
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
                db.execute(
                    "INSERT INTO jobs (id, total, created_at, updated_at) VALUES (?, ?, ?, ?)",
                    (job_id, len(items), now, now),
                )
                db.executemany(
                    "INSERT INTO items (job_id, idx, track_id, metadata, uri, spool, enqueued_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
        except BaseException as exc:
            for p in written:
                p.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise storage_error(exc, "cannot spool uploaded audio") from exc
            raise
        return job_id

    def _job_record(self, job_id: str) -> JobRecord | None:
        with self._tx(immediate=False) as db:
            row = db.execute(
                "SELECT total, succeeded, failed, created_at, updated_at, started_at, finished_at "
                "FROM jobs WHERE id = ?",
                (job_id,),
            ).fetchone()
            failures = db.execute(
                "SELECT track_id, message FROM failures WHERE job_id = ? ORDER BY rowid", (job_id,)
            ).fetchall()
        if row is None or (row[6] is not None and row[6] < time.time() - self.job_ttl_seconds):
            return None
        total, ok, bad, created, updated, started, _ = row
        return JobRecord(total, ok, bad, started is not None, [(t, m) for t, m in failures], created, updated)

    def _list_records(self, after: ListPosition | None, limit: int) -> ListedRecords:
        # unexpired as in _job_record (a finished job older than the TTL may wait for _purge); the
        # (created_at, id) index serves both the order and the position after the previous page
        where = "(finished_at IS NULL OR finished_at >= ?)"
        params: list[float | str] = [time.time() - self.job_ttl_seconds]
        if after is not None:
            where += " AND (created_at, id) < (?, ?)"
            params += [after.created_at, after.job_id]
        with self._tx(immediate=False) as db:
            rows = db.execute(
                "SELECT id, total, succeeded, failed, created_at, updated_at, started_at FROM jobs "
                f"WHERE {where} ORDER BY created_at DESC, id DESC LIMIT ?",
                (*params, limit),
            ).fetchall()
            failures: dict[str, list[tuple[str, str]]] = {r[0]: [] for r in rows}
            if rows:
                marks = ", ".join("?" * len(rows))
                for job_id, track_id, message in db.execute(
                    f"SELECT job_id, track_id, message FROM failures WHERE job_id IN ({marks}) ORDER BY rowid",
                    list(failures),
                ):
                    failures[job_id].append((track_id, message))
        return [
            (job_id, JobRecord(total, ok, bad, started is not None, failures[job_id], created, updated))
            for job_id, total, ok, bad, created, updated, started in rows
        ]

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
            n = db.execute(
                "UPDATE items SET claimed_by = NULL, claimed_at = NULL WHERE claimed_by = ?", (self.consumer,)
            ).rowcount
        if n:
            log.info("redelivering %d ingest item(s) left unacknowledged by %s", n, self.consumer)

    def _claim(self, stop: threading.Event, poll_seconds: float) -> Delivery | None:
        now = time.time()
        with self._tx() as db:
            row = db.execute(
                "SELECT seq, job_id, idx, track_id, metadata, uri, spool, claimed_by FROM items "
                "WHERE claimed_at IS NULL OR claimed_at < ? ORDER BY seq LIMIT 1",
                (now - self.visibility_timeout,),
            ).fetchone()
            if row is not None:
                db.execute(
                    "UPDATE items SET claimed_by = ?, claimed_at = ? WHERE seq = ?", (self.consumer, now, row[0])
                )
        if row is None:
            self._purge()
            stop.wait(poll_seconds)
            return None
        if row[7] is not None:
            log.info("took over ingest item %s of job %s (idle > %.0f s)", row[3], row[1], self.visibility_timeout)
        return Delivery(
            token=row[0],
            job_id=row[1],
            idx=row[2],
            track_id=row[3],
            metadata=json.loads(row[4]),
            uri=row[5],
            audio_ref=row[6],
        )

    def _begin(self, d: Delivery) -> bool:
        now = time.time()
        with self._tx() as db:
            if db.execute("SELECT 1 FROM accounted WHERE job_id = ? AND idx = ?", (d.job_id, d.idx)).fetchone():
                return True
            n = db.execute(
                "UPDATE jobs SET started_at = ?, updated_at = ? WHERE id = ? AND started_at IS NULL",
                (now, now, d.job_id),
            ).rowcount
            if n == 0 and db.execute("SELECT 1 FROM jobs WHERE id = ?", (d.job_id,)).fetchone() is None:
                return True  # job record purged: nothing to account for
        return False

    def _load(self, d: Delivery) -> IngestItem:
        audio = None
        if d.audio_ref is not None:
            try:
                audio = Path(d.audio_ref).read_bytes()
            except FileNotFoundError:
                raise NotFound(
                    f"uploaded audio of track {d.track_id!r} is gone from the spool ({d.audio_ref})"
                ) from None
        return IngestItem(track_id=d.track_id, metadata=d.metadata, uri=d.uri, audio=audio)

    def _account(self, d: Delivery, ok: bool, message: str) -> None:
        now = time.time()
        with self._tx() as db:
            counted = db.execute("INSERT OR IGNORE INTO accounted (job_id, idx) VALUES (?, ?)", (d.job_id, d.idx))
            if counted.rowcount == 0:
                return
            col = "succeeded" if ok else "failed"
            db.execute(f"UPDATE jobs SET {col} = {col} + 1, updated_at = ? WHERE id = ?", (now, d.job_id))
            if not ok:
                db.execute(
                    "INSERT INTO failures (job_id, track_id, message) VALUES (?, ?, ?)", (d.job_id, d.track_id, message)
                )
                db.execute(
                    "INSERT OR REPLACE INTO failed_items (job_id, idx, track_id, metadata, uri, spool) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (d.job_id, d.idx, d.track_id, json.dumps(d.metadata), d.uri, d.audio_ref),
                )
            db.execute("UPDATE jobs SET finished_at = ? WHERE id = ? AND succeeded + failed >= total", (now, d.job_id))

    def _ack(self, d: Delivery) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM items WHERE seq = ?", (d.token,))
            # the spool file stays while a failed item (for retry) or an item queued again refers to it
            kept = (
                d.audio_ref is not None
                and db.execute(
                    "SELECT 1 FROM failed_items WHERE spool = ?1 UNION ALL SELECT 1 FROM items WHERE spool = ?1",
                    (d.audio_ref,),
                ).fetchone()
            )
            if d.audio_ref is not None and not kept:
                Path(d.audio_ref).unlink(missing_ok=True)

    def _retry(self, job_id: str) -> int | None:
        now = time.time()
        with self._tx() as db:
            job = db.execute("SELECT finished_at FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if job is None or (job[0] is not None and job[0] < now - self.job_ttl_seconds):
                return None
            rows = db.execute(
                "SELECT idx, track_id, metadata, uri, spool FROM failed_items WHERE job_id = ? ORDER BY idx", (job_id,)
            ).fetchall()
            if not rows:
                return 0
            db.executemany(
                "INSERT INTO items (job_id, idx, track_id, metadata, uri, spool, enqueued_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(job_id, *r, now) for r in rows],
            )
            for idx, track_id, *_ in rows:
                db.execute("DELETE FROM accounted WHERE job_id = ? AND idx = ?", (job_id, idx))
                db.execute(
                    "DELETE FROM failures WHERE rowid = "
                    "(SELECT MIN(rowid) FROM failures WHERE job_id = ? AND track_id = ?)",
                    (job_id, track_id),
                )
            db.execute("DELETE FROM failed_items WHERE job_id = ?", (job_id,))
            db.execute(
                "UPDATE jobs SET failed = failed - ?, finished_at = NULL, updated_at = ? WHERE id = ?",
                (len(rows), now, job_id),
            )
        return len(rows)
