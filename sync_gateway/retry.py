"""The one retry policy of the gateway: capped exponential backoff with jitter.

CouchDB requests, followers, projection retries and restarts of crashed loops all wait by this policy, so
"how long until the next try" has one answer. Jitter spreads the retries of many loops that failed at the
same moment (a CouchDB restart wakes every follower at once otherwise).
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """``delay(n)`` is the wait before try ``n + 1`` after ``n`` failures: ``base * 2**n`` capped at ``cap``,
    then scaled by a random factor in ``[1 - jitter, 1]``."""

    base: float = 0.2
    cap: float = 30.0
    jitter: float = 0.5

    def delay(self, failures: int) -> float:
        raw = min(self.cap, self.base * 2.0 ** min(max(failures, 0), 16))
        return raw * (1.0 - self.jitter * random.random())
