"""PostgreSQL: DuckDB's postgres extension bulk-writes the stages, native SQL merges them.

DuckDB attaches the server as ``db``; staging tables are tables of the database (schema
``public``, dropped by the writer's ``close``; a run that stops with an error, Ctrl-C or SIGTERM
drops its own on the way out (`drop_own_stages`); a killed run's are dropped by the next run).
Native statements go through ``postgres_execute``, one transaction per call. A lost connection
(restart, failover, ``pg_terminate_backend``) is a transient error: the unit is retried.
"""

from __future__ import annotations

import os
import re
import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Final
from urllib.parse import urlsplit

import duckdb
import polars as pl

from etl.core.errors import DatabaseError, SchemaError, UnusableDatabaseError
from etl.core.vocabulary import BLOCKS, Source, block_of
from etl.db import ddl
from etl.db.dialect import (
    Backend,
    Load,
    Params,
    Session,
    Unit,
    first_line,
    sql_string,
)
from etl.db.extensions import load_extension
from etl.db.recognise import postgres_connect_error
from etl.db.upsert import asn_upsert
from etl.db.url import DatabaseUrl, Dialect, redact

# What DuckDB's postgres extension says when the server went away (restart, failover,
# pg_terminate_backend) or cannot be reached yet: the write is retried on a new connection.
CONNECTION_LOST: Final = (
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


# What PostgreSQL says when our transaction lost a lock conflict with another writer (the
# loader's session upserts touch the rows our linking does): the unit is retried whole.
LOCK_CONFLICT: Final = ("deadlock detected", "could not serialize access", "lock not available")


# Our staging tables are named ``_etl_<kind>_<pid>_<6 hex digits>`` (`ChunkWriter`,
# `SessionLinker`, `PostgresBackend._insert_select`): the pid tells a process its own.
OWN_STAGE_PATTERN: Final = r"^_etl_[a-z_]+_{pid}_[0-9a-f]{{6}}$"


def drop_own_stages(url: DatabaseUrl, within: float) -> None:
    """Drop the staging tables this process made in ``url``'s database: a run stopping
    (an error, Ctrl-C, SIGTERM) whose tables a failed unit or an interrupted writer left, so
    the next run does not take it for a killed one (its ASN counts are redone all the same:
    `etl.db.lock`). Call under the run lock, after the DuckDB connection is closed (a
    transaction it left open then holds no lock on them).

    Best effort, and never longer than about ``within`` seconds: a new connection of its own
    (its connect, lock and statement timeouts), in a thread the stopping run waits for at most
    ``within`` s, so a server gone without a word cannot hold the run up; the next run drops
    what is left."""
    import psycopg

    pattern = OWN_STAGE_PATTERN.format(pid=os.getpid())
    wait_ms = max(1, int(within * 1000) // 2)

    def drop() -> None:
        with (
            suppress(psycopg.Error),
            psycopg.connect(
                url.libpq_url,
                autocommit=True,
                connect_timeout=max(2, int(within)),
                options=f"-c lock_timeout={wait_ms} -c statement_timeout={wait_ms}",
            ) as con,
        ):
            names = con.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = 'public' AND table_name ~ %s",
                (pattern,),
            ).fetchall()
            if names:
                con.execute(
                    "DROP TABLE IF EXISTS " + ", ".join(f'public."{name}"' for (name,) in names)
                )

    worker = threading.Thread(target=drop, name="drop-own-stages", daemon=True)
    worker.start()
    worker.join(within)


def postgres_timestamp(moment: datetime) -> str:
    """A ``timestamptz`` literal of ``moment``."""
    return f"'{moment.astimezone(UTC).isoformat()}'::timestamptz"


class PostgresBackend(Backend):
    """A PostgreSQL database, through DuckDB's postgres extension."""

    name: ClassVar[Dialect] = "postgres"
    duck_schema: ClassVar[str] = "public"
    row_position: ClassVar[str] = "CAST(NULL AS BIGINT)"  # the scan exposes no ctid
    tier_ddl: ClassVar[Mapping[str, str]] = ddl.POSTGRES_TABLES
    schema_state_ddl: ClassVar[str] = ddl.POSTGRES_SCHEMA_STATE  # cowrieprocessor's migration form
    schema_state_table: ClassVar[str] = "public.schema_state"
    schema_state_key: ClassVar[str] = "key"
    run_log_ddl: ClassVar[str] = ddl.run_log_ddl("postgres")
    stage_create: ClassVar[str] = "CREATE TABLE IF NOT EXISTS"
    stage_prefix: ClassVar[str] = "public."
    timestamp_type: ClassVar[str] = "TIMESTAMPTZ"  # DuckDB's types are valid PostgreSQL types

    # -- opening ---------------------------------------------------------------------------
    def attach(
        self,
        duck: duckdb.DuckDBPyConnection,
        *,
        create: bool,
        lock_timeout: float,
        read_only: bool = False,
    ) -> None:
        """Attach the server (``create`` and ``lock_timeout`` do not apply here)."""
        self._duck = duck
        load_extension(duck, "postgres_scanner")
        options = "TYPE postgres, READ_ONLY" if read_only else "TYPE postgres"
        try:
            duck.execute(f"ATTACH {sql_string(self.url.libpq_url)} AS db ({options})")
        except duckdb.Error as exc:
            unusable = postgres_connect_error(self.url, str(exc))
            if isinstance(unusable, UnusableDatabaseError):  # no such database or role
                raise unusable from None
            reason = self._redact(first_line(exc))
            reason = reason.split(": ", 1)[-1] if "Unable to connect" in reason else reason
            raise DatabaseError(f"cannot connect to PostgreSQL {self.url}: {reason}") from exc

    def refresh_catalog(self) -> None:
        """Clear the extension's cached catalog."""
        self.duck.execute("CALL pg_clear_cache()")

    def _redact(self, text: str) -> str:
        return redact(text, self.url.secrets())

    # -- native SQL --------------------------------------------------------------------------
    def execute(self, statements: Sequence[str]) -> None:
        """Run statements natively, as one transaction (``postgres_execute``)."""
        self.duck.execute("CALL postgres_execute('db', ?)", [";\n".join(statements)])

    def write_attempt(
        self, loads: Sequence[Load], statements: Sequence[str], params: Params, retry: bool
    ) -> None:
        """DuckDB stages the loads (emptied first on a retry), then one native transaction
        runs the statements (which bind no parameters: values are inlined)."""
        if retry and loads:
            self.execute([f"TRUNCATE {', '.join(t for t, _ in loads)}"])
        self._stage(loads)
        if statements:
            started = time.monotonic()
            self.execute(statements)
            self.longest_write = max(self.longest_write, time.monotonic() - started)

    def _stage(self, loads: Sequence[Load]) -> None:
        """DuckDB bulk-inserts the frames, in one transaction (one commit in the target, not
        one per table)."""
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

    def execute_scratch(self, statements: Sequence[str]) -> None:
        """A native transaction; then DuckDB is told (it stages into the new tables)."""
        self.execute(statements)
        self.refresh_catalog()

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Run ``sql`` in the server (``postgres_query``)."""
        return self.duck.execute("SELECT * FROM postgres_query('db', ?)", [sql]).fetchall()

    def transient(self, exc: BaseException) -> str | None:
        """The connection to the server was lost or cannot be made (yet), or the transaction
        lost a lock conflict (deadlock, serialization failure) with another writer."""
        text = str(exc).lower()
        if any(marker in text for marker in CONNECTION_LOST):
            return f"lost the connection to PostgreSQL {self.url} ({self._redact(first_line(exc))})"
        if any(marker in text for marker in LOCK_CONFLICT):
            return f"a lock conflict with another writer ({self._redact(first_line(exc))})"
        return None

    def append(self, session: Session, table: str, frame: pl.DataFrame) -> None:
        """Through a staging table and one native ``INSERT ... SELECT``, cast to the table's
        column types (json/jsonb columns take text)."""
        self._insert_select(session, table, frame, "")

    def upsert(self, session: Session, table: str, frame: pl.DataFrame, key: str) -> None:
        """As `append`, with ``ON CONFLICT (key) DO UPDATE``."""
        update = ", ".join(f"{c} = excluded.{c}" for c in frame.columns if c != key)
        self._insert_select(session, table, frame, f" ON CONFLICT ({key}) DO UPDATE SET {update}")

    def _insert_select(
        self, session: Session, table: str, frame: pl.DataFrame, conflict: str
    ) -> None:
        """DuckDB loads ``frame`` into a staging table; one native ``INSERT ... SELECT`` (and
        ``conflict``, its ON CONFLICT clause) moves the rows, cast to the column types."""
        stage = f"_etl_load_{os.getpid()}_{secrets.token_hex(3)}"
        body = ", ".join(
            f"{c} {'TIMESTAMPTZ' if isinstance(t, pl.Datetime) else 'VARCHAR'}"
            for c, t in frame.schema.items()
        )
        session.execute_native([f"CREATE TABLE public.{stage} ({body})"])
        session.refresh_catalog()
        try:
            target = dict(
                session.query_native(
                    "SELECT column_name, data_type FROM information_schema.columns "
                    f"WHERE table_schema = 'public' AND table_name = '{table}'"
                )
            )
            select = ", ".join(f"{c}::{target[c]}" for c in frame.columns)
            session.write(
                [(f"public.{stage}", frame)],
                [
                    f"INSERT INTO {table} ({', '.join(frame.columns)}) "
                    f"SELECT {select} FROM {stage}{conflict}"
                ],
            )
        finally:
            session.execute_native([f"DROP TABLE IF EXISTS {stage}"])

    # -- schema ------------------------------------------------------------------------------
    def columns_query(self, table: str) -> str:
        """From ``information_schema`` (schema ``public``)."""
        return (
            "SELECT column_name FROM information_schema.columns "
            f"WHERE table_schema = 'public' AND table_name = '{table}'"
        )

    def leftover_stages_query(self) -> str:
        """From ``information_schema`` (schema ``public``)."""
        return (
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' "
            "AND table_name LIKE '\\_etl\\_%' ESCAPE '\\'"
        )

    def check_writable(self, session: Session) -> None:
        """The user needs SELECT, INSERT, UPDATE on the tiers and CREATE on schema public."""
        denied = session.query_native(
            "SELECT t FROM unnest(ARRAY['asn_inventory', 'ip_inventory', "
            f"'{ddl.RUN_LOG_TABLE}']) AS t "
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

    def chunk_merge(
        self, ip_stage: str, asn_stage: str, patterns: list[int], now: datetime
    ) -> Unit:
        """One ``INSERT ... ON CONFLICT`` per table; blocks merge with ``jsonb ||``; with a
        labels block, ``ip_types`` becomes the distinct types of its labels and its type (not
        ``unknown``), else it stays."""
        ts = postgres_timestamp(now)
        members = ", ".join(f"'{b}', {b}::jsonb" for b in BLOCKS)
        absent = ", ".join(f"CASE WHEN {b} IS NULL THEN '{b}' END" for b in BLOCKS)
        patch = f"jsonb_build_object({members}) - array_remove(ARRAY[{absent}], NULL)"
        labels = block_of(Source.CLASSIFICATION)
        types = (
            f"ARRAY(SELECT DISTINCT t FROM (SELECT jsonb_array_elements("
            f"coalesce({labels}::jsonb -> 'labels', '[]'::jsonb)) ->> 'type' AS t "
            f"UNION SELECT {labels}::jsonb ->> 'ip_type') AS x "
            "WHERE t IS NOT NULL AND t <> 'unknown' ORDER BY t)"
        )
        column, value, update = (
            (
                ", ip_types",
                f", CASE WHEN {labels} IS NULL THEN ARRAY[]::text[] ELSE {types} END",
                f""",
                    ip_types = CASE WHEN excluded.enrichment::jsonb ? '{labels}'
                                    THEN excluded.ip_types ELSE ip_inventory.ip_types END""",
            )
            if self.label_types
            else ("", "", "")
        )
        return Unit(
            [
                asn_upsert("public.asn_inventory", f"public.{asn_stage}", ts, "'{}'::json"),
                f"""INSERT INTO public.ip_inventory (ip_address, current_asn, asn_last_verified,
                    first_seen, last_seen, session_count, enrichment, enrichment_updated_at,
                    created_at, updated_at{column})
                SELECT ip_address, current_asn,
                       CASE WHEN current_asn IS NOT NULL THEN {ts} END,
                       coalesce(first_seen, last_seen, {ts}), coalesce(last_seen, first_seen, {ts}),
                       coalesce(session_count, 0), {patch},
                       CASE WHEN touched = 1 THEN {ts} END, {ts}, {ts}{value}
                FROM public.{ip_stage}
                ON CONFLICT (ip_address) DO UPDATE SET
                    current_asn = coalesce(excluded.current_asn, ip_inventory.current_asn),
                    asn_last_verified = coalesce(excluded.asn_last_verified,
                                                 ip_inventory.asn_last_verified),
                    enrichment = coalesce(ip_inventory.enrichment::jsonb, '{{}}'::jsonb)
                                 || excluded.enrichment::jsonb,
                    enrichment_updated_at = coalesce(excluded.enrichment_updated_at,
                                                     ip_inventory.enrichment_updated_at),
                    updated_at = excluded.updated_at{update}""",
                f"TRUNCATE public.{asn_stage}, public.{ip_stage}",
            ]
        )

    def asn_details_merge(self, asn_stage: str, now: datetime) -> Unit:
        """The ``cymru`` block is merged with ``jsonb ||`` (other keys kept)."""
        merged = (
            "(coalesce(asn_inventory.enrichment::jsonb, '{}'::jsonb) "
            "|| excluded.enrichment::jsonb)::json"
        )
        block = "json_build_object('cymru', details::json)"
        stamp = postgres_timestamp(now)
        return Unit(
            [
                asn_upsert("public.asn_inventory", f"public.{asn_stage}", stamp, block, merged),
                f"TRUNCATE public.{asn_stage}",
            ]
        )

    def asn_source(self, asns: list[int], asn_stage: str) -> tuple[str, Unit]:
        """The ASNs are loaded into the run's ASN stage (emptied afterwards)."""
        source = f"public.{asn_stage}"
        numbers = pl.DataFrame({"asn_number": sorted(set(asns))}, schema={"asn_number": pl.Int64})
        return source, Unit([f"DELETE FROM {source}"], loads=[(source, numbers)])

    def native_table(self, name: str) -> str:
        """Qualified with schema ``public``."""
        return f"public.{name}"

    # -- around the run ----------------------------------------------------------------------
    def pending_folder(self, state_dir: Path) -> Path:
        """``<state_dir>/<host>_<port>_<database>`` on the machine running the refresh."""
        parts = urlsplit(self.url.libpq_url)
        name = f"{parts.hostname or 'local'}_{parts.port or 5432}_{parts.path.lstrip('/')}"
        return state_dir.expanduser() / re.sub(r"[^A-Za-z0-9_.-]", "_", name)
