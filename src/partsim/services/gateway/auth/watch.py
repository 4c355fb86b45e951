"""A file the gateway re-reads when it changes (the keys file, the JWKS file) without a restart."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from ...tls import file_signature

log = logging.getLogger("partsim.gateway")

T = TypeVar("T")


class WatchedFile(Generic[T]):
    """:meth:`get` the value ``read(path)`` of the file as it is now, give or take ``check_every`` seconds.

    The file is looked at (one ``stat``) at most once per ``check_every`` seconds and read again when its
    inode, size or modification time changed (an atomic replace always changes the inode). When it is
    missing or ``read`` fails, the value is ``empty`` (fail closed) and the reason is logged, until it is fixed.
    """

    def __init__(self, path: str | Path, read: Callable[[Path], T], empty: T, what: str, check_every: float = 1.0):
        self.path = Path(path)
        self.check_every = check_every
        self._read = read
        self._empty = empty
        self._what = what
        self._lock = threading.Lock()
        self._value = empty
        self._seen: tuple | None = ()  # () never equals a stat: the first get() reads
        self._checked = float("-inf")

    def get(self) -> T:
        if time.monotonic() - self._checked >= self.check_every:
            self._refresh()
        return self._value

    def _refresh(self) -> None:
        with self._lock:
            now = time.monotonic()
            if now - self._checked < self.check_every:
                return  # another thread just looked
            self._checked = now
            seen = file_signature([str(self.path)])
            if seen == self._seen:
                return
            self._seen = seen
            try:
                self._value = self._read(self.path)
            except Exception as exc:  # noqa: BLE001 - whatever a bad file makes read() raise, fail closed
                log.error("%s refused until %s is fixed: %s", self._what, self.path, exc)
                self._value = self._empty
