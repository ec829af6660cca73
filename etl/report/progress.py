"""What a user and a monitor see while a run goes: progress bars, the status file, fan-out.

All of these are `etl.report.summary.Reporter` implementations; the CLI picks them:
- `etl.report.terminal.RichProgress`: one bar per phase on a terminal (counts, rate, ETA);
- `LineReporter` (etl.report.summary): plain, greppable lines when output is not a terminal;
- `StatusFile`: a JSON object rewritten atomically (tmp + rename) twice a second for monitors;
- `FanOut`: hands every event to several reporters.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from etl.db.url import redacted
from etl.report.summary import Reporter, RunSummary, atomic_write, phase_unit


@dataclass
class PhaseState:
    """Progress of one phase: counts, rate and ETA."""

    total: int
    done: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    def elapsed(self) -> float:
        """Seconds since the phase started (until it finished)."""
        return (self.finished or time.monotonic()) - self.started

    def rate(self) -> float:
        """Items per second so far."""
        elapsed = self.elapsed()
        return self.done / elapsed if elapsed > 0 else 0.0

    def eta(self) -> float | None:
        """Seconds left at the current rate (None when unknown)."""
        if self.finished is not None:
            return 0.0
        rate = self.rate()
        if not self.total or rate <= 0:
            return None
        return max(0.0, (self.total - self.done) / rate)


class FanOut:
    """A reporter that hands every event to several reporters."""

    def __init__(self, reporters: Sequence[Reporter]) -> None:
        self.reporters = list(reporters)

    def attach(self, summary: RunSummary) -> None:
        """Give every reporter the live summary."""
        for reporter in self.reporters:
            reporter.attach(summary)

    def phase_started(self, phase: str, total: int) -> None:
        """Forward."""
        for reporter in self.reporters:
            reporter.phase_started(phase, total)

    def advanced(self, phase: str, done: int) -> None:
        """Forward."""
        for reporter in self.reporters:
            reporter.advanced(phase, done)

    def phase_finished(self, phase: str, seconds: float) -> None:
        """Forward."""
        for reporter in self.reporters:
            reporter.phase_finished(phase, seconds)

    def info(self, message: str) -> None:
        """Forward."""
        for reporter in self.reporters:
            reporter.info(message)

    def note(self, message: str) -> None:
        """Forward."""
        for reporter in self.reporters:
            reporter.note(message)


class StatusFile:
    """Keeps ``path`` up to date with the run's state for monitors (at least once a second).

    Nothing is written until the run's first phase starts (a run refused by another run's
    lock leaves that run's file alone); `close` writes the final state."""

    def __init__(self, path: Path, secrets: tuple[str, ...] = (), interval: float = 0.5) -> None:
        self.path = path
        self.secrets = secrets
        self.interval = interval
        self.phases: dict[str, PhaseState] = {}
        self.current: str | None = None
        self.summary: RunSummary | None = None
        self.started_at = datetime.now(UTC)
        self.notes: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="status-file", daemon=True)
        self._started = False

    def start(self) -> None:
        """Write the file now and every ``interval`` from now on (once: later calls do
        nothing)."""
        if self._started or self._stop.is_set():
            return
        self._started = True
        self._write_running()
        self._thread.start()

    # -- reporter events ---------------------------------------------------------------------
    def attach(self, summary: RunSummary) -> None:
        """Report per-source counts from this summary."""
        self.summary = summary

    def phase_started(self, phase: str, total: int) -> None:
        """A phase begins."""
        with self._lock:
            self.phases[phase] = PhaseState(total)
            self.current = phase
        self.start()

    def advanced(self, phase: str, done: int) -> None:
        """Count progress."""
        with self._lock:
            state = self.phases.setdefault(phase, PhaseState(0))
            state.done += done

    def phase_finished(self, phase: str, seconds: float) -> None:
        """A phase ended."""
        with self._lock:
            state = self.phases.setdefault(phase, PhaseState(0))
            state.finished = time.monotonic()
            running = [name for name, s in self.phases.items() if s.finished is None]
            self.current = running[-1] if running else self.current

    def info(self, message: str) -> None:
        """Progress lines are not kept in the status file."""

    def note(self, message: str) -> None:
        """Keep the notes (they explain stops)."""
        with self._lock:
            self.notes.append(message)

    # -- the file ----------------------------------------------------------------------------
    def snapshot(self, state: str) -> dict[str, Any]:
        """The status object."""
        with self._lock:
            phases = {
                name: {
                    "state": "done" if s.finished is not None else "running",
                    "done": s.done,
                    "total": s.total,
                    "unit": phase_unit(name),
                    "rate": round(s.rate(), 3),
                    "eta_seconds": None if s.eta() is None else round(s.eta() or 0.0, 1),
                    "seconds": round(s.elapsed(), 3),
                }
                for name, s in self.phases.items()
            }
            current = phases.get(self.current or "", {})
            notes = list(self.notes)
        summary = self.summary
        return {
            "state": state,
            "pid": os.getpid(),
            "started_at": self.started_at.isoformat(),
            "updated_at": datetime.now(UTC).isoformat(),
            "phase": self.current,
            "done": current.get("done", 0),
            "total": current.get("total", 0),
            "rate": current.get("rate", 0.0),
            "eta_seconds": current.get("eta_seconds"),
            "phases": phases,
            "selected": summary.selected if summary else 0,
            # Only the per-source counts, read field by field: this runs in the writer thread
            # while the main thread adds phases and notes to the summary.
            "sources": _source_counts(summary) if summary else {},
            "notes": notes,
        }

    def text(self, state: str) -> str:
        """The file's content for ``state``."""
        return json.dumps(redacted(self.snapshot(state), self.secrets), indent=2) + "\n"

    def write(self, state: str) -> None:
        """Rewrite the file atomically."""
        atomic_write(self.path, self.text(state))

    def _write_running(self) -> None:
        # A full disk: tried again, and the final write (`etl.refresh.outputs`) says it failed.
        with suppress(OSError):
            self.write("running")

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._write_running()

    def stop(self) -> None:
        """Stop the writer thread (the final state is written by the caller)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def close(self, state: str = "finished") -> None:
        """Stop the writer thread and write the final state (``finished``, ``failed`` or
        ``interrupted``)."""
        self.stop()
        self.write(state)


def _source_counts(summary: RunSummary) -> dict[str, dict[str, int]]:
    """The summary's per-source counts (its sources are fixed when it is made)."""
    return {name: asdict(counts) for name, counts in list(summary.sources.items())}
