"""What went wrong with a connection, in a few words, for the circuit breakers' one line.

Both clients (Team Cymru's sockets, GreyNoise's HTTP session) describe a failed attempt with
`connection_failure`; a run that stops a service names the last failure, e.g. "GreyNoise at
http://127.0.0.1:9: 10 requests in a row failed (connection refused)". The same words are the
``error`` key of an IP's block when its last attempt failed so (the operators group by them:
keep them short and stable).

Two rules stop a service that does not deliver (SPEC 5, exit 3):

- `CircuitBreaker`: attempts that failed in a row. An attempt that ends in a timeout is a
  failure however many lines it answered first (a Team Cymru session that answers its first
  line, then stalls until the read timeout, delivers almost nothing).
- `ProgressWatch`: a bounded time without progress. A source whose last delivered answer is
  older than its window when an attempt fails is ``stalled``: it is stopped even when its
  failures are not in a row (a success that delivers a line now and then resets the breaker,
  not the watch's clock: only an answer the run can keep does). Time the client chose to wait
  (a Retry-After) counts as progress.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final

# Seconds of the first wait before a failed Team Cymru session or GreyNoise request is tried
# again (doubled at each retry): the default of both clients' ``backoff`` and of the run's
# ``retry_backoff`` (`etl.refresh.config`).
RETRY_BACKOFF: Final = 1.0


@dataclass(frozen=True)
class Failure:
    """A failed attempt: ``words`` for the user; ``stalled``: connected, but no answer came
    (``partial``: after some answer lines)."""

    words: str
    stalled: bool
    partial: bool = False


def connection_failure(exc: BaseException, connected: bool, timeout: float) -> Failure:
    """Describe ``exc``, raised while connecting (``connected`` False) or while waiting for
    the answer on an open connection, with ``timeout`` seconds allowed for each."""
    timed_out = False
    for cause in _causes(exc):
        if isinstance(cause, socket.gaierror):
            return Failure("host name not found", stalled=False)
        if isinstance(cause, ConnectionRefusedError):
            return Failure("connection refused", stalled=False)
        if isinstance(cause, ConnectionResetError | BrokenPipeError):
            return Failure("connection reset without an answer", stalled=False)
        timed_out = timed_out or isinstance(cause, TimeoutError)
    if not timed_out:
        return Failure("connection failed", stalled=connected)
    if connected:
        return Failure(f"no answer within {timeout:g} s", stalled=True)
    return Failure(f"no connection within {timeout:g} s", stalled=False)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it was raised from (urllib3 keeps its cause in ``reason``)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        reason = getattr(current, "reason", None)
        following = current.__cause__ or current.__context__
        current = following or (reason if isinstance(reason, BaseException) else None)


class CircuitBreaker:
    """Counts failed attempts in a row (any success starts again from zero) and trips at
    ``limit`` of them, keeping the failure that tripped it. Thread-safe."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_row = 0
        self.tripped: Failure | None = None
        self._lock = threading.Lock()

    def trip(self, failure: Failure) -> None:
        """Trip now (a stop found by another rule, e.g. `ProgressWatch`), unless tripped."""
        with self._lock:
            self.tripped = self.tripped or failure

    def failed(self, failure: Failure) -> bool:
        """Count a failed attempt; True when the breaker is (now or already) tripped."""
        with self._lock:
            self.in_row += 1
            if self.tripped is None and self.in_row >= self.limit:
                self.tripped = failure
            return self.tripped is not None

    def succeeded(self) -> None:
        """An attempt got an answer: the failures are no longer in a row."""
        with self._lock:
            self.in_row = 0

    def stop_reason(self) -> str:
        """The reason label of a trip: ``stalled`` or ``unreachable``."""
        return "stalled" if self.tripped is not None and self.tripped.stalled else "unreachable"


class ProgressWatch:
    """The time since a source last delivered an answer the run can keep. ``stalled`` once
    more than ``window`` seconds have passed since then (or since the watch began);
    ``trickling`` when, a whole window after it began, fewer than ``floor`` answers came
    within the last window (0: no floor). Thread-safe.
    """

    def __init__(
        self, window: float, clock: Callable[[], float] = time.monotonic, floor: int = 0
    ) -> None:
        self.window = window
        self.floor = floor
        self._clock = clock
        self._last = self._began = clock()
        self._recent: deque[float] = deque(maxlen=max(floor, 1))  # the last answers' times
        self._lock = threading.Lock()

    def begin(self) -> None:
        """Start the clock again (the source begins its work)."""
        with self._lock:
            self._last = self._began = self._clock()
            self._recent.clear()

    def delivered(self, wait: float = 0.0, answers: int = 1) -> None:
        """``answers`` answers arrived; ``wait``: seconds the client now chooses to wait (a
        pause asked for by the service), which count as progress too."""
        with self._lock:
            now = self._clock()
            self._last = max(self._last, now + max(wait, 0.0))
            self._recent.extend([now] * min(answers, self.floor))

    def trickling(self) -> bool:
        """Whether the source answers, but almost nothing: it has worked a whole window and
        fewer than ``floor`` answers came within the last one."""
        with self._lock:
            now = self._clock()
            if not self.floor or now - self._began <= self.window:
                return False
            return sum(1 for t in self._recent if t >= now - self.window) < self.floor

    def idle(self) -> float:
        """Seconds since the last delivered answer (0 during a chosen wait)."""
        with self._lock:
            return max(0.0, self._clock() - self._last)

    def stalled(self) -> bool:
        """Whether the source has delivered nothing for more than ``window`` seconds."""
        return self.idle() > self.window
