"""The refresh, in the order it happens.

    select -> validate -> MaxMind
           -> network phases in threads at the same time (Team Cymru, GreyNoise); the Cymru
              sessions also carry Tier 1 (AS registration data for every ASN lacking it or
              older than 90 days)
           -> meanwhile the main thread commits (`Committer`): base rows (validation and
              maxmind blocks) that await no answer at once, the others together with their
              answers (alone only when the services are slow), answers in chunks as they
              arrive
           -> ASN counts of touched ASNs

A run stopped at any point keeps every committed chunk; what is still stale is picked up by the
next run.
"""

from __future__ import annotations

import importlib
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime

import polars as pl

from etl.clients.cymru import Batch, CymruClient
from etl.clients.greynoise import GreyNoiseAnswer, GreyNoiseClient
from etl.commit import Committer, write_rows
from etl.config import RefreshConfig, Source
from etl.cymru import as_queries, asn_details, cymru_results, cymru_targets, split_batch
from etl.db.database import Database
from etl.db.lock import run_lock
from etl.db.pending import PendingAnswers
from etl.db.select import (
    SelectionRules,
    asn_details_state,
    select_stale,
    unknown_ips,
    unusable_rows,
)
from etl.db.url import DatabaseUrl, parse_database_url
from etl.db.write import MAX_PG_INTEGER, ChunkWriter
from etl.errors import DatabaseError, ServiceError, UsageError
from etl.greynoise import greynoise_results, greynoise_targets
from etl.maxmind import MaxMindDatabases, open_maxmind, with_maxmind
from etl.progress import FanOut
from etl.report import LineReporter, NoteRecorder, Reporter, RunSummary
from etl.validation import with_validation

STOP_WAIT_SECONDS = 5.0  # a stopping run waits this long for answers already in flight
GREYNOISE_PART_ROWS = 200  # answers handed to the committer at a time
GREYNOISE_PART_SECONDS = 0.5
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
    _finished(summary, reporter, name, time.monotonic() - started)


def _finished(summary: RunSummary, reporter: Reporter, name: str, seconds: float) -> None:
    summary.phase_seconds[name] = round(summary.phase_seconds.get(name, 0.0) + seconds, 3)
    reporter.phase_finished(name, seconds)


class _WritePhase:
    """The ``write`` phase: base rows written so far (some go out with their answers, later)."""

    def __init__(self, summary: RunSummary, reporter: Reporter, total: int) -> None:
        self.summary, self.reporter, self.total = summary, reporter, total
        self.done = 0
        self.started = time.monotonic()
        reporter.phase_started("write", total)
        if not total:
            self._finish()

    def advance(self, rows: int) -> None:
        """Count ``rows`` more base rows written; finish the phase with the last one."""
        self.done += rows
        self.reporter.advanced("write", rows)
        if self.done >= self.total:
            self._finish()

    def _finish(self) -> None:
        _finished(self.summary, self.reporter, "write", time.monotonic() - self.started)


def _import_in_background(module: str) -> None:
    """Import ``module`` in a thread of its own, overlapping the database work that releases
    the GIL (requests this way: about 0.15 s less per run than importing it up front)."""
    threading.Thread(target=importlib.import_module, args=(module,), daemon=True).start()


def _active_sources(
    config: RefreshConfig, maxmind: MaxMindDatabases, reporter: Reporter
) -> set[Source]:
    active = {source for source in Source if config.enabled(source)}
    if Source.GREYNOISE not in config.skip and not config.greynoise_api_key:
        reporter.note(
            "GreyNoise skipped: no API key (set GREYNOISE_API_KEY, or greynoise_api_key in "
            "etl.toml, to enable it)"
        )
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


def refresh(
    config: RefreshConfig, reporter: Reporter | None = None, summary: RunSummary | None = None
) -> RunSummary:
    """Refresh every stale IP of the configured database; return what was done.

    ``summary`` (optional) is filled in as the run goes, so a caller still has the counts of a
    run that raised.
    """
    started = time.monotonic()
    summary = summary or RunSummary()
    summary.dry_run = config.dry_run
    shown = reporter or LineReporter(verbosity=config.verbosity, secrets=config.secrets())
    reporter = FanOut([shown, NoteRecorder(summary)])
    reporter.attach(summary)
    if config.enabled(Source.GREYNOISE) and config.greynoise_api_key and not config.dry_run:
        _import_in_background("etl.clients.http")  # requests: loads while the database is read
    url = parse_database_url(config.db_url)
    maxmind = MaxMindDatabases()
    if config.enabled(Source.MAXMIND):
        maxmind = open_maxmind(
            asn=config.maxmind_asn, city=config.maxmind_city, directory=config.maxmind_dir
        )
    summary.maxmind_build_epochs = maxmind.build_epochs
    try:
        if not _database_exists(url, config, reporter):
            return summary
        for message in maxmind.notes:
            reporter.note(message)
        active = _active_sources(config, maxmind, reporter)
        asked = ", ".join(sorted(active)) or "no source"
        reporter.info(f"refreshing {url} ({asked}){' (dry run)' if config.dry_run else ''}")
        lock = nullcontext(None) if config.dry_run else run_lock(url, reporter.note)
        left: list[str] = []
        with (
            lock as held,
            Database(
                url,
                create=config.create and not config.dry_run,
                lock_timeout=config.lock_timeout,
                notify=reporter.note,
            ) as db,
        ):
            pending = PendingAnswers.of(url, config.pending_dir)
            if held is not None:
                db.guard = held.verify
                left = _ready_to_write(db, reporter)
                apply_pending(db, pending, config.commit_every, reporter)
            elif not _dry_run_can_select(db, pending, reporter):
                return summary
            now = datetime.now(UTC)
            frame = _prepare(db, config, active, maxmind, now, summary, reporter)
            targets = {
                "cymru": cymru_targets(frame) if Source.CYMRU in active else [],
                "greynoise": greynoise_targets(frame) if Source.GREYNOISE in active else [],
            }
            if config.dry_run:
                for source, ips in targets.items():
                    summary.sources[source].queried = len(ips)
                reporter.note(
                    f"dry run: would ask Team Cymru about {len(targets['cymru'])} IPs and "
                    f"GreyNoise about {len(targets['greynoise'])}"
                )
                return summary
            run = _Run(db, config, summary, reporter, now, active, pending)
            run.recount_all = bool(left) or bool(held and held.unfinished)
            run.execute(frame, targets)
            if held is not None:
                held.finished()
    finally:
        maxmind.close()
        summary.wall_seconds = round(time.monotonic() - started, 3)
    return summary


def _database_exists(url: DatabaseUrl, config: RefreshConfig, reporter: Reporter) -> bool:
    """A SQLite file that does not exist is a usage error (a typo must not start an empty
    database), unless the run may create it; a dry run just has nothing to select."""
    if url.dialect != "sqlite" or (config.create and not config.dry_run):
        return True
    assert url.sqlite_path is not None
    if url.sqlite_path.is_file():
        return True
    if config.dry_run:
        reporter.note(f"{url} does not exist: nothing to select")
        return False
    raise UsageError(
        f"SQLite database {url.sqlite_path} does not exist (a typo in --db?); "
        "pass --create to start a new one"
    )


def _dry_run_can_select(db: Database, pending: PendingAnswers, reporter: Reporter) -> bool:
    """A dry run reads as found: say what a real run would apply first; False when there is
    nothing to select."""
    kept = pending.files()
    if kept:
        reporter.note(
            f"{len(kept)} file(s) of answers kept by a stopped run wait in {pending.folder}: "
            "a real run applies them first and does not ask about those IPs"
        )
    if not db.columns("ip_inventory"):
        reporter.note(f"{db.url} has no ip_inventory table yet: nothing to select")
        return False
    return True


def _ready_to_write(db: Database, reporter: Reporter) -> list[str]:
    """Check, before any service is asked, that the run can write what it will write; create
    absent tables; drop staging tables a killed run left (returned)."""
    db.check_writable()
    created = db.ensure_schema().created
    if created:
        reporter.note(f"created table(s) {', '.join(created)} in {db.url}")
    left = db.drop_leftover_stages()
    if left:
        reporter.note(
            f"dropped {len(left)} staging table(s) left by a killed run; "
            "ASN counts will be recomputed for every ASN"
        )
    return left


def apply_pending(
    db: Database, pending: PendingAnswers, commit_every: int, reporter: Reporter
) -> None:
    """Commit the answers a stopped run kept (`PendingAnswers`), before anything is selected:
    those IPs are then fresh for those sources, and no service is asked about them again."""
    files = pending.files()
    if not files:
        return
    writer = ChunkWriter(db)
    rows, asns = 0, set()
    for item in files:
        frame = item.read()
        if item.kind == "ips":
            asns |= write_rows(writer, frame, commit_every)
        else:
            writer.write_asn_details(frame)
        rows += frame.height
        pending.discard(item)
    writer.recount_asns(sorted(asns))
    writer.close()
    reporter.note(f"applied {rows} answer(s) that a stopped run had kept in {pending.folder}")


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
    summary.unusable = unusable_rows(db)
    if summary.unusable:
        reporter.note(
            f"{summary.unusable} ip_inventory row(s) have enrichment that is not a JSON object: "
            "left unchanged (fix or delete them to have them refreshed)"
        )
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
    asn_details: pl.DataFrame | None = None
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
        pending: PendingAnswers,
    ) -> None:
        self.db, self.config, self.summary, self.reporter = db, config, summary, reporter
        self.now = now
        self.pending = pending
        self.threads: list[threading.Thread] = []
        self.writing_details: pl.DataFrame | None = None  # Tier 1 rows of a write under way
        self.ask_cymru = Source.CYMRU in active
        self.events: queue.Queue[_Event] = queue.Queue()
        self.cymru = CymruClient(config.cymru_settings())
        self.greynoise: GreyNoiseClient | None = None
        self.fresh_asns: set[int] = set()
        self.wanted_asns: list[int] = []
        self.recount_all = False  # a killed run may have left ASN counts behind

    def execute(self, frame: pl.DataFrame, targets: dict[str, list[str]]) -> None:
        writer = ChunkWriter(self.db)
        write_phase = _WritePhase(self.summary, self.reporter, frame.height)
        committer = Committer(writer, self.config.commit_every, on_base_written=write_phase.advance)
        try:
            if self.ask_cymru:  # Tier 1, asked along with the IPs in the same sessions
                self.fresh_asns, stale = asn_details_state(self.db, self.now, self.config.freshness)
                known = _storable(frame["maxmind_asn"].drop_nulls().unique().to_list())
                self.wanted_asns = sorted(_storable(stale) | (known - self.fresh_asns))
            bodies: dict[str, Callable[[list[str]], None]] = {
                "cymru": self._cymru_phase,
                "greynoise": self._greynoise_phase,
            }
            wanted = {
                "cymru": bool(targets["cymru"] or self.wanted_asns),
                "greynoise": bool(targets["greynoise"]),
            }
            phases = {name: bodies[name] for name in bodies if wanted[name]}
            running = self._start_phases(phases, targets)
            try:
                # Rows no service will answer are written now, while the services work; the
                # others wait to be written once, together with their answers.
                base = frame.select(c for c in BASE_COLUMNS if c in frame.columns)
                committer.hold(
                    base, {name: pl.Series(targets[name], dtype=pl.String) for name in phases}
                )
                self._commit_arrivals(running, committer, writer)
                committer.flush()
            except BaseException:
                # A failed commit, a failed phase or Ctrl-C: no service is asked anything
                # more, and what was answered but not committed is kept for the next run.
                try:
                    self._stop_phases()
                    self._keep_unwritten(committer)
                except Exception as exc:  # never instead of the error that stopped the run
                    self.reporter.note(f"answers not committed could not be kept: {exc}")
                raise
            touched = set(frame["current_asn"].drop_nulls().to_list()) | committer.asns
            with _phase(self.summary, self.reporter, "asn_counts", len(touched)):
                writer.recount_asns(None if self.recount_all else sorted(touched))
        finally:
            # Every selected IP is upserted by the base write; later parts update those rows.
            self.summary.upserted = min(writer.rows_written, frame.height)
            self.summary.asn_upserted = writer.asn_rows_written
        # Only a run that got here drops its stages: a stopped one leaves them (PostgreSQL; the
        # SQLite ones are TEMP), and the next run then recomputes every ASN's counts.
        writer.close()

    def _start_phases(
        self, phases: dict[str, Callable[[list[str]], None]], targets: dict[str, list[str]]
    ) -> set[str]:
        """Start each network phase in its own thread; return the names of those running."""
        for name, body in phases.items():
            thread = threading.Thread(
                target=self._guarded, args=(name, body, targets[name]), daemon=True
            )
            thread.start()
            self.threads.append(thread)
        return set(phases)

    def _stop_phases(self) -> None:
        """Cancel the clients; give the threads a moment to hand over what is in flight."""
        self.cymru.cancel()
        if self.greynoise is not None:
            self.greynoise.cancel()
        deadline = time.monotonic() + STOP_WAIT_SECONDS
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _keep_unwritten(self, committer: Committer) -> None:
        """Save the answers not committed beside the database (`PendingAnswers`)."""
        details = [self.writing_details] if self.writing_details is not None else []
        while True:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                break
            if event.part is not None:
                committer.keep(event.part)
            if event.asn_details is not None:
                details.append(event.asn_details)
        ips = committer.unwritten()
        asns = pl.concat(details, how="diagonal_relaxed") if details else pl.DataFrame()
        try:
            saved = self.pending.save({"ips": ips, "asns": asns})
        except DatabaseError as exc:
            self.reporter.note(f"answers not committed are lost: {exc}")
            return
        if saved:
            self.reporter.note(
                f"kept {ips.height} answered IP(s) and {asns.height} AS answer(s) that were "
                f"not committed in {self.pending.folder}; the next run applies them before it "
                "asks any service"
            )

    def _commit_arrivals(
        self, running: set[str], committer: Committer, writer: ChunkWriter
    ) -> None:
        """Commit the phases' parts here as they arrive, until every phase is done."""
        while running:
            try:
                event = self.events.get(timeout=0.2)
            except queue.Empty:
                committer.tick(idle=True)
                continue
            if event.part is not None:
                committer.add(event.part)
            if event.asn_details is not None:
                self.writing_details = event.asn_details
                writer.write_asn_details(event.asn_details, self.now)
                self.writing_details = None
            if event.error is not None:
                raise event.error
            if event.done:
                running.discard(event.source)
                committer.source_done(event.source)
            committer.tick()

    def _guarded(self, source: str, body: Callable[[list[str]], None], ips: list[str]) -> None:
        try:
            body(ips)
        except ServiceError as exc:
            self.reporter.note(str(exc))
        except BaseException as exc:  # handed to the main thread, raised there
            self.events.put(_Event(source, error=exc))
        finally:
            self.events.put(_Event(source, done=True))

    def _cymru_phase(self, ips: list[str]) -> None:
        """Ask Team Cymru about ``ips`` and the ASNs lacking registration data, in bulk chunks.

        The ``AS<n>`` queries for MaxMind's ASNs share the sessions with the IPs; ASNs that only
        Cymru's answers revealed are asked at the end. Each answered chunk is handed over.
        """
        queries = ips + as_queries(self.wanted_asns)
        asked = set(self.wanted_asns)
        discovered: set[int] = set()
        with _phase(self.summary, self.reporter, "cymru", len(queries)):
            for done, batch in enumerate(self.cymru.lookup(queries), start=1):
                ip_batch, as_batch = split_batch(batch)
                if ip_batch.queries:
                    part = cymru_results(ip_batch, datetime.now(UTC))
                    self.summary.cymru_batches += 1
                    _count(self.summary, "cymru", part["cymru_status"])
                    discovered.update(part["cymru_asn"].drop_nulls().to_list())
                    self.reporter.info(
                        f"Cymru batch {done}/{batch.total}: {len(ip_batch.answers)} IPs enriched"
                        + (f", {len(ip_batch.failed)} failed" if ip_batch.failed else "")
                    )
                    self.events.put(_Event("cymru", part=part))
                self._hand_over_details(as_batch)
                self.reporter.advanced("cymru", len(batch.queries))
            late = sorted(_storable(discovered) - asked - self.fresh_asns)
            for batch in self.cymru.lookup(as_queries(late)):
                self._hand_over_details(split_batch(batch)[1])
            self.cymru.check_blocked()

    def _hand_over_details(self, batch: Batch) -> None:
        """Tier 1 rows (AS registration data) from a chunk's ``AS<n>`` answers."""
        if not batch.queries:
            return
        details = asn_details(batch).filter(pl.col("status") != "error")
        self.summary.asn_details += details.height
        if details.height:
            details = _with_details_block(details, datetime.now(UTC))
            self.events.put(_Event("cymru", asn_details=details))

    def _greynoise_phase(self, ips: list[str]) -> None:
        """Ask GreyNoise about ``ips`` within its rate and budget; hand answers over in groups."""
        client = self.greynoise = GreyNoiseClient(
            self.config.greynoise_settings(), self.config.greynoise_api_key or ""
        )
        buffer: list[GreyNoiseAnswer] = []
        last = time.monotonic()

        def hand_over() -> None:
            nonlocal last
            if buffer:
                part = greynoise_results(buffer, datetime.now(UTC))
                _count(self.summary, "greynoise", part["greynoise_status"])
                self.reporter.advanced("greynoise", part.height)
                self.events.put(_Event("greynoise", part=part))
                buffer.clear()
            last = time.monotonic()

        try:
            with _phase(self.summary, self.reporter, "greynoise", len(ips)):
                try:
                    for answer in client.lookup(ips):
                        buffer.append(answer)
                        if (
                            len(buffer) >= GREYNOISE_PART_ROWS
                            or time.monotonic() - last >= GREYNOISE_PART_SECONDS
                        ):
                            hand_over()
                finally:
                    hand_over()
                    self.summary.greynoise_requests = client.requests_sent
        finally:
            client.close()


def _storable(asns: Iterable[int]) -> set[int]:
    """AS numbers that fit asn_inventory.asn_number (a 32-bit signed integer on PostgreSQL)."""
    return {asn for asn in asns if 0 < asn <= MAX_PG_INTEGER}


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
