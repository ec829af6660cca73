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
from etl.sample.scratch import new_sqlite_file
from etl.sample.world import World


class SampleExistsError(UsageError):
    """The target already holds a database or rows, and ``replace`` was not given."""


@dataclass(frozen=True)
class BuiltSample:
    """What `build_sample` made."""

    url: DatabaseUrl
    states: Counter[str]
    sessions: int
    asns: int
    maxmind_dir: Path
    build_epoch: int


def build_sample(
    db: str,
    ips: int,
    seed: int,
    maxmind_dir: Path,
    replace: bool = False,
    journal_mode: str = "wal",
    maxmind_size: str = "small",
) -> BuiltSample:
    """A sample database at ``db`` with ``ips`` source IPs, and MaxMind files in
    ``maxmind_dir``, all from world ``seed``."""
    if ips <= 0:
        raise UsageError(f"the number of IPs must be positive, got {ips}")
    url = parse_database_url(db, check_folder=False)  # a new sample file: its folder is made
    _clear(url, replace)
    world = World(seed)
    asn_path, _ = write_maxmind_files(world, maxmind_dir, maxmind_size)
    epoch = build_epoch(asn_path)
    if url.dialect == "sqlite":
        assert url.sqlite_path is not None
        new_sqlite_file(url.sqlite_path, journal_mode)
    with Database(url, create=True) as database:
        database.ensure_schema()
        built = build_honeypot(database, world, ips, epoch, seed)
    states = Counter(built.states.values())
    return BuiltSample(url, states, built.sessions, built.asns, maxmind_dir, epoch)


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
        if db.columns("ip_inventory") and db.query_native("SELECT 1 FROM ip_inventory LIMIT 1"):
            if not replace:
                raise SampleExistsError(f"{url} already holds ip_inventory rows")
            db.execute_native(
                [
                    "DELETE FROM session_summaries",
                    "DELETE FROM ip_inventory",
                    "DELETE FROM asn_inventory",
                ]
            )
