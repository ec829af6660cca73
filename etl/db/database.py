"""An open honeypot database: DuckDB attachment for bulk reads and writes, native SQL for merges.

DuckDB attaches the target as ``db``; selection and staging go through it. Statements that
must run inside the target (DDL, the chunk merge) go natively: ``postgres_execute`` on
PostgreSQL, the stdlib ``sqlite3`` module on SQLite (attached SQLite rejects ON CONFLICT).
"""

from __future__ import annotations

import os
import secrets
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import duckdb
import polars as pl

from etl.db import ddl
from etl.db.extensions import load_extension, offline_connection
from etl.db.url import DatabaseUrl, redact
from etl.errors import DatabaseError, SchemaError

# cowrieprocessor's SQLite timestamp text: UTC, space separator, six fractional digits.
SQLITE_TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"

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
        "created_at",
        "updated_at",
    ),
    "session_summaries": ("session_id", "source_ip", "first_event_at", "last_event_at"),
}


SQLITE_CACHE_KIB = 256 * 1024


@dataclass(frozen=True)
class SchemaReport:
    """What `Database.ensure_schema` found and did."""

    created: tuple[str, ...]


class Database:
    """A SQLite or PostgreSQL honeypot database, opened for one refresh run."""

    def __init__(self, url: DatabaseUrl) -> None:
        self.url = url
        self.dialect = url.dialect
        self.duck = offline_connection()
        self._sqlite: sqlite3.Connection | None = None
        try:
            if url.dialect == "sqlite":
                self._attach_sqlite()
            else:
                self._attach_postgres()
        except BaseException:
            self.close()
            raise

    # -- opening ---------------------------------------------------------------------------
    def _attach_sqlite(self) -> None:
        assert self.url.sqlite_path is not None
        path = str(self.url.sqlite_path)
        try:
            self._sqlite = sqlite3.connect(path, timeout=60, isolation_level=None)
            self._sqlite.execute("PRAGMA busy_timeout = 60000")
            # This connection's page cache (not stored in the file): upserts touch the table and
            # its indexes all over; with SQLite's 2 MB default they spend their time re-reading.
            self._sqlite.execute(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")
            self._sqlite.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.DatabaseError as exc:
            raise DatabaseError(f"cannot open SQLite database {path!r}: {exc}") from exc
        load_extension(self.duck, "sqlite_scanner")
        self.duck.execute("SET sqlite_all_varchar = true")
        try:
            self.duck.execute(f"ATTACH {sql_string(path)} AS db (TYPE sqlite)")
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
        try:
            if self.dialect == "sqlite":
                self._sqlite_transaction(statements, params or {})
            else:
                script = ";\n".join(statements)
                self.duck.execute("CALL postgres_execute('db', ?)", [script])
        except (sqlite3.Error, duckdb.Error) as exc:
            raise DatabaseError(f"database write failed: {self._redact(_first_line(exc))}") from exc

    def _sqlite_transaction(self, statements: Sequence[str], params: dict[str, Any]) -> None:
        con = self._native_sqlite()
        con.execute("BEGIN IMMEDIATE")
        try:
            for statement in statements:
                con.execute(statement, {k: v for k, v in params.items() if f":{k}" in statement})
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    def _native_sqlite(self) -> sqlite3.Connection:
        assert self._sqlite is not None
        return self._sqlite

    def query_native(self, sql: str) -> list[tuple[Any, ...]]:
        """Run a read-only query inside the target database."""
        try:
            if self.dialect == "sqlite":
                return self._native_sqlite().execute(sql).fetchall()
            return self.duck.execute("SELECT * FROM postgres_query('db', ?)", [sql]).fetchall()
        except (sqlite3.Error, duckdb.Error) as exc:
            raise DatabaseError(f"database read failed: {self._redact(_first_line(exc))}") from exc

    def refresh_catalog(self) -> None:
        """Make DuckDB see tables created natively."""
        if self.dialect == "postgres":
            self.duck.execute("CALL pg_clear_cache()")
        else:
            self.duck.execute("DETACH db")
            assert self.url.sqlite_path is not None
            self.duck.execute(f"ATTACH {sql_string(str(self.url.sqlite_path))} AS db (TYPE sqlite)")

    @contextmanager
    def duck_errors(self, action: str) -> Iterator[None]:
        """Translate DuckDB errors raised while doing ``action``."""
        try:
            yield
        except duckdb.Error as exc:
            raise DatabaseError(f"{action} failed: {self._redact(_first_line(exc))}") from exc

    # -- bulk rows --------------------------------------------------------------------------
    def stage(self, table: str, frame: pl.DataFrame) -> None:
        """Bulk-insert a frame into an existing table of the target database through DuckDB.

        On SQLite, timestamps go in as cowrieprocessor's text form.
        """
        self.stage_all([(table, frame)])

    def stage_all(self, loads: Sequence[tuple[str, pl.DataFrame]]) -> None:
        """`stage` several frames in one transaction: one commit in the target, not one per
        table (each SQLite commit syncs the file twice)."""
        loads = [(table, frame) for table, frame in loads if frame.height]
        views = [f"etl_frame_{i}" for i in range(len(loads))]
        inserts = [
            f"INSERT INTO {self.table(table)} ({', '.join(frame.columns)}) "
            f"SELECT {self._stage_values(frame)} FROM {view}"
            for (table, frame), view in zip(loads, views, strict=True)
        ]
        with self.duck_errors(f"bulk insert into {', '.join(table for table, _ in loads)}"):
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

    def _stage_values(self, frame: pl.DataFrame) -> str:
        """The select list that stages ``frame``: timestamps as text on SQLite."""
        return ", ".join(
            f"strftime({c}, '{SQLITE_TIME_FORMAT}')"
            if self.dialect == "sqlite" and isinstance(frame.schema[c], pl.Datetime)
            else c
            for c in frame.columns
        )

    def _duck_transaction(self, statements: Sequence[str]) -> None:
        self.duck.execute("BEGIN TRANSACTION")
        try:
            for statement in statements:
                self.duck.execute(statement)
        except BaseException:
            self.duck.execute("ROLLBACK")
            raise
        self.duck.execute("COMMIT")

    def query_frame(self, sql: str, variables: dict[str, object] | None = None) -> pl.DataFrame:
        """Run a DuckDB query and return its result as a Polars frame (through the Arrow C
        stream interface, without pyarrow).

        ``variables`` are bound with ``SET VARIABLE`` and read in ``sql`` as
        ``getvariable('name')``: a query given parameters directly runs once when it is
        prepared and again when the frame reads it (twice the time of the selection).
        """
        for name, value in (variables or {}).items():
            self.duck.execute(f"SET VARIABLE {name} = $value", {"value": value})
        return pl.DataFrame(self.duck.sql(sql))

    def append(self, table: str, frame: pl.DataFrame) -> None:
        """Append a frame's rows to a table with constraints DuckDB cannot write directly.

        The rows go through a staging table in the target and one native ``INSERT ... SELECT``,
        cast to the table's column types (so PostgreSQL json/jsonb columns take text).
        """
        if not frame.height:
            return
        stage = f"_etl_load_{os.getpid()}_{secrets.token_hex(3)}"
        postgres = self.dialect == "postgres"
        body = ", ".join(
            f"{c} {'TIMESTAMPTZ' if postgres and isinstance(t, pl.Datetime) else 'VARCHAR'}"
            for c, t in frame.schema.items()
        )
        with self.duck_errors("creating a staging table"):
            self.duck.execute(f"CREATE TABLE {self.table(stage)} ({body})")
        try:
            self.stage(stage, frame)
            columns = ", ".join(frame.columns)
            if self.dialect == "sqlite":
                select = columns
            else:
                target = dict(
                    self.query_native(
                        "SELECT column_name, data_type FROM information_schema.columns "
                        f"WHERE table_schema = 'public' AND table_name = '{table}'"
                    )
                )
                select = ", ".join(f"{c}::{target[c]}" for c in frame.columns)
            self.execute_native([f"INSERT INTO {table} ({columns}) SELECT {select} FROM {stage}"])
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
