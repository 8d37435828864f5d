"""Per-client call rate limit: one token bucket for each client identity.

A client is the subject of its mutual-TLS certificate, or "local" for everything on
the unix socket and loopback (the kiosk UI). Each Verify or VerifySession call takes
one token; a bucket holds at most ``burst`` tokens and refills at ``rate_per_s``. A
call that finds its bucket empty is refused with RESOURCE_EXHAUSTED and told when a
token will be there (``RateLimited.retry_after_ms``, sent as the ``retry-after-ms``
trailer). The concurrency limit bounds the work in flight; this bounds how much of it
one client may ask for over time, so one back office cannot crowd out the others or
probe the matcher with thousands of faces.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from kiosk.errors import RateLimited

# Buckets kept at most: clients are certificate holders of one CA plus "local", so a
# few dozen in practice. Past this the least recently seen client's bucket is dropped
# (it starts full next time), which bounds memory whatever the clients do.
MAX_CLIENTS = 1024


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """``admit(identity)`` takes a token or raises ``RateLimited``; thread-safe.

    ``rate_per_s`` 0 admits everything. ``clock`` is injectable for tests.
    """

    def __init__(
        self,
        rate_per_s: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = MAX_CLIENTS,
    ):
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._clock = clock
        self._max_clients = max_clients
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.rate_per_s > 0

    def admit(self, identity: str) -> None:
        if not self.enabled:
            return
        with self._lock:
            now = self._clock()
            bucket = self._buckets.pop(identity, None) or _Bucket(float(self.burst), now)
            self._buckets[identity] = bucket  # most recently seen last
            if len(self._buckets) > self._max_clients:
                self._buckets.popitem(last=False)
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * self.rate_per_s)
            bucket.updated = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return
            wait_ms = math.ceil((1.0 - bucket.tokens) / self.rate_per_s * 1000.0)
        raise RateLimited(
            f"rate limit reached for this client ({self.rate_per_s:g} calls/s, bursts of {self.burst}): "
            f"retry in {wait_ms} ms",
            wait_ms,
        )
