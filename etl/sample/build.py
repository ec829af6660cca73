"""Build a sample honeypot database and MaxMind files from one seeded world."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from etl.db.database import Database
from etl.db.url import DatabaseUrl, parse_database_url
from etl.errors import UsageError
from etl.sample.honeypot import build_honeypot
from etl.sample.mmdb_files import build_epoch, write_maxmind_files
from etl.sample.raw_events import EVENTS_PER_SESSION, TABLE
from etl.sample.scratch import JOURNAL_MODES, new_sqlite_file, set_journal_mode
from etl.sample.sessions import Shape
from etl.sample.world import World


class SampleExistsError(UsageError):
    """The target already holds a database or rows, and ``replace`` was not given."""


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
    (`etl.sample.sessions`, `etl.sample.raw_events`)."""
    if ips <= 0:
        raise UsageError(f"the number of IPs must be positive, got {ips}")
    if events <= 0:
        raise UsageError(f"a session has at least one event, got {events}")
    if journal_mode not in JOURNAL_MODES:
        raise ValueError(f"journal mode must be one of {', '.join(JOURNAL_MODES)}")
    url = parse_database_url(db, check_folder=False)  # a new sample file: its folder is made
    _clear(url, replace)
    world = World(seed)
    asn_path, _ = write_maxmind_files(world, maxmind_dir, maxmind_size)
    epoch = build_epoch(asn_path)
    if url.dialect == "sqlite":
        assert url.sqlite_path is not None
        # Filled with a rollback journal (WAL would write every new page twice), then put in
        # the mode asked for.
        new_sqlite_file(url.sqlite_path, "delete")
    with Database(url, create=True) as database:
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


def _clear(url: DatabaseUrl, replace: bool) -> None:
    """Start from an empty database: refuse to mix the sample into existing rows."""
    if url.dialect == "sqlite":
        assert url.sqlite_path is not None
        if url.sqlite_path.exists():
            if not replace:
                raise SampleExistsError(f"{url} already exists")
            url.sqlite_path.unlink()
        return
    with Database(url) as db:
        tables = ("ip_inventory", "session_summaries", TABLE)
        held = [
            t for t in tables if db.columns(t) and db.query_native(f"SELECT 1 FROM {t} LIMIT 1")
        ]
        if held and not replace:
            raise SampleExistsError(f"{url} already holds {' and '.join(held)} rows")
        statements = [
            f"DELETE FROM {table}"
            for table in ("session_summaries", "ip_inventory", "asn_inventory")
            if held and db.columns(table)
        ]
        if db.columns(TABLE):  # the sample makes it anew (empty, or being replaced)
            statements.append(f"DROP TABLE {TABLE}")
        if statements:
            db.execute_native(statements)
