"""The GreyNoise client's token bucket (SPEC 3.3): ``rate`` requests per second in the long run,
with a burst of about one second's worth, as GreyNoise itself limits (and
`testbed.sim.greynoise.quota.TokenBucket` models it).

The default burst is one second's requests less `SLACK` seconds' worth (at least one): a
bucket exactly as large as the service's leaves no room for requests that arrive closer
together than they were sent, and each throttling 429 then stops every worker for a whole
Retry-After (measured against the simulator at 50/s: 8 throttles in 500 requests with a burst
of 50, none with 49).

A bucket alone sends its burst and then the rate within the same second (19 requests in the
first second at 10/s). So every slot also keeps to a sliding window: at most ``floor(rate)``
requests (at least one) in any one second, i.e. a request goes no sooner than one second after
the request that many before it.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Final

EPSILON: Final = 1e-9  # seconds
SLACK: Final = 0.1  # seconds of requests the burst leaves unused, against arrival jitter


def default_capacity(rate: float) -> float:
    """The burst: a second of requests less `SLACK` seconds' worth (at least one request)."""
    return max(1.0, math.floor(rate - max(1.0, rate * SLACK)))


class Pacer:
    """A token bucket shared by all workers; requests reserve their slot in turn.

    Kept as the time at which the bucket would be empty again (``_due``, a "theoretical arrival
    time"): a request may go once that is at most ``capacity - 1`` intervals ahead. So a full
    bucket sends ``capacity`` requests at once, then one every ``1/rate`` seconds; idle time
    refills it, up to ``capacity``. ``pause`` (a throttling 429's Retry-After) holds back every
    worker, not only the one that was told to wait. On top of the bucket, the last ``per_second``
    slots: a slot is at least one second after the one ``per_second`` before it, so no one-second
    window holds more than the rate.
    """

    def __init__(
        self,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        capacity: float | None = None,
    ) -> None:
        self.interval = 1.0 / rate
        chosen = default_capacity(rate) if capacity is None else capacity
        self.capacity = max(1.0, float(math.floor(chosen)))
        self.clock = clock
        self.per_second = max(1, math.floor(rate))  # requests any one-second window may hold
        self._recent: deque[float] = deque(maxlen=self.per_second)  # the last slots given
        self._due = -math.inf  # the bucket is full
        self._resume = -math.inf  # no request before this (a pause)
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Take a token (the next free slot); return how long to sleep before using it."""
        with self._lock:
            now = self.clock()
            burst = (self.capacity - 1) * self.interval
            slot = max(now, self._due - burst, self._resume)
            if len(self._recent) == self.per_second:  # a second after the slot that many back
                slot = max(slot, self._recent[0] + 1.0)
            self._recent.append(slot)
            self._due = max(self._due, slot) + self.interval
            delay = slot - now
            return delay if delay > EPSILON else 0.0  # not a rounding error's sleep

    def held(self) -> float:
        """Seconds left of a pause (0 when none)."""
        with self._lock:
            return max(0.0, self._resume - self.clock())

    def woke(self) -> float:
        """For a request that slept until its slot: how much longer to sleep (0: go now). A
        pause that began meanwhile sends it to a new slot after the pause, so that the requests
        held back do not all go at its end, beyond the rate."""
        return self.reserve() if self.held() > 0 else 0.0

    def pause(self, seconds: float) -> None:
        """No request from anyone for ``seconds``."""
        with self._lock:
            self._resume = max(self._resume, self.clock() + seconds)
