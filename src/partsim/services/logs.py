"""Logging that never stops a service.

A service logs to its standard error, which is a pipe (``partsim up`` copies it to a log file), a
terminal, or a file the container runtime keeps. When that output fails (ENOSPC or EIO on a full
disk) or stops being read (a full pipe), Python's default handlers either print a traceback per
record to that same broken output or block the thread that logs, with the handler's lock held, so
every other thread that logs blocks too. Here instead:

* a record is handed to a bounded queue (:class:`DroppingQueueHandler`) and the thread that logged
  goes on at once; when the queue is full (the writer is stuck on a full pipe) the record is
  dropped and counted;
* one writer thread writes the records (:class:`SafeStreamHandler`): a write that fails is counted,
  not answered with a traceback, and once writing works again one line says how many records were
  lost;
* uncaught exceptions of threads and ``warnings`` go through logging too (never straight to stderr).

:func:`configure` sets this up for a service's process (:func:`partsim.services.service.run_until_signalled`).
"""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import queue
import sys
import threading
from typing import TextIO

FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
CAPACITY = 10_000  # records waiting for the writer before new ones are dropped

log = logging.getLogger("partsim.logs")


class DroppingQueueHandler(logging.handlers.QueueHandler):
    """Hands records to the writer's queue without ever blocking; counts those the full queue refused."""

    def __init__(self, q: queue.Queue):
        super().__init__(q)
        self.dropped = 0

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1


class SafeStreamHandler(logging.StreamHandler):
    """A StreamHandler that counts the records it could not write (instead of printing a traceback for
    each to a standard error that is probably the same full disk) and, once a write succeeds again,
    first writes one line saying how many were lost. ``pending`` reports records lost before this
    handler saw them (the queue's drops)."""

    def __init__(self, stream: TextIO | None = None, pending=lambda: 0):
        super().__init__(stream)
        self.lost = 0
        self._pending = pending
        self._reported = 0

    def handleError(self, record: logging.LogRecord) -> None:
        self.lost += 1

    def emit(self, record: logging.LogRecord) -> None:
        dropped = self._pending()
        missing = self.lost + dropped - self._reported
        if missing > 0:
            before = self.lost
            note = logging.makeLogRecord(
                {
                    "name": log.name,
                    "levelno": logging.WARNING,
                    "levelname": "WARNING",
                    "msg": "%d log records were lost (the log output failed or was not read)",
                    "args": (missing,),
                }
            )
            super().emit(note)
            if self.lost > before:  # the output still fails: the record is lost too (the note is not counted)
                return
            self._reported = self.lost + dropped
        super().emit(record)


class LogOutput:
    """The queue, its writer thread and the two counters; :meth:`close` stops the writer (never waiting
    long for a writer stuck on a full pipe)."""

    def __init__(self, stream: TextIO, capacity: int = CAPACITY, fmt: str = FORMAT):
        self.queue: queue.Queue = queue.Queue(capacity)
        self.enqueue = DroppingQueueHandler(self.queue)
        self.writer = SafeStreamHandler(stream, pending=lambda: self.enqueue.dropped)
        self.writer.setFormatter(logging.Formatter(fmt))
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._thread.start()

    @property
    def lost(self) -> int:
        """Records not written: dropped at the full queue or failed at the stream."""
        return self.enqueue.dropped + self.writer.lost

    def _run(self) -> None:
        while (record := self.queue.get()) is not None:
            self.writer.handle(record)

    def close(self, timeout: float = 2.0) -> None:
        try:
            self.queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)


def _log_thread_exception(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    log.error("uncaught %s in thread %s", args.exc_type.__name__, name, exc_info=args.exc_value)


def configure(level: int = logging.INFO, stream: TextIO | None = None) -> LogOutput | None:
    """Route the root logger through a :class:`LogOutput` on ``stream`` (default standard error), with
    warnings and threads' uncaught exceptions; None (and nothing changed) when logging is configured
    already, as :func:`logging.basicConfig` leaves it."""
    root = logging.getLogger()
    if root.handlers:
        return None
    out = LogOutput(stream if stream is not None else sys.stderr)
    root.addHandler(out.enqueue)
    root.setLevel(level)
    logging.captureWarnings(True)
    threading.excepthook = _log_thread_exception
    atexit.register(out.close)  # write what is queued (runs before logging's own shutdown)
    return out
