"""Per-caller rate limits: a token bucket per key id.

Each caller (an API key's id, a JWT's subject) has a bucket of ``burst`` tokens that refills at ``rate``
tokens a second; a call takes one. An empty bucket answers how long until the next token, which the
gateway returns as RESOURCE_EXHAUSTED with that retry delay. Buckets of callers idle long enough to be
full again carry no state, so at most ``max_callers`` are kept (the least recently used go first).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict


class TokenBuckets:
    """``take(caller)``: 0.0 when the call may go ahead, else the seconds until it may."""

    def __init__(self, rate: float, burst: int, max_callers: int = 10_000, clock=time.monotonic):
        if rate <= 0 or burst < 1:
            raise ValueError(f"a token bucket needs rate > 0 and burst >= 1, got {rate}, {burst}")
        self.rate = rate
        self.burst = float(burst)
        self.max_callers = max_callers
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # caller -> (tokens, at)

    def take(self, caller: str) -> float:
        with self._lock:
            now = self._clock()
            tokens, at = self._buckets.pop(caller, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            wait = 0.0
            if tokens >= 1.0:
                tokens -= 1.0
            else:
                wait = (1.0 - tokens) / self.rate
            self._buckets[caller] = (tokens, now)
            while len(self._buckets) > self.max_callers:
                self._buckets.popitem(last=False)
            return wait
