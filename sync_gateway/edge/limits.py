"""Per-process limits of the edge: a token bucket per key (device id, or client address for enrolment)."""

from __future__ import annotations

import time
from collections import OrderedDict

from sync_gateway.edge.errors import EdgeRefusal


class RateLimiter:
    """Token buckets: ``rate`` requests per second sustained, ``burst`` at once; the least recently used keys
    are forgotten beyond ``max_keys`` so memory stays bounded whatever the callers send."""

    def __init__(self, rate: float, burst: int, *, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, updated)
        self._max_keys = max_keys

    def take(self, key: str, *, now: float | None = None) -> None:
        """Spend one token of ``key``'s bucket, or refuse with 429 ``rate_limited``."""
        now = time.monotonic() if now is None else now
        tokens, updated = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - updated) * self.rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            wait = (1.0 - tokens) / self.rate if self.rate > 0 else 60.0
            raise EdgeRefusal(
                429, "rate_limited", "too many requests from this device; slow down", retry_after_s=max(1, round(wait))
            )
        self._buckets[key] = (tokens - 1.0, now)
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
