"""An open honeypot database: DuckDB attachment for bulk reads, native SQL for writes.

DuckDB attaches the target as ``db``; the selection and other bulk reads go through it.

Writes have one writer per database:
- SQLite: only the stdlib ``sqlite3`` connection writes (staging included, into TEMP tables of
  that connection). DuckDB's bundled SQLite only reads: two SQLite libraries writing one WAL
  file do not see each other's tables, and attached SQLite rejects ON CONFLICT anyway.
- PostgreSQL: DuckDB bulk-writes stage tables, ``postgres_execute`` runs the native merge.

Every write is a unit (`Database.write`) that is retried as a whole while another process holds
the SQLite write lock or the PostgreSQL connection was lost, for up to ``lock_timeout`` seconds
(SPEC 2.3, 4); then it raises `DatabaseBusyError`.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, TypeVar

import duckdb
import polars as pl

from etl.db import ddl
from etl.db.extensions import load_extension, offline_connection
from etl.db.url import DatabaseUrl, redact
from etl.errors import DatabaseBusyError, DatabaseError, RunLockedError, SchemaError

# cowrieprocessor's SQLite timestamp text: UTC, space separator, six fractional digits.
SQLITE_TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
POLARS_SQLITE_TIME_FORMAT = "%Y-%m-%d %H:%M:%S%.6f"  # the same in Polars' (chrono's) terms

# Columns the refresh reads or writes; anything else in the tables is left alone.
REQUIRED_COLUMNS = {
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


SQLITE_CACHE_KIB = 256 * 1024
# WAL mode: checkpoint after this much WAL, not SQLite's 1,000 pages (4 MB). A chunk rewrites
# pages (indexes, ASN rows) that the next chunks rewrite again: checkpointed once, not each
# time. 1M-IP refresh: write phase 45 s -> 38 s. A setting of this connection only.
SQLITE_WAL_CHECKPOINT_BYTES = 80 * 1024 * 1024
# How long one SQLite statement waits in SQLite's own busy handler before `Database.write`
# notes the wait and tries again (the whole wait is bounded by ``lock_timeout``).
SQLITE_BUSY_SLICE_SECONDS = 1.0
RETRY_FIRST_WAIT = 0.2
RETRY_MAX_WAIT = 5.0
DEFAULT_LOCK_TIMEOUT = 300.0

# What DuckDB's postgres extension says when the server went away (restart, failover,
# pg_terminate_backend) or cannot be reached yet: the write is retried on a new connection.
_PG_CONNECTION_LOST = (
    "server closed the connection",
    "terminating connection",
    "unable to connect",
    "could not connect",
    "connection refused",
    "no connection to the server",
    "connection to server",
    "ssl syscall",
    "the database system is",
    "connection reset",
    "broken pipe",
    "could not receive data",
    "could not send data",
    "connection timed out",
)
_SQLITE_BUSY_CODES = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)

T = TypeVar("T")
Load = tuple[str, pl.DataFrame]


@dataclass(frozen=True)
class SchemaReport:
    """What `Database.ensure_schema` found and did."""

    created: tuple[str, ...]


class Database:
    """A SQLite or PostgreSQL honeypot database, opened for one refresh run.

    ``create``: open a SQLite file that does not exist yet (else `DatabaseError`).
    ``lock_timeout``: how long a write waits for another writer's lock or a lost PostgreSQL
    connection. ``notify`` receives one line when a write starts waiting and when it goes on.
    ``guard`` (set by the caller) runs before every PostgreSQL write and before a retry after a
    lost connection: the run lock checks that it still holds (`RunLock.verify`).
    """

    def __init__(
        self,
        url: DatabaseUrl,
        *,
        create: bool = False,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        notify: Callable[[str], None] | None = None,
    ) -> None:
        self.url = url
        self.dialect = url.dialect
        self.lock_timeout = lock_timeout
        self.notify = notify or (lambda _message: None)
        self.guard: Callable[[], None] | None = None
        self.duck = offline_connection()
        self._sqlite: sqlite3.Connection | None = None
        try:
            if url.dialect == "sqlite":
                self._attach_sqlite(create)
            else:
                self._attach_postgres()
        except BaseException:
            self.close()
            raise

    # -- opening ---------------------------------------------------------------------------
    def _attach_sqlite(self, create: bool) -> None:
        assert self.url.sqlite_path is not None
        path = str(self.url.sqlite_path)
        if not create and not self.url.sqlite_path.is_file():
            raise DatabaseError(f"SQLite database {path} does not exist")
        try:
            self._sqlite = sqlite3.connect(
                path,
                timeout=min(SQLITE_BUSY_SLICE_SECONDS, self.lock_timeout),
                isolation_level=None,
            )
            # This connection's page cache (not stored in the file): upserts touch the table and
            # its indexes all over; with SQLite's 2 MB default they spend their time re-reading.
            self._sqlite.execute(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")
            self._sqlite.execute("PRAGMA temp_store = MEMORY")  # the stage tables
            page_size = self._sqlite.execute("PRAGMA page_size").fetchone()[0]
            self._sqlite.execute(
                f"PRAGMA wal_autocheckpoint = {SQLITE_WAL_CHECKPOINT_BYTES // page_size}"
            )
            self._sqlite.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.DatabaseError as exc:
            raise DatabaseError(f"cannot open SQLite database {path!r}: {exc}") from exc
        load_extension(self.duck, "sqlite_scanner")
        self.duck.execute("SET sqlite_all_varchar = true")
        self._attach_duck_sqlite()

    def _attach_duck_sqlite(self) -> None:
        assert self.url.sqlite_path is not None
        path = str(self.url.sqlite_path)
        try:
            self.duck.execute(f"ATTACH {sql_string(path)} AS db (TYPE sqlite, READ_ONLY)")
        except duckdb.Error as exc:
            raise DatabaseError(f"DuckDB cannot attach {path!r}: {_first_line(exc)}") from exc

    def _attach_postgres(self) -> None:
        load_extension(self.duck, "postgres_scanner")
        try:
            self.duck.execute(f"ATTACH {sql_string(self.url.libpq_url)} AS db (TYPE postgres)")
        except duckdb.Error as exc:
            reason = self._redact(_first_line(exc))
            reason = reason.split(": ", 1)[-1] if "Unable to connect" in reason else reason
            raise DatabaseError(f"cannot connect to PostgreSQL {self.url}: {reason}") from exc

    def close(self) -> None:
        """Release both connections."""
        if self._sqlite is not None:
            self._sqlite.close()
            self._sqlite = None
        self.duck.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- names and native SQL ---------------------------------------------------------------
    def table(self, name: str) -> str:
        """The DuckDB name of a table of the target database."""
        return f"db.main.{name}" if self.dialect == "sqlite" else f"db.public.{name}"

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
        if self.dialect == "postgres":
            self.execute_native(statements)
            return

        def attempt(_retry: bool) -> None:
            for statement in statements:
                self._native_sqlite().execute(statement)

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
        if self.dialect == "sqlite":
            self._retrying(action, lambda _retry: self._sqlite_write(loads, statements, params))
            return

        def attempt(retry: bool) -> None:
            if self.guard is not None:
                self.guard()
            if retry and loads:
                self._postgres_execute([f"TRUNCATE {', '.join(t for t, _ in loads)}"])
            self._duck_stage(loads)
            if statements:
                self._postgres_execute(statements)

        self._retrying(action, attempt)

    def _postgres_execute(self, statements: Sequence[str]) -> None:
        self.duck.execute("CALL postgres_execute('db', ?)", [";\n".join(statements)])

    def _sqlite_write(
        self, loads: Sequence[Load], statements: Sequence[str], params: dict[str, Any] | None
    ) -> None:
        con = self._native_sqlite()
        params = params or {}
        con.execute("BEGIN IMMEDIATE")
        try:
            for table, frame in loads:
                marks = ", ".join("?" * frame.width)
                con.executemany(
                    f"INSERT INTO {table} ({', '.join(frame.columns)}) VALUES ({marks})",
                    _sqlite_values(frame).iter_rows(),
                )
            for statement in statements:
                con.execute(statement, {k: v for k, v in params.items() if f":{k}" in statement})
            con.execute("COMMIT")
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise

    def _retrying(self, action: str, attempt: Callable[[bool], T]) -> T:
        """Run ``attempt(retry)`` until it succeeds, retrying while the database is busy or
        the connection was lost, for up to ``lock_timeout`` seconds from the first failure."""
        started: float | None = None
        wait = RETRY_FIRST_WAIT
        while True:
            try:
                result = attempt(started is not None)
            except (sqlite3.Error, duckdb.Error) as exc:
                reason = self._transient(exc)
                if reason is None:
                    raise DatabaseError(
                        f"{action} failed: {self._redact(_first_line(exc))}"
                    ) from exc
                error: BaseException = exc
            except RunLockedError:
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

    def _transient(self, exc: BaseException) -> str | None:
        """Why ``exc`` is worth retrying (another writer's lock, a lost connection), or None."""
        text = str(exc).lower()
        if self.dialect == "sqlite":
            code = getattr(exc, "sqlite_errorcode", None)
            busy = code is not None and code & 0xFF in _SQLITE_BUSY_CODES
            if busy or "database is locked" in text or "database is busy" in text:
                return f"another process holds the write lock on {self.url.sqlite_path}"
            return None
        if any(marker in text for marker in _PG_CONNECTION_LOST):
            return (
                f"lost the connection to PostgreSQL {self.url} ({self._redact(_first_line(exc))})"
            )
        return None

    def _native_sqlite(self) -> sqlite3.Connection:
        assert self._sqlite is not None
        return self._sqlite

    def query_native(self, sql: str) -> list[tuple[Any, ...]]:
        """Run a read-only query inside the target database."""

        def attempt(_retry: bool) -> list[tuple[Any, ...]]:
            if self.dialect == "sqlite":
                return self._native_sqlite().execute(sql).fetchall()
            return self.duck.execute("SELECT * FROM postgres_query('db', ?)", [sql]).fetchall()

        return self._retrying("database read", attempt)

    def refresh_catalog(self) -> None:
        """Make DuckDB see tables created natively."""
        if self.dialect == "postgres":
            self.duck.execute("CALL pg_clear_cache()")
        else:
            self.duck.execute("DETACH db")
            self._attach_duck_sqlite()

    @contextmanager
    def duck_errors(self, action: str) -> Iterator[None]:
        """Translate DuckDB errors raised while doing ``action``."""
        try:
            yield
        except duckdb.Error as exc:
            raise DatabaseError(f"{action} failed: {self._redact(_first_line(exc))}") from exc

    # -- bulk rows --------------------------------------------------------------------------
    def stage(self, table: str, frame: pl.DataFrame) -> None:
        """Bulk-insert a frame into an existing table of the target database, alone."""
        self.write([(table, frame)], ())

    def _duck_stage(self, loads: Sequence[Load]) -> None:
        """PostgreSQL: DuckDB bulk-inserts the frames, in one transaction (one commit in the
        target, not one per table)."""
        views = [f"etl_frame_{i}" for i in range(len(loads))]
        inserts = [
            f"INSERT INTO db.{table} ({', '.join(frame.columns)}) "
            f"SELECT {', '.join(frame.columns)} FROM {view}"
            for (table, frame), view in zip(loads, views, strict=True)
        ]
        try:
            # Frames go in as Arrow C streams: no copy, and no pyarrow import. The views
            # exist before the transaction: it may write to the target database only.
            for (_, frame), view in zip(loads, views, strict=True):
                self.duck.from_arrow(frame.__arrow_c_stream__()).to_view(view)
            if len(inserts) == 1:
                self.duck.execute(inserts[0])
            elif inserts:
                self._duck_transaction(inserts)
        finally:
            for view in views:
                self.duck.execute(f"DROP VIEW IF EXISTS {view}")

    def _duck_transaction(self, statements: Sequence[str]) -> None:
        self.duck.execute("BEGIN TRANSACTION")
        try:
            for statement in statements:
                self.duck.execute(statement)
        except BaseException:
            with suppress(duckdb.Error):  # a lost connection has no transaction to end
                self.duck.execute("ROLLBACK")
            raise
        self.duck.execute("COMMIT")

    def query_frame(self, sql: str, variables: dict[str, object] | None = None) -> pl.DataFrame:
        """Run a DuckDB query and return its result as a Polars frame (through the Arrow C
        stream interface, without pyarrow); retried like a write while the database is busy.

        ``variables`` are bound with ``SET VARIABLE`` and read in ``sql`` as
        ``getvariable('name')``: a query given parameters directly runs once when it is
        prepared and again when the frame reads it (twice the time of the selection).
        """
        for name, value in (variables or {}).items():
            self.duck.execute(f"SET VARIABLE {name} = $value", {"value": value})
        return self._retrying("database read", lambda _retry: pl.DataFrame(self.duck.sql(sql)))

    def append(self, table: str, frame: pl.DataFrame) -> None:
        """Append a frame's rows to a table with constraints DuckDB cannot write directly.

        SQLite: inserted natively. PostgreSQL: the rows go through a staging table and one
        native ``INSERT ... SELECT``, cast to the table's column types (json/jsonb columns
        take text).
        """
        if not frame.height:
            return
        if self.dialect == "sqlite":
            self.write([(table, frame)], ())
            return
        stage = f"_etl_load_{os.getpid()}_{secrets.token_hex(3)}"
        body = ", ".join(
            f"{c} {'TIMESTAMPTZ' if isinstance(t, pl.Datetime) else 'VARCHAR'}"
            for c, t in frame.schema.items()
        )
        self.execute_native([f"CREATE TABLE public.{stage} ({body})"])
        self.refresh_catalog()
        try:
            target = dict(
                self.query_native(
                    "SELECT column_name, data_type FROM information_schema.columns "
                    f"WHERE table_schema = 'public' AND table_name = '{table}'"
                )
            )
            select = ", ".join(f"{c}::{target[c]}" for c in frame.columns)
            self.write(
                [(f"public.{stage}", frame)],
                [f"INSERT INTO {table} ({', '.join(frame.columns)}) SELECT {select} FROM {stage}"],
            )
        finally:
            self.execute_native([f"DROP TABLE IF EXISTS {stage}"])

    def drop_leftover_stages(self) -> list[str]:
        """Drop staging tables a killed run left behind (call only under the run lock)."""
        if self.dialect == "sqlite":
            rows = self.query_native(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE '\\_etl\\_%' "
                "ESCAPE '\\'"
            )
        else:
            rows = self.query_native(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' "
                "AND table_name LIKE '\\_etl\\_%' ESCAPE '\\'"
            )
        names = [str(row[0]) for row in rows]
        if names:
            self.execute_native([f"DROP TABLE IF EXISTS {name}" for name in names])
            self.refresh_catalog()
        return names

    # -- schema -----------------------------------------------------------------------------
    def columns(self, table: str) -> set[str]:
        """Column names of a table in the target database (empty when it does not exist)."""
        if self.dialect == "sqlite":
            rows = self.query_native(f"SELECT name FROM pragma_table_info('{table}')")
        else:
            rows = self.query_native(
                "SELECT column_name FROM information_schema.columns "
                f"WHERE table_schema = 'public' AND table_name = '{table}'"
            )
        return {str(row[0]) for row in rows}

    def check_writable(self) -> None:
        """Raise `SchemaError` when this user cannot write the database (a read-only file or
        folder, missing privileges): found before any service is asked, not after."""
        if self.dialect == "sqlite":
            assert self.url.sqlite_path is not None
            path = self.url.sqlite_path
            folder = path.parent.resolve()
            if not os.access(path, os.W_OK):
                raise SchemaError(f"SQLite database {path} is read-only for this user")
            if not os.access(folder, os.W_OK | os.X_OK):
                raise SchemaError(
                    f"the folder of SQLite database {path} is read-only for this user (SQLite "
                    "writes its journal or WAL file beside the database)"
                )
            return
        denied = self.query_native(
            "SELECT t FROM unnest(ARRAY['asn_inventory', 'ip_inventory']) AS t "
            "WHERE to_regclass('public.' || t) IS NOT NULL "
            "AND NOT has_table_privilege('public.' || t, 'SELECT, INSERT, UPDATE') "
            "UNION ALL SELECT 'schema public' WHERE NOT has_schema_privilege('public', 'CREATE')"
        )
        if denied:
            names = ", ".join(str(row[0]) for row in denied)
            raise SchemaError(
                f"PostgreSQL user of {self.url} may not write {names} "
                "(needs SELECT, INSERT, UPDATE on the tables and CREATE on schema public)"
            )

    def ensure_schema(self) -> SchemaReport:
        """Create absent tiers (cowrieprocessor DDL); check that present ones can be refreshed."""
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
            tables = ddl.SQLITE_TABLES if self.dialect == "sqlite" else ddl.POSTGRES_TABLES
            statements = [stmt for name in absent for stmt in _split(tables[name])]
            if not present:
                statements += self._schema_state_statements()
            self.execute_native(statements)
            self.refresh_catalog()
        return SchemaReport(created=absent)

    def _schema_state_statements(self) -> list[str]:
        """Record schema_version 17 so cowrieprocessor does not re-run its migrations."""
        version = ddl.SCHEMA_VERSION
        if self.dialect == "sqlite":
            create = [] if self.columns("schema_state") else _split(ddl.SQLITE_SCHEMA_STATE)
            insert = (
                'INSERT INTO schema_state ("key", value) '
                f"VALUES ('schema_version', '{version}') ON CONFLICT DO NOTHING"
            )
        else:
            create = [] if self.columns("schema_state") else _split(ddl.POSTGRES_SCHEMA_STATE)
            insert = (
                "INSERT INTO public.schema_state (key, value) "
                f"VALUES ('schema_version', '{version}') ON CONFLICT DO NOTHING"
            )
        return [*create, insert]


def sql_string(value: str) -> str:
    """A SQL string literal (for the few statements that take no parameters, like ATTACH)."""
    return "'" + value.replace("'", "''") + "'"


def _split(script: str) -> list[str]:
    return [stmt.strip() for stmt in script.split(";") if stmt.strip()]


def _first_line(exc: BaseException) -> str:
    """The informative line of a driver error (PostgreSQL's ``ERROR:`` line when there is one)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    for line in lines:
        if "ERROR:" in line:
            return line[line.index("ERROR:") :]
    return lines[0] if lines else type(exc).__name__


def _sqlite_values(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` as SQLite takes it: timestamps as cowrieprocessor's text (UTC)."""
    return frame.with_columns(
        (pl.col(c).dt.convert_time_zone("UTC") if t.time_zone else pl.col(c)).dt.strftime(
            POLARS_SQLITE_TIME_FORMAT
        )
        for c, t in frame.schema.items()
        if isinstance(t, pl.Datetime)
    )
