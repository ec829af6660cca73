"""Where the data of a honeypot database stands (`status_report`), read-only.

It asks no service and writes nothing: the database is opened read-only (`Database(...,
read_only=True)`), so neither the run log nor any other table is created. Freshness comes from
the selection's own rules (`etl.db.select.freshness_counts`, each source's TTL), the
GreyNoise Searches and the last runs from the run log (`etl.db.runlog`), the MaxMind build
ages from the files' metadata (`etl.sources.maxmind.steps.open_maxmind`).

A run killed before its end (``kill -9``) leaves its row ``running`` until the next run marks
it ``killed``; the report shows it ``killed`` already when no refresh holds the run lock
(`runs_as_found`: `etl.db.lock.lock_is_free`, a probe that waits for nothing and is released
at once). The status file of a killed run keeps saying ``running``: only this report knows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from etl import __version__
from etl.core.clock import utc_day
from etl.core.errors import DatabaseError, SettingError
from etl.core.freshness import DataVersion
from etl.core.vocabulary import SOURCES, Source
from etl.db import runlog
from etl.db.database import Database
from etl.db.lock import lock_is_free
from etl.db.select import SelectionRules, freshness_counts
from etl.db.sessions import (
    SESSIONS_SCHEMA,
    FoundSessions,
    find_sessions,
    without_address,
)
from etl.refresh.config import RefreshConfig
from etl.refresh.sources import lists_source
from etl.report.metrics import render_state_metrics
from etl.sources.classification.source import ClassificationSource
from etl.sources.maxmind.steps import MaxMindDatabases, open_maxmind

FORECAST_DAYS = 7
# not_known: Cymru, IPs seen only in sessions (needed only if MaxMind has no ASN for them)
STATES = ("fresh", "stale", "error", "never", "not_needed", "not_known")
RUN_COLUMNS = (
    "run_id", "started_at", "ended_at", "outcome", "exit_code", "selected", "ip_rows_written",
    "asn_rows_written", "greynoise_searches", "greynoise_search_cap", "stopped", "error",
)  # fmt: skip


# A run's per-IP errors, all sources together (a run log frame's column).
RUN_ERRORS = pl.sum_horizontal(f"{source}_error" for source in SOURCES).alias("errors")


@dataclass(frozen=True)
class SourceStatus:
    """One source's IPs by state, and how many of the fresh ones go stale on each of the next
    UTC days (today first)."""

    states: dict[str, int]
    going_stale: dict[str, int]
    askable: bool = True  # False: a refresh does not ask it (skipped; the labels without lists)

    @property
    def due(self) -> int:
        """IPs a refresh would ask this source about now: stale, error or never asked (none
        when it cannot be asked: a backlog alert on them could not be cleared by a refresh)."""
        if not self.askable:
            return 0
        return sum(self.states[state] for state in ("stale", "error", "never"))


@dataclass(frozen=True)
class SearchStatus:
    """GreyNoise Searches on one UTC day, from the run log."""

    day: str
    spent: int  # by runs that ended
    reserved: int  # by runs still running, or killed
    daily_budget: int | None
    left: int | None


@dataclass(frozen=True)
class MaxMindBuild:
    """One MaxMind file and how old its build is."""

    kind: str
    path: str
    built: str  # ISO-8601 UTC
    age_days: float


@dataclass(frozen=True)
class ListAge:
    """One infrastructure list in the lists folder: its entries and how long since its source
    last confirmed it (``old``: past the age that gets a warning, SPEC 3.4)."""

    name: str
    entries: int
    age_days: float
    old: bool


@dataclass(frozen=True)
class StatusReport:
    """What `status_report` found; `to_dict` for JSON."""

    database: str  # the URL, without its password
    at: str  # ISO-8601 UTC
    inventory_ips: int  # IPs a source is asked about (not bogons, usable enrichment)
    session_only_ips: int  # of them, seen in sessions but not in ip_inventory yet (new)
    unlinked_sessions: int  # sessions the loader left without source_ip, with an address
    unlinked_ips: int  # their IPs without an inventory row (new, not yet enriched)
    sessions_without_address: int  # sessions without source_ip whose events name no address
    # (found now, or by an earlier run: they stay as they are)
    bogons: int  # bogons and strings that are not IPs: never asked
    unusable: int  # rows whose enrichment is not a JSON object: left alone
    sources: dict[str, SourceStatus]
    searches: SearchStatus
    maxmind: list[MaxMindBuild]
    runs: list[dict[str, Any]]  # newest first
    notes: list[str] = field(default_factory=list)
    lists_dir: str = ""  # the infrastructure lists' folder, and each list found there
    lists: list[ListAge] = field(default_factory=list)
    lists_missing: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary (the ``due`` count of each source included)."""
        data = asdict(self)
        for name, source in self.sources.items():
            data["sources"][name]["due"] = source.due
        return data


def state_metrics_text(report: StatusReport) -> str:
    """The state metrics of ``report`` (`etl.report.metrics.render_state_metrics`): its
    ``due`` count of each source, the installed version, and the report's time."""
    due = {name: source.due for name, source in report.sources.items()}
    at = datetime.fromisoformat(report.at).timestamp()
    return render_state_metrics(due, __version__, at)


def status_report(
    config: RefreshConfig, runs: int = 10, forecast_days: int = FORECAST_DAYS
) -> StatusReport:
    """The status of the database ``config`` names, at ``config.clock()``, with its last
    ``runs`` runs and ``forecast_days`` days of forecast. Raises `SettingError` (exit 2) for a
    SQLite file that does not exist and `MaxMindError` for a named MaxMind file that cannot be
    used."""
    with reading(config) as (db, maxmind, now):
        return gather(db, config, maxmind, now, runs, forecast_days)


@contextmanager
def reading(config: RefreshConfig) -> Iterator[tuple[Database, MaxMindDatabases, datetime]]:
    """The database ``config`` names, opened read-only, its MaxMind files, and the time
    (``config.clock()``): what the report, and the notebook's reads, look at."""
    url = config.database.check_folder()
    if url.sqlite_path is not None and not url.sqlite_path.is_file():
        raise SettingError(
            "db_url", f"names a SQLite database that does not exist: {url.sqlite_path}"
        )
    now = config.clock()
    maxmind = open_maxmind(
        asn=config.maxmind_asn, city=config.maxmind_city, directory=config.maxmind_dir, now=now
    )
    try:
        with Database(url, read_only=True, lock_timeout=config.lock_timeout) as db:
            yield db, maxmind, now
    finally:
        maxmind.close()


def gather(
    db: Database,
    config: RefreshConfig,
    maxmind: MaxMindDatabases,
    now: datetime,
    runs: int = 10,
    forecast_days: int = FORECAST_DAYS,
    found: FoundSessions | None = None,
) -> StatusReport:
    """The `StatusReport` of an open database (see `reading`); ``found``: its sessions
    (`sessions_found`), read here when not given."""
    notes = list(maxmind.notes)
    labels = lists_source(config, now)
    missing = _missing_tables(db)
    no_address = 0
    if missing:
        found = FoundSessions(pl.DataFrame(schema=SESSIONS_SCHEMA))
        notes.append(f"{db.url} has no {' or '.join(missing)} table: nothing to count yet")
        counts = pl.DataFrame(schema={"source": pl.String, "state": pl.String,
                                      "stale_on": pl.Date, "ips": pl.Int64})  # fmt: skip
    else:
        # MaxMind's build: a block of an older one is stale (the TTLs count the rest)
        versions = {
            Source.MAXMIND: DataVersion(maxmind.build_epoch),
            Source.CLASSIFICATION: labels.version,
        }
        rules = SelectionRules(now, config.freshness, frozenset(SOURCES), versions)
        found = find_sessions(db) if found is None else found
        notes += found.notes
        no_address = without_address(db, found)
        counts = freshness_counts(db, rules, found)
    if not runlog.has_run_log(db):
        notes.append("no run log yet: no refresh has written to this database")
    inventory = counts.filter(pl.col("source") == "inventory")
    today = utc_day(now)
    return StatusReport(
        database=str(db.url),
        at=now.isoformat(),
        inventory_ips=_count(counts.filter(pl.col("source") == "maxmind")),
        **_sessions(found),
        sessions_without_address=no_address,
        bogons=_count(inventory.filter(pl.col("state") == "bogon")),
        unusable=_count(inventory.filter(pl.col("state") == "unusable")),
        sources={
            s: _source(counts, s, today, forecast_days, _askable(config, s, labels))
            for s in SOURCES
        },
        searches=_searches(db, config.greynoise_daily_budget, today),
        maxmind=_builds(maxmind, now),
        runs=_runs(db, runs),
        notes=notes,
        lists_dir=str(config.lists_dir),
        lists=_list_ages(labels),
        lists_missing=labels.missing,
    )


def _missing_tables(db: Database) -> list[str]:
    return [table for table in ("ip_inventory", "session_summaries") if not db.columns(table)]


def sessions_found(db: Database) -> FoundSessions:
    """The sessions of IPs without an inventory row and those to link (`find_sessions`), as
    `gather` counts them: none when a table is missing."""
    if _missing_tables(db):
        return FoundSessions(pl.DataFrame(schema=SESSIONS_SCHEMA))
    return find_sessions(db)


def _count(frame: pl.DataFrame) -> int:
    return int(frame["ips"].sum()) if frame.height else 0


def _askable(config: RefreshConfig, source: str, labels: ClassificationSource) -> bool:
    """Whether a refresh with ``config`` asks ``source``: not skipped, and for the labels with
    lists there (GreyNoise without a key is still due: a key is all it takes)."""
    return Source(source) not in config.skip and (source != labels.name or labels.available)


def _source(
    counts: pl.DataFrame, source: str, today: date, forecast_days: int, askable: bool
) -> SourceStatus:
    mine = counts.filter(pl.col("source") == source)
    states = {state: _count(mine.filter(pl.col("state") == state)) for state in STATES}
    days = [today + timedelta(days=n) for n in range(forecast_days)]
    going = {day.isoformat(): _count(mine.filter(pl.col("stale_on") == day)) for day in days}
    return SourceStatus(states, going, askable)


def _sessions(found: FoundSessions) -> dict[str, int]:
    """IPs seen only in sessions, and the sessions the loader left without source_ip."""
    new = found.of_new_ips()
    unlinked = found.sessions.filter(pl.col("unlinked"))
    return {
        "session_only_ips": new["ip"].n_unique(),
        "unlinked_sessions": unlinked.height,
        "unlinked_ips": unlinked.filter(~pl.col("has_row"))["ip"].n_unique(),
    }


def _searches(db: Database, daily_budget: int | None, today: date) -> SearchStatus:
    spent, reserved = runlog.day_searches(db, today)
    left = None if daily_budget is None else max(0, daily_budget - spent - reserved)
    return SearchStatus(today.isoformat(), spent, reserved, daily_budget, left)


def _builds(maxmind: MaxMindDatabases, now: datetime) -> list[MaxMindBuild]:
    builds = []
    for kind, database in (("asn", maxmind.asn), ("city", maxmind.city)):
        if database is not None:
            built = datetime.fromtimestamp(database.build_epoch, now.tzinfo)
            age = round((now - built).total_seconds() / 86_400, 1)
            builds.append(MaxMindBuild(kind, str(Path(database.path)), built.isoformat(), age))
    return builds


def _list_ages(labels: ClassificationSource) -> list[ListAge]:
    """Each list read: its entries (Tor exits, or ranges) and age."""
    old, entries = set(labels.old), labels.entries
    return [
        ListAge(name, entries[name], round(age.total_seconds() / 86_400, 1), name in old)
        for name, age in labels.ages.items()
    ]


def runs_as_found(db: Database, read: Callable[[], pl.DataFrame]) -> pl.DataFrame:
    """The run log frame ``read`` gives, its ``running`` rows shown ``killed`` when no refresh
    holds the run lock: free before the read and still free after it (a run that ended, or
    one that started, in between is not taken for a dead one). A lock that cannot be probed
    leaves the rows as they are."""
    free = _lock_free(db)
    frame = read()
    running = pl.col("outcome") == "running"
    if free and not frame.filter(running).is_empty() and _lock_free(db):
        outcome = pl.when(running).then(pl.lit("killed")).otherwise(pl.col("outcome"))
        frame = frame.with_columns(outcome.alias("outcome"))
    return frame


def _lock_free(db: Database) -> bool:
    try:
        return lock_is_free(db.url)
    except DatabaseError:
        return False


def _runs(db: Database, limit: int) -> list[dict[str, Any]]:
    if not limit:
        return []
    frame = runs_as_found(db, lambda: runlog.recent_runs(db, limit))
    frame = frame.select(*RUN_COLUMNS, RUN_ERRORS)
    rows = frame.with_columns(
        pl.col("started_at", "ended_at").dt.to_string("%Y-%m-%dT%H:%M:%S%.6f+00:00")
    ).to_dicts()
    return rows
