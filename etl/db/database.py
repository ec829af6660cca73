"""An open honeypot database: DuckDB attachment for bulk reads, native SQL for writes.

DuckDB attaches the target as ``db``; the selection and other bulk reads go through it
(`Database.query_frame`; for SQLite in a child process, see `etl.db.reader`). What
differs between SQLite and PostgreSQL (attaching, staging, the native merge, the run lock,
which errors are transient) is the database's `Backend` (`etl.db.dialect`); this module is
written once for both.

Every write is a unit (`Database.write`) that is retried as a whole while another process holds
the SQLite write lock or the PostgreSQL connection was lost, for up to ``lock_timeout`` seconds
(SPEC 2.3, 4); then it raises `DatabaseBusyError`.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import duckdb
import polars as pl

from etl.db import ddl
from etl.db.dialect import Load, dialect_for, first_line, split_script
from etl.db.extensions import offline_connection
from etl.db.recognise import REQUIRED_COLUMNS, recognise
from etl.db.url import DatabaseUrl, redact
from etl.errors import (
    DatabaseBusyError,
    DatabaseError,
    ReaderStoppedError,
    RunLockedError,
    SchemaError,
)

RETRY_FIRST_WAIT = 0.2
RETRY_MAX_WAIT = 5.0
DEFAULT_LOCK_TIMEOUT = 300.0

T = TypeVar("T")


@dataclass(frozen=True)
class SchemaReport:
    """What `Database.ensure_schema` found and did."""

    created: tuple[str, ...]


class Database:
    """A SQLite or PostgreSQL honeypot database, opened for one refresh run.

    ``create``: open a SQLite file that does not exist yet (else `DatabaseError`).
    ``lock_timeout``: how long a write waits for another writer's lock or a lost PostgreSQL
    connection. ``notify`` receives one line when a write starts waiting and when it goes on.
    ``guard`` (set by the caller) runs before every write attempt, so also before a retry after
    a lost connection: the run lock checks that it still holds (`RunLock.verify`, a no-op for
    SQLite's file lock). ``backend``: the dialect's half (`etl.db.dialect.Backend`);
    ``dialect``: its name, ``"sqlite"`` or ``"postgres"``. ``read_only``: both connections
    can only read (`etl.status`); nothing is created, nothing written, and a database that is
    not cowrieprocessor's is refused first (`etl.db.recognise`: `SchemaError`,
    `UnusableDatabaseError`).
    """

    def __init__(
        self,
        url: DatabaseUrl,
        *,
        create: bool = False,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        notify: Callable[[str], None] | None = None,
        read_only: bool = False,
    ) -> None:
        self.url = url
        self.read_only = read_only
        self.backend = dialect_for(url)
        self.dialect = self.backend.name
        self.lock_timeout = lock_timeout
        self.notify = notify or (lambda _message: None)
        self.guard: Callable[[], None] | None = None
        if read_only:  # status: refuse what is not cowrieprocessor's before opening it
            recognise(url, read_only=True, timeout=lock_timeout)
        self.duck = offline_connection()
        try:
            self.backend.attach(
                self.duck,
                create=create and not read_only,
                lock_timeout=lock_timeout,
                read_only=read_only,
            )
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release both connections."""
        self.backend.close()
        self.duck.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- names and native SQL ---------------------------------------------------------------
    def table(self, name: str) -> str:
        """The DuckDB name of a table of the target database."""
        return f"db.{self.backend.duck_schema}.{name}"

    def _redact(self, text: str) -> str:
        return redact(text, self.url.secrets())

    def execute_native(
        self, statements: Sequence[str], params: dict[str, Any] | None = None
    ) -> None:
        """Run statements inside the target database as one transaction."""
        self.write((), statements, params)

    def execute_scratch(self, statements: Sequence[str]) -> None:
        """Create or drop the run's own staging tables. SQLite: TEMP tables of the writing
        connection, made without taking the database's write lock (another writer may hold
        it). PostgreSQL: a native transaction."""

        def attempt(_retry: bool) -> None:
            self._check_guard()
            self.backend.execute_scratch(statements)

        self._retrying("creating staging tables", attempt)

    def write(
        self,
        loads: Sequence[Load],
        statements: Sequence[str],
        params: dict[str, Any] | None = None,
        action: str = "database write",
    ) -> None:
        """Bulk-insert ``loads`` (table, frame) into tables of the target, then run
        ``statements`` there: one unit, retried as a whole while the database is busy or the
        connection was lost (see the module docstring).

        SQLite: one transaction (``BEGIN IMMEDIATE``) on the native connection; the tables
        may be TEMP tables of it. PostgreSQL: DuckDB stages the loads (emptied first when the
        unit is retried), then one native transaction runs the statements.
        """
        loads = [(table, frame) for table, frame in loads if frame.height]

        def attempt(retry: bool) -> None:
            self._check_guard()
            self.backend.write_attempt(loads, statements, params or {}, retry)

        self._retrying(action, attempt)

    def _check_guard(self) -> None:
        if self.guard is not None:
            self.guard()

    def _retrying(self, action: str, attempt: Callable[[bool], T]) -> T:
        """Run ``attempt(retry)`` until it succeeds, retrying while the database is busy or
        the connection was lost, for up to ``lock_timeout`` seconds from the first failure."""
        started: float | None = None
        wait = RETRY_FIRST_WAIT
        while True:
            try:
                result = attempt(started is not None)
            except (sqlite3.Error, duckdb.Error) as exc:
                reason = self.backend.transient(exc)
                if reason is None:
                    raise DatabaseError(
                        f"{action} failed: {self._redact(first_line(exc))}"
                    ) from exc
                error: BaseException = exc
            except (RunLockedError, ReaderStoppedError):
                raise
            except DatabaseError as exc:  # the guard cannot reach the server (yet)
                reason, error = str(exc), exc
            else:
                if started is not None:
                    waited = time.monotonic() - started
                    self.notify(f"the database answered again after {waited:.1f} s")
                return result
            now = time.monotonic()
            if started is None:
                started = now
                self.notify(
                    f"waiting for the database: {reason}; retrying for up to "
                    f"{self.lock_timeout:g} s (lock timeout)"
                )
            elif now - started >= self.lock_timeout:
                raise DatabaseBusyError(
                    f"{action} gave up after waiting {now - started:.0f} s: {reason}"
                ) from error
            time.sleep(min(wait, max(0.0, started + self.lock_timeout - now)))
            wait = min(wait * 2, RETRY_MAX_WAIT)

    def query_native(self, sql: str) -> list[tuple[Any, ...]]:
        """Run a read-only query inside the target database."""
        return self._retrying("database read", lambda _retry: self.backend.query(sql))

    def refresh_catalog(self) -> None:
        """Make DuckDB see tables created natively."""
        self.backend.refresh_catalog()

    @contextmanager
    def duck_errors(self, action: str) -> Iterator[None]:
        """Translate DuckDB errors raised while doing ``action``."""
        try:
            yield
        except duckdb.Error as exc:
            raise DatabaseError(f"{action} failed: {self._redact(first_line(exc))}") from exc

    # -- bulk rows --------------------------------------------------------------------------
    def stage(self, table: str, frame: pl.DataFrame) -> None:
        """Bulk-insert a frame into an existing table of the target database, alone."""
        self.write([(table, frame)], ())

    def query_frame(
        self,
        sql: str,
        variables: dict[str, object] | None = None,
        setup: Sequence[str] = (),
    ) -> pl.DataFrame:
        """Run a DuckDB query over the target (``db``) and return its result as a Polars
        frame; retried like a write while the database is busy. SQLite: in the reader process
        (`etl.db.reader`), never in ours.

        ``setup`` statements (macros) run first. ``variables`` are bound with
        ``SET VARIABLE`` and read in ``sql`` as ``getvariable('name')``: a query given
        parameters directly runs once when it is prepared and again when the frame reads it
        (twice the time of the selection).
        """
        return self._retrying(
            "database read",
            lambda _retry: self.backend.read_frame(sql, setup, variables or {}),
        )

    def append(self, table: str, frame: pl.DataFrame) -> None:
        """Append a frame's rows to a table with constraints DuckDB cannot write directly.

        SQLite: inserted natively. PostgreSQL: the rows go through a staging table and one
        native ``INSERT ... SELECT``, cast to the table's column types (json/jsonb columns
        take text).
        """
        if frame.height:
            self.backend.append(self, table, frame)

    def upsert(self, table: str, frame: pl.DataFrame, key: str) -> None:
        """Insert a frame's rows into a table of the target; a row whose ``key`` is stored
        already gets the frame's values instead (bound values, never SQL text)."""
        if frame.height:
            self.backend.upsert(self, table, frame, key)

    def drop_leftover_stages(self) -> list[str]:
        """Drop staging tables a killed run left behind (call only under the run lock)."""
        names = [str(row[0]) for row in self.query_native(self.backend.leftover_stages_query())]
        if names:
            self.execute_native([f"DROP TABLE IF EXISTS {name}" for name in names])
            self.refresh_catalog()
        return names

    # -- schema -----------------------------------------------------------------------------
    def columns(self, table: str) -> set[str]:
        """Column names of a table in the target database (empty when it does not exist)."""
        return {str(row[0]) for row in self.query_native(self.backend.columns_query(table))}

    def check_writable(self) -> None:
        """Raise `SchemaError` when this user cannot write the database (a read-only file or
        folder, missing privileges): found before any service is asked, not after."""
        self.backend.check_writable(self)

    def ensure_schema(self) -> SchemaReport:
        """Create absent tiers (cowrieprocessor DDL) and the run log; check that present
        tiers can be refreshed. It creates in any database: a refresh first makes sure the
        database is cowrieprocessor's, or that --create was given (`etl.db.recognise`)."""
        present = {name for name in ddl.TIER_TABLES if self.columns(name)}
        for name in present:
            missing = [c for c in REQUIRED_COLUMNS[name] if c not in self.columns(name)]
            if missing:
                raise SchemaError(
                    f"table {name} exists but lacks column(s) {', '.join(missing)}: "
                    "this is not a cowrieprocessor database the refresh can write"
                )
        absent = tuple(name for name in ddl.TIER_TABLES if name not in present)
        if absent:
            tables = self.backend.tier_ddl
            statements = [stmt for name in absent for stmt in split_script(tables[name])]
            if not present:
                # schema_version 17, so cowrieprocessor does not re-run its migrations
                exists = bool(self.columns("schema_state"))
                statements += self.backend.schema_state_statements(exists)
            self.execute_native(statements)
        if not self.columns(ddl.RUN_LOG_TABLE):  # ours, added beside them (README "Run log")
            self.execute_native(split_script(self.backend.run_log_ddl))
            absent += (ddl.RUN_LOG_TABLE,)

        if absent:
            self.refresh_catalog()
        return SchemaReport(created=absent)
