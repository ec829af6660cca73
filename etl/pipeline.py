"""The refresh, in the order it happens: load -> validate -> MaxMind -> merge -> upsert."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import polars as pl

from etl.config import RefreshConfig, Source
from etl.db.database import Database
from etl.db.select import SelectionRules, select_stale, unknown_ips
from etl.db.url import parse_database_url
from etl.db.write import ChunkWriter
from etl.maxmind import MaxMindDatabases, open_maxmind, with_maxmind
from etl.merge import asn_rows, merged_enrichment
from etl.report import LineReporter, Reporter, RunSummary
from etl.validation import with_validation

# Sources whose clients are not part of this version: never asked, blocks left as they are.
UNAVAILABLE = {
    Source.CYMRU: "Team Cymru lookups are not available in this version: "
    "cymru blocks are left as they are",
    Source.GREYNOISE: "GreyNoise lookups are not available in this version: "
    "greynoise blocks are left as they are",
}


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


def _count_maxmind(frame: pl.DataFrame, summary: RunSummary) -> None:
    counts = summary.sources["maxmind"]
    statuses = frame["maxmind_status"].drop_nulls()
    counts.queried = statuses.len()
    counts.ok = int((statuses == "ok").sum())
    counts.not_found = int((statuses == "not_found").sum())


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
            _count_maxmind(frame, summary)
            if not config.dry_run:
                _write(db, frame, config.commit_every, summary, reporter)
    finally:
        maxmind.close()
        summary.wall_seconds = round(time.monotonic() - started, 3)
    return summary


def _write(
    db: Database, frame: pl.DataFrame, commit_every: int, summary: RunSummary, reporter: Reporter
) -> None:
    writer = ChunkWriter(db)
    try:
        with _phase(summary, reporter, "write", frame.height):
            for chunk in frame.iter_slices(commit_every):
                writer.write(merged_enrichment(chunk), asn_rows(chunk))
                reporter.advanced("write", chunk.height)
    finally:
        summary.upserted = writer.rows_written
        summary.asn_upserted = writer.asn_rows_written
        writer.close()
