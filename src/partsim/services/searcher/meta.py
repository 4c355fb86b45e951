"""Track metadata: :class:`TrackInfo`, and :class:`MetaDB`, the SQLite file older searchers kept it in.

The catalog's track records now live in Milvus (:mod:`.tracktable`). :class:`MetaDB` remains to read
a catalog written by an older partsim: the store imports its rows into the ``tracks`` collection once
when it opens, then renames the file to ``tracks.sqlite.migrated`` (:mod:`.migrate`).

Each track's row names the *generation* of its vector rows (their primary keys carry it,
:func:`.milvus.pk`); in the SQLite file a durable counter handed them out. ``version`` is the
caller's id of the upload (the gateway names the kept audio by it), kept and answered as given.

Space: the file runs in incremental auto-vacuum mode, and a write that leaves more than
:data:`RECLAIM_PAGES` free pages (deleted or replaced rows) gives them back to the file system, so
deleting tracks shrinks the file. A full disk is ResourceExhausted (STORAGE_FULL), not an outage.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from partsim.errors import storage_error

log = logging.getLogger("partsim.searcher")

AUTO_VACUUM_INCREMENTAL = 2  # PRAGMA auto_vacuum's value for INCREMENTAL
RECLAIM_PAGES = 16  # free pages (4 KiB each by default) a write gives back to the file system


@dataclass
class TrackInfo:
    """One indexed track's metadata."""

    track_id: str
    title: str = ""
    artist: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    num_segments: int = 0
    duration_seconds: float = 0.0
    segment_seconds: float = 0.0
    model_version: str = ""
    indexed_at: float = 0.0
    version: str = ""  # the caller's upload id (empty: none given, or indexed before versions were kept)
    generation: int = 0  # of the vector rows (0: written before generations, keys without one)
    bpm: float | None = None  # tempo, where known
    key: str | None = None  # musical key, where known


_COLUMNS = (
    "track_id",
    "title",
    "artist",
    "tags",
    "num_segments",
    "duration_seconds",
    "segment_seconds",
    "model_version",
    "indexed_at",
    "version",
    "generation",
)
# columns added after the first release: (name, declaration) for ALTER TABLE on an older file
_ADDED = (("version", "TEXT NOT NULL DEFAULT ''"), ("generation", "INTEGER NOT NULL DEFAULT 0"))


def _row(info: TrackInfo) -> tuple:
    return (
        info.track_id,
        info.title,
        info.artist,
        json.dumps(info.tags, sort_keys=True),
        info.num_segments,
        info.duration_seconds,
        info.segment_seconds,
        info.model_version,
        info.indexed_at,
        info.version,
        info.generation,
    )


def _info(row: tuple) -> TrackInfo:
    tid, title, artist, tags, n, dur, seg, ver, at, upload, gen = row
    return TrackInfo(
        tid, title, artist, json.loads(tags), int(n), float(dur), float(seg), ver, float(at), upload, int(gen)
    )


class MetaDB:
    """Thread-safe SQLite table of :class:`TrackInfo`, keyed and listed by track id."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # a new file: before its first table
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS tracks (track_id TEXT PRIMARY KEY, title TEXT, artist TEXT, tags TEXT, "
            "num_segments INTEGER, duration_seconds REAL, segment_seconds REAL, model_version TEXT, "
            "indexed_at REAL)"
        )
        have = {r[1] for r in self._db.execute("PRAGMA table_info(tracks)")}
        for name, decl in _ADDED:
            if name not in have:
                self._db.execute(f"ALTER TABLE tracks ADD COLUMN {name} {decl}")
        self._db.execute("CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)")
        if self._db.execute("PRAGMA auto_vacuum").fetchone()[0] != AUTO_VACUUM_INCREMENTAL:
            self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # a file from before: converted once
            self._db.execute("VACUUM")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction under the lock, then free pages given back (:data:`RECLAIM_PAGES`).

        Raises:
            ResourceExhausted: the disk is full (reason STORAGE_FULL); nothing was written.
            Unavailable: any other SQLite or file-system failure.
        """
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                    self._db.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise
            except (sqlite3.Error, OSError) as exc:
                raise storage_error(exc, "the searcher's track metadata") from exc
            self._reclaim()

    def _reclaim(self) -> None:
        """Give free pages back to the file system once there are :data:`RECLAIM_PAGES` (the lock held); a
        failure (a full disk) leaves them for the next write: the write before it was committed."""
        try:
            if self._db.execute("PRAGMA freelist_count").fetchone()[0] >= RECLAIM_PAGES:
                self._db.executescript("PRAGMA incremental_vacuum;")  # executescript: every step, not one page
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error as exc:
            log.warning("could not reclaim free pages of %s: %s", self.path, exc)

    def next_generation(self) -> int:
        """A generation no write has had before (durable: committed before it is returned)."""
        with self._write() as db:
            db.execute("INSERT OR IGNORE INTO counters (name, value) VALUES ('generation', 0)")
            db.execute("UPDATE counters SET value = value + 1 WHERE name = 'generation'")
            (gen,) = db.execute("SELECT value FROM counters WHERE name = 'generation'").fetchone()
        return int(gen)

    def put_many(self, infos: list[TrackInfo]) -> None:
        """Insert or replace, in one transaction."""
        with self._write() as db:
            db.executemany(
                f"INSERT OR REPLACE INTO tracks ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                [_row(i) for i in infos],
            )

    def delete(self, track_id: str) -> bool:
        """Remove one track; False when it was not there."""
        with self._write() as db:
            return db.execute("DELETE FROM tracks WHERE track_id = ?", (track_id,)).rowcount > 0

    def get(self, track_id: str) -> TrackInfo | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM tracks WHERE track_id = ?", (track_id,)
            ).fetchone()
        return _info(row) if row else None

    def page(self, after: str, limit: int) -> list[TrackInfo]:
        """Up to ``limit`` tracks with id > ``after``, by id."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM tracks WHERE track_id > ? ORDER BY track_id LIMIT ?", (after, limit)
            ).fetchall()
        return [_info(r) for r in rows]

    def ids(self) -> set[str]:
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT track_id FROM tracks")}

    def generations(self) -> dict[str, int]:
        """Each track's generation (whose rows are its current version)."""
        with self._lock:
            return {r[0]: int(r[1]) for r in self._db.execute("SELECT track_id, generation FROM tracks")}

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM tracks").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
