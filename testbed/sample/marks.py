"""What the sample builder (and so the demo) made, told by marks it leaves, so that it replaces
nothing else.

- A MaxMind file of the sample says so in its metadata description (`mmdb_description`);
  MaxMind's own files describe themselves otherwise ("GeoLite2 ASN database", ...).
- A database of the sample holds the table ``etl_sample`` (`SAMPLE_TABLE`, one row: seed, IPs,
  shape, build epoch). Neither cowrieprocessor nor the refresh makes a table of that name, and
  cowrieprocessor's migrations leave tables they do not know alone.

Looking changes nothing: an .mmdb file is only read; a SQLite file is opened read-only and
immutable, so no journal, ``-wal`` or ``-shm`` file is made beside it.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Final

import maxminddb

from etl.db.dialect import sql_string
from etl.db.pending import PendingAnswers
from etl.db.side_files import journal_paths
from etl.db.url import DatabaseUrl
from etl.sources.maxmind.check import READ_ERRORS
from etl.sources.maxmind.steps import ASN_FILES, CITY_FILES

SAMPLE_TABLE: Final = "etl_sample"
# The files a refresh reads from its MaxMind folder: the sample's would stand in for any of them.
MAXMIND_FILES: Final = (*ASN_FILES, *CITY_FILES)
# What SQLite keeps beside a database file: a stale one would be replayed into a new file.
_UNREADABLE: Final[tuple[type[Exception], ...]] = (*READ_ERRORS, OSError, KeyError)


def mmdb_description(database_type: str) -> dict[str, str]:
    """The metadata description of the sample's ``database_type`` file: its mark."""
    return {"en": f"Synthetic {database_type} of the honeypot-etl sample world"}


def is_sample_mmdb(path: Path) -> bool:
    """Whether the .mmdb file at ``path`` was written by the sample (False when unreadable)."""
    try:
        with maxminddb.open_database(str(path)) as reader:
            metadata = reader.metadata()
            return bool(metadata.description == mmdb_description(metadata.database_type))
    except _UNREADABLE:
        return False


def foreign_maxmind(folder: Path) -> list[Path]:
    """The MaxMind files a refresh would read from ``folder`` that the sample did not write."""
    paths = [folder / name for name in MAXMIND_FILES]
    return [path for path in paths if path.exists() and not is_sample_mmdb(path)]


def mark_statements(seed: int, ips: int, shape: str, build_epoch: int) -> list[str]:
    """SQL (either dialect) that leaves the sample's mark in a database it has built."""
    return [
        f"CREATE TABLE {SAMPLE_TABLE} (seed BIGINT NOT NULL, ips BIGINT NOT NULL, "
        "shape TEXT NOT NULL, build_epoch BIGINT NOT NULL)",
        f"INSERT INTO {SAMPLE_TABLE} VALUES ({int(seed)}, {int(ips)}, {sql_string(shape)}, "
        f"{int(build_epoch)})",
    ]


def is_sample_sqlite(path: Path) -> bool:
    """Whether the SQLite file at ``path`` holds the sample's mark (False when it is no SQLite
    file or cannot be read). Read-only and immutable: nothing is written, nothing made."""
    try:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True)
    except (sqlite3.Error, OSError):
        return False
    try:
        found = connection.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (SAMPLE_TABLE,)
        ).fetchone()
    except sqlite3.Error:
        return False
    finally:
        connection.close()
    return found is not None


def sqlite_files(url: DatabaseUrl) -> list[Path]:
    """A SQLite database's file, the journal files SQLite keeps beside it and the folder of
    answers kept for it (`etl.db.pending`), whether they exist or not."""
    assert url.sqlite_path is not None
    path = url.sqlite_path
    return [
        path,
        *journal_paths(path),
        PendingAnswers.of(url).folder,
    ]


def foreign_sqlite(url: DatabaseUrl) -> list[Path]:
    """What a new sample at the SQLite ``url`` would replace without having made it: the file
    when it has no mark; with no file (or an empty one, as the sample's is for a moment before
    its mark), what an earlier database left there (kept answers, a journal)."""
    path, *leftovers = sqlite_files(url)
    if _holds_something(path):
        return [] if is_sample_sqlite(path) else [path]
    return [left for left in leftovers if _holds_something(left)]


def _holds_something(path: Path) -> bool:
    """Whether ``path`` has anything to lose: a file with bytes, a folder with files, any
    symbolic link. Never a ``-shm`` file: only SQLite's index of the ``-wal``, made anew."""
    if path.is_symlink():
        return True
    if path.name.endswith("-shm") or not path.exists():
        return False
    return any(path.iterdir()) if path.is_dir() else path.stat().st_size > 0


def remove_sqlite(url: DatabaseUrl) -> None:
    """Remove a SQLite database: its file, journals and kept answers."""
    for path in sqlite_files(url):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
