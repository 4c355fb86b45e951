"""What every ingest job queue shares: the items, the job status, and :class:`JobQueue`, whose
:meth:`~JobQueue.work` loop gives the at-least-once guarantees of the package docstring on top of a
back end's primitives (claim, begin, load, account, acknowledge)."""

from __future__ import annotations

import builtins
import json
import logging
import math
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from partsim.errors import InvalidArgument, NotFound, PartsimError, ResourceExhausted, Unavailable
from partsim.services import paging

log = logging.getLogger("partsim.gateway.jobs")

DEFAULT_VISIBILITY_TIMEOUT = 60.0
DEFAULT_JOB_TTL = 7 * 86400


@dataclass
class IngestItem:
    """One track to index: exactly one of ``uri`` (local path / file:// URI) or ``audio`` (encoded bytes)."""

    track_id: str
    metadata: dict  # {"title": str, "artist": str, "tags": {str: str}, and "bpm": float, "key": str where given}
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
class Delivery:
    """A claimed queue entry: enough to load the item, account it and acknowledge it."""

    token: Any  # stream entry id (Redis) or row id (SQLite)
    job_id: str
    idx: int
    track_id: str
    metadata: dict
    uri: str | None
    audio_ref: str | None  # Redis key or spool file path of uploaded bytes


class JobRecord(NamedTuple):
    """What a back end keeps of a job; :meth:`JobQueue.get` turns it into a :class:`JobStatus`."""

    total: int
    succeeded: int
    failed: int
    started: bool
    failures: list[tuple[str, str]]
    created_at: float
    updated_at: float


class ListPosition(NamedTuple):
    """Where a page of :meth:`JobQueue.list` ends: its last job (jobs run newest first, by
    ``(created_at, job_id)`` descending)."""

    created_at: float
    job_id: str


# what JobQueue.list answers: a page of jobs and the next page's token; what a back end lists for it
JobPage = tuple[list[JobStatus], str]
ListedRecords = list[tuple[str, JobRecord]]


def job_state(total: int, succeeded: int, failed: int, started: bool) -> str:
    if succeeded + failed >= total:
        return "done"
    return "running" if started else "queued"


def _status(job_id: str, rec: JobRecord) -> JobStatus:
    return JobStatus(
        job_id=job_id,
        state=job_state(rec.total, rec.succeeded, rec.failed, rec.started),
        total=rec.total,
        succeeded=rec.succeeded,
        failed=rec.failed,
        failures=rec.failures,
        created_at=rec.created_at,
        updated_at=rec.updated_at,
    )


def _failure_message(exc: Exception) -> str:
    if isinstance(exc, PartsimError):
        return str(exc)
    return f"internal error: {type(exc).__name__}: {exc}"


def _unknown_job(job_id: str) -> NotFound:
    return NotFound(f"no ingest job {job_id!r} (unknown, or finished and expired)")


def encode_page_token(pos: ListPosition) -> str:
    """The opaque page token after ``pos`` (:func:`partsim.services.paging.encode_token`)."""
    return paging.encode_token({"created_at": pos.created_at, "job_id": pos.job_id})


def decode_page_token(token: str) -> ListPosition | None:
    """The position an :func:`encode_page_token` token names; None for the empty token (the first page). Anything else:
    :class:`InvalidArgument` (reason ``INVALID_PAGE_TOKEN``)."""
    d = paging.decode_token(token, "ListIngestJobs", "gateway")
    if d is None:
        return None
    created_at, job_id = d.get("created_at"), d.get("job_id")
    if (
        isinstance(created_at, int | float)
        and not isinstance(created_at, bool)
        and math.isfinite(created_at)
        and isinstance(job_id, str)
        and job_id
    ):
        return ListPosition(float(created_at), job_id)
    raise paging.bad_token("ListIngestJobs", "gateway")


def check_items(items: list[IngestItem]) -> None:
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
            raise InvalidArgument(
                f"ingest item {i} ({it.track_id}): metadata is not JSON-serializable: {exc}"
            ) from None


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
    def submit(self, items: list[IngestItem]) -> str:
        """Store a new job and queue its items; returns the job id (uuid4 hex)."""
        check_items(items)
        return self._store(items)

    def get(self, job_id: str) -> JobStatus:
        """The job's status; :class:`NotFound` for an unknown (or expired) id."""
        rec = self._job_record(job_id)
        if rec is None:
            raise _unknown_job(job_id)
        return _status(job_id, rec)

    def list(self, page_size: int = 0, page_token: str = "") -> JobPage:
        """One page of the jobs still kept (unexpired), newest first (``created_at`` descending, the job id
        descending among equal times), and the token of the next page ("" after the last one).

        ``page_size`` as :func:`partsim.services.paging.page_size` (0: 50; above 1000: 1000);
        ``page_token`` is "" or a previous page's token (:func:`encode_page_token`; the position after that page's last
        job, so jobs submitted meanwhile never shift a later page, they appear on none). A negative size or a
        token this class did not write: :class:`InvalidArgument`."""
        size = paging.page_size(page_size)
        after = decode_page_token(page_token)
        records = self._list_records(after, size + 1)
        jobs = [_status(job_id, rec) for job_id, rec in records[:size]]
        more = len(records) > size
        return jobs, encode_page_token(ListPosition(jobs[-1].created_at, jobs[-1].job_id)) if more else ""

    def retry(self, job_id: str) -> int:
        """Queue the job's failed items again (same job: their failures and the failed count are taken
        back, the state turns running); the number queued. Idempotent: a second call finds none failed
        (until one fails again). A failed item's upload is kept for this until its job expires.
        :class:`NotFound` for an unknown (or expired) id."""
        n = self._retry(job_id)
        if n is None:
            raise _unknown_job(job_id)
        if n:
            log.info("ingest job %s: %d failed item(s) queued again", job_id, n)
        return n

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
            d: Delivery | None = None
            try:
                self._recover_once()
                d = self._claim(stop, poll_seconds)
                if d is not None and self._begin(d):  # already accounted, or its job record is gone
                    self._ack(d)
                    d = None
                item = self._load(d) if d is not None else None
            except (Unavailable, ResourceExhausted) as exc:  # an outage or a full disk: nothing accounted, redelivered
                self._backend_error(exc)
                stop.wait(poll_seconds)
                continue
            except PartsimError as exc:  # the item cannot be loaded (its upload is gone)
                item, ok, message = None, False, str(exc)
            except Exception:  # a bug must not kill the worker thread silently
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
                except Exception as exc:  # every failure is recorded against the item
                    if not isinstance(exc, PartsimError):
                        log.exception("ingest of track %r (job %s) failed", d.track_id, d.job_id)
                    ok, message = False, _failure_message(exc)
            try:
                self._account(d, ok, message)
                self._ack(d)
            except (Unavailable, ResourceExhausted) as exc:  # stays pending: redelivered after the visibility timeout
                self._backend_error(exc)
            except Exception:  # same: keep the worker alive, the item comes back
                log.exception("ingest worker could not record track %r (job %s)", d.track_id, d.job_id)

    # -- back-end primitives ---------------------------------------------------------------
    def _recover_once(self) -> None:
        with self._lock:
            if self._recovered:
                return
            self._recover()
            self._recovered = True

    @abstractmethod
    def _store(self, items: builtins.list[IngestItem]) -> str:  # builtins: the class's own list() is in scope
        """Store a new job of checked items and queue them; returns the job id."""

    @abstractmethod
    def _job_record(self, job_id: str) -> JobRecord | None:
        """The job's record; None for an unknown (or expired) id."""

    @abstractmethod
    def _list_records(self, after: ListPosition | None, limit: int) -> ListedRecords:
        """Up to ``limit`` unexpired jobs strictly after ``after`` (all from the newest when None) in the order of
        :meth:`list`: ``(job_id, record)`` pairs."""

    @abstractmethod
    def _retry(self, job_id: str) -> int | None:
        """Queue the job's failed items again in one step (see :meth:`retry`); None for an unknown job."""

    @abstractmethod
    def _recover(self) -> None:
        """Make this consumer's own unacknowledged claims (from a previous run) deliverable now."""

    @abstractmethod
    def _claim(self, stop: threading.Event, poll_seconds: float) -> Delivery | None:
        """The next deliverable entry, claimed for this consumer; None after waiting ~poll_seconds."""

    @abstractmethod
    def _begin(self, d: Delivery) -> bool:
        """Mark the job running; True if the item needs no processing (already accounted / job gone)."""

    @abstractmethod
    def _load(self, d: Delivery) -> IngestItem:
        """The item, with uploaded bytes read back; a PartsimError if they are gone."""

    @abstractmethod
    def _account(self, d: Delivery, ok: bool, message: str) -> None:
        """Count the outcome once per item (idempotent); keep a failed item for :meth:`retry`."""

    @abstractmethod
    def _ack(self, d: Delivery) -> None:
        """Remove the entry from the queue, and its uploaded bytes unless kept (a failed item, or one
        queued again)."""

    def _backend_error(self, exc: Exception) -> None:
        if not self._backend_down:
            log.warning("ingest queue back end unavailable (%s); retrying", exc)
            self._backend_down = True

    def _backend_ok(self) -> None:
        if self._backend_down:
            log.info("ingest queue back end reachable again")
            self._backend_down = False
