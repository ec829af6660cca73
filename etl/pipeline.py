"""The refresh, in the order it happens.

    select -> validate -> MaxMind -> commit (validation + maxmind blocks of every selected row)
           -> network phases in threads (Team Cymru now, GreyNoise later), each result part
              committed as it arrives (`Committer`)
           -> Tier 1: AS registration data for the ASNs the run touched -> ASN counts

A run stopped at any point keeps every committed chunk; what is still stale is picked up by the
next run.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import polars as pl

from etl.clients.cymru import CymruClient
from etl.commit import Committer
from etl.config import RefreshConfig, Source
from etl.cymru import as_queries, asn_details, cymru_results, cymru_targets
from etl.db.database import Database
from etl.db.select import SelectionRules, asns_needing_details, select_stale, unknown_ips
from etl.db.url import parse_database_url
from etl.db.write import ChunkWriter
from etl.errors import ServiceError
from etl.maxmind import MaxMindDatabases, open_maxmind, with_maxmind
from etl.report import LineReporter, Reporter, RunSummary
from etl.validation import with_validation

# Sources whose clients are not part of this version: never asked, blocks left as they are.
UNAVAILABLE = {
    Source.GREYNOISE: "GreyNoise lookups are not available in this version: "
    "greynoise blocks are left as they are",
}
BASE_COLUMNS = (
    "ip",
    "first_seen",
    "last_seen",
    "session_count",
    "validation",
    "maxmind",
    "maxmind_asn",
    "maxmind_asn_org",
    "maxmind_status",
)


@contextmanager
def _phase(summary: RunSummary, reporter: Reporter, name: str, total: int) -> Iterator[None]:
    reporter.phase_started(name, total)
    started = time.monotonic()
    yield
    seconds = time.monotonic() - started
    summary.phase_seconds[name] = round(summary.phase_seconds.get(name, 0.0) + seconds, 3)
    reporter.phase_finished(name, seconds)


def _active_sources(
    config: RefreshConfig, maxmind: MaxMindDatabases, reporter: Reporter
) -> set[Source]:
    active = {source for source in Source if config.enabled(source)}
    if Source.GREYNOISE not in config.skip and not config.greynoise_api_key:
        reporter.note("GreyNoise skipped: set GREYNOISE_API_KEY to enable it")
    for source, message in UNAVAILABLE.items():
        if source in active:
            reporter.note(message)
            active.discard(source)
    if Source.MAXMIND in active and not maxmind.available:
        active.discard(Source.MAXMIND)
    return active


def _count(summary: RunSummary, source: str, statuses: pl.Series) -> None:
    counts = summary.sources[source]
    statuses = statuses.drop_nulls()
    counts.queried += statuses.len()
    counts.ok += int((statuses == "ok").sum())
    counts.not_found += int((statuses == "not_found").sum())
    counts.error += int((statuses == "error").sum())
    counts.skipped += int((statuses == "skipped").sum())


def refresh(config: RefreshConfig, reporter: Reporter | None = None) -> RunSummary:
    """Refresh every stale IP of the configured database; return what was done."""
    reporter = reporter or LineReporter(verbosity=config.verbosity, secrets=config.secrets())
    started = time.monotonic()
    summary = RunSummary(dry_run=config.dry_run)
    url = parse_database_url(config.db_url)
    maxmind = open_maxmind(config) if config.enabled(Source.MAXMIND) else MaxMindDatabases()
    try:
        for message in maxmind.notes:
            reporter.note(message)
        active = _active_sources(config, maxmind, reporter)
        with Database(url) as db:
            if not config.dry_run:
                created = db.ensure_schema().created
                if created:
                    reporter.note(f"created table(s) {', '.join(created)} in {url}")
            elif not db.columns("ip_inventory"):
                reporter.note(f"{url} has no ip_inventory table yet: nothing to select")
                return summary
            now = datetime.now(UTC)
            frame = _prepare(db, config, active, maxmind, now, summary, reporter)
            targets = cymru_targets(frame) if Source.CYMRU in active else []
            if config.dry_run:
                summary.sources["cymru"].queried = len(targets)
                reporter.note(f"dry run: would ask Team Cymru about {len(targets)} IPs")
                return summary
            _Run(db, config, summary, reporter, now, active).execute(frame, targets)
    finally:
        maxmind.close()
        summary.wall_seconds = round(time.monotonic() - started, 3)
    return summary


def _prepare(
    db: Database,
    config: RefreshConfig,
    active: set[Source],
    maxmind: MaxMindDatabases,
    now: datetime,
    summary: RunSummary,
    reporter: Reporter,
) -> pl.DataFrame:
    """Select, validate and join MaxMind: the whole frame, no network."""
    rules = SelectionRules(
        now=now,
        freshness=config.freshness,
        maxmind=Source.MAXMIND in active,
        cymru=Source.CYMRU in active,
        greynoise=Source.GREYNOISE in active,
        maxmind_build_epoch=maxmind.build_epoch,
        max_ips=config.max_ips,
        only_ips=config.only_ips,
    )
    with _phase(summary, reporter, "select", 0):
        frame = select_stale(db, rules)
    for address in unknown_ips(frame, config.only_ips):
        reporter.note(f"--ip {address}: not in ip_inventory nor in session_summaries")
    summary.selected, summary.new_ips = frame.height, int(frame["is_new"].sum())
    with _phase(summary, reporter, "validate", frame.height):
        frame = with_validation(frame)
    summary.bogons = int(frame["is_bogon"].sum())
    with _phase(summary, reporter, "maxmind", int(frame["stale_maxmind"].sum())):
        frame = with_maxmind(frame, maxmind, now)
    _count(summary, "maxmind", frame["maxmind_status"])
    return frame


@dataclass
class _Event:
    """What a network phase thread hands to the committing thread."""

    source: str
    part: pl.DataFrame | None = None
    error: BaseException | None = None
    done: bool = False


class _Run:
    """One refresh's writing side: the committer, the phase threads, Tier 1 and counts."""

    def __init__(
        self,
        db: Database,
        config: RefreshConfig,
        summary: RunSummary,
        reporter: Reporter,
        now: datetime,
        active: set[Source],
    ) -> None:
        self.db, self.config, self.summary, self.reporter = db, config, summary, reporter
        self.now = now
        self.ask_cymru = Source.CYMRU in active
        self.events: queue.Queue[_Event] = queue.Queue()
        self.cymru = CymruClient(config.cymru_settings())

    def execute(self, frame: pl.DataFrame, cymru_ips: list[str]) -> None:
        writer = ChunkWriter(self.db)
        committer = Committer(
            writer,
            self.config.commit_every,
            on_commit=lambda rows: self.reporter.advanced("write", rows),
        )
        try:
            with _phase(self.summary, self.reporter, "write", frame.height):
                committer.add(frame.select(c for c in BASE_COLUMNS if c in frame.columns))
                committer.flush()
            phases = {"cymru": lambda: self._cymru_phase(cymru_ips)} if cymru_ips else {}
            self._run_phases(phases, committer)
            committer.flush()
            self._asn_details(writer, committer.asns)
            touched = set(frame["current_asn"].drop_nulls().to_list()) | committer.asns
            with _phase(self.summary, self.reporter, "asn_counts", len(touched)):
                writer.recount_asns(sorted(touched))
        finally:
            self.summary.upserted = writer.rows_written
            self.summary.asn_upserted = writer.asn_rows_written
            writer.close()

    def _run_phases(self, phases: dict[str, Callable[[], None]], committer: Committer) -> None:
        """Run the network phases in threads; commit their parts here as they arrive."""
        threads = {
            name: threading.Thread(target=self._guarded, args=(name, body), daemon=True)
            for name, body in phases.items()
        }
        for thread in threads.values():
            thread.start()
        running = set(threads)
        failure: BaseException | None = None
        while running:
            try:
                event = self.events.get(timeout=0.2)
            except queue.Empty:
                committer.tick()
                continue
            if event.part is not None:
                committer.add(event.part)
            if event.error is not None:
                failure = failure or event.error
            if event.done:
                running.discard(event.source)
            committer.tick()
        if failure is not None:
            raise failure

    def _guarded(self, source: str, body: Callable[[], None]) -> None:
        try:
            body()
        except ServiceError as exc:
            self.reporter.note(str(exc))
        except BaseException as exc:  # handed to the main thread, raised there
            self.events.put(_Event(source, error=exc))
        finally:
            self.events.put(_Event(source, done=True))

    def _cymru_phase(self, ips: list[str]) -> None:
        """Ask Team Cymru about ``ips`` in bulk chunks; hand each answered chunk over."""
        with _phase(self.summary, self.reporter, "cymru", len(ips)):
            for done, batch in enumerate(self.cymru.lookup(ips), start=1):
                part = cymru_results(batch, datetime.now(UTC))
                self.summary.cymru_batches += 1
                _count(self.summary, "cymru", part["cymru_status"])
                self.reporter.info(
                    f"Cymru batch {done}/{batch.total}: {len(batch.answers)} IPs enriched"
                    + (f", {len(batch.failed)} failed" if batch.failed else "")
                )
                self.reporter.advanced("cymru", len(batch.queries))
                self.events.put(_Event("cymru", part=part))
            self.cymru.check_blocked()

    def _asn_details(self, writer: ChunkWriter, asns: set[int]) -> None:
        """Tier 1: bulk ``AS<n>`` lookups for ASNs with missing or old registration data."""
        if self.ask_cymru and asns and not self.cymru.blocked:
            needed = asns_needing_details(
                self.db, sorted(asns), self.now, self.config.freshness.asn_details
            )
        else:
            needed = []
        if not needed:
            return
        with _phase(self.summary, self.reporter, "asn_details", len(needed)):
            for batch in self.cymru.lookup(as_queries(needed)):
                details = asn_details(batch).filter(pl.col("status") != "error")
                writer.write_asn_details(_with_details_block(details, self.now), self.now)
                self.reporter.advanced("asn_details", len(batch.queries))


def _with_details_block(details: pl.DataFrame, cached_at: datetime) -> pl.DataFrame:
    block = pl.struct(
        pl.col("organization_name").alias("asn_org"),
        pl.col("organization_country").alias("country"),
        pl.col("rir_registry").alias("registry"),
        pl.col("allocation_date"),
        pl.col("status"),
        pl.lit(cached_at.isoformat()).alias("cached_at"),
    )
    return details.with_columns(block.struct.json_encode().alias("details"))
