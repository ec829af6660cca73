"""Write path (SPEC 7): upserting N merged rows vs a plain bulk insert of the same rows.

Upsert: the rows go through `ChunkWriter` in chunks of 5,000 (as a refresh commits them) into an
ip_inventory that already holds every one of these IPs with older blocks and legacy keys, which
the merge must keep. Plain: the same rows, their enrichment already merged, bulk-inserted by
DuckDB into an empty ip_inventory of the same kind of database in one statement. Both are
timed around the writes only (building the rows and the old table is not timed).
Target: upsert <= 3x plain, on SQLite and on PostgreSQL (127.0.0.1:5432, trust auth).
Usage: python bench/write_path.py [N] [sqlite|postgres ...]    (N defaults to 1,000,000)
"""

from __future__ import annotations

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

from etl.db.database import Database  # noqa: E402
from etl.db.url import parse_database_url  # noqa: E402
from etl.db.write import ASN_STAGE_COLUMNS, BLOCKS, ChunkWriter  # noqa: E402
from etl.sample.scratch import scratch_database  # noqa: E402

CHUNK = 5_000
NOW = datetime.now(UTC)
TARGET = 3.0


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


def inventory_rows(rows: pl.DataFrame, enrichment: pl.Expr) -> pl.DataFrame:
    """ip_inventory rows for ``rows``' IPs with the given enrichment JSON text."""
    seen = NOW - timedelta(days=30)
    return rows.select(
        "ip_address",
        pl.lit(seen).alias("first_seen"),
        pl.lit(seen).alias("last_seen"),
        pl.lit(3, pl.Int64).alias("session_count"),
        enrichment.alias("enrichment"),
        pl.lit(seen).alias("created_at"),
        pl.lit(seen).alias("updated_at"),
    )


def old_enrichment() -> pl.Expr:
    """A stale row as cowrieprocessor left it: legacy keys and month-old blocks."""
    return _text(
        '{"dshield": {"ip": {"count": "3", "attacks": "7", "ascountry": "CN"}}, '
        '"spur": ["CHINANET", [], "", ["DATACENTER"]], '
        '"maxmind": {"country": "CN", "asn": 4134, "status": "ok", '
        '"cached_at": "2026-10-01T00:00:00+00:00"}, '
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
        with Database(parse_database_url(f"sqlite:///{folder / name}.sqlite")) as db:
            db.ensure_schema()
            yield db
        return
    with scratch_database(f"etl_bench_{name}") as url, Database(parse_database_url(url)) as db:
        db.ensure_schema()
        yield db


def measure(dialect: str, rows: pl.DataFrame, folder: Path) -> tuple[float, float]:
    """(plain insert seconds, upsert seconds) of ``rows`` on one kind of database."""
    with database(dialect, folder, "plain") as db:
        plain_rows = inventory_rows(rows, merged_enrichment())
        started = time.perf_counter()
        db.stage("ip_inventory", plain_rows)
        plain = time.perf_counter() - started
    with database(dialect, folder, "upsert") as db:
        asns = asn_rows(rows)
        seen = NOW - timedelta(days=30)
        db.append(
            "asn_inventory",
            asns.select(list(ASN_STAGE_COLUMNS)).with_columns(
                pl.lit(seen).alias(c)
                for c in ("first_seen", "last_seen", "created_at", "updated_at")
            ),
        )
        db.append("ip_inventory", inventory_rows(rows, old_enrichment()))
        writer = ChunkWriter(db)
        try:
            started = time.perf_counter()
            for chunk in rows.iter_slices(CHUNK):
                chunk_asns = asns.filter(pl.col("asn_number").is_in(chunk["current_asn"].implode()))
                writer.write(chunk, chunk_asns)
            upsert = time.perf_counter() - started
        finally:
            writer.close()
    return plain, upsert


def main() -> None:
    args = sys.argv[1:]
    count = int(args.pop(0)) if args and args[0].isdigit() else 1_000_000
    dialects = args or ["sqlite", "postgres"]
    rows = merged_rows(count)
    print(f"write path: {count:,} merged rows, upsert in {CHUNK:,}-row chunks vs plain insert")
    print(f"{'database':<10} {'plain s':>8} {'upsert s':>9} {'ratio':>6}  target")
    with tempfile.TemporaryDirectory() as folder:
        for dialect in dialects:
            plain, upsert = measure(dialect, rows, Path(folder))
            ratio = upsert / plain
            verdict = "ok" if ratio <= TARGET else "MISSED"
            print(f"{dialect:<10} {plain:>8.2f} {upsert:>9.2f} {ratio:>5.2f}x  <= {TARGET:.0f}x "
                  f"{verdict}")  # fmt: skip


if __name__ == "__main__":
    main()
