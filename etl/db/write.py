"""Write path (SPEC 4): stage a merged chunk, merge it natively in one transaction.

Per chunk: the chunk is bulk-inserted into two staging tables (SQLite: TEMP tables of the
writing connection; PostgreSQL: DuckDB into tables of the database), then one native
transaction upserts ``asn_inventory`` (first: ``current_asn`` points at it)
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

import os
import secrets
from datetime import datetime
from typing import Final

import polars as pl

from etl.core.clock import Clock, utc_now
from etl.core.vocabulary import BLOCKS
from etl.db.database import Database
from etl.db.dialect import Unit
from etl.db.sessions import SessionLinker
from etl.db.sqlite import sqlite_timestamp
from etl.db.upsert import ASN_DETAIL_STAGE_COLUMNS, ASN_STAGE_COLUMNS, IP_STAGE_COLUMNS

__all__ = [  # the stage columns and the timestamp form are used by tests and benchmarks
    "ASN_DETAIL_STAGE_COLUMNS",
    "ASN_STAGE_COLUMNS",
    "IP_STAGE_COLUMNS",
    "MAX_PG_INTEGER",
    "ChunkWriter",
    "sqlite_timestamp",
]

MAX_PG_INTEGER: Final = 2**31 - 1


class ChunkWriter:
    """Upserts chunks into one database; owns its staging tables for the run.

    SQLite stages into TEMP tables of the writing connection (nothing is left in the file, even
    by a killed run); PostgreSQL into tables of the database, dropped by `close` at the end of
    a run, and by `Database`'s exit when the run stops before it (`drop_own_stages`, bounded
    in time; its tables are named for its pid). The merge SQL
    is the dialect's (`Backend.chunk_merge`, `Backend.asn_details_merge`). With a ``linker``,
    the sessions of each chunk's IPs are linked in a transaction right after the chunk's.
    """

    def __init__(
        self, db: Database, clock: Clock = utc_now, linker: SessionLinker | None = None
    ) -> None:
        self.db = db
        self.linker = linker  # links each chunk's sessions right after its rows are written
        self.clock = clock  # the rows' update time
        self.backend = db.backend
        if db.dialect == "postgres":  # cowrieprocessor's column, where the table has it
            self.backend.label_types = "ip_types" in db.columns("ip_inventory")
        tag = f"{os.getpid()}_{secrets.token_hex(3)}"
        self.ip_stage = f"_etl_stage_ip_{tag}"
        self.asn_stage = f"_etl_stage_asn_{tag}"
        self.rows_written = 0  # ip_inventory rows upserted, counting a row written twice twice
        self.asns_written: set[int] = set()  # the distinct asn_inventory rows upserted
        self.db.execute_scratch(
            [
                self.backend.create_stage(self.ip_stage, IP_STAGE_COLUMNS),
                self.backend.create_stage(self.asn_stage, ASN_DETAIL_STAGE_COLUMNS),
            ]
        )

    def _stage_name(self, name: str) -> str:
        return self.backend.stage_table(name)

    def close(self) -> None:
        """Drop the staging tables."""
        self.db.execute_scratch(
            [f"DROP TABLE IF EXISTS {self._stage_name(n)}" for n in (self.ip_stage, self.asn_stage)]
        )

    def write(self, ips: pl.DataFrame, asns: pl.DataFrame, now: datetime | None = None) -> None:
        """Upsert one chunk: ``ips`` has the IP stage columns (but ``blocks``), ``asns`` the
        ASN stage columns. Staging and merge are one unit, retried whole by the database while
        another writer holds the lock or the connection was lost."""
        now = now or self.clock()
        blocks = pl.sum_horizontal(
            pl.col(b).is_not_null().cast(pl.Int32) * (1 << i) for i, b in enumerate(BLOCKS)
        )
        # In key order: the upsert then walks the ip_address index forwards, not all over it.
        staged = ips.with_columns(blocks.alias("blocks")).select(list(IP_STAGE_COLUMNS))
        loads = [
            (self._stage_name(self.asn_stage), asns.select(list(ASN_STAGE_COLUMNS))),
            (self._stage_name(self.ip_stage), staged.sort("ip_address")),
        ]
        patterns = sorted(staged["blocks"].unique().to_list())
        merge = self.backend.chunk_merge(self.ip_stage, self.asn_stage, patterns, now)
        self.db.write(loads, merge.statements, merge.params, "chunk write")
        if self.linker is not None:
            self.linker.link(ips["ip_address"])
        self.rows_written += ips.height
        self.asns_written.update(asns["asn_number"].to_list())

    def write_asn_details(self, details: pl.DataFrame, now: datetime | None = None) -> None:
        """Tier 1: store AS registration data (name, country, registry) and the ``cymru`` block.

        ``details`` has the asn stage columns plus ``details`` (the block as JSON text). Known
        values replace old ones; a NULL (AS not found) keeps what the row had.
        """
        now = now or self.clock()
        loads = [(self._stage_name(self.asn_stage), details.select(list(ASN_DETAIL_STAGE_COLUMNS)))]
        merge = self.backend.asn_details_merge(self.asn_stage, now)
        self.db.write(loads, merge.statements, merge.params, "AS details write")
        self.asns_written.update(details["asn_number"].to_list())

    def recount_asns(self, asns: list[int] | None) -> None:
        """Recompute unique_ip_count and total_session_count, set-based: of these ASNs, or of
        every ASN when ``asns`` is None (after a killed run whose counts were never redone)."""
        asn_table = self.backend.native_table("asn_inventory")
        ip_table = self.backend.native_table("ip_inventory")
        if asns is None:
            source, needs = asn_table, Unit([])
        elif not asns:
            return
        else:
            source, needs = self.backend.asn_source(asns, self.asn_stage)
        self.db.write(
            needs.loads,
            [
                f"""UPDATE {asn_table}
                    SET unique_ip_count = counts.ips, total_session_count = counts.sessions
                    FROM (SELECT stage.asn_number, count(ip.ip_address) AS ips,
                                 coalesce(sum(ip.session_count), 0) AS sessions
                          FROM {source} AS stage
                          LEFT JOIN {ip_table} AS ip
                                 ON ip.current_asn = stage.asn_number
                          GROUP BY stage.asn_number) AS counts
                    WHERE asn_inventory.asn_number = counts.asn_number
                      AND (unique_ip_count IS DISTINCT FROM counts.ips
                           OR total_session_count IS DISTINCT FROM counts.sessions)""",
                *needs.statements,
            ],
            needs.params,
            "ASN recount",
        )
