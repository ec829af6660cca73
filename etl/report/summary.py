"""Run reporting: one object receives events; the summary is what a run returns.

`Reporter` is the hook the pipeline calls (phase started, progress, notes). `LineReporter`
writes plain, greppable lines; richer listeners (progress bars, status file) plug in the same way.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from etl.core.errors import EtlError
from etl.core.vocabulary import SOURCES, STATUSES
from etl.db.url import redact, redacted

if TYPE_CHECKING:
    import polars as pl


def partial_of(path: Path) -> Path:
    """Where ``path``'s next version is written before it replaces it (same folder)."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so readers see the old or the new file, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_of(path)
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


@dataclass
class SourceCounts:
    """How one source fared in a run."""

    queried: int = 0
    ok: int = 0
    not_found: int = 0
    error: int = 0
    skipped: int = 0


@dataclass(frozen=True)
class SourceStop:
    """A source stopped for the rest of the run: why (``reason``, the error's label), the line
    the user read, and the exit code it gives a run that otherwise completed (0 or 3)."""

    reason: str
    message: str
    exit_code: int = 0


@dataclass
class RunSummary:
    """What a refresh did; also written to the summary_json file."""

    selected: int = 0
    new_ips: int = 0
    raw_event_ips: int = 0  # of the new IPs, found through the raw events of unlinked sessions
    sessions_linked: int = 0  # sessions whose NULL source_ip was set
    snapshots_filled: int = 0  # sessions whose NULL snapshot columns were filled
    sessions_to_link: int = 0  # sessions found with source_ip NULL and an address
    sessions_without_address: int = 0  # sessions whose raw events name no source address
    longest_write_seconds: float = 0.0  # the longest write transaction (SQLite: lock held)
    bogons: int = 0
    unusable: int = 0
    sources: dict[str, SourceCounts] = field(
        default_factory=lambda: {s: SourceCounts() for s in SOURCES}
    )
    cymru_batches: int = 0  # chunks sent (some of their queries went out)
    cymru_sessions: int = 0  # bulk sessions tried (refused and retried ones too)
    asn_asked: int = 0  # AS numbers sent to Team Cymru (planned, then named in its answers)
    asn_details: int = 0  # of them, answered (their registration data, or not found)
    cymru_as_lookups_failed: int = 0  # Tier 1 AS<n> queries left without an answer
    greynoise_requests: int = 0
    greynoise_searches: int = 0  # as GreyNoise bills them (etl.sources.greynoise.searches)
    greynoise_searches_by_day: dict[str, int] = field(default_factory=dict)  # UTC day -> spent
    greynoise_daily_budget: int | None = None  # the greynoise_daily_budget setting
    greynoise_budget_left: int | None = None  # of it, left today (UTC) when the run ended
    upserted: int = 0
    asn_upserted: int = 0
    phase_seconds: dict[str, float] = field(default_factory=dict)
    maxmind_build_epochs: dict[str, int] = field(default_factory=dict)  # asn, city
    # the infrastructure lists read: seconds since each one's source last confirmed it, the
    # ones past their warning age, and the ones looked for and not found
    list_ages: dict[str, float] = field(default_factory=dict)
    lists_old: list[str] = field(default_factory=list)
    lists_missing: list[str] = field(default_factory=list)
    stopped: dict[str, SourceStop] = field(default_factory=dict)  # per source stopped
    wall_seconds: float = 0.0
    dry_run: bool = False
    outcome: str = "failed"  # finished, failed or interrupted (set when the run ends)
    exit_code: int = 1  # the process's exit code (set when the run ends)
    error: str | None = None  # the one line of the error that ended a failed run
    notes: list[str] = field(default_factory=list)
    run_id: int | None = None  # the run's row in the run log (none for a dry run)
    started_at: str | None = None  # ISO-8601 UTC
    ended_at: str | None = None

    def end(
        self, moment: datetime, error: BaseException | None = None, secrets: tuple[str, ...] = ()
    ) -> None:
        """Record how the run ended, once (a later call changes nothing): when, its outcome
        and exit code, and for a failed or interrupted run its error line (also a note)."""
        if self.ended_at is not None:
            return
        self.ended_at = moment.astimezone(UTC).isoformat()
        if error is None:
            self.outcome, self.exit_code = "finished", self.completed_exit_code()
            return
        if isinstance(error, KeyboardInterrupt):
            cause = f" ({error.args[0]})" if error.args else ""
            self.outcome, self.exit_code = "interrupted", 1
            self.error = f"interrupted{cause}: committed chunks are kept"
        else:
            self.outcome = "failed"
            self.exit_code = error.exit_code if isinstance(error, EtlError) else 1
            shown = redact(str(error), secrets) if isinstance(error, EtlError) else None
            self.error = f"run failed: {shown or type(error).__name__}"
        self.notes.append(self.error)

    def keep(self, kept: Mapping[str, object]) -> list[str]:
        """Put what a source kept (`NetworkSource.finish`, `OfflineSource.report`) into the
        fields of those names; return the names this summary has no field for (a defect of the
        source, raised by the caller once every source is done)."""
        for name, value in kept.items():
            if hasattr(self, name):
                setattr(self, name, value)
        return [name for name in kept if not hasattr(self, name)]

    def add(self, counts: Mapping[str, int]) -> None:
        """Add ``counts`` to the fields of those names (a source's own counters, posted as
        `etl.sources.events.Counted`)."""
        unknown = [name for name in counts if not hasattr(self, name)]
        if unknown:  # a source counting into a field the summary lacks: a defect
            raise AttributeError(f"no such RunSummary field: {', '.join(unknown)}")
        for name, amount in counts.items():
            setattr(self, name, getattr(self, name) + amount)

    def failed_after_end(self, error: str) -> None:
        """The run did its work, but what it had to write at its end (an output file) could
        not be written: a failure (exit 1) with that ``error`` line."""
        self.outcome, self.exit_code, self.error = "failed", 1, f"run failed: {error}"
        self.notes.append(self.error)

    def completed_exit_code(self) -> int:
        """The exit code of this run if it completed: 3 when a source was stopped by its
        configuration or reachability (key refused, unreachable, stalled), else 0."""
        return max((stop.exit_code for stop in self.stopped.values()), default=0)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary."""
        return asdict(self)

    def json_text(self, secrets: tuple[str, ...] = ()) -> str:
        """The summary as one JSON object (what ``--summary-json`` writes)."""
        return json.dumps(redacted(self.to_dict(), secrets), indent=2) + "\n"

    def table(self) -> str:
        """A plain-text summary table for the end of a run."""
        lines = [
            f"selected {self.selected} IPs ({self.new_ips} new, {self.bogons} bogon or invalid)"
            + (
                f"; {self.unusable} rows with unusable enrichment left alone"
                if self.unusable
                else ""
            ),
            f"{'source':<14} {'would ask' if self.dry_run else 'queried':>9} "
            + " ".join(f"{s:>9}" for s in STATUSES),
        ]
        for name, counts in self.sources.items():
            values = " ".join(f"{getattr(counts, s):>9}" for s in STATUSES)
            lines.append(f"{name:<14} {counts.queried:>9} {values}")
        lines.append(self._requests_line())
        written = (
            "would write nothing (dry run)"
            if self.dry_run
            else (
                f"wrote {self.upserted} ip_inventory rows, {self.asn_upserted} asn_inventory rows "
                f"(longest write transaction {self.longest_write_seconds:.2f}s)"
            )
        )
        if self.greynoise_budget_left is not None:
            lines.append(
                f"GreyNoise daily budget: {self.greynoise_budget_left} of "
                f"{self.greynoise_daily_budget} Searches left today (UTC)"
            )
        lines.append(self._sessions_line())
        phases = ", ".join(f"{k} {v:.2f}s" for k, v in self.phase_seconds.items())
        lines += [written, f"phases: {phases}; wall {self.wall_seconds:.2f}s"]
        if self.stopped:
            stops = ", ".join(f"{name} ({stop.reason})" for name, stop in self.stopped.items())
            lines.append(f"stopped for this run: {stops}")
        return "\n".join(lines)

    def _requests_line(self) -> str:
        """What was sent to the network services and what they answered (a dry run: none)."""
        if self.dry_run:
            return "Team Cymru and GreyNoise: nothing sent (dry run)"
        greynoise = self.sources["greynoise"]
        unanswered = (
            f", {self.cymru_as_lookups_failed} AS lookups left without an answer"
            if self.cymru_as_lookups_failed
            else ""
        )
        return (
            f"Cymru: {self.cymru_sessions} sessions tried for {self.cymru_batches} batches "
            f"sent, {self.asn_asked} AS numbers asked, {self.asn_details} answered{unanswered}; "
            f"GreyNoise: {self.greynoise_requests} requests sent, "
            f"{greynoise.ok + greynoise.not_found} IPs answered, "
            f"{self.greynoise_searches} Searches"
        )

    def _sessions_line(self) -> str:
        """What the run did (or, dry, would do) for sessions the loader left unlinked."""
        found = (
            f"sessions: {self.sessions_to_link} without source_ip found through raw events "
            f"({self.raw_event_ips} new IPs)"
        )
        if self.dry_run:
            done = "would link them and fill their snapshots"
        else:
            done = f"linked {self.sessions_linked}, snapshots filled {self.snapshots_filled}"
        missing = (
            f"; {self.sessions_without_address} name no address in their raw events"
            if self.sessions_without_address
            else ""
        )
        return f"{found}; {done}{missing}"


class Reporter(Protocol):
    """Receives the events of a run, all from the run's main thread (the network phases post
    theirs to it: `etl.sources.events`); a listener with a thread of its own must lock."""

    def attach(self, summary: RunSummary) -> None:
        """The run's summary, updated live while the run goes."""

    def phase_started(self, phase: str, total: int) -> None:
        """A phase begins with ``total`` items to do."""

    def advanced(self, phase: str, done: int) -> None:
        """``done`` more items of the phase are finished."""

    def phase_finished(self, phase: str, seconds: float) -> None:
        """The phase ended after ``seconds``."""

    def info(self, message: str) -> None:
        """A progress line worth keeping in a log (hidden when quiet)."""

    def note(self, message: str) -> None:
        """Something the user should read once."""


@contextmanager
def timed_phase(summary: RunSummary, reporter: Reporter, name: str, total: int) -> Iterator[None]:
    """Report the phase ``name`` around the block; record its seconds when the block ends
    without an error."""
    reporter.phase_started(name, total)
    started = time.monotonic()
    yield
    reporter.advanced(name, total)  # the block did all of it
    finish_phase(summary, reporter, name, time.monotonic() - started)


def finish_phase(summary: RunSummary, reporter: Reporter, name: str, seconds: float) -> None:
    """Record and report the end of the phase ``name`` after ``seconds``."""
    summary.phase_seconds[name] = round(summary.phase_seconds.get(name, 0.0) + seconds, 3)
    reporter.phase_finished(name, seconds)


def count_statuses(summary: RunSummary, source: str, statuses: pl.Series) -> None:
    """Add a source's answer statuses to the summary: ``queried`` is what was sent to the
    source (ok + not_found + error); ``skipped`` was not sent (IPv6 on community GreyNoise)."""
    counts = summary.sources[source]
    statuses = statuses.drop_nulls()
    counts.ok += int((statuses == "ok").sum())
    counts.not_found += int((statuses == "not_found").sum())
    counts.error += int((statuses == "error").sum())
    counts.skipped += int((statuses == "skipped").sum())
    counts.queried = counts.ok + counts.not_found + counts.error


class WritePhase:
    """The ``write`` phase, in ip_inventory rows: ``total`` is every selected IP; each counts
    once, when its row is first committed (so ``done`` ends as the summary's ``upserted``).
    The phase is done when the run has committed its last row (`finish`), answers included,
    never before: a stopped source may leave it short."""

    def __init__(self, summary: RunSummary, reporter: Reporter, total: int) -> None:
        self.summary, self.reporter, self.total = summary, reporter, total
        self.done = 0
        self.started = time.monotonic()
        reporter.phase_started("write", total)

    def advance(self, rows: int) -> None:
        """Count ``rows`` more IPs whose row is committed."""
        self.done += rows
        self.reporter.advanced("write", rows)

    def finish(self) -> None:
        """The last row is committed."""
        finish_phase(self.summary, self.reporter, "write", time.monotonic() - self.started)


HEARTBEAT_SECONDS = 30.0  # plain output: one progress line per running phase this often
VERBOSE_SECONDS = 5.0  # --verbose: at most one progress line per phase this often
PHASE_UNITS = {  # what each phase counts, named in its progress lines (one count everywhere)
    "validate": "IPs",
    "maxmind": "IPs",
    "classification": "IPs",
    "write": "ip_inventory rows",
    "cymru": "queries",  # IPs and AS numbers, one bulk query line each
    "greynoise": "IPs",
    "asn_counts": "ASNs",
    "link": "sessions",
}


def phase_unit(phase: str) -> str:
    """What the items of ``phase`` are (its progress lines, bars and status file name it)."""
    return PHASE_UNITS.get(phase, "items")


@dataclass
class _Running:
    """A phase under way, as plain lines show it."""

    total: int
    started: float
    said: float  # when its last line was printed
    done: int = 0


def progress_line(phase: str, done: int, total: int, seconds: float) -> str:
    """``phase: done/total unit (percent), rate, ETA`` (the ETA at the rate so far); for a
    phase whose size is not known, how long it has run."""
    if not total:
        return f"{phase}: running for {_duration(seconds)}"
    rate = done / seconds if seconds > 0 else 0.0
    left = max(0, total - done)
    eta = _duration(left / rate) if rate > 0 else "unknown"
    return (
        f"{phase}: {done}/{total} {phase_unit(phase)} ({100 * done // total}%), "
        f"{rate:,.1f}/s, ETA {eta}"
    )


def _duration(seconds: float) -> str:
    """``1h02m``, ``3m05s`` or ``12s``."""
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class LineReporter:
    """Plain log lines (for cron, journald and pipes); quiet shows notes only.

    While a phase runs, one progress line (done/total, rate, ETA) every ``heartbeat`` seconds,
    ``--verbose`` at most every `VERBOSE_SECONDS`: printed by a thread of its own (started with
    the first phase, stopped by `close`), so that a phase waiting on a silent service still
    says where it is."""

    def __init__(
        self,
        stream: TextIO | None = None,
        verbosity: int = 0,
        secrets: tuple[str, ...] = (),
        heartbeat: float = HEARTBEAT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream or sys.stderr
        self.verbosity = verbosity
        self.secrets = secrets
        self.every = VERBOSE_SECONDS if verbosity > 0 else heartbeat
        self.clock = clock
        self._running: dict[str, _Running] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _line(self, text: str) -> None:
        with self._lock:
            self._print(text)

    def _print(self, text: str) -> None:
        """Print one line (the caller holds the lock)."""
        print(redact(text, self.secrets), file=self.stream, flush=True)

    def attach(self, summary: RunSummary) -> None:
        """Nothing to keep."""

    def phase_started(self, phase: str, total: int) -> None:
        """Log the start of a phase (its count and unit; a phase whose size is not known
        says only that it started); its progress lines start now."""
        now = self.clock()
        with self._lock:
            self._running[phase] = _Running(total, now, now)
        if self.verbosity < 0:
            return
        self._line(f"{phase}: {total} {phase_unit(phase)} to do" if total else f"{phase}: started")
        if self._thread is None and not self._stop.is_set():
            self._thread = threading.Thread(target=self._beat, name="progress-lines", daemon=True)
            self._thread.start()

    def advanced(self, phase: str, done: int) -> None:
        """Count progress (printed by the heartbeat)."""
        with self._lock:
            state = self._running.get(phase)
            if state is not None:
                state.done += done

    def phase_finished(self, phase: str, seconds: float) -> None:
        """Log the end of a phase."""
        with self._lock:
            state = self._running.pop(phase, None)
        if self.verbosity < 0:
            return
        unit = phase_unit(phase)
        counted = f", {state.done}/{state.total} {unit}" if state and state.total else ""
        self._line(f"{phase}: done in {seconds:.2f}s{counted}")

    def info(self, message: str) -> None:
        """Log a progress line unless quiet."""
        if self.verbosity >= 0:
            self._line(message)

    def note(self, message: str) -> None:
        """Log a note (always, even when quiet)."""
        self._line(message)

    def heartbeat(self) -> None:
        """Print the progress line of every running phase whose last line is ``every``
        seconds old (the thread calls this; a test may too)."""
        now = self.clock()
        with self._lock:  # printed under the lock: never after the phase's "done" line
            for phase, state in self._running.items():
                if now - state.said >= self.every:
                    state.said = now
                    self._print(progress_line(phase, state.done, state.total, now - state.started))

    def _beat(self) -> None:
        while not self._stop.wait(min(1.0, self.every / 4)):
            try:
                self.heartbeat()
            except (OSError, ValueError):  # the reader went away (`| head`), or stream closed
                return

    def close(self) -> None:
        """Stop the progress lines."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


class NoteRecorder:
    """Copies every note into the summary (so the summary JSON explains stops)."""

    def __init__(self, summary: RunSummary) -> None:
        self.summary = summary

    def attach(self, summary: RunSummary) -> None:
        """Record into this summary from now on."""
        self.summary = summary

    def phase_started(self, phase: str, total: int) -> None:
        """Not recorded."""

    def advanced(self, phase: str, done: int) -> None:
        """Not recorded."""

    def phase_finished(self, phase: str, seconds: float) -> None:
        """Not recorded."""

    def info(self, message: str) -> None:
        """Not recorded."""

    def note(self, message: str) -> None:
        """Keep the note."""
        self.summary.notes.append(message)
