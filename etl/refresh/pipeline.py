"""The refresh, in the order it happens.

    select -> validate -> offline sources (MaxMind), each adding its block to the frame
           -> network phases in threads at the same time (each source of
              `etl.refresh.sources`, run by `etl.refresh.runner`); the Cymru sessions also
              carry Tier 1 (AS registration data for every ASN lacking it or older than 90
              days, and for those its answers name, beside its last chunks)
           -> meanwhile the main thread commits (`Committer`, fed by `etl.refresh.network`):
              base rows (validation and maxmind blocks) that await no answer at once, the others
              together with their answers (alone only when the services are slow), answers
              in chunks as they arrive
           -> ASN counts of touched ASNs

A run stopped at any point keeps every committed chunk; what is still stale is picked up by the
next run.
"""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import cached_property

import polars as pl

from etl.core.errors import SettingError
from etl.core.vocabulary import SOURCES, TITLES, Source
from etl.db import reader
from etl.db.database import Database
from etl.db.identity import claim_database_id, known_ips
from etl.db.lock import RunLock, run_lock
from etl.db.pending import PendingAnswers, PendingFile
from etl.db.recognise import recognise
from etl.db.runlog import mark_killed
from etl.db.select import (
    SelectionRules,
    due_counts,
    select_stale,
    unknown_ips,
    unusable_rows,
)
from etl.db.sessions import FoundSessions, SessionLinker, find_sessions, record_unresolved
from etl.db.sqlite import sqlite_timestamp
from etl.db.url import DatabaseUrl
from etl.db.write import ChunkWriter
from etl.refresh.commit import Committer, write_rows
from etl.refresh.config import RefreshConfig
from etl.refresh.network import Arrivals, ask_and_commit, network_phases
from etl.refresh.runlog import DailyBudget, logged_run, run_budget
from etl.refresh.sources import REAL, Transports, network_sources, offline_sources
from etl.refresh.validation import with_validation
from etl.report.progress import FanOut
from etl.report.summary import (
    LineReporter,
    NoteRecorder,
    Reporter,
    RunSummary,
    WritePhase,
    count_statuses,
    timed_phase,
)
from etl.sources.cymru.steps import NAMED_IPS
from etl.sources.network import NetworkSource
from etl.sources.offline import OfflineSources

# The columns of a base row (what awaits no answer), before the offline sources' own.
BASE_COLUMNS = ("ip", "first_seen", "last_seen", "session_count", "validation")


def refresh(
    config: RefreshConfig,
    reporter: Reporter | None = None,
    summary: RunSummary | None = None,
    offline: OfflineSources | None = None,
    on_end: Callable[[RunSummary], None] | None = None,
    transports: Transports = REAL,
) -> RunSummary:
    """Refresh every stale IP of the configured database; return what was done.

    ``summary`` (optional) is filled in as the run goes, so a caller still has the counts of a
    run that raised. ``offline``: the offline sources `check_before_work` opened (closed
    here), else that check is made first. ``on_end``: called with the summary of a run that
    got its run log row, once its outcome is known and before that row is final
    (`logged_run`).
    ``transports``: how the network sources reach their services (the real way by default).
    """
    started = time.monotonic()

    def ended(summary: RunSummary) -> None:
        summary.wall_seconds = round(time.monotonic() - started, 3)
        if on_end is not None:
            on_end(summary)

    offline = check_before_work(config) if offline is None else offline
    url = config.database
    if url.sqlite_path is not None:
        reader.prestart(url.sqlite_path)  # DuckDB's reader process starts while we work
    summary = summary or RunSummary()
    summary.dry_run = config.dry_run
    summary.started_at = config.clock().astimezone(UTC).isoformat()
    summary.greynoise_daily_budget = config.greynoise_daily_budget
    own: LineReporter | None = None  # plain lines made here, closed at the end
    if reporter is None:
        own = reporter = _plain_lines(config)
    try:
        reporter = _listeners(reporter, summary)
        if config.enabled(Source.GREYNOISE) and config.greynoise_api_key and not config.dry_run:
            # requests: it loads while the database is read
            _import_in_background("etl.sources.greynoise.http")
        unknown = [
            f"{source.name}.{name}" for source in offline for name in summary.keep(source.report())
        ]
        if unknown:  # a source reporting into a field the summary lacks: a defect
            raise AttributeError(f"no such RunSummary field: {', '.join(unknown)}")
        opened = _opened(url, config, offline, reporter, summary, ended, transports)
        with opened as run:  # None: nothing to do
            if run is not None:
                # select, validate, the offline sources
                frame, found = _prepare(run, offline, summary, reporter)
                targets = _network_targets(frame, run)
                if config.dry_run:
                    _report_dry_run(run, frame, targets, summary, reporter)
                else:
                    try:
                        _ask_and_commit(run, frame, found, targets, summary, reporter)
                    finally:
                        summary.longest_write_seconds = round(run.db.backend.longest_write, 3)
    except BaseException as exc:
        summary.end(config.clock(), exc, config.secrets())  # unless the run log said it
        raise
    else:
        summary.end(config.clock())
    finally:
        if own is not None:
            own.close()
        offline.close()
        if url.sqlite_path is not None:
            reader.discard(url.sqlite_path)
        summary.wall_seconds = round(time.monotonic() - started, 3)
    return summary


@dataclass(frozen=True)
class _Run:
    """The database a run refreshes, open (and locked, unless a dry run), and its settings."""

    db: Database
    config: RefreshConfig
    active: frozenset[Source]
    pending: PendingAnswers
    now: datetime
    budget: DailyBudget
    transports: Transports
    offline: OfflineSources
    recount_all: bool = False  # a killed run may have left ASN counts behind

    @cached_property
    def sources(self) -> list[NetworkSource]:
        """Every network source (`etl.refresh.sources`), set up once for this run's budget."""
        daily = self.budget.limit is not None
        return network_sources(self.config, self.budget.left, daily, self.transports)

    def asked(self, source: NetworkSource) -> bool:
        """Whether this run asks ``source``."""
        return source.name in self.active


@contextmanager
def _opened(
    url: DatabaseUrl,
    config: RefreshConfig,
    offline: OfflineSources,
    reporter: Reporter,
    summary: RunSummary,
    on_end: Callable[[RunSummary], None],
    transports: Transports,
) -> Iterator[_Run | None]:
    """The run's context, opened once, step by step (a dry run of a SQLite file that does not
    exist yet stops first: `_database_exists`): say what is asked (`_announce`), take
    the run lock (`run_lock`; none for a dry run), open the database (`Database`: the URL's
    backend, chosen once), check it can take what the run writes (`_ready_to_write`), read
    the GreyNoise daily budget (`run_budget`), log the run (`logged_run`) and apply the
    answers a stopped run kept (`apply_pending`). None when a dry run finds nothing to
    select."""
    if not _database_exists(url, config, reporter):
        yield None
        return
    active = _announce(url, config, offline, reporter)
    lock = nullcontext(None) if config.dry_run else run_lock(url, reporter.note)
    create = config.create and not config.dry_run
    with (
        lock as held,
        Database(url, create=create, lock_timeout=config.lock_timeout, notify=reporter.note) as db,
    ):
        pending = PendingAnswers.of(url, config.pending_dir)
        left = _ready_to_write(db, held, reporter) if held is not None else []
        limit, asked = config.greynoise_daily_budget, Source.GREYNOISE in active
        budget = run_budget(db, limit, config.clock(), asked, summary, reporter)
        active = _within(active, budget)

        def run(recount_all: bool = False) -> _Run:  # its time: when the selection starts
            now = config.clock()
            return _Run(db, config, active, pending, now, budget, transports, offline, recount_all)

        if held is None:  # a dry run reads as found
            yield run() if _dry_run_can_select(db, pending, reporter) else None
            return
        cap = budget.left if Source.GREYNOISE in active else None
        secrets = config.secrets()
        with logged_run(db, summary, budget, cap, config.clock, reporter.note, secrets, on_end):
            apply_pending(db, pending, config, reporter)
            yield run(recount_all=bool(left) or held.unfinished)
            held.finished()


def _within(active: frozenset[Source], budget: DailyBudget) -> frozenset[Source]:
    """The sources asked: not GreyNoise once its daily budget is spent (it then makes no IP
    selectable, as when skipped)."""
    return active - {Source.GREYNOISE} if budget.left == 0 else active


def _prepare(
    run: _Run, offline: OfflineSources, summary: RunSummary, reporter: Reporter
) -> tuple[pl.DataFrame, FoundSessions]:
    """Select, validate and add each offline source's block: the whole frame, no network; and
    the sessions the loader left unlinked (`etl.db.sessions`)."""
    config = run.config
    rules = SelectionRules(
        now=run.now,
        freshness=config.freshness,
        asked=run.active,
        versions=offline.versions,
        max_ips=config.max_ips,
        only_ips=config.only_ips,
    )
    with timed_phase(summary, reporter, "select", 0):
        every = find_sessions(run.db)
        found = every.only(config.only_ips)
        frame = select_stale(run.db, rules, found)
    if config.only_ips:  # Tier 1 asks only about these IPs' own ASNs (`tier1_plan`)
        frame = frame.with_columns(pl.lit(True).alias(NAMED_IPS))
    summary.selected, summary.new_ips = frame.height, int(frame["is_new"].sum())
    _count_found(found, frame, summary, reporter)
    everything = replace(rules, only_ips=(), max_ips=None, asked=frozenset(SOURCES))
    _say_what_is_left(run, everything, every, frame, reporter)
    summary.unusable = unusable_rows(run.db)
    if summary.unusable:
        reporter.note(
            f"{summary.unusable} ip_inventory row(s) have enrichment that is not a JSON object: "
            "left unchanged (fix or delete them to have them refreshed)"
        )
    with timed_phase(summary, reporter, "validate", frame.height):
        frame = with_validation(frame)
    summary.bogons = int(frame["is_bogon"].sum())
    for source in offline:
        with timed_phase(summary, reporter, source.name, source.looked_up(frame)):
            frame = source.add(frame, run.now)
        count_statuses(summary, source.name, frame[f"{source.name}_status"])
    return frame, found


def _say_what_is_left(
    run: _Run, rules: SelectionRules, found: FoundSessions, frame: pl.DataFrame, reporter: Reporter
) -> None:
    """Say what the run leaves stale: the addresses named by --ip that the database does not
    hold; with nothing selected, how many IPs are due for each source not asked, and why
    (`status`'s count, `due_counts`: one more pass over the inventory, 3-5 s per 100,000
    IPs, so made only then, and not for a source skipped or without a key). "Every IP is
    fresh" only when it is so."""
    url, named = run.db.url, run.config.only_ips
    missing = unknown_ips(frame, named)
    if missing:
        reporter.info(
            f"{'nothing to refresh: ' if not frame.height else ''}{len(missing)} of the "
            f"{len(named)} IP(s) named by --ip are not in {url} (neither in ip_inventory nor "
            f"in session_summaries): {', '.join(missing)}"
        )
    if named and frame.height:
        reporter.info(
            f"--ip: only the {frame.height} IP(s) named are refreshed; the other IPs due are "
            "left as they are (`honeypot-etl status` counts them)"
        )
    elif named and not missing:
        reporter.info(
            f"nothing to refresh for the {len(named)} IP(s) named by --ip: no source is asked, "
            "or their enrichment is not a JSON object"
        )
    if frame.height or named:
        return  # a source the daily budget leaves out said so (`run_budget`)
    not_asked = _not_asked(run)
    # Counted only for what stops a source the operator wants asked (a budget, a missing file):
    # a source skipped, without a key or without the data the operator chose not to fetch
    # (`OfflineSource.optional`) would cost every empty run that pass for nothing new.
    chosen = {"skipped", "no API key"}
    chosen |= {
        run.offline.unavailable()[s.name] for s in run.offline if s.optional and not s.available
    }
    counted = {source: why for source, why in not_asked.items() if why not in chosen}
    due = due_counts(run.db, rules, found) if counted else {}
    left = [
        f"{due[source]:,} IPs are due for {TITLES[source]}, not asked: {why}"
        if source in counted
        else f"{TITLES[source]} not asked: {why}"
        for source, why in sorted(not_asked.items())
        if source not in counted or due[source]
    ]
    asked = ", ".join(sorted(run.active)) or "none"
    head = f"nothing is stale in {url} for the sources asked ({asked})"
    fresh = f"nothing is stale in {url}: every IP is fresh"
    reporter.info("; ".join([head, *left]) if left else fresh)


def _not_asked(run: _Run) -> dict[str, str]:
    """The sources this run does not ask, each with why."""
    config, reasons = run.config, {}
    absent = run.offline.unavailable()
    for source in set(Source) - run.active:
        if source in config.skip:
            reasons[str(source)] = "skipped"
        elif source is Source.GREYNOISE and not config.greynoise_api_key:
            reasons[str(source)] = "no API key"
        elif source is Source.GREYNOISE:
            reasons[str(source)] = "its daily budget is spent"
        elif source in absent:
            reasons[str(source)] = absent[source]
        else:
            reasons[str(source)] = "not available"
    return reasons


def _count_found(
    found: FoundSessions, frame: pl.DataFrame, summary: RunSummary, reporter: Reporter
) -> None:
    """Say what discovery found: sessions without source_ip, the new IPs among the selected
    found through their raw events, and the sessions whose events name no address."""
    for message in found.notes:
        reporter.note(message)
    summary.sessions_to_link = found.to_link().height
    summary.raw_event_ips = int(frame["via_raw_events"].sum())
    summary.sessions_without_address = found.unresolved.height
    if summary.sessions_to_link:
        reporter.info(
            f"found {summary.sessions_to_link} sessions without source_ip through their raw "
            f"events: {summary.raw_event_ips} new IPs selected from them"
        )


def _network_targets(frame: pl.DataFrame, run: _Run) -> dict[str, list[str]]:
    """Per network source, the IPs to ask it about (none for a source this run does not
    ask); each source says which, and in which order (`NetworkSource.targets`)."""
    return {
        source.name: source.targets(frame) if run.asked(source) else [] for source in run.sources
    }


def _planned(run: _Run, frame: pl.DataFrame) -> list[NetworkSource]:
    """The network sources, each having read from the database what else it asks (Team
    Cymru: the AS numbers of Tier 1) when this run asks it."""
    sources = run.sources
    for source in sources:
        if run.asked(source):
            source.plan(run.db, frame, run.now)
    return sources


def _report_dry_run(
    run: _Run,
    frame: pl.DataFrame,
    targets: dict[str, list[str]],
    summary: RunSummary,
    reporter: Reporter,
) -> None:
    """What a real run would ask, counted as a real run counts it (IPv6 skipped by community
    GreyNoise; the AS numbers Tier 1 asks with the IPs); nothing is asked, nothing written."""
    words = []
    for source in _planned(run, frame):
        would = source.would_ask(targets[source.name])
        counts = summary.sources[source.name]
        counts.queried, counts.skipped = would.asked, would.skipped
        words.append(would.words)
    reporter.note(f"dry run: would ask {', and '.join(words)}")


def _ask_and_commit(
    run: _Run,
    frame: pl.DataFrame,
    found: FoundSessions,
    targets: dict[str, list[str]],
    summary: RunSummary,
    reporter: Reporter,
) -> None:
    """Network phases -> commit as the answers arrive (each chunk's sessions linked right
    after it) -> ASN counts of the touched ASNs -> sessions of IPs that had rows linked."""
    linker = SessionLinker(run.db, found.to_link())
    writer = ChunkWriter(run.db, run.config.clock, linker)
    _ask_and_write(run, frame, writer, targets, summary, reporter)
    _link_known(run, found, linker, summary, reporter)
    counts = linker.counts()
    summary.sessions_linked, summary.snapshots_filled = counts["linked"], counts["filled"]
    linker.close()  # as the writer's stages: a stopped run drops them on its way out


def _link_known(
    run: _Run,
    found: FoundSessions,
    linker: SessionLinker,
    summary: RunSummary,
    reporter: Reporter,
) -> None:
    """Link the sessions whose IPs had rows already (made after the loader saw them): no
    service is asked about them, and it is done last, so a database that stays locked costs
    no answer. Remember the sessions whose events name no address."""
    known = found.sessions.filter(pl.col("unlinked") & pl.col("has_row"))
    if known.height:
        with timed_phase(summary, reporter, "link", known.height):
            linker.link(known["ip"])
    record_unresolved(run.db, found.unresolved, _native_time(run))


def _native_time(run: _Run) -> str:
    """The run's time as the database's own timestamp text (SQLite) or literal."""
    return sqlite_timestamp(run.now) if run.db.dialect == "sqlite" else run.now.isoformat()


def _ask_and_write(
    run: _Run,
    frame: pl.DataFrame,
    writer: ChunkWriter,
    targets: dict[str, list[str]],
    summary: RunSummary,
    reporter: Reporter,
) -> None:
    """Network phases -> commit as the answers arrive -> ASN counts of the touched ASNs."""
    network = network_phases(_planned(run, frame), targets)
    # The write phase: every selected IP's row committed (the summary's "wrote N rows").
    write_phase = WritePhase(summary, reporter, frame.height)
    committer = Committer(
        writer,
        run.config.commit_every,
        on_base_written=write_phase.advance,
        revise=lambda rows: run.offline.revise(rows, run.now),
    )
    try:
        arrivals = Arrivals(summary, reporter, committer, writer, run.now)
        # Rows no service will answer are written at once, while the services work; the others
        # wait to be written once, together with their answers.
        wanted = [*BASE_COLUMNS, *(c for source in run.offline for c in source.columns)]
        base = frame.select(c for c in wanted if c in frame.columns)
        ask_and_commit(network, base, arrivals, run.pending)
        write_phase.finish()  # the last row is committed
        touched = set(frame["current_asn"].drop_nulls().to_list()) | committer.asns
        with timed_phase(summary, reporter, "asn_counts", len(touched)):
            writer.recount_asns(None if run.recount_all else sorted(touched))
    finally:
        # Each selected IP's first write carries its base row: distinct IPs written.
        summary.upserted = committer.base_written
        summary.asn_upserted = len(writer.asns_written)
    # A run that got here drops its stages, waiting as any write. A stopped one (PostgreSQL;
    # the SQLite ones are TEMP) drops them on its way out, bounded in time (`Database`'s exit,
    # `drop_own_stages`); its counts may be partial all the same: the run lock's mark, left
    # until `RunLock.finished`, makes the next run recompute every ASN's (`etl.db.lock`).
    writer.close()


def _plain_lines(config: RefreshConfig) -> LineReporter:
    """Plain progress lines as ``config`` asks them (verbosity, heartbeat)."""
    return LineReporter(
        verbosity=config.verbosity, secrets=config.secrets(), heartbeat=config.progress_every
    )


def _listeners(shown: Reporter, summary: RunSummary) -> Reporter:
    """The caller's reporter (plain lines by default) and the summary's note recorder."""
    reporter = FanOut([shown, NoteRecorder(summary)])
    reporter.attach(summary)
    return reporter


def _import_in_background(module: str) -> None:
    """Import ``module`` in a thread of its own, overlapping the database work that releases
    the GIL (requests this way: about 0.15 s less per run than importing it up front)."""
    threading.Thread(target=importlib.import_module, args=(module,), daemon=True).start()


def _announce(
    url: DatabaseUrl, config: RefreshConfig, offline: OfflineSources, reporter: Reporter
) -> frozenset[Source]:
    """Say what this run asks (and why a source is left out); return the sources asked."""
    for message in offline.notes:
        reporter.note(message)
    active = {source for source in Source if config.enabled(source)}
    if Source.GREYNOISE not in config.skip and not config.greynoise_api_key:
        reporter.note(
            "GreyNoise skipped: no API key (set GREYNOISE_API_KEY, or greynoise_api_key in "
            "etl.toml, to enable it)"
        )
    active -= set(offline.unavailable())
    asked = ", ".join(sorted(active)) or "no source"
    reporter.info(f"refreshing {url} ({asked}){' (dry run)' if config.dry_run else ''}")
    return frozenset(active)


def check_before_work(config: RefreshConfig) -> OfflineSources:
    """The usage errors a run can find before it starts (exit 2, nothing written yet): the
    database URL and its folder, a SQLite file that does not exist without --create, a file
    or PostgreSQL database that is no database the run can open or has none of
    cowrieprocessor's tables without --create (`recognise`; all also in a dry run), the
    offline sources' data (`offline_sources`: the MaxMind files). Returns the offline sources,
    open."""
    url = config.database.check_folder()
    if url.dialect == "sqlite" and not config.create:
        assert url.sqlite_path is not None
        if not url.sqlite_path.is_file():
            raise SettingError(
                "db_url",
                f"names a SQLite database that does not exist: {url.sqlite_path} (a typo?); "
                "to start a new one, add",
                also="create",
            )
    recognise(url, create=config.create, timeout=config.lock_timeout)
    return offline_sources(config)


def _database_exists(url: DatabaseUrl, config: RefreshConfig, reporter: Reporter) -> bool:
    """Whether there is a database to read: False only for a dry run with --create of a SQLite
    file that does not exist yet (a dry run never creates anything; `check_before_work`
    refused a missing file without --create, and one it cannot use: `recognise`)."""
    assert url.dialect != "sqlite" or url.sqlite_path is not None
    if url.sqlite_path is None or url.sqlite_path.is_file() or not config.dry_run:
        return True
    reporter.note(
        f"dry run: {url} does not exist; a real run with --create creates it: nothing to select"
    )
    return False


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


def _ready_to_write(db: Database, held: RunLock, reporter: Reporter) -> list[str]:
    """Check, before any service is asked, that the run can write what it will write (and,
    on PostgreSQL, before every write that it still holds the run lock); create absent
    tables; drop staging tables a killed run left (returned); mark the runs that died."""
    db.guard = held.verify  # PostgreSQL: every write first makes sure the lock is held
    db.check_writable()
    schema = db.ensure_schema()
    if schema.created:
        reporter.note(f"created table(s) {', '.join(schema.created)} in {db.url}")
    if schema.run_log_unaltered:
        reporter.note(
            f"the run log in {db.url} lacks this version's columns and they could not be added "
            f"({schema.why_unaltered}); the run log leaves them out until the table's owner "
            f"runs: {'; '.join(schema.run_log_unaltered)}"
        )
    left = db.drop_leftover_stages()
    if left:
        reporter.note(
            f"dropped {len(left)} staging table(s) left by a killed run; "
            "ASN counts will be recomputed for every ASN"
        )
    mark_killed(db, reporter.note)  # rows still 'running' are of runs that died
    return left


def apply_pending(
    db: Database,
    pending: PendingAnswers,
    config: RefreshConfig,
    reporter: Reporter,
    *,
    unknown_owner: bool = False,
) -> None:
    """Commit the answers a stopped run kept for this database (`PendingAnswers`), before
    anything is selected: those IPs are then fresh for those sources, and no service is asked
    about them again.

    The database first gets its id if it has none (`etl.db.identity`); ``pending`` keeps what
    this run cannot commit under it. Only files kept for this database are applied (with
    ``unknown_owner``, as ``honeypot-etl pending --apply`` does, also those that name none),
    and only to the IPs it knows; the others are left alone, with a note."""
    pending.owner = claim_database_id(db, config.clock())
    chosen = _applicable(db, pending, unknown_owner, reporter)
    if not chosen:
        return
    frames = [(item, item.read()) for item in chosen]
    answered = [frame["ip"] for item, frame in frames if item.kind == "ips"]
    known = known_ips(db, pl.concat(answered)) if answered else pl.Series("ip", [], pl.String)
    writer = ChunkWriter(db, config.clock)
    rows, left_out, asns = 0, 0, set()
    for item, kept in frames:
        frame = kept.filter(pl.col("ip").is_in(known.implode())) if item.kind == "ips" else kept
        left_out += kept.height - frame.height
        if item.kind == "asns":
            writer.write_asn_details(frame)
        elif frame.height:
            asns |= write_rows(writer, frame, config.commit_every)
        rows += frame.height
        pending.discard(item)
    writer.recount_asns(sorted(asns))
    writer.close()
    reporter.note(
        f"applied {rows} answer(s) that a stopped run had kept in {pending.folder}"
        + (f"; {left_out} for IPs that {db.url} does not know were left out" if left_out else "")
    )


def _applicable(
    db: Database, pending: PendingAnswers, unknown_owner: bool, reporter: Reporter
) -> list[PendingFile]:
    """The kept files to apply to ``db``, oldest first; one note about each kind left alone."""
    files = pending.files()
    whose = [item.belongs(pending.owner) for item in files]
    this = f"{db.url} (database id {pending.owner or 'none yet'})"
    foreign = whose.count("another")
    if foreign:
        reporter.note(
            f"{foreign} file(s) of answers in {pending.folder} were kept for another database "
            f"than {this}: left alone, never applied here; "
            "`honeypot-etl pending --discard --foreign` removes them"
        )
    if whose.count("unknown") and not unknown_owner:
        reporter.note(
            f"{whose.count('unknown')} file(s) of answers in {pending.folder} do not name the "
            f"database they were kept for: left alone; `honeypot-etl pending --apply` applies "
            f"them to the IPs {db.url} knows, `honeypot-etl pending --discard` removes them"
        )
    wanted = ("this", "unknown") if unknown_owner else ("this",)
    return [item for item, owner in zip(files, whose, strict=True) if owner in wanted]
