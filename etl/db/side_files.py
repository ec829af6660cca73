"""The files kept beside a SQLite database file: SQLite's own (its journal, the WAL and the
WAL's index) and ours (the run lock, the folder of kept answers). One place names them, for
the run lock, the kept answers, the output guard and the sample's replace rules.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

# SQLite's files beside a database: the rollback journal, the WAL and its shared-memory index.
JOURNAL_SUFFIXES: Final = ("-wal", "-shm", "-journal")


def journal_paths(database: Path) -> list[Path]:
    """SQLite's own files beside ``database`` (whether they exist or not)."""
    return [database.with_name(database.name + suffix) for suffix in JOURNAL_SUFFIXES]


def run_lock_path(database: Path) -> Path:
    """The file whose ``flock`` is a database's run lock, beside it."""
    return database.with_name(database.name + ".etl-lock")


def pending_path(database: Path) -> Path:
    """The folder of answers a stopped run kept (``<database>.etl-pending``), beside it."""
    return database.with_name(database.name + ".etl-pending")
