"""One interface for what SQLite and PostgreSQL do differently (`etl.db.backends.dialect_for`
picks one).

`Database` (retried write units, schema checks) and `ChunkWriter` (staging and merge) are
written once against `Backend`. The two implementations:

- `etl.db.sqlite.SQLiteBackend`: the stdlib ``sqlite3`` connection is the only copy of SQLite
  in the process (staging into its TEMP tables, the merge, DDL, small reads); DuckDB's bulk
  reads attach the file READ_ONLY in a child process (`etl.db.reader`).
- `etl.db.postgres.PostgresBackend`: DuckDB attaches the server with its postgres extension,
  bulk-writes the stage tables and runs native SQL through ``postgres_execute``.

The run lock of each (a ``flock`` beside the SQLite file, a PostgreSQL advisory lock) is
`etl.db.lock`'s. This module imports neither implementation: they import it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Protocol

import duckdb
import polars as pl

from etl.db import ddl
from etl.db.url import DatabaseUrl, Dialect

Load = tuple[str, pl.DataFrame]
Params = dict[str, Any]


class Session(Protocol):
    """What a backend calls back on its `Database`: units retried while the database is busy."""

    def write(
        self,
        loads: Sequence[Load],
        statements: Sequence[str],
        params: Params | None = None,
        action: str = "database write",
    ) -> None:
        """Load frames into tables, then run statements: one retried unit."""

    def execute_native(self, statements: Sequence[str], params: Params | None = None) -> None:
        """Run statements inside the target database as one transaction."""

    def query_native(self, sql: str) -> list[tuple[Any, ...]]:
        """Run a read-only query inside the target database."""

    def refresh_catalog(self) -> None:
        """Make DuckDB see tables created natively."""


@dataclass(frozen=True)
class Unit:
    """Native statements, the parameters they bind, and frames to load before them."""

    statements: list[str]
    params: Params = field(default_factory=dict)
    loads: list[Load] = field(default_factory=list)


class Backend(ABC):
    """The dialect-specific half of an open database (see the module docstring)."""

    name: ClassVar[Dialect]
    duck_schema: ClassVar[str]  # the attached database's schema in DuckDB names
    row_position: ClassVar[str]  # SQL for where a row is stored (the selection's order)
    tier_ddl: ClassVar[Mapping[str, str]]  # cowrieprocessor's CREATE script of each tier
    schema_state_ddl: ClassVar[str]  # cowrieprocessor's CREATE script of schema_state
    schema_state_table: ClassVar[str]  # its native name, and its key column quoted
    schema_state_key: ClassVar[str]
    run_log_ddl: ClassVar[str]  # our run log's CREATE script (`etl.db.ddl.run_log_ddl`)
    stage_create: ClassVar[str]  # "CREATE [TEMP] TABLE IF NOT EXISTS {prefix}"
    stage_prefix: ClassVar[str]  # where the run's staging tables live: "temp." or "public."
    timestamp_type: ClassVar[str]  # the native type a TIMESTAMPTZ stage column gets

    # Whether the merge fills ip_inventory.ip_types (PostgreSQL's text[] of cowrieprocessor;
    # `PostgresBackend.chunk_merge`), set by the writer once it has looked for the column.
    label_types: bool = False

    def __init__(self, url: DatabaseUrl) -> None:
        self.url = url
        self._duck: duckdb.DuckDBPyConnection | None = None
        # The longest write transaction so far, in seconds (SQLite: the write lock held).
        self.longest_write = 0.0

    @property
    def duck(self) -> duckdb.DuckDBPyConnection:
        """The DuckDB connection the target is attached to (as ``db``)."""
        assert self._duck is not None, "attach() first"
        return self._duck

    # -- opening ---------------------------------------------------------------------------
    @abstractmethod
    def attach(
        self,
        duck: duckdb.DuckDBPyConnection,
        *,
        create: bool,
        lock_timeout: float,
        read_only: bool = False,
    ) -> None:
        """Open the native side and attach the target to ``duck`` as ``db`` (``read_only``:
        both sides can only read)."""

    @abstractmethod
    def refresh_catalog(self) -> None:
        """Make DuckDB see tables created natively."""

    def read_frame(
        self, sql: str, setup: Sequence[str], variables: dict[str, object]
    ) -> pl.DataFrame:
        """Run a DuckDB query over the target (attached as ``db``): ``setup`` statements
        first, then ``variables`` bound with ``SET VARIABLE`` (read as ``getvariable``)."""
        for statement in setup:
            self.duck.execute(statement)
        for name, value in variables.items():
            self.duck.execute(f"SET VARIABLE {name} = $value", {"value": value})
        return pl.DataFrame(self.duck.sql(sql))

    def close(self) -> None:  # noqa: B027 - only SQLite holds a connection of its own
        """Release what `attach` opened besides the DuckDB connection."""

    # -- native SQL --------------------------------------------------------------------------
    @abstractmethod
    def write_attempt(
        self, loads: Sequence[Load], statements: Sequence[str], params: Params, retry: bool
    ) -> None:
        """One attempt of a write unit: load the frames, run the statements (``retry``: a
        previous attempt failed part-way)."""

    @abstractmethod
    def execute_scratch(self, statements: Sequence[str]) -> None:
        """Create or drop the run's own staging tables."""

    @abstractmethod
    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Run a read-only query inside the target database, once."""

    @abstractmethod
    def transient(self, exc: BaseException) -> str | None:
        """Why ``exc`` is worth retrying (another writer's lock, a lost connection), or None."""

    @abstractmethod
    def append(self, session: Session, table: str, frame: pl.DataFrame) -> None:
        """Append a non-empty frame to a table with constraints DuckDB cannot write."""

    @abstractmethod
    def upsert(self, session: Session, table: str, frame: pl.DataFrame, key: str) -> None:
        """Insert a non-empty frame's rows; a row whose ``key`` is in the table already
        replaces the stored row's values of the frame's columns. Values are bound, never
        written into the SQL."""

    # -- schema ------------------------------------------------------------------------------
    @abstractmethod
    def columns_query(self, table: str) -> str:
        """SQL listing the column names of ``table``."""

    @abstractmethod
    def leftover_stages_query(self) -> str:
        """SQL listing the ``_etl_*`` tables a killed run left in the database."""

    @abstractmethod
    def check_writable(self, session: Session) -> None:
        """Raise `SchemaError` when this user cannot write the database."""

    def schema_state_statements(self, table_exists: bool) -> list[str]:
        """Record cowrieprocessor's schema_version (creating schema_state when absent)."""
        create = [] if table_exists else split_script(self.schema_state_ddl)
        insert = (
            f"INSERT INTO {self.schema_state_table} ({self.schema_state_key}, value) "
            f"VALUES ('schema_version', '{ddl.SCHEMA_VERSION}') ON CONFLICT DO NOTHING"
        )
        return [*create, insert]

    # -- staging and merge -------------------------------------------------------------------
    def stage_table(self, name: str) -> str:
        """The native name of the run's staging table ``name``."""
        return f"{self.stage_prefix}{name}"

    def create_stage(self, name: str, columns: Mapping[str, str]) -> str:
        """The statement creating a staging table (column -> DuckDB type)."""
        types = {c: self.timestamp_type if t == "TIMESTAMPTZ" else t for c, t in columns.items()}
        body = ", ".join(f"{column} {sql_type}" for column, sql_type in types.items())
        return f"{self.stage_create} {self.stage_table(name)} ({body})"

    @abstractmethod
    def chunk_merge(
        self, ip_stage: str, asn_stage: str, patterns: list[int], now: datetime
    ) -> Unit:
        """Upsert the staged chunk into asn_inventory and ip_inventory, empty the stages.
        ``patterns``: the sets of blocks present in the chunk (see `etl.db.write`)."""

    @abstractmethod
    def asn_details_merge(self, asn_stage: str, now: datetime) -> Unit:
        """Upsert staged AS registration rows (Tier 1) and their ``cymru`` block."""

    @abstractmethod
    def asn_source(self, asns: list[int], asn_stage: str) -> tuple[str, Unit]:
        """A SQL row source of ``asns`` (column ``asn_number``), with what it needs: rows to
        load, parameters to bind, statements that clean up after it."""

    @abstractmethod
    def native_table(self, name: str) -> str:
        """The name of a table of the target in native SQL."""

    # -- around the run ----------------------------------------------------------------------
    @abstractmethod
    def pending_folder(self, state_dir: Path) -> Path:
        """Where answers not committed are kept (``state_dir``: for servers)."""


def sql_string(value: str) -> str:
    """A SQL string literal (for the few statements that take no parameters, like ATTACH)."""
    return "'" + value.replace("'", "''") + "'"


def split_script(script: str) -> list[str]:
    """The statements of a ``;``-separated SQL script."""
    return [stmt.strip() for stmt in script.split(";") if stmt.strip()]


def first_line(exc: BaseException) -> str:
    """The informative line of a driver error (PostgreSQL's ``ERROR:`` line when there is one)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    for line in lines:
        if "ERROR:" in line:
            return line[line.index("ERROR:") :]
    return lines[0] if lines else type(exc).__name__
