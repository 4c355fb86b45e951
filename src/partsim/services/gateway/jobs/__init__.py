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
  accounted is acknowledged without calling ``process`` again;
* a failed item is kept (its source, and its uploaded bytes until the job expires) so that
  :meth:`JobQueue.retry` can queue the failed items of a job again: same job id, their failures
  and the failed count taken back, each item then accounted once more like a new one.

Two back ends with the same semantics: :class:`RedisJobQueue` (``redis_queue.py``: a Redis Stream
``partsim:ingest`` with consumer group ``ingesters``; job records in hashes) and :class:`LocalJobQueue`
(``local_queue.py``: SQLite in ``data_dir/jobs.sqlite3``, uploads spooled under ``data_dir/ingest-spool/``),
chosen by :func:`make_job_queue`; the items, the status and the worker loop they share are in ``base.py``.
Finished job records expire after ``job_ttl_seconds`` (default 7 days); :meth:`JobQueue.list` pages through the
jobs still kept, newest first, with an opaque page token (``base.py``: the same on both back ends).
"""

from __future__ import annotations

from pathlib import Path

from partsim.errors import InvalidArgument

from .base import DEFAULT_JOB_TTL, DEFAULT_VISIBILITY_TIMEOUT, IngestItem, JobQueue, JobStatus
from .local_queue import LocalJobQueue
from .redis_queue import RedisJobQueue

__all__ = [
    "DEFAULT_JOB_TTL",
    "DEFAULT_VISIBILITY_TIMEOUT",
    "IngestItem",
    "JobQueue",
    "JobStatus",
    "LocalJobQueue",
    "RedisJobQueue",
    "make_job_queue",
]


def make_job_queue(
    redis_url: str | None,
    data_dir: Path | None,
    consumer: str = "gateway-0",
    *,
    visibility_timeout: float = DEFAULT_VISIBILITY_TIMEOUT,
    job_ttl_seconds: int = DEFAULT_JOB_TTL,
    redis_password: str | None = None,
) -> JobQueue:
    """Redis when ``redis_url`` is set, else SQLite under ``data_dir``.

    ``consumer`` must be stable across restarts of one gateway and unique among gateways sharing
    a Redis (e.g. the pod name): a restarted gateway immediately redelivers its own unfinished items.
    """
    if redis_url:
        return RedisJobQueue(
            redis_url,
            consumer,
            visibility_timeout=visibility_timeout,
            job_ttl_seconds=job_ttl_seconds,
            password=redis_password,
        )
    if data_dir is None:
        raise InvalidArgument("the ingest job queue needs a Redis URL or a data directory")
    return LocalJobQueue(
        Path(data_dir), consumer, visibility_timeout=visibility_timeout, job_ttl_seconds=job_ttl_seconds
    )
