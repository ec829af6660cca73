"""The GreyNoise simulator's limits: a token bucket of requests per second, and the Searches
each request bills against the daily limit (shared/protocols/greynoise.md, "Usage").

Billing as GreyNoise documents it: the full-context v3 lookup (``POST /v3/ip``,
``GET /v3/ip/{ip}``) one Search per IP, a quick check (``?quick=true``) one per 1,000 IPs of
the request (rounded up); a community lookup one. Only a request the service answers with a
lookup is billed (200, 206, 404); a refusal (400, 401, 429) or a fault (5xx, a reset) is free.

``--daily-limit N`` caps the Searches of the day. In community mode that is N lookups, as
before; in enterprise mode a request whose Searches would take the day past N is refused
whole with the daily-limit 429 (the simulator's choice: GreyNoise does not document it).
"""

from __future__ import annotations

import math
import threading
import time
from typing import Final

BILLED_STATUSES: Final = frozenset({200, 206, 404})
QUICK_IPS_PER_SEARCH: Final = 1_000


def searches_billed(ips: int, quick: bool, enterprise: bool) -> int:
    """The Searches of one request about ``ips`` IPs."""
    if not enterprise:
        return 1
    return math.ceil(ips / QUICK_IPS_PER_SEARCH) if quick else ips


class DailyLimit:
    """Searches spent today against ``limit`` (None: no limit), thread-safe."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.spent = 0
        self._lock = threading.Lock()

    def take(self, searches: int) -> bool:
        """Spend ``searches``; False (nothing spent) when they do not fit in the limit."""
        with self._lock:
            if self.limit is not None and self.spent + searches > self.limit:
                return False
            self.spent += searches
            return True

    def give_back(self, searches: int) -> None:
        """The request was not billed after all (refused or faulted)."""
        with self._lock:
            self.spent -= searches


class TokenBucket:
    """Requests per second with a one-second burst; None rate means unlimited."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate or 1.0)
        self.tokens = self.capacity
        self.stamp = time.monotonic()
        self._lock = threading.Lock()

    def take(self) -> float:
        """Take a token; return 0, or the seconds until one is available."""
        if self.rate is None:
            return 0.0
        with self._lock:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens >= 1:
                self.tokens -= 1
                return 0.0
            return (1 - self.tokens) / self.rate
