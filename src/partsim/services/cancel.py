"""The cancellation of one request, shared by the embedder and the separator."""

from __future__ import annotations

import threading
from concurrent.futures import Future


class CancelToken:
    """Set when a request's RPC ends early (client cancel, deadline, server stop).

    The servicer passes :meth:`cancel` to ``context.add_callback``; the work checks
    :attr:`cancelled` between steps, and futures handed to :meth:`add` (the embedder's batcher
    jobs) are cancelled with it, so a cancelled request stops taking model time.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._event = threading.Event()
        self._futures: list[Future] = []

    def add(self, fut: Future) -> None:
        """Cancel ``fut`` with this request (at once if it is cancelled already)."""
        with self._lock:
            if self._event.is_set():
                fut.cancel()
            else:
                self._futures.append(fut)

    def cancel(self) -> None:
        with self._lock:
            self._event.set()
            futures, self._futures = self._futures, []
        for f in futures:
            f.cancel()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()
