"""The network phases at the same time: each a named body in a thread of its own that only
posts events (`etl.sources.events`); the main thread takes them, in order, from
`PhaseRunner.events`.

    runner = PhaseRunner([Phase("cymru", total, body, client.cancel), ...])
    runner.start()
    for event in runner.events(idle=0.2):   # None after ``idle`` seconds without an event
        ...                                 # count, report, commit: the main thread's job
    # on any error: undelivered = runner.stop(wait=5.0)

How a phase ends is posted by the runner, as the phase's last event: `PhaseDone` when its body
returned, `PhaseStopped` when a service said no (a `ServiceError`: noted, the run goes on),
`PhaseFailed` for anything else, whose error `events` raises on the main thread.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator, Sequence

from etl.core.errors import ServiceError
from etl.sources.events import PHASE_ENDS, Event, PhaseDone, PhaseFailed, PhaseStopped
from etl.sources.network import Phase


class PhaseRunner:
    """Runs phases in daemon threads; hands their events to the thread that iterates."""

    def __init__(self, phases: Sequence[Phase]) -> None:
        self.phases = list(phases)
        self.running = {phase.name for phase in self.phases}
        self._events: queue.Queue[Event] = queue.Queue()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Start every phase in its own thread."""
        for phase in self.phases:
            thread = threading.Thread(
                target=self._run, args=(phase,), name=f"phase-{phase.name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def events(self, idle: float) -> Iterator[Event | None]:
        """The phases' events in the order they were posted, until every phase has ended;
        None after ``idle`` seconds without one. A `PhaseFailed` error is raised here."""
        while self.running:
            try:
                event = self._events.get(timeout=idle)
            except queue.Empty:
                yield None
                continue
            if isinstance(event, PhaseFailed):
                raise event.error
            if isinstance(event, PHASE_ENDS):
                self.running.discard(event.source)
            yield event
        for thread in self._threads:  # each has posted its last event: ends at once
            thread.join()

    def stop(self, wait: float) -> list[Event]:
        """Cancel every phase, give the threads ``wait`` seconds to hand over what is in
        flight, and return the events not taken yet (oldest first)."""
        for phase in self.phases:
            phase.cancel()
        deadline = time.monotonic() + wait
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        undelivered: list[Event] = []
        while True:
            try:
                undelivered.append(self._events.get_nowait())
            except queue.Empty:
                return undelivered

    def _run(self, phase: Phase) -> None:
        """A phase's thread: its body, then the event saying how it ended."""
        started = time.monotonic()
        post = self._events.put
        try:
            phase.body(post)
        except ServiceError as exc:
            seconds = time.monotonic() - started
            post(PhaseStopped(phase.name, str(exc), exc.reason, exc.run_exit_code, seconds))
        except BaseException as exc:  # handed to the main thread, raised there
            post(PhaseFailed(phase.name, exc))
        else:
            post(PhaseDone(phase.name, time.monotonic() - started))
