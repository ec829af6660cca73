"""An open honeypot database: DuckDB attachment for bulk reads, native SQL for writes.

DuckDB attaches the target as ``db``; the selection and other bulk reads go through it
(`Database.query_frame`; for SQLite in a child process, see `etl.db.reader`). What
differs between SQLite and PostgreSQL (attaching, staging, the native merge, the run lock,
which errors are transient) is the database's `Backend` (`etl.db.dialect`); this module is
written once for both.

Every write is a unit (`Database.write`) that is retried as a whole while another process holds
the SQLite write lock or the PostgreSQL connection was lost (SPEC 2.3, 4); then it raises
`DatabaseBusyError`. ``lock_timeout`` bounds the whole wait of a run, not each write's: every
wait draws on one `WaitBudget`, so a run whose start row, chunk and end row all meet the same
held lock gives up once it has waited ``lock_timeout`` seconds in all, not three times that.
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

from etl.core.errors import (
    DatabaseBusyError,
    DatabaseError,
    ReaderStoppedError,
    RunLockedError,
    SchemaError,
)
from etl.db import ddl
from etl.db.backends import dialect_for
from etl.db.dialect import Load, first_line, split_script
from etl.db.extensions import offline_connection
from etl.db.postgres import drop_own_stages
from etl.db.recognise import DEFAULT_LOCK_TIMEOUT, REQUIRED_COLUMNS, recognise
from etl.db.url import DatabaseUrl, redact

# How long a stopping run may spend dropping its own PostgreSQL staging tables (systemd stops
# a unit 30 s after SIGTERM; the run log's end row may wait 5 s before this).
STOP_CLEANUP_SECONDS = 5.0
RETRY_FIRST_WAIT = 0.2
RETRY_MAX_WAIT = 5.0

T = TypeVar("T")


class WaitBudget:
    """How long a run may still wait for the database, in all (``seconds``: ``--lock-timeout``).

    Every wait draws on it: from the start of a call's first attempt that met a busy database
    or a lost connection (so SQLite's busy slice in that attempt counts) to the call's end,
    whether it is a write, a read or a one-try write (the run log's start row). The time
    between waits is not spent. When a write goes through, the database answered: the budget
    is whole again, so a loader that holds the lock for a moment an hour later gets all of it.
    A read that goes through does not refill it: reads pass while another writer holds
    SQLite's write lock, which is what the run is waiting for.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.spent = 0.0  # seconds waited since the last write went through

    def left(self) -> float:
        """Seconds the run may still wait."""
        return max(0.0, self.seconds - self.spent)

    def spend(self, waited: float) -> None:
        """A call waited ``waited`` seconds."""
        self.spent += waited

    def answered(self) -> None:
        """A write went through: the next wait has the whole budget."""
        self.spent = 0.0


@dataclass(frozen=True)
class SchemaReport:
    """What `Database.ensure_schema` found and did."""

    created: tuple[str, ...]
    # A run log made by an earlier version whose new columns this role could not add (on
    # PostgreSQL only the table's owner may): the statements its owner should run, and why.
    run_log_unaltered: tuple[str, ...] = ()
    why_unaltered: str = ""


class Database:
    """A SQLite or PostgreSQL honeypot database, opened for one refresh run.

    ``create``: open a SQLite file that does not exist yet (else `DatabaseError`).
    ``lock_timeout``: how long the run waits for another writer's lock or a lost PostgreSQL
    connection, in all (``budget``, a `WaitBudget`); a caller may lower it for its own writes
    (`waiting_at_most`). ``notify`` receives one line when a write starts waiting and when it
    goes on.
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
        self.lock_timeout = lock_timeout  # of one call; the run's whole wait: ``budget``
        self.budget = WaitBudget(lock_timeout)
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

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        self.close()
        if kind is not None and self.dialect == "postgres" and not self.read_only:
            # Stopped (an error, Ctrl-C, SIGTERM): the writer's and the linker's `close` did
            # not run, their tables are left. Dropped now (bounded: the server may be why the
            # run stopped), so the next run does not report them as a killed run's.
            drop_own_stages(self.url, STOP_CLEANUP_SECONDS)

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

        # Not a write that ends the run's wait: SQLite makes TEMP tables, and PostgreSQL new
        # ones, while another writer holds the lock the run waits for.
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

        self._retrying(action, attempt, writes=True)

    def _check_guard(self) -> None:
        if self.guard is not None:
            self.guard()

    @contextmanager
    def waiting_at_most(self, seconds: float | None, quiet: bool = False) -> Iterator[None]:
        """Writes in the block wait at most ``seconds`` (None: as long as the run may), and
        never past the run's budget; 0 is one try. ``quiet``: no "waiting for" line."""
        saved, said = self.lock_timeout, self.notify
        if seconds is not None:
            self.lock_timeout = min(saved, seconds)
        if quiet:
            self.notify = lambda _message: None
        try:
            yield
        finally:
            self.lock_timeout, self.notify = saved, said

    def _retrying(self, action: str, attempt: Callable[[bool], T], writes: bool = False) -> T:
        """Run ``attempt(retry)`` until it succeeds, retrying while the database is busy or
        the connection was lost: for up to ``lock_timeout`` seconds from this call's first
        failure, and never longer than the run may still wait (`WaitBudget`). ``writes``: a
        success refills the budget."""
        started: float | None = None  # when this call's first failed attempt began
        give_up = 0.0
        wait = RETRY_FIRST_WAIT
        while True:
            began = time.monotonic()
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
            except RuntimeError as exc:
                # DuckDB turns a Ctrl-C (or SIGTERM, raised as one) that lands in a query into
                # "Query interrupted", caused by it: the run was interrupted, not broken.
                if isinstance(exc.__cause__, KeyboardInterrupt):
                    raise exc.__cause__ from None
                raise
            else:
                if writes:
                    self.budget.answered()
                if started is not None:
                    waited = time.monotonic() - started
                    if not writes:
                        self.budget.spend(waited)
                    self.notify(f"the database answered again after {waited:.1f} s")
                return result
            now = time.monotonic()
            if started is None:
                # The attempt's own wait (SQLite's busy slice) is part of the run's wait.
                started = began
                give_up = began + min(self.lock_timeout, self.budget.left())
                if now < give_up:
                    self.notify(
                        f"waiting for the database: {reason}; retrying for up to "
                        f"{give_up - began:.0f} s (lock timeout)"
                    )
            if now >= give_up:
                self.budget.spend(now - started)
                raise DatabaseBusyError(
                    f"{action} gave up after waiting {self.budget.spent:.0f} s: {reason}"
                ) from error
            time.sleep(min(wait, give_up - now))
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
        run_log = self.columns(ddl.RUN_LOG_TABLE)
        if not run_log:  # ours, added beside them (README "Run log")
            self.execute_native(split_script(self.backend.run_log_ddl))
            absent += (ddl.RUN_LOG_TABLE,)
        elif added := ddl.run_log_added_columns(self.backend.name, run_log):
            try:
                self.execute_native(added)  # a run log made by an earlier version
            except RunLockedError:
                raise
            except DatabaseError as exc:  # not the table's owner: the log leaves them out
                return SchemaReport(created=absent, run_log_unaltered=tuple(added),
                                    why_unaltered=str(exc))  # fmt: skip
            finally:
                self.refresh_catalog()

        if absent:
            self.refresh_catalog()
        return SchemaReport(created=absent)
