"""Scratch databases for the sample, tests and benchmarks: new SQLite files in a journal mode,
PostgreSQL databases created empty and dropped afterwards."""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path


class JournalMode(StrEnum):
    """SQLite journal modes a sample file can have."""

    wal = "wal"  # as cowrieprocessor leaves its files
    delete = "delete"  # rollback journal


JOURNAL_MODES = tuple(mode.value for mode in JournalMode)

PG_SERVER = "postgresql://postgres@127.0.0.1:5432"
PG_ADMIN = f"{PG_SERVER}/postgres"


@contextmanager
def scratch_database(prefix: str, copy_of: str | None = None) -> Iterator[str]:
    """A new database on the local server (trust auth) for the block; its URL. Empty, or a copy
    of the scratch database at URL ``copy_of`` (which must have no open connection)."""
    import psycopg

    name = f"{prefix}_{secrets.token_hex(4)}"
    template = f" TEMPLATE {copy_of.rsplit('/', 1)[1]}" if copy_of else ""
    with psycopg.connect(PG_ADMIN, autocommit=True) as con:
        con.execute(f"CREATE DATABASE {name}{template}")
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as con:
            con.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def new_sqlite_file(path: Path, journal_mode: str = "wal") -> None:
    """Create an empty SQLite file in ``journal_mode``: WAL by default, as operators' files are
    (cowrieprocessor's engine sets it on every connection), or ``delete`` (rollback journal)."""
    if journal_mode not in JOURNAL_MODES:
        raise ValueError(f"journal mode must be one of {', '.join(JOURNAL_MODES)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    set_journal_mode(path, journal_mode)


def set_journal_mode(path: Path, journal_mode: str) -> None:
    """Put the SQLite file at ``path`` (made when absent) in ``journal_mode``."""
    if journal_mode not in JOURNAL_MODES:
        raise ValueError(f"journal mode must be one of {', '.join(JOURNAL_MODES)}")
    connection = sqlite3.connect(path)
    try:
        connection.execute(f"PRAGMA journal_mode = {journal_mode}")
    finally:
        connection.close()
