"""Build a sample honeypot database and MaxMind files from one seeded world."""

from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from etl.core.errors import UsageError
from etl.db.database import Database
from etl.db.ddl import IDENTITY_TABLE
from etl.db.pending import PendingAnswers
from etl.db.url import DatabaseUrl, parse_database_url
from testbed.sample.honeypot import build_honeypot
from testbed.sample.marks import (
    SAMPLE_TABLE,
    foreign_maxmind,
    foreign_sqlite,
    is_sample_sqlite,
    mark_statements,
    remove_sqlite,
)
from testbed.sample.mmdb_files import build_epoch, write_maxmind_files
from testbed.sample.raw_events import EVENTS_PER_SESSION, TABLE
from testbed.sample.scratch import JOURNAL_MODES, new_sqlite_file, set_journal_mode
from testbed.sample.sessions import Shape
from testbed.sample.world import World


class SampleExistsError(UsageError):
    """The target already holds a database, rows or MaxMind files, and ``replace`` was not
    given."""


@dataclass(frozen=True)
class BuiltSample:
    """What `build_sample` made (``linked``: sessions whose source_ip is set)."""

    url: DatabaseUrl
    states: Counter[str]
    sessions: int
    asns: int
    maxmind_dir: Path
    build_epoch: int
    shape: Shape = "loader"
    linked: int = 0
    raw_events: int = 0


def build_sample(
    db: str,
    ips: int,
    seed: int,
    maxmind_dir: Path,
    replace: bool = False,
    journal_mode: str = "wal",
    maxmind_size: str = "small",
    shape: Shape = "loader",
    events: int = EVENTS_PER_SESSION,
) -> BuiltSample:
    """A sample database at ``db`` with ``ips`` source IPs, and MaxMind files in
    ``maxmind_dir``, all from world ``seed``. ``shape``: ``loader`` (sessions as
    cowrieprocessor's loader leaves them: source_ip NULL until the IP had a row) or
    ``migrated_v16`` (source_ip on every session); ``events``: raw events per session
    (`testbed.sample.sessions`, `testbed.sample.raw_events`).

    Without ``replace`` it refuses (`SampleExistsError`, before writing anything) an existing
    database, and MaxMind files it did not write (`testbed.sample.marks`); its own MaxMind files
    it writes anew. A database it replaces goes with its journals and kept answers."""
    if ips <= 0:
        raise UsageError(f"the number of IPs must be positive, got {ips}")
    if events <= 0:
        raise UsageError(f"a session has at least one event, got {events}")
    if journal_mode not in JOURNAL_MODES:
        raise ValueError(f"journal mode must be one of {', '.join(JOURNAL_MODES)}")
    url = parse_database_url(db, check_folder=False)  # a new sample file: its folder is made
    if not replace:
        _refuse_existing(url, maxmind_dir)
    _clear(url)
    world = World(seed)
    asn_path, _ = write_maxmind_files(world, maxmind_dir, maxmind_size)
    epoch = build_epoch(asn_path)
    if url.dialect == "sqlite":
        assert url.sqlite_path is not None
        # Filled with a rollback journal (WAL would write every new page twice), then put in
        # the mode asked for.
        new_sqlite_file(url.sqlite_path, "delete")
    with Database(url, create=True) as database:
        # Marked first: a build cut short is still the sample's own, rebuilt on the next run.
        database.execute_native(mark_statements(seed, ips, shape, epoch))
        database.ensure_schema()
        built = build_honeypot(database, world, ips, epoch, seed, shape=shape, events=events)
    if url.sqlite_path is not None:
        set_journal_mode(url.sqlite_path, journal_mode)
    states = Counter(built.states.values())
    return BuiltSample(
        url,
        states,
        built.sessions,
        built.asns,
        maxmind_dir,
        epoch,
        shape,
        built.linked,
        built.raw_events,
    )


def _refuse_existing(url: DatabaseUrl, maxmind_dir: Path) -> None:
    """Refuse a database that exists or holds rows, and MaxMind files the sample did not write
    (`SampleExistsError`)."""
    if url.dialect == "sqlite":
        assert url.sqlite_path is not None
        foreign = foreign_sqlite(url)
        if foreign and foreign[0] == url.sqlite_path:
            raise SampleExistsError(
                f"{url.sqlite_path} already exists and is no sample database (it has no "
                f"{SAMPLE_TABLE} table); pass --replace to replace it"
            )
        if foreign:
            raise SampleExistsError(
                f"{_listed(foreign)} left by an earlier database at {url.sqlite_path} (kept "
                "answers, journal files); pass --replace to remove them"
            )
        if is_sample_sqlite(url.sqlite_path):
            raise SampleExistsError(
                f"{url.sqlite_path} already exists (an earlier sample); pass --replace to "
                "rebuild it"
            )
    else:
        with Database(url) as db:
            held = _held(db)
            ours = bool(db.columns(SAMPLE_TABLE))
        if held:
            what = "an earlier sample" if ours else f"{' and '.join(held)} rows"
            raise SampleExistsError(f"{url} already holds {what}; pass --replace to replace it")
    foreign_files = foreign_maxmind(maxmind_dir)
    if foreign_files:
        raise SampleExistsError(
            f"{_listed(foreign_files)} not written by the sample (MaxMind's own?); pass "
            "--replace to write the sample's over them, or choose another --maxmind-dir"
        )


def _listed(paths: list[Path]) -> str:
    """``a was`` or ``a, b were``."""
    return f"{', '.join(map(str, paths))} {'was' if len(paths) == 1 else 'were'}"


def _held(db: Database) -> list[str]:
    """The sample's tables that hold rows."""
    tables = ("ip_inventory", "session_summaries", TABLE)
    return [t for t in tables if db.columns(t) and db.query_native(f"SELECT 1 FROM {t} LIMIT 1")]


def _clear(url: DatabaseUrl) -> None:
    """Start from an empty database (checked by `_refuse_existing` unless replacing): a SQLite
    file goes with its journals and kept answers; a PostgreSQL database loses the sample's rows
    and tables, and the answers kept for it in the default state folder."""
    if url.dialect == "sqlite":
        remove_sqlite(url)
        return
    with Database(url) as db:
        held = _held(db)
        statements = [
            f"DELETE FROM {table}"
            for table in ("session_summaries", "ip_inventory", "asn_inventory")
            if held and db.columns(table)
        ]
        # The sample makes these anew (empty, or being replaced); a new database gets a new id
        # (answers kept for the old one are never applied to it).
        tables = (TABLE, SAMPLE_TABLE, IDENTITY_TABLE)
        statements += [f"DROP TABLE {t}" for t in tables if db.columns(t)]
        if statements:
            db.execute_native(statements)
    if held:
        shutil.rmtree(PendingAnswers.of(url).folder, ignore_errors=True)
