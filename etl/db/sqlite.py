"""SQLite: the stdlib ``sqlite3`` connection is the only copy of SQLite in our process.

It writes (staging into its TEMP tables: nothing is left in the file, even by a killed run; the
merge is native SQL on it) and makes the small reads. DuckDB's bulk reads of the file run in a
child process (`etl.db.reader`): a second SQLite library in this process would drop our
connection's POSIX locks whenever it closes the file (SPEC 4). Timestamps are written as
cowrieprocessor's text (UTC).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Final

import duckdb
import polars as pl

from etl.core.errors import DatabaseError, SchemaError
from etl.core.vocabulary import BLOCKS
from etl.db import ddl
from etl.db.dialect import (
    Backend,
    Load,
    Params,
    Session,
    Unit,
)
from etl.db.reader import SQLiteReader, adopt
from etl.db.recognise import sqlite_open_error
from etl.db.side_files import pending_path
from etl.db.upsert import asn_upsert
from etl.db.url import DatabaseUrl, Dialect

# cowrieprocessor's SQLite timestamp text: UTC, space separator, six fractional digits.
SQLITE_TIME_FORMAT: Final = "%Y-%m-%d %H:%M:%S.%f"
POLARS_SQLITE_TIME_FORMAT: Final = "%Y-%m-%d %H:%M:%S%.6f"  # the same in Polars' (chrono's) terms

SQLITE_CACHE_KIB: Final = 256 * 1024
# WAL mode: checkpoint after this much WAL, not SQLite's 1,000 pages (4 MB). A chunk rewrites
# pages (indexes, ASN rows) that the next chunks rewrite again: checkpointed once, not each
# time. 1M-IP refresh: write phase 45 s -> 38 s. A setting of this connection only.
SQLITE_WAL_CHECKPOINT_BYTES: Final = 80 * 1024 * 1024
# How long one SQLite statement waits in SQLite's own busy handler before `Database.write`
# notes the wait and tries again (the whole wait is bounded by ``lock_timeout``).
SQLITE_BUSY_SLICE_SECONDS: Final = 1.0
_BUSY_CODES: Final = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
# Courtesy to the loader beside us: after this much write-lock time (seconds, summed over our
# transactions), the lock is left free for SQLITE_COURTESY_GAP before we take it again. SQLite's
# busy handler polls at most every 100 ms: a gap longer than that lets a waiting writer in.
SQLITE_COURTESY_AFTER: Final = 1.0
SQLITE_COURTESY_GAP: Final = 0.12


def _insert(con: sqlite3.Connection, loads: Sequence[Load]) -> None:
    """Insert each frame into its table (bound values, timestamps as cowrieprocessor's text)."""
    for table, frame in loads:
        marks = ", ".join("?" * frame.width)
        con.executemany(
            f"INSERT INTO {table} ({', '.join(frame.columns)}) VALUES ({marks})",
            sqlite_values(frame).iter_rows(),
        )


def sqlite_timestamp(moment: datetime) -> str:
    """cowrieprocessor's SQLite text form: UTC, space separator, six fractional digits."""
    return moment.astimezone(UTC).strftime(SQLITE_TIME_FORMAT)


def sqlite_values(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` as SQLite takes it: timestamps as cowrieprocessor's text (UTC)."""
    return frame.with_columns(
        (pl.col(c).dt.convert_time_zone("UTC") if t.time_zone else pl.col(c)).dt.strftime(
            POLARS_SQLITE_TIME_FORMAT
        )
        for c, t in frame.schema.items()
        if isinstance(t, pl.Datetime)
    )


class SQLiteBackend(Backend):
    """A SQLite file: native reads and writes on ``sqlite3``; DuckDB reads it READ_ONLY in a
    child process (`SQLiteReader`)."""

    name: ClassVar[Dialect] = "sqlite"
    duck_schema: ClassVar[str] = "main"
    row_position: ClassVar[str] = "rowid"
    tier_ddl: ClassVar[Mapping[str, str]] = ddl.SQLITE_TABLES
    schema_state_ddl: ClassVar[str] = ddl.SQLITE_SCHEMA_STATE  # cowrieprocessor's ORM form
    schema_state_table: ClassVar[str] = "schema_state"
    schema_state_key: ClassVar[str] = '"key"'
    run_log_ddl: ClassVar[str] = ddl.run_log_ddl("sqlite")
    stage_create: ClassVar[str] = "CREATE TEMP TABLE IF NOT EXISTS"
    stage_prefix: ClassVar[str] = "temp."  # TEMP tables of the writing connection
    timestamp_type: ClassVar[str] = "TEXT"  # staged as cowrieprocessor's timestamp text

    def __init__(self, url: DatabaseUrl) -> None:
        super().__init__(url)
        assert url.sqlite_path is not None
        self.path: Path = url.sqlite_path
        self._connection: sqlite3.Connection | None = None
        self._reader: SQLiteReader | None = None
        self._held_since_gap = 0.0  # write-lock seconds since the lock was last left free

    # -- opening ---------------------------------------------------------------------------
    def attach(
        self,
        duck: duckdb.DuckDBPyConnection,
        *,
        create: bool,
        lock_timeout: float,
        read_only: bool = False,
    ) -> None:
        """Open the writing connection (tuned for bulk upserts; ``read_only``: a connection
        that cannot write), and start DuckDB's reader process."""
        self._duck = duck
        path = str(self.path)
        if not create and not self.path.is_file():
            raise DatabaseError(f"SQLite database {path} does not exist")
        try:
            self._connection = con = self._connect(
                min(SQLITE_BUSY_SLICE_SECONDS, lock_timeout), read_only
            )
            # This connection's page cache (not stored in the file): upserts touch the table and
            # its indexes all over; with SQLite's 2 MB default they spend their time re-reading.
            con.execute(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")
            con.execute("PRAGMA temp_store = MEMORY")  # the stage tables
            page_size = con.execute("PRAGMA page_size").fetchone()[0]
            con.execute(f"PRAGMA wal_autocheckpoint = {SQLITE_WAL_CHECKPOINT_BYTES // page_size}")
            con.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.DatabaseError as exc:
            raise sqlite_open_error(self.url, exc) from exc
        self._reader = adopt(self.path)

    def _connect(self, timeout: float, read_only: bool) -> sqlite3.Connection:
        """The native connection; read-only: opened with ``mode=ro`` (it can change nothing)."""
        if not read_only:
            return sqlite3.connect(str(self.path), timeout=timeout, isolation_level=None)
        uri = f"{self.path.resolve().as_uri()}?mode=ro"
        return sqlite3.connect(uri, timeout=timeout, isolation_level=None, uri=True)

    def refresh_catalog(self) -> None:
        """Nothing to do: the reader attaches the file again for every query."""

    def read_frame(
        self, sql: str, setup: Sequence[str], variables: dict[str, object]
    ) -> pl.DataFrame:
        """In the reader process (see the module docstring)."""
        assert self._reader is not None, "attach() first"
        return self._reader.query(sql, setup, variables)

    def close(self) -> None:
        """Close the writing connection and end the reader process."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    @property
    def connection(self) -> sqlite3.Connection:
        """The native (writing) connection."""
        assert self._connection is not None
        return self._connection

    # -- native SQL --------------------------------------------------------------------------
    def write_attempt(
        self, loads: Sequence[Load], statements: Sequence[str], params: Params, retry: bool
    ) -> None:
        """Load the frames, then one ``BEGIN IMMEDIATE`` transaction runs the statements (each
        binds the parameters it names); rolled back when anything fails.

        Loads into the connection's TEMP tables go in first, in a transaction of their own
        that takes no lock on the file (emptied again when the rest fails); other loads go
        into the locked transaction. The write lock is held only for the
        statements: the loader beside us waits 5 s per attempt (SPEC 2.3). After each second
        of lock held, the lock is left free for `SQLITE_COURTESY_GAP` before it is taken
        again, so that a writer polling in its busy handler gets its turn.
        """
        con = self.connection
        scratch = [(t, f) for t, f in loads if t.startswith(self.stage_prefix)]
        locked = [(t, f) for t, f in loads if not t.startswith(self.stage_prefix)]
        if scratch:
            con.execute("BEGIN")
            try:
                for table, _ in scratch:
                    con.execute(f"DELETE FROM {table}")
                _insert(con, scratch)
                con.execute("COMMIT")
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise
        if self._held_since_gap >= SQLITE_COURTESY_AFTER:
            time.sleep(SQLITE_COURTESY_GAP)
            self._held_since_gap = 0.0
        con.execute("BEGIN IMMEDIATE")
        taken = time.monotonic()
        try:
            _insert(con, locked)
            for statement in statements:
                con.execute(statement, {k: v for k, v in params.items() if f":{k}" in statement})
            con.execute("COMMIT")
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            for table, _ in scratch:  # the unit is undone as a whole, its stages too
                con.execute(f"DELETE FROM {table}")
            raise
        finally:
            held = time.monotonic() - taken
            self.longest_write = max(self.longest_write, held)
            self._held_since_gap += held

    def execute_scratch(self, statements: Sequence[str]) -> None:
        """TEMP tables of the writing connection, made without taking the database's write
        lock (another writer may hold it)."""
        for statement in statements:
            self.connection.execute(statement)

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Run ``sql`` on the native connection."""
        return self.connection.execute(sql).fetchall()

    def transient(self, exc: BaseException) -> str | None:
        """Another process holds the write lock (SQLITE_BUSY / SQLITE_LOCKED)."""
        text = str(exc).lower()
        code = getattr(exc, "sqlite_errorcode", None)
        busy = code is not None and code & 0xFF in _BUSY_CODES
        if busy or "database is locked" in text or "database is busy" in text:
            return f"another process holds the write lock on {self.path}"
        return None

    def append(self, session: Session, table: str, frame: pl.DataFrame) -> None:
        """Inserted natively."""
        session.write([(table, frame)], ())

    def upsert(self, session: Session, table: str, frame: pl.DataFrame, key: str) -> None:
        """``INSERT ... ON CONFLICT DO UPDATE`` with named parameters, one unit per row."""
        columns = frame.columns
        values = ", ".join(f":{column}" for column in columns)
        update = ", ".join(f"{c} = excluded.{c}" for c in columns if c != key)
        statement = (
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({values}) "
            f"ON CONFLICT ({key}) DO UPDATE SET {update}"
        )
        for row in sqlite_values(frame).iter_rows(named=True):
            session.write((), [statement], row)

    # -- schema ------------------------------------------------------------------------------
    def columns_query(self, table: str) -> str:
        """From ``pragma_table_info``."""
        return f"SELECT name FROM pragma_table_info('{table}')"

    def leftover_stages_query(self) -> str:
        """From ``sqlite_master``."""
        return (
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE '\\_etl\\_%' "
            "ESCAPE '\\'"
        )

    def check_writable(self, session: Session) -> None:
        """The file and its folder (journal or WAL file) must be writable by this user."""
        folder = self.path.parent.resolve()
        if not os.access(self.path, os.W_OK):
            raise SchemaError(f"SQLite database {self.path} is read-only for this user")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise SchemaError(
                f"the folder of SQLite database {self.path} is read-only for this user (SQLite "
                "writes its journal or WAL file beside the database)"
            )

    def chunk_merge(
        self, ip_stage: str, asn_stage: str, patterns: list[int], now: datetime
    ) -> Unit:
        """Per set of blocks present (``patterns``): existing rows in one UPDATE ... FROM the
        stage, new rows in one INSERT ... SELECT. ``current_asn`` is set only where it changes:
        SQLite rewrites an index entry whenever its column is assigned, even to the same value,
        and one chunk's rows sit in every part of the ASN index."""
        statements = [
            asn_upsert("asn_inventory", asn_stage, ":now", "'{}'"),
            f"""UPDATE ip_inventory SET current_asn = s.current_asn
                FROM {ip_stage} AS s
                WHERE s.ip_address = ip_inventory.ip_address
                  AND ip_inventory.current_asn IS NOT s.current_asn
                  AND s.current_asn IS NOT NULL""",
        ]
        for pattern in patterns:
            statements += _pattern_merge(ip_stage, pattern)
        statements += [f"DELETE FROM {asn_stage}", f"DELETE FROM {ip_stage}"]
        return Unit(statements, {"now": sqlite_timestamp(now)})

    def asn_details_merge(self, asn_stage: str, now: datetime) -> Unit:
        """The ``cymru`` block is set with ``json_set`` (other keys kept)."""
        merged = (
            "json_set(CASE WHEN json_valid(asn_inventory.enrichment) "
            "THEN asn_inventory.enrichment ELSE '{}' END, "
            "'$.cymru', json_extract(excluded.enrichment, '$.cymru'))"
        )
        block = "json_object('cymru', json(details))"
        statements = [
            asn_upsert("asn_inventory", asn_stage, ":now", block, merged),
            f"DELETE FROM {asn_stage}",
        ]
        return Unit(statements, {"now": sqlite_timestamp(now)})

    def asn_source(self, asns: list[int], asn_stage: str) -> tuple[str, Unit]:
        """One bound JSON parameter: no staging transaction."""
        source = "(SELECT value AS asn_number FROM json_each(:asns))"
        return source, Unit([], {"asns": json.dumps(sorted(set(asns)))})

    def native_table(self, name: str) -> str:
        """The main schema's table, unqualified."""
        return name

    # -- around the run ----------------------------------------------------------------------
    def pending_folder(self, state_dir: Path) -> Path:
        """``<database>.etl-pending`` beside the file."""
        return pending_path(self.path)


def _pattern_merge(ip_stage: str, pattern: int) -> list[str]:
    """The UPDATE of known rows and the INSERT of new ones that have the blocks of
    ``pattern``: each present block replaces the row's whole block (``json_set``)."""
    present = [b for i, b in enumerate(BLOCKS) if pattern & (1 << i)]
    pairs = "".join(f", '$.{b}', json(s.{b})" for b in present)
    old = "coalesce(ip_inventory.enrichment, '{}')"
    return [
        f"""UPDATE ip_inventory SET
                asn_last_verified = CASE WHEN s.current_asn IS NOT NULL THEN :now
                                         ELSE ip_inventory.asn_last_verified END,
                enrichment = {f"json_set({old}{pairs})" if present else old},
                enrichment_updated_at = CASE WHEN s.touched THEN :now
                                             ELSE ip_inventory.enrichment_updated_at END,
                updated_at = :now
            FROM {ip_stage} AS s
            WHERE s.blocks = {pattern} AND s.ip_address = ip_inventory.ip_address""",
        f"""INSERT INTO ip_inventory (ip_address, current_asn, asn_last_verified,
                first_seen, last_seen, session_count, enrichment, enrichment_updated_at,
                enrichment_version, created_at, updated_at)
            SELECT s.ip_address, s.current_asn,
                   CASE WHEN s.current_asn IS NOT NULL THEN :now END,
                   coalesce(s.first_seen, s.last_seen, :now),
                   coalesce(s.last_seen, s.first_seen, :now),
                   coalesce(s.session_count, 0), json_set('{{}}'{pairs}),
                   CASE WHEN s.touched THEN :now END, '2.2', :now, :now
            FROM {ip_stage} AS s
            WHERE s.blocks = {pattern} AND NOT EXISTS (
                SELECT 1 FROM ip_inventory AS i WHERE i.ip_address = s.ip_address)""",
    ]
