"""Is it a cowrieprocessor database? Found out read-only, before anything is written to it.

A refresh (`etl.refresh.pipeline.check_before_work`, and again before its run lock is taken) and
`honeypot-etl status` (`Database(..., read_only=True)`) first look at what the database URL
names, without creating or changing anything: SQLite's schema through a connection that cannot
create the file, PostgreSQL's catalog through one query.

    no database at all: a text file, a damaged SQLite file,  `UnusableDatabaseError`
    a PostgreSQL database or role that does not exist         (exit 2, one line)
    none of cowrieprocessor's tables: a 0-byte file, Cowrie's `SchemaError` (exit 2), unless
    own SQLite output, another application's tables           the run may create them (--create)
    cowrieprocessor's, but a tier lacks a column the refresh  `SchemaError` naming what is
    needs, or neither session_summaries nor ip_inventory      missing (--create adds absent
    is there to select from                                   tables, never columns)

"cowrieprocessor's tables" are the tables its migrations create, at any schema version
(`COWRIEPROCESSOR_TABLES`): a real database of an older schema, with session_summaries and
raw_events but no inventory tables yet, is recognised, and the run creates the absent tiers.
A busy database or a server that does not answer is no verdict: `DatabaseError` (exit 1).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from etl.core.errors import DatabaseBusyError, DatabaseError, SchemaError, UnusableDatabaseError
from etl.db import ddl
from etl.db.url import DatabaseUrl, redact

# Seconds a run waits, in all, for another writer's lock (or a lost PostgreSQL server): the
# default of the lock_timeout setting (`etl.refresh.config`), of `Database` and of the reads here.
DEFAULT_LOCK_TIMEOUT: Final = 300.0

# The tables of a cowrieprocessor database (shared/compat/cowrieprocessor-sqlite.sql: every
# table its ORM and migrations create, schema_version 17; older versions have a subset).
COWRIEPROCESSOR_TABLES: Final = frozenset({
    "schema_state", "schema_metadata", "raw_events", "command_stats", "ingest_cursors",
    "dead_letter_events", "files", "snowshoe_detections", "longtail_analysis",
    "password_statistics", "password_tracking", "ssh_key_intelligence", "enrichment_cache",
    "asn_inventory", "ip_asn_history", "longtail_detections", "longtail_analysis_checkpoints",
    "session_ssh_keys", "ssh_key_associations", "ip_inventory", "session_summaries",
    "longtail_detection_sessions", "password_session_usage",
})  # fmt: skip
# What a refresh selects from: sessions, or inventory rows (the other tiers it creates).
SELECTED_FROM: Final = ("session_summaries", "ip_inventory")
# Tables of Cowrie's own SQLite output plugin (cowrie/output/sqlite.py): named in the error,
# since that file is the one an operator is most likely to point --db at by mistake.
COWRIE_OUTPUT_TABLES: Final = frozenset({"auth", "clients", "input", "sensors", "sessions"})

# Columns the refresh reads or writes; anything else in the tables is left alone.
REQUIRED_COLUMNS: Final[Mapping[str, tuple[str, ...]]] = {
    "asn_inventory": (
        "asn_number",
        "organization_name",
        "organization_country",
        "rir_registry",
        "first_seen",
        "last_seen",
        "unique_ip_count",
        "total_session_count",
        "enrichment",
        "enrichment_updated_at",
        "created_at",
        "updated_at",
    ),
    "ip_inventory": (
        "ip_address",
        "current_asn",
        "asn_last_verified",
        "first_seen",
        "last_seen",
        "session_count",
        "enrichment",
        "enrichment_updated_at",
        "enrichment_version",
        "created_at",
        "updated_at",
    ),
    "session_summaries": ("session_id", "source_ip", "first_event_at", "last_event_at"),
}

# What SQLite and PostgreSQL say when the URL names no database that can be used: fixing --db
# (or the server's roles) is the cure, not waiting.
_SQLITE_UNUSABLE: Final = {
    sqlite3.SQLITE_NOTADB: "is not a SQLite database",
    sqlite3.SQLITE_CORRUPT: "is damaged",
}
_POSTGRES_UNUSABLE: Final = re.compile(
    r'(?:database|role) "[^"]*" does not exist|password authentication failed for user "[^"]*"'
)
POSTGRES_CONNECT_TIMEOUT: Final = 30
_SHOWN_TABLES: Final = 6


@dataclass(frozen=True)
class Contents:
    """The tables of a database, as far as the refresh cares. ``exists``: False for a SQLite
    file that is not there yet. ``columns``: each of cowrieprocessor's tables found -> its
    columns (lower case). ``others``: the names of the other tables."""

    url: DatabaseUrl
    exists: bool
    columns: Mapping[str, frozenset[str]]
    others: tuple[str, ...] = ()

    def problem(
        self, create: bool, shape: bool = True, how: str = "pass --create to"
    ) -> str | None:
        """Why a run cannot use this database, or None. ``create``: absent tables may be
        created (not absent columns; in a database of no tables or of cowrieprocessor's, never
        in another application's); ``shape``: also check the tables the run reads and
        writes; ``how``: how to have them created ("pass --create to")."""
        if not self.exists or (create and not self.columns and not self.others):
            return None
        if not self.columns and self.others:  # another application's: --create never writes
            return (
                f"{self.url} has none of cowrieprocessor's tables ({self._others()}): it is "
                "another application's database, which the refresh never writes; point --db "
                "at a cowrieprocessor database, or at a new file with --create"
            )
        if not self.columns:
            return (
                f"{self.url} has none of cowrieprocessor's tables ({self._others()}); "
                f"{how} initialise it"
            )
        if not shape:
            return None
        for table, required in REQUIRED_COLUMNS.items():
            present = self.columns.get(table)
            missing = [c for c in required if present is not None and c not in present]
            if missing:
                return (
                    f"table {table} of {self.url} exists but lacks column(s) "
                    f"{', '.join(missing)}: this is not a cowrieprocessor database the refresh "
                    "can use (cowrieprocessor's migrations add them)"
                )
        if not create and not any(table in self.columns for table in SELECTED_FROM):
            found = ", ".join(sorted(self.columns))
            return (
                f"{self.url} has cowrieprocessor's table(s) {found} but neither "
                f"{' nor '.join(SELECTED_FROM)}, which the refresh selects from; "
                f"{how} create them"
            )
        return None

    def _others(self) -> str:
        if not self.others:
            return "it has no tables at all"
        shown = ", ".join(self.others[:_SHOWN_TABLES])
        left = len(self.others) - _SHOWN_TABLES
        more = f" and {left} more" if left > 0 else ""
        if COWRIE_OUTPUT_TABLES.issubset(self.others):
            return f"it has {shown}{more}: Cowrie's own SQLite output, not cowrieprocessor's"
        return f"it has {shown}{more}"


def recognise(
    url: DatabaseUrl,
    *,
    create: bool = False,
    shape: bool = True,
    read_only: bool = False,
    timeout: float = DEFAULT_LOCK_TIMEOUT,
) -> Contents:
    """Look at the database (`read_contents`); raise `SchemaError` when a run cannot use it
    (`Contents.problem`). ``read_only``: the caller has no --create (``honeypot-etl status``)."""
    contents = read_contents(url, read_only=read_only, timeout=timeout)
    how = "run a refresh with --create to" if read_only else "pass --create to"
    problem = contents.problem(create, shape, how)
    if problem:
        raise SchemaError(problem)
    return contents


def read_contents(
    url: DatabaseUrl, *, read_only: bool = False, timeout: float = DEFAULT_LOCK_TIMEOUT
) -> Contents:
    """The tables of the database ``url`` names, read without writing anything: SQLite through
    a connection that cannot create the file (``read_only``: that cannot write at all; else a
    hot journal left by a crashed writer is rolled back, as any connection would),
    PostgreSQL from its catalog. ``timeout``: how long SQLite waits for another writer's lock.
    Raises `UnusableDatabaseError` for what is no database, `DatabaseBusyError` or
    `DatabaseError` (exit 1) for one that does not answer now."""
    if url.sqlite_path is not None:
        if not url.sqlite_path.is_file():
            return Contents(url, exists=False, columns={})
        return _contents(url, _sqlite_tables(url, read_only, timeout))
    return _contents(url, _postgres_tables(url))


def _contents(url: DatabaseUrl, tables: Mapping[str, set[str]]) -> Contents:
    ours = {name: frozenset(tables[name]) for name in tables if name in COWRIEPROCESSOR_TABLES}
    others = tuple(sorted(name for name in tables if name not in COWRIEPROCESSOR_TABLES))
    return Contents(url, exists=True, columns=ours, others=others)


def _sqlite_tables(url: DatabaseUrl, read_only: bool, timeout: float) -> dict[str, set[str]]:
    """Table -> columns (lower case) of a SQLite file, from its schema; the tiers' columns
    only (the others are named, not read)."""
    assert url.sqlite_path is not None
    uri = f"{url.sqlite_path.resolve().as_uri()}?mode={'ro' if read_only else 'rw'}"
    try:
        con = sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None)
    except sqlite3.Error as exc:
        raise sqlite_open_error(url, exc) from exc
    try:
        rows = con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' "
            "ESCAPE '\\'"
        ).fetchall()
        tables: dict[str, set[str]] = {str(name).lower(): set() for (name,) in rows}
        for table in ddl.TIER_TABLES:
            if table in tables:
                info = con.execute("SELECT name FROM pragma_table_info(?)", (table,)).fetchall()
                tables[table] = {str(name).lower() for (name,) in info}
    except sqlite3.Error as exc:
        raise sqlite_open_error(url, exc) from exc
    finally:
        con.close()
    return tables


def sqlite_open_error(url: DatabaseUrl, exc: sqlite3.Error) -> DatabaseError:
    """The project's error for a SQLite file that could not be opened or read: exit 2 for a
    file that is no database or is damaged, 1 for a lock held too long or anything else."""
    path = url.sqlite_path
    code = getattr(exc, "sqlite_errorcode", None)
    unusable = _SQLITE_UNUSABLE.get(code & 0xFF) if code is not None else None
    if unusable:
        cure = "check --db" if unusable.startswith("is not") else "restore it from a backup"
        return UnusableDatabaseError(f"SQLite file {path} {unusable} ({exc}): {cure}")
    if "database is locked" in str(exc).lower():
        return DatabaseBusyError(f"SQLite database {path}: another process holds its lock ({exc})")
    return DatabaseError(f"cannot open SQLite database {str(path)!r}: {exc}")


def _postgres_tables(url: DatabaseUrl) -> dict[str, set[str]]:
    """Table -> columns of schema ``public``, from ``pg_catalog`` (which lists tables this user
    may not read, unlike ``information_schema``: what it may not write is said later)."""
    import psycopg

    try:
        with psycopg.connect(
            url.libpq_url, autocommit=True, connect_timeout=POSTGRES_CONNECT_TIMEOUT
        ) as con:
            rows = con.execute(
                "SELECT c.relname, a.attname FROM pg_catalog.pg_class AS c "
                "JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace "
                "LEFT JOIN pg_catalog.pg_attribute AS a ON a.attrelid = c.oid "
                "AND a.attnum > 0 AND NOT a.attisdropped "
                "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'f')"
            ).fetchall()
    except psycopg.Error as exc:
        raise postgres_connect_error(url, str(exc)) from None
    tables: dict[str, set[str]] = {}
    for table, column in rows:
        tables.setdefault(str(table), set()).update([str(column)] if column else [])
    return tables


def postgres_connect_error(url: DatabaseUrl, message: str) -> DatabaseError:
    """The project's error for a failed PostgreSQL connection (``message``: the driver's):
    exit 2 when the database or the role does not exist or the password is refused, else
    (server down, unreachable) exit 1. The password is never in it."""
    text = redact(message, url.secrets())
    found = _POSTGRES_UNUSABLE.search(text)
    if found:
        return UnusableDatabaseError(f"cannot use PostgreSQL {url}: {found.group(0)}")
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    reason = lines[0] if lines else "connection failed"
    return DatabaseError(f"cannot connect to PostgreSQL {url}: {reason}")
