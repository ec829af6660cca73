"""The network phases as the main thread runs them (the threads: `etl.refresh.runner`).

The main thread has each source (`etl.sources.network.NetworkSource`, listed in
`etl.refresh.sources`) build its phase and client, so that a stop can always cancel them, and
closes them. The phase bodies only post events; `Arrivals` takes them here, on the main
thread: it counts them into the `RunSummary`, reports them, and commits their answers, or,
when the run stops, keeps them for the next run (`PendingAnswers`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

import polars as pl

from etl.core.errors import DatabaseError
from etl.db.pending import PendingAnswers
from etl.db.write import ChunkWriter
from etl.refresh.commit import Committer
from etl.refresh.runner import PhaseRunner
from etl.report.summary import Reporter, RunSummary, SourceStop, count_statuses, finish_phase
from etl.sources.events import (
    AsnDetailsAnswered,
    Counted,
    Event,
    Informed,
    Noted,
    PartAnswered,
    PhaseDone,
    PhaseStopped,
    Progressed,
)
from etl.sources.network import NetworkSource, Phase

STOP_WAIT_SECONDS = 5.0  # a stopping run waits this long for answers already in flight
IDLE_SECONDS = 0.2  # the committer looks at its clock at least this often


@dataclass
class NetworkPhases:
    """The phases a run needs, the IPs each is asked about, and the sources they come from."""

    sources: Sequence[NetworkSource]
    phases: list[Phase] = field(default_factory=list)
    awaited: dict[str, pl.Series] = field(default_factory=dict)

    def sample(self) -> None:
        """Let each source note what its service billed so far (GreyNoise: Searches per day)."""
        for source in self.sources:
            source.sample()

    def close(self, summary: RunSummary) -> None:
        """Close the clients (once the phases are over); put the counts each source kept into
        ``summary`` (GreyNoise: requests and Searches; Team Cymru: sessions tried)."""
        unknown = []
        for source in self.sources:  # every client closed, whatever one of them counts
            unknown += [f"{source.name}.{name}" for name in summary.keep(source.finish())]
        if unknown:  # a source counting into a field the summary lacks: a defect, found by tests
            raise AttributeError(f"no such RunSummary field: {', '.join(unknown)}")


def network_phases(
    sources: Sequence[NetworkSource], targets: dict[str, list[str]]
) -> NetworkPhases:
    """The phases of ``sources`` for ``targets`` (per source, the IPs to ask); a source with
    nothing to ask has none."""
    network = NetworkPhases(sources)
    for source in sources:
        phase = source.phase(targets.get(source.name, []))
        if phase is not None:
            network.phases.append(phase)
    network.awaited = {p.name: pl.Series(targets[p.name], dtype=pl.String) for p in network.phases}
    return network


def ask_and_commit(
    network: NetworkPhases, base: pl.DataFrame, arrivals: Arrivals, pending: PendingAnswers
) -> None:
    """Run the phases; meanwhile write the ``base`` rows no service owes an answer for, and
    the others with their answers as these arrive.

    On any error (a failed commit, a failed phase, Ctrl-C) no service is asked anything more,
    and what was answered but not committed is kept for the next run.
    """
    runner = PhaseRunner(network.phases)
    arrivals.started(network.phases, network.awaited)
    runner.start()
    try:
        arrivals.committer.hold(base, network.awaited)
        arrivals.commit_all(runner, network.sample)
        arrivals.committer.flush()
    except BaseException:
        try:
            arrivals.keep_unwritten(runner.stop(STOP_WAIT_SECONDS), pending)
        except Exception as exc:  # never instead of the error that stopped the run
            arrivals.reporter.note(f"answers not committed could not be kept: {exc}")
        raise
    finally:
        network.close(arrivals.summary)


def account(event: Event, summary: RunSummary, reporter: Reporter) -> None:
    """Count ``event`` into ``summary`` and report it (on the main thread only)."""
    match event:
        case Counted():
            summary.add(event.counts())
            if event.line():
                reporter.info(event.line())
        case PartAnswered(source, frame):
            count_statuses(summary, source, frame[f"{source}_status"])
        case AsnDetailsAnswered(frame):
            summary.asn_details += frame.height
        case Progressed(source, done):
            reporter.advanced(source, done)
        case Informed(message):
            reporter.info(message)
        case Noted(message):
            reporter.note(message)
        case PhaseStopped(source, message, reason, exit_code, seconds):
            reporter.note(message)
            summary.stopped[source] = SourceStop(reason, message, exit_code)
            finish_phase(summary, reporter, source, seconds)
        case PhaseDone(source, seconds):
            finish_phase(summary, reporter, source, seconds)


class Arrivals:
    """The phases' events, taken on the main thread: each is counted and reported, then its
    answers are committed (while the run goes) or kept (when it stops)."""

    def __init__(
        self,
        summary: RunSummary,
        reporter: Reporter,
        committer: Committer,
        writer: ChunkWriter,
        now: datetime,
    ) -> None:
        self.summary, self.reporter = summary, reporter
        self.committer, self.writer, self.now = committer, writer, now
        self.to_ask: dict[str, int] = {}  # per source, the IPs it is to ask (`started`)
        self.writing_details: pl.DataFrame | None = None  # Tier 1 rows of a write under way

    def started(self, phases: Sequence[Phase], awaited: Mapping[str, pl.Series]) -> None:
        """Report the phases as started; ``awaited``: per source, the IPs it is to ask."""
        self.to_ask = {source: ips.len() for source, ips in awaited.items()}
        for phase in phases:
            self.reporter.phase_started(phase.name, phase.total)
            if phase.detail:
                self.reporter.info(f"{phase.name}: {phase.detail}")

    def commit_all(self, runner: PhaseRunner, tick: Callable[[], None] = lambda: None) -> None:
        """Take the events until every phase has ended; commit the answers as they come;
        ``tick`` at every event and every idle moment."""
        for event in runner.events(IDLE_SECONDS):
            tick()
            if event is None:
                self.committer.tick(idle=True)
                continue
            self.account(event)
            self.commit(event)
            self.committer.tick()

    def account(self, event: Event) -> None:
        """Count ``event`` into the summary and report it."""
        if isinstance(event, PhaseStopped):
            event = self._not_asked(event)
        account(event, self.summary, self.reporter)

    def _not_asked(self, stop: PhaseStopped) -> PhaseStopped:
        """A source stopped mid-run (its answers are all counted by now): the IPs it never
        sent count as ``skipped`` (not sent), and its one line says how many."""
        total = self.to_ask.get(stop.source, 0)
        counts = self.summary.sources[stop.source]
        left = total - counts.queried - counts.skipped
        if left <= 0:
            return stop
        counts.skipped += left
        return replace(stop, message=f"{stop.message} ({left:,} of the {total:,} to ask)")

    def commit(self, event: Event) -> None:
        """Hand ``event``'s answers to the committer (Tier 1 rows are written at once)."""
        match event:
            case PartAnswered(_, frame):
                self.committer.add(frame)
            case AsnDetailsAnswered(frame):
                self.writing_details = frame
                self.writer.write_asn_details(frame, self.now)
                self.writing_details = None
            case PhaseDone(source) | PhaseStopped(source):
                self.committer.source_done(source)

    def keep_unwritten(self, undelivered: Sequence[Event], pending: PendingAnswers) -> None:
        """Save the answers not committed, taken or ``undelivered``, beside the database,
        naming it (``pending.owner``: its id, given when the run began)."""
        details = [self.writing_details] if self.writing_details is not None else []
        for event in undelivered:
            self.account(event)
            if isinstance(event, PartAnswered):
                self.committer.keep(event.frame)
            elif isinstance(event, AsnDetailsAnswered):
                details.append(event.frame)
        ips = self.committer.unwritten()
        asns = pl.concat(details, how="diagonal_relaxed") if details else pl.DataFrame()
        try:
            saved = pending.save({"ips": ips, "asns": asns})
        except DatabaseError as exc:
            self.reporter.note(f"answers not committed are lost: {exc}")
            return
        if saved and pending.owner is not None:
            self.reporter.note(
                f"kept {ips.height} answered IP(s) and {asns.height} AS answer(s) that were "
                f"not committed in {pending.folder}, for this database only (id "
                f"{pending.owner}); the next run applies them before it asks any service"
            )
        elif saved:  # the database has no id yet: it could not be written when the run began
            self.reporter.note(
                f"kept {ips.height} answered IP(s) and {asns.height} AS answer(s) that were "
                f"not committed in {pending.folder}; the database had no id to name in them "
                "(it could not be written), so no run applies them by itself: "
                "`honeypot-etl pending --apply` applies them to the IPs the database knows"
            )
