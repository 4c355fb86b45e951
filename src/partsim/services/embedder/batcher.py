"""Dynamic batching: many callers' segments, one model call per batch.

Callers :meth:`Batcher.submit` a stack of model-input rows, ``(n, samples)`` PCM segments or
``(n, n_mels, frames)`` mel segments, and get a :class:`~concurrent.futures.Future` of their
rows of the model output ``(n, P, D)``. One worker thread takes rows first-in first-out, from
as many jobs as fit, until it has ``max_batch`` rows or the oldest waiting row has waited
``max_wait_ms``; it stacks them into ``(b, ...)`` and makes ONE model call. A job larger than a batch is split across batches; rows of different
shapes (another segment length) never share a batch. An exception from the model call is set
on every job in that batch. A cancelled future's remaining rows are skipped.

Metrics (on the injected registry): ``partsim_embedder_segments_total``,
``partsim_embedder_batch_size``, ``partsim_embedder_queue_wait_seconds`` (per segment, submit
to batch start), ``partsim_embedder_model_seconds`` (per model call),
``partsim_embedder_queue_segments`` (rows waiting).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from partsim.errors import Unavailable

log = logging.getLogger("partsim.embedder")

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
WAIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
MODEL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class BatcherMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.segments = Counter("partsim_embedder_segments_total", "Segments embedded by the model.", registry=registry)
        self.batch_size = Histogram(
            "partsim_embedder_batch_size", "Segments per model call.", buckets=BATCH_BUCKETS, registry=registry
        )
        self.queue_wait = Histogram(
            "partsim_embedder_queue_wait_seconds",
            "Time a segment waited from submit to the start of its batch.",
            buckets=WAIT_BUCKETS,
            registry=registry,
        )
        self.model_seconds = Histogram(
            "partsim_embedder_model_seconds",
            "Latency of one model call (a batch).",
            buckets=MODEL_BUCKETS,
            registry=registry,
        )
        self.queued = Gauge("partsim_embedder_queue_segments", "Segments waiting for a batch.", registry=registry)


class _Job:
    """One submit: ``mels (n, ...)`` model-input rows; ``taken`` rows handed to batches, ``done`` rows back."""

    __slots__ = ("mels", "future", "out", "taken", "done", "submitted")

    def __init__(self, mels: np.ndarray):
        self.mels = mels
        self.future: Future = Future()
        self.out: np.ndarray | None = None  # (n, P, D), allocated from the first batch's output
        self.taken = 0
        self.done = 0
        self.submitted = time.perf_counter()

    @property
    def shape(self) -> tuple[int, ...]:
        return self.mels.shape[1:]

    def fail(self, exc: BaseException) -> None:
        try:
            self.future.set_exception(exc)
        except InvalidStateError:  # cancelled or already failed
            pass


class Batcher:
    """A worker thread batching submitted segments into single ``run`` calls.

    Args:
        run: the model, ``(b, ...)`` float32 -> ``(b, P, D)`` float32.
        max_batch: most segments per model call (>= 1).
        max_wait_ms: longest a segment waits for others to join its batch.
        max_batch_length: most ``b * L`` per call, ``L`` a row's last axis (samples or frames):
            long segments get smaller batches; one segment always fits. None for no limit.
        registry: where the metrics go (a new registry by default).
    """

    def __init__(
        self,
        run: Callable[[np.ndarray], np.ndarray],
        max_batch: int = 32,
        max_wait_ms: float = 5.0,
        max_batch_length: int | None = None,
        registry: CollectorRegistry | None = None,
    ):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.run = run
        self.max_batch = int(max_batch)
        self.max_wait = max(0.0, float(max_wait_ms)) / 1000.0
        self.max_batch_length = max_batch_length
        self.metrics = BatcherMetrics(registry or CollectorRegistry())
        self._pending: collections.deque[_Job] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="embedder-batcher", daemon=True)
        self._thread.start()

    # -- callers ------------------------------------------------------------------------------
    def submit(self, mels: np.ndarray) -> Future:
        """Queue ``(n, ...)`` segments; the future's result is their ``(n, P, D)`` rows."""
        mels = np.asarray(mels, dtype=np.float32)
        if mels.ndim < 2 or len(mels) == 0:
            raise ValueError(f"submit takes (n >= 1, ...) model-input rows, got shape {mels.shape}")
        job = _Job(mels)
        with self._cond:
            if self._closed:
                raise Unavailable("the embedder is shutting down")
            self._pending.append(job)
            self.metrics.queued.inc(len(mels))
            self._cond.notify()
        return job.future

    def close(self, timeout: float = 30.0) -> None:
        """Stop: waiting jobs fail with UNAVAILABLE, a running model call finishes, the worker exits."""
        with self._cond:
            self._closed = True
            pending, self._pending = list(self._pending), collections.deque()
            self._cond.notify_all()
        for job in pending:
            self.metrics.queued.dec(len(job.mels) - job.taken)
            job.fail(Unavailable("the embedder is shutting down"))
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("batcher worker still running a model call after %.0f s", timeout)

    # -- worker -------------------------------------------------------------------------------
    def _cap(self, shape: tuple[int, ...]) -> int:
        if self.max_batch_length is None:
            return self.max_batch
        return max(1, min(self.max_batch, self.max_batch_length // max(1, shape[-1])))

    def _drop_cancelled(self) -> None:
        kept: collections.deque[_Job] = collections.deque()
        for job in self._pending:
            if job.future.cancelled():
                self.metrics.queued.dec(len(job.mels) - job.taken)
            else:
                kept.append(job)
        self._pending = kept

    def _ready_rows(self, shape: tuple[int, ...]) -> int:
        return sum(len(j.mels) - j.taken for j in self._pending if j.shape == shape)

    def _collect(self) -> list[tuple[_Job, int, int]] | None:
        """Under the lock: wait for a batch; returns ``[(job, row_from, row_to)]`` or None when closed."""
        while True:
            while not self._pending and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            self._drop_cancelled()
            if not self._pending:
                continue
            shape = self._pending[0].shape
            cap = self._cap(shape)
            remaining = self._pending[0].submitted + self.max_wait - time.perf_counter()
            if self._ready_rows(shape) >= cap or remaining <= 0:
                break
            self._cond.wait(remaining)
        picked: list[tuple[_Job, int, int]] = []
        kept: collections.deque[_Job] = collections.deque()
        room = cap
        for job in self._pending:
            if room > 0 and job.shape == shape:
                k = min(room, len(job.mels) - job.taken)
                picked.append((job, job.taken, job.taken + k))
                job.taken += k
                room -= k
            if job.taken < len(job.mels):
                kept.append(job)
        self._pending = kept
        self.metrics.queued.dec(cap - room)
        return picked

    def _loop(self) -> None:
        while True:
            with self._cond:
                picked = self._collect()
            if picked is None:
                return
            self._run_batch(picked)

    def _run_batch(self, picked: list[tuple[_Job, int, int]]) -> None:
        start = time.perf_counter()
        for job, a, b in picked:
            for _ in range(b - a):
                self.metrics.queue_wait.observe(start - job.submitted)
        if len(picked) == 1:
            job, a, b = picked[0]
            batch = np.ascontiguousarray(job.mels[a:b])
        else:
            batch = np.concatenate([job.mels[a:b] for job, a, b in picked])
        try:
            out = np.asarray(self.run(batch))
            if out.shape[0] != len(batch):
                raise RuntimeError(f"model returned {out.shape[0]} rows for a batch of {len(batch)}")
        except BaseException as exc:  # noqa: BLE001 - every waiting caller gets the model's error
            log.error("model call on a batch of %d failed: %s", len(batch), exc)
            with self._cond:
                for job, _, _ in picked:
                    if job in self._pending:
                        self._pending.remove(job)
                        self.metrics.queued.dec(len(job.mels) - job.taken)
            for job, _, _ in picked:
                job.fail(exc)
            return
        self.metrics.model_seconds.observe(time.perf_counter() - start)
        self.metrics.batch_size.observe(len(batch))
        self.metrics.segments.inc(len(batch))
        row = 0
        for job, a, b in picked:
            if job.out is None:
                job.out = np.empty((len(job.mels), *out.shape[1:]), dtype=out.dtype)
            job.out[a:b] = out[row : row + b - a]
            row += b - a
            job.done += b - a
            if job.done == len(job.mels) and not job.future.done():
                try:
                    job.future.set_result(job.out)
                except InvalidStateError:  # cancelled meanwhile
                    pass
