"""What GreyNoise requests cost, and the run's caps on them (SPEC 3.3; shared/protocols/
greynoise.md, "Usage"): GreyNoise bills a full-context lookup one Search per IP, a quick check
(``?quick=true``) one Search per 1,000 IPs of a request (rounded up); we count a community
lookup as one Search.

`Spending` counts the requests and Searches one client spends against ``budget`` (requests in
this run) and ``search_budget`` (Searches), thread-safe. A request takes its Searches before it
goes, so that concurrent requests never spend past the cap together, and gives them back when
GreyNoise did no lookup: a refusal (401, 403, 429, 400), a 5xx, a connection that failed before
an answer could come (our rule; a request that timed out waiting for its answer counts).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Final

from etl.core.clock import utc_day
from etl.core.errors import QuotaExhaustedError

QUICK_IPS_PER_SEARCH: Final = 1_000
BILLED_STATUSES: Final = frozenset({200, 206, 404})  # the service looked the IPs up


def search_cost(ips: int, quick: bool) -> int:
    """Searches one request about ``ips`` IPs costs: full context one per IP, a quick check one
    per started 1,000."""
    return math.ceil(ips / QUICK_IPS_PER_SEARCH) if quick else ips


class Spending:
    """Requests and Searches spent by one client, within this run's caps (None: no cap)."""

    def __init__(self, budget: int | None = None, search_budget: int | None = None) -> None:
        self.budget, self.search_budget = budget, search_budget
        self.requests_sent = 0
        self.searches_spent = 0
        self._lock = threading.Lock()

    @property
    def searches_left(self) -> int | None:
        """Searches the cap still allows (None: no cap)."""
        if self.search_budget is None:
            return None
        return max(0, self.search_budget - self.searches_spent)

    def fitting(self, ips: list[str], quick: bool) -> list[str]:
        """The first of ``ips`` (the callers' priority order) that one request can still pay
        for; raises `QuotaExhaustedError` when not one fits."""
        left = self.searches_left
        if left is None:
            return ips
        fits = min(len(ips), left * QUICK_IPS_PER_SEARCH if quick else left)
        if fits == 0 and ips:
            raise self.searches_spent_error()
        return ips[:fits]

    def take(self, searches: int) -> None:
        """Count one request of ``searches`` Searches; raises `QuotaExhaustedError` when a cap
        does not allow it."""
        with self._lock:
            if self.budget is not None and self.requests_sent >= self.budget:
                raise QuotaExhaustedError(
                    f"GreyNoise budget of {self.budget} requests for this run is spent: "
                    "the IPs not asked keep their old blocks",
                    reason="budget",
                )
            cap = self.search_budget
            if cap is not None and self.searches_spent + searches > cap:
                raise self.searches_spent_error()
            self.requests_sent += 1
            self.searches_spent += searches

    def give_back(self, searches: int) -> None:
        """The request was not billed (GreyNoise did no lookup): its Searches are free again."""
        with self._lock:
            self.searches_spent -= searches

    def searches_spent_error(self) -> QuotaExhaustedError:
        """The stop when the Search cap is reached (exit code 0: normal operation)."""
        return QuotaExhaustedError(
            f"GreyNoise daily budget of {self.search_budget} Searches for this run is spent: "
            "the IPs not asked keep their old blocks",
            reason="daily_budget",
        )


class SearchMeter:
    """Counts a client's Searches into the UTC day they were spent, on the run's ``clock``.

    `sample` is called with the client's running total as the run takes its events (at least
    every 0.2 s): a Search counts on the day of the first sample that sees it. The total may
    also go down (a client gives back Searches it did not spend after all): then the day's
    count does, so the days always add up to the total."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self.clock = clock
        self.counted = 0
        self.by_day: dict[str, int] = {}

    def sample(self, total: int) -> None:
        """Count the Searches spent (or given back) since the last sample into today (UTC)."""
        change, self.counted = total - self.counted, total
        if not change:
            return
        day = utc_day(self.clock()).isoformat()
        self.by_day[day] = self.by_day.get(day, 0) + change
        if self.by_day[day] < 0:  # given back after midnight: spent the day before
            earlier = [d for d in sorted(self.by_day) if d < day and self.by_day[d] > 0]
            if earlier:
                self.by_day[earlier[-1]] += self.by_day.pop(day)
        if not self.by_day.get(day, 1):
            del self.by_day[day]
