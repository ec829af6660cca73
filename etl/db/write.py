"""Write path (SPEC 4): stage a merged chunk through DuckDB, merge it natively in one transaction.

Per chunk: DuckDB bulk-inserts the chunk into two staging tables inside the target database,
then one native transaction upserts ``asn_inventory`` (first: ``current_asn`` points at it)
and ``ip_inventory``, and empties the staging tables. The stage carries each block as its own
JSON text column (NULL when the chunk has no such block for the row).

Merge rules for ``ip_inventory``:
- ``enrichment``: each block present in the chunk replaces that whole top-level block; every
  other key is kept (PostgreSQL ``jsonb ||``; SQLite ``json_set``, one statement per set of
  blocks present, so each row's old JSON is parsed once). Old enrichment that is not valid
  JSON fails the chunk (nothing is written) rather than being replaced.
- ``current_asn`` / ``asn_last_verified``: set when the chunk has an ASN for the IP, else kept.
- ``enrichment_updated_at``: the write time when a source answered ``ok``/``not_found``.
- ``first_seen``, ``last_seen``, ``session_count``: only for new rows, from their sessions.
- PostgreSQL GENERATED columns are never named.
"""

from __future__ import annotations

import json
import os
import secrets
from datetime import UTC, datetime
from typing import Final

import polars as pl

from etl.db.database import SQLITE_TIME_FORMAT, Database

BLOCKS: Final = ("validation", "maxmind", "cymru", "greynoise")
MAX_PG_INTEGER: Final = 2**31 - 1

IP_STAGE_COLUMNS: Final = {
    "ip_address": "VARCHAR",
    "current_asn": "BIGINT",
    "first_seen": "TIMESTAMPTZ",
    "last_seen": "TIMESTAMPTZ",
    "session_count": "BIGINT",
    "touched": "INTEGER",  # 0/1: SQLite stages read as text would turn 'true' into false
    **{block: "VARCHAR" for block in BLOCKS},  # JSON text, NULL when absent
    "blocks": "INTEGER",  # which blocks the row has: bit i for BLOCKS[i]
}
ASN_STAGE_COLUMNS: Final = {
    "asn_number": "BIGINT",
    "organization_name": "VARCHAR",
    "organization_country": "VARCHAR",
    "rir_registry": "VARCHAR",
}
# Tier 1 (AS registration from Cymru): the asn stage plus the asn_inventory `cymru` block.
ASN_DETAIL_STAGE_COLUMNS: Final = {**ASN_STAGE_COLUMNS, "details": "VARCHAR"}


def sqlite_timestamp(moment: datetime) -> str:
    """cowrieprocessor's SQLite text form: UTC, space separator, six fractional digits."""
    return moment.astimezone(UTC).strftime(SQLITE_TIME_FORMAT)


class ChunkWriter:
    """Upserts chunks into one database; owns its staging tables for the run.

    SQLite stages into TEMP tables of the writing connection (nothing is left in the file, even
    by a killed run); PostgreSQL into tables of the database, dropped by `close`.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        tag = f"{os.getpid()}_{secrets.token_hex(3)}"
        self.ip_stage = f"_etl_stage_ip_{tag}"
        self.asn_stage = f"_etl_stage_asn_{tag}"
        self.rows_written = 0
        self.asn_rows_written = 0
        self.db.execute_scratch(
            [
                self._create_stage(self.ip_stage, IP_STAGE_COLUMNS),
                self._create_stage(self.asn_stage, ASN_DETAIL_STAGE_COLUMNS),
            ]
        )
        if self.db.dialect == "postgres":
            self.db.refresh_catalog()  # DuckDB stages into them

    def _create_stage(self, name: str, columns: dict[str, str]) -> str:
        if self.db.dialect == "sqlite":  # SQLite stages timestamps as cowrieprocessor text
            columns = {c: "TEXT" if t == "TIMESTAMPTZ" else t for c, t in columns.items()}
            body = ", ".join(f"{column} {sql_type}" for column, sql_type in columns.items())
            return f"CREATE TEMP TABLE IF NOT EXISTS {name} ({body})"
        body = ", ".join(f"{column} {sql_type}" for column, sql_type in columns.items())
        return f"CREATE TABLE IF NOT EXISTS public.{name} ({body})"

    def _stage_name(self, name: str) -> str:
        return f"temp.{name}" if self.db.dialect == "sqlite" else f"public.{name}"

    def close(self) -> None:
        """Drop the staging tables."""
        self.db.execute_scratch(
            [f"DROP TABLE IF EXISTS {self._stage_name(n)}" for n in (self.ip_stage, self.asn_stage)]
        )

    def write(self, ips: pl.DataFrame, asns: pl.DataFrame, now: datetime | None = None) -> None:
        """Upsert one chunk: ``ips`` has the IP stage columns (but ``blocks``), ``asns`` the
        ASN stage columns. Staging and merge are one unit, retried whole by the database while
        another writer holds the lock or the connection was lost."""
        now = now or datetime.now(UTC)
        blocks = pl.sum_horizontal(
            pl.col(b).is_not_null().cast(pl.Int32) * (1 << i) for i, b in enumerate(BLOCKS)
        )
        # In key order: the upsert then walks the ip_address index forwards, not all over it.
        staged = ips.with_columns(blocks.alias("blocks")).select(list(IP_STAGE_COLUMNS))
        loads = [
            (self._stage_name(self.asn_stage), asns.select(list(ASN_STAGE_COLUMNS))),
            (self._stage_name(self.ip_stage), staged.sort("ip_address")),
        ]
        if self.db.dialect == "sqlite":
            patterns = sorted(staged["blocks"].unique().to_list())
            self.db.write(
                loads, self._sqlite_merge(patterns), {"now": sqlite_timestamp(now)}, "chunk write"
            )
        else:
            self.db.write(loads, self._postgres_merge(now), action="chunk write")
        self.rows_written += ips.height
        self.asn_rows_written += asns.height

    def write_asn_details(self, details: pl.DataFrame, now: datetime | None = None) -> None:
        """Tier 1: store AS registration data (name, country, registry) and the ``cymru`` block.

        ``details`` has the asn stage columns plus ``details`` (the block as JSON text). Known
        values replace old ones; a NULL (AS not found) keeps what the row had.
        """
        now = now or datetime.now(UTC)
        loads = [(self._stage_name(self.asn_stage), details.select(list(ASN_DETAIL_STAGE_COLUMNS)))]
        if self.db.dialect == "sqlite":
            stamp = ":now"
            merged = (
                "json_set(CASE WHEN json_valid(asn_inventory.enrichment) "
                "THEN asn_inventory.enrichment ELSE '{}' END, "
                "'$.cymru', json_extract(excluded.enrichment, '$.cymru'))"
            )
            block = "json_object('cymru', json(details))"
            statements = [
                _asn_upsert("asn_inventory", self.asn_stage, stamp, block, merged),
                f"DELETE FROM {self.asn_stage}",
            ]
            self.db.write(loads, statements, {"now": sqlite_timestamp(now)}, "AS details write")
        else:
            stamp = f"'{now.astimezone(UTC).isoformat()}'::timestamptz"
            merged = (
                "(coalesce(asn_inventory.enrichment::jsonb, '{}'::jsonb) "
                "|| excluded.enrichment::jsonb)::json"
            )
            block = "json_build_object('cymru', details::json)"
            statements = [
                _asn_upsert(
                    "public.asn_inventory", f"public.{self.asn_stage}", stamp, block, merged
                ),
                f"TRUNCATE public.{self.asn_stage}",
            ]
            self.db.write(loads, statements, action="AS details write")
        self.asn_rows_written += details.height

    def recount_asns(self, asns: list[int] | None) -> None:
        """Recompute unique_ip_count and total_session_count, set-based: of these ASNs, or of
        every ASN when ``asns`` is None (after a killed run whose counts were never redone)."""
        prefix = "" if self.db.dialect == "sqlite" else "public."
        params: dict[str, str] = {}
        cleanup: list[str] = []
        loads: list[tuple[str, pl.DataFrame]] = []
        if asns is None:
            source = f"{prefix}asn_inventory"
        elif not asns:
            return
        elif self.db.dialect == "sqlite":  # one bound parameter: no staging transaction
            params["asns"] = json.dumps(sorted(set(asns)))
            source = "(SELECT value AS asn_number FROM json_each(:asns))"
        else:
            numbers = sorted(set(asns))
            source = f"{prefix}{self.asn_stage}"
            loads.append(
                (source, pl.DataFrame({"asn_number": numbers}, schema={"asn_number": pl.Int64}))
            )
            cleanup.append(f"DELETE FROM {source}")
        self.db.write(
            loads,
            [
                f"""UPDATE {prefix}asn_inventory
                    SET unique_ip_count = counts.ips, total_session_count = counts.sessions
                    FROM (SELECT stage.asn_number, count(ip.ip_address) AS ips,
                                 coalesce(sum(ip.session_count), 0) AS sessions
                          FROM {source} AS stage
                          LEFT JOIN {prefix}ip_inventory AS ip
                                 ON ip.current_asn = stage.asn_number
                          GROUP BY stage.asn_number) AS counts
                    WHERE asn_inventory.asn_number = counts.asn_number
                      AND (unique_ip_count IS DISTINCT FROM counts.ips
                           OR total_session_count IS DISTINCT FROM counts.sessions)""",
                *cleanup,
            ],
            params,
            "ASN recount",
        )

    def _sqlite_merge(self, patterns: list[int]) -> list[str]:
        """Per set of blocks present (``patterns``): existing rows in one UPDATE ... FROM the
        stage, new rows in one INSERT ... SELECT. ``current_asn`` is set only where it changes:
        SQLite rewrites an index entry whenever its column is assigned, even to the same value,
        and one chunk's rows sit in every part of the ASN index."""
        statements = [
            _asn_upsert("asn_inventory", self.asn_stage, ":now", "'{}'"),
            f"""UPDATE ip_inventory SET current_asn = s.current_asn
                FROM {self.ip_stage} AS s
                WHERE s.ip_address = ip_inventory.ip_address
                  AND ip_inventory.current_asn IS NOT s.current_asn
                  AND s.current_asn IS NOT NULL""",
        ]
        for pattern in patterns:
            present = [b for i, b in enumerate(BLOCKS) if pattern & (1 << i)]
            pairs = "".join(f", '$.{b}', json(s.{b})" for b in present)
            old = "coalesce(ip_inventory.enrichment, '{}')"
            statements += [
                f"""UPDATE ip_inventory SET
                        asn_last_verified = CASE WHEN s.current_asn IS NOT NULL THEN :now
                                                 ELSE ip_inventory.asn_last_verified END,
                        enrichment = {f"json_set({old}{pairs})" if present else old},
                        enrichment_updated_at = CASE WHEN s.touched THEN :now
                                                     ELSE ip_inventory.enrichment_updated_at END,
                        updated_at = :now
                    FROM {self.ip_stage} AS s
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
                    FROM {self.ip_stage} AS s
                    WHERE s.blocks = {pattern} AND NOT EXISTS (
                        SELECT 1 FROM ip_inventory AS i WHERE i.ip_address = s.ip_address)""",
            ]
        return [*statements, f"DELETE FROM {self.asn_stage}", f"DELETE FROM {self.ip_stage}"]

    def _postgres_merge(self, now: datetime) -> list[str]:
        ts = f"'{now.astimezone(UTC).isoformat()}'::timestamptz"
        members = ", ".join(f"'{b}', {b}::jsonb" for b in BLOCKS)
        absent = ", ".join(f"CASE WHEN {b} IS NULL THEN '{b}' END" for b in BLOCKS)
        patch = f"jsonb_build_object({members}) - array_remove(ARRAY[{absent}], NULL)"
        return [
            _asn_upsert("public.asn_inventory", f"public.{self.asn_stage}", ts, "'{}'::json"),
            f"""INSERT INTO public.ip_inventory (ip_address, current_asn, asn_last_verified,
                    first_seen, last_seen, session_count, enrichment, enrichment_updated_at,
                    created_at, updated_at)
                SELECT ip_address, current_asn,
                       CASE WHEN current_asn IS NOT NULL THEN {ts} END,
                       coalesce(first_seen, last_seen, {ts}), coalesce(last_seen, first_seen, {ts}),
                       coalesce(session_count, 0), {patch},
                       CASE WHEN touched = 1 THEN {ts} END, {ts}, {ts}
                FROM public.{self.ip_stage}
                ON CONFLICT (ip_address) DO UPDATE SET
                    current_asn = coalesce(excluded.current_asn, ip_inventory.current_asn),
                    asn_last_verified = coalesce(excluded.asn_last_verified,
                                                 ip_inventory.asn_last_verified),
                    enrichment = coalesce(ip_inventory.enrichment::jsonb, '{{}}'::jsonb)
                                 || excluded.enrichment::jsonb,
                    enrichment_updated_at = coalesce(excluded.enrichment_updated_at,
                                                     ip_inventory.enrichment_updated_at),
                    updated_at = excluded.updated_at""",
            f"TRUNCATE public.{self.asn_stage}, public.{self.ip_stage}",
        ]


def _asn_upsert(
    table: str, stage: str, now: str, enrichment: str, merged: str | None = None
) -> str:
    """Upsert asn_inventory rows from a stage table.

    Without ``merged`` (rows derived from IPs): insert new ASNs and, for known ones, only fill
    organization fields that are still NULL. With ``merged`` (Tier 1, Cymru's AS answers): known
    values replace old ones and ``enrichment`` becomes ``merged``.
    """
    first, second = ("excluded", "asn_inventory") if merged else ("asn_inventory", "excluded")
    fields = ("organization_name", "organization_country", "rir_registry")
    updates = [f"{f} = coalesce({first}.{f}, {second}.{f})" for f in fields]
    if merged:
        updates += [
            f"enrichment = {merged}",
            "enrichment_updated_at = excluded.enrichment_updated_at",
        ]
        condition = ""
    else:
        condition = "WHERE " + " OR ".join(
            f"(asn_inventory.{f} IS NULL AND excluded.{f} IS NOT NULL)" for f in fields
        )
    set_clause = ",\n            ".join([*updates, "updated_at = excluded.updated_at"])
    touched = now if merged else "NULL"  # enrichment_updated_at: only Tier 1 enriches an ASN
    return f"""INSERT INTO {table} AS asn_inventory (asn_number, organization_name,
            organization_country, rir_registry, first_seen, last_seen, enrichment,
            enrichment_updated_at, created_at, updated_at)
        SELECT asn_number, organization_name, organization_country, rir_registry,
               {now}, {now}, {enrichment}, {touched}, {now}, {now}
        FROM {stage} WHERE true
        ON CONFLICT (asn_number) DO UPDATE SET
            {set_clause}
        {condition}"""
