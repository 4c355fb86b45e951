"""What ``partsim up`` (:mod:`partsim.cluster`) needs to keep its processes alive: each child's output copied
to its log file by a :class:`LogPump` that never stops reading, and the :class:`RestartPolicy` of a child
that exited on its own.

A child writes its log lines to a pipe; if nobody reads that pipe, the child blocks in its next write (in
a logging handler, with the handler's lock held, so every thread that logs blocks: the service hangs).
The pump therefore reads until the child closes the pipe whatever happens to the log file: a write that
fails (ENOSPC, EIO) drops the line and counts it, and once writing works again one line in the log says
how many were dropped.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

KEEP_LINES = 200  # the last lines of each child, kept for the launcher's error messages


@dataclass(frozen=True)
class RestartPolicy:
    """Delays before restarting a child that exited on its own: ``initial`` s, doubling each time up to
    ``maximum`` s, and back to ``initial`` once a run lasted ``stable`` s."""

    initial: float = 0.5
    maximum: float = 30.0
    stable: float = 60.0

    def delay(self, previous: float, ran_for: float) -> float:
        """The delay before the next start, after a run of ``ran_for`` s that followed a delay of
        ``previous`` s (0: none before)."""
        if previous <= 0 or ran_for >= self.stable:
            return self.initial
        return min(previous * 2, self.maximum)


def open_log(path: Path) -> BinaryIO | None:
    """``path`` for appending, unbuffered (each line is one write: it is written or it is dropped); None
    when it cannot be opened (the pump then drops every line and counts them)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return open(path, "ab", buffering=0)  # closed by the pump
    except OSError:
        return None


class LogPump:
    """Copies a child's output to ``log`` line by line and keeps the last :data:`KEEP_LINES` in ``lines``;
    ``on_line(text)`` sees every line (the launcher looks for ``serving on``). :meth:`run` reads until the
    child closes its output; ``dropped`` counts the lines the log did not take and ``error`` says why (the
    last failure)."""

    def __init__(self, log: BinaryIO | None, lines: list[str], on_line: Callable[[str], None] = lambda _: None):
        self.log = log
        self.lines = lines
        self.on_line = on_line
        self.dropped = 0
        self._unreported = 0  # dropped since the last line that says so
        self.error = "" if log is not None else "the log file cannot be opened"
        self._partial = False  # the last write stopped inside a line

    def run(self, stream: Iterable[bytes]) -> None:
        try:
            for raw in stream:
                text = raw.decode("utf-8", "replace").rstrip("\r\n")
                self.lines.append(text)
                del self.lines[:-KEEP_LINES]
                self._write(raw if raw.endswith(b"\n") else raw + b"\n")
                try:
                    self.on_line(text)
                except Exception:  # noqa: BLE001 - a bad callback must not stop the reading
                    pass
        finally:
            if self.log is not None:
                try:
                    self.log.close()
                except OSError:
                    pass

    def _write(self, data: bytes) -> None:
        if self.log is None:
            self.dropped += 1
            return
        if self._unreported:
            lead = b"\n" if self._partial else b""
            note = f"[partsim up: {self._unreported} log lines dropped: {self.error}]\n".encode()
            if not self._put(lead + note):
                self.dropped, self._unreported = self.dropped + 1, self._unreported + 1
                return
            self._unreported, self._partial = 0, False
        if not self._put(data):
            self.dropped, self._unreported = self.dropped + 1, self._unreported + 1

    def _put(self, data: bytes) -> bool:
        assert self.log is not None
        try:
            written = self.log.write(data)
        except OSError as exc:
            self.error = os.strerror(exc.errno) if exc.errno else str(exc)
            return False
        if written is not None and written < len(data):  # the disk filled up inside this line
            self._partial = written > 0
            self.error = os.strerror(errno.ENOSPC)
            return False
        return True
