"""Write path (SPEC 7): upserting N merged rows vs a plain bulk insert of the same rows.

Upsert: the rows go through `ChunkWriter` in chunks of 5,000 (as a refresh commits them) into an
ip_inventory that already holds every one of these IPs as an earlier enrichment left them: a
month-old maxmind and greynoise block, legacy keys the merge must keep, current_asn and
enrichment_updated_at set. One IP in 100 has moved to another AS. A second upsert measures the
worst case: no row had an ASN, so every one gets an entry in the ASN index. Plain: the same
rows, their enrichment already merged, bulk-inserted in one transaction into an empty
ip_inventory of the same kind of database (SQLite: by its one writer, the sqlite3 connection;
PostgreSQL: by DuckDB). SQLite files are in WAL mode, as operators' are
(BENCH_SQLITE_JOURNAL_MODE=delete for a rollback journal). Each is timed around the writes
only (building the rows and the old table is not timed, and its writes are flushed first).
Target: upsert <= 3x plain, on SQLite and on PostgreSQL (127.0.0.1:5432, trust auth).
Usage: python bench/write_path.py [N] [sqlite|postgres ...]    (N defaults to 1,000,000)
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from etl.core.vocabulary import BLOCKS  # noqa: E402
from etl.db.database import Database  # noqa: E402
from etl.db.url import parse_database_url  # noqa: E402
from etl.db.write import ASN_STAGE_COLUMNS, ChunkWriter  # noqa: E402
from testbed.sample.scratch import new_sqlite_file, scratch_database  # noqa: E402

CHUNK = 5_000
NOW = datetime.now(UTC)
TARGET = 3.0
JOURNAL_MODE = os.environ.get("BENCH_SQLITE_JOURNAL_MODE", "wal")  # as operators' files are


def _ips(count: int) -> pl.Expr:
    """``count`` distinct public-looking IPv4 strings (from 11.0.0.0 upwards)."""
    n = pl.int_range(0, count, dtype=pl.UInt32) + (11 << 24)
    octets = [(n // (1 << shift) % 256).cast(pl.String) for shift in (24, 16, 8, 0)]
    return pl.concat_str(octets, separator=".")


def _text(*pieces: str | pl.Expr) -> pl.Expr:
    """Literal text and column values, concatenated."""
    return pl.concat_str([p if isinstance(p, pl.Expr) else pl.lit(p) for p in pieces])


def merged_rows(count: int) -> pl.DataFrame:
    """What a refresh stages: ASN, sessions, freshness flag and this run's blocks (JSON)."""
    stamp = NOW.isoformat()
    asn = (pl.int_range(0, count) % 5_000 + 1_000).cast(pl.Int64)
    maxmind = _text(
        '{"country": "NL", "country_name": "Netherlands", "city": "Amsterdam", '
        '"latitude": 52.37, "longitude": 4.89, "accuracy_radius": 20, "asn": ',
        asn,
        ', "asn_org": "Example Hosting B.V.", "network": "',
        pl.col("ip_address"),
        f'/32", "db_build_epoch": 1795896030, "status": "ok", "cached_at": "{stamp}"}}',
    )
    greynoise = _text(
        '{"noise": true, "riot": false, "classification": "malicious", "name": "unknown", '
        '"last_seen": "2026-11-20", "link": "https://viz.greynoise.io/ip/',
        pl.col("ip_address"),
        f'", "status": "ok", "cached_at": "{stamp}"}}',
    )
    return pl.select(_ips(count).alias("ip_address")).with_columns(
        asn.alias("current_asn"),
        pl.lit(None, pl.Datetime("us", "UTC")).alias("first_seen"),
        pl.lit(None, pl.Datetime("us", "UTC")).alias("last_seen"),
        pl.lit(None, pl.Int64).alias("session_count"),
        pl.lit(1, pl.Int32).alias("touched"),
        pl.lit('{"is_bogon": false, "reason": null}').alias("validation"),
        maxmind.alias("maxmind"),
        pl.lit(None, pl.String).alias("cymru"),
        greynoise.alias("greynoise"),
    )


def asn_rows(rows: pl.DataFrame) -> pl.DataFrame:
    """The asn_inventory rows the chunks point at."""
    numbers = rows["current_asn"].unique().sort()
    return pl.DataFrame({"asn_number": numbers}).with_columns(
        pl.lit("Example Hosting B.V.").alias("organization_name"),
        pl.lit(None, pl.String).alias("organization_country"),
        pl.lit(None, pl.String).alias("rir_registry"),
    )


def inventory_rows(
    rows: pl.DataFrame, enrichment: pl.Expr, asn: pl.Expr, stamp: datetime | None
) -> pl.DataFrame:
    """ip_inventory rows for ``rows``' IPs: enrichment JSON text, current_asn, and the time the
    ASN was verified and the row enriched (``stamp``; None: never)."""
    seen = NOW - timedelta(days=30)
    return rows.select(
        "ip_address",
        asn.alias("current_asn"),
        pl.lit(stamp, pl.Datetime("us", "UTC")).alias("asn_last_verified"),
        pl.lit(seen).alias("first_seen"),
        pl.lit(seen).alias("last_seen"),
        pl.lit(3, pl.Int64).alias("session_count"),
        enrichment.alias("enrichment"),
        pl.lit(stamp, pl.Datetime("us", "UTC")).alias("enrichment_updated_at"),
        pl.lit(seen).alias("created_at"),
        pl.lit(seen).alias("updated_at"),
    )


def old_asn() -> pl.Expr:
    """The ASN an earlier enrichment found: the same as now, but for one IP in 100."""
    moved = (pl.col("current_asn") - 1_000 + 1) % 5_000 + 1_000
    return pl.when(pl.int_range(pl.len()) % 100 == 0).then(moved).otherwise(pl.col("current_asn"))


def old_enrichment() -> pl.Expr:
    """A stale row as an earlier enrichment left it: legacy keys and month-old blocks."""
    return _text(
        '{"dshield": {"ip": {"count": "3", "attacks": "7", "ascountry": "NL"}}, '
        '"spur": ["EXAMPLE", [], "", ["DATACENTER"]], '
        '"maxmind": {"country": "NL", "asn": ',
        old_asn().cast(pl.String),
        ', "status": "ok", "cached_at": "2026-10-01T00:00:00+00:00"}, '
        '"greynoise": {"noise": false, "status": "not_found", '
        '"cached_at": "2026-10-01T00:00:00+00:00"}, "ip": "',
        pl.col("ip_address"),
        '"}',
    )


def merged_enrichment() -> pl.Expr:
    """The enrichment JSON of each row once merged (what the plain insert writes)."""
    members = [pl.lit(f'"{b}": ') + pl.col(b) for b in BLOCKS]
    return pl.lit("{") + pl.concat_str(members, separator=", ", ignore_nulls=True) + pl.lit("}")


@contextmanager
def database(dialect: str, folder: Path, name: str) -> Iterator[Database]:
    """An empty cowrieprocessor database (our DDL) for one measurement."""
    if dialect == "sqlite":
        path = folder / f"{name}.sqlite"
        new_sqlite_file(path, JOURNAL_MODE)
        with Database(parse_database_url(f"sqlite:///{path}")) as db:
            db.ensure_schema()
            yield db
        return
    with scratch_database(f"etl_bench_{name}") as url, Database(parse_database_url(url)) as db:
        db.ensure_schema()
        yield db


def settle() -> None:
    """Flush what setting up wrote: the first commit timed would otherwise wait for it."""
    os.sync()


def seed_asns(db: Database, rows: pl.DataFrame) -> pl.DataFrame:
    """Fill asn_inventory with the ASNs of ``rows`` (PostgreSQL checks the foreign key)."""
    asns = asn_rows(rows)
    seen = NOW - timedelta(days=30)
    db.append(
        "asn_inventory",
        asns.select(list(ASN_STAGE_COLUMNS)).with_columns(
            pl.lit(seen).alias(c) for c in ("first_seen", "last_seen", "created_at", "updated_at")
        ),
    )
    return asns


def plain_insert(dialect: str, rows: pl.DataFrame, folder: Path) -> float:
    """Seconds to bulk-insert ``rows``, merged, into an empty ip_inventory."""
    with database(dialect, folder, "plain") as db:
        seed_asns(db, rows)
        plain_rows = inventory_rows(rows, merged_enrichment(), pl.col("current_asn"), NOW)
        settle()
        started = time.perf_counter()
        db.stage("ip_inventory", plain_rows)
        return time.perf_counter() - started


def upsert(dialect: str, rows: pl.DataFrame, folder: Path, *, had_asn: bool) -> float:
    """Seconds to upsert ``rows`` in chunks over their older versions (with or without an
    ASN)."""
    with database(dialect, folder, "upsert" if had_asn else "upsert_no_asn") as db:
        asns = seed_asns(db, rows)
        seen = NOW - timedelta(days=30)
        asn = old_asn() if had_asn else pl.lit(None, pl.Int64)
        db.append("ip_inventory", inventory_rows(rows, old_enrichment(), asn, seen))
        writer = ChunkWriter(db)
        try:
            settle()
            started = time.perf_counter()
            for chunk in rows.iter_slices(CHUNK):
                chunk_asns = asns.filter(pl.col("asn_number").is_in(chunk["current_asn"].implode()))
                writer.write(chunk, chunk_asns)
            return time.perf_counter() - started
        finally:
            writer.close()


def main() -> None:
    args = sys.argv[1:]
    count = int(args.pop(0)) if args and args[0].isdigit() else 1_000_000
    dialects = args or ["sqlite", "postgres"]
    rows = merged_rows(count)
    print(f"write path: {count:,} merged rows, upsert in {CHUNK:,}-row chunks vs plain insert")
    print(f"{'database':<24} {'plain s':>8} {'upsert s':>9} {'ratio':>6}  target")
    with tempfile.TemporaryDirectory() as folder:
        for dialect in dialects:
            plain = plain_insert(dialect, rows, Path(folder))
            for label, had_asn in ((dialect, True), (f"{dialect}, every ASN new", False)):
                seconds = upsert(dialect, rows, Path(folder), had_asn=had_asn)
                ratio = seconds / plain
                verdict = "ok" if ratio <= TARGET else "MISSED"
                target = f"<= {TARGET:.0f}x {verdict}" if had_asn else "(worst case, shown)"
                print(f"{label:<24} {plain:>8.2f} {seconds:>9.2f} {ratio:>5.2f}x  {target}")


if __name__ == "__main__":
    main()
