"""MaxMind step: geolocation and ASN for the whole frame in one vectorized join.

Files come from ``--maxmind-asn`` / ``--maxmind-city`` (must exist) or from ``--maxmind-dir``
(GeoLite2-ASN.mmdb; GeoLite2-City.mmdb or GeoIP2-City.mmdb; missing ones are reported once
and the run continues without them).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl

from etl.config import RefreshConfig
from etl.errors import MaxMindError
from etl.mmdb import MmdbTree, ipv4_octets, ipv6_octets

ASN_FILES = ("GeoLite2-ASN.mmdb",)
CITY_FILES = ("GeoLite2-City.mmdb", "GeoIP2-City.mmdb")

_ASN_SCHEMA = {"asn_ptr": pl.Int64, "asn": pl.Int64, "asn_org": pl.String}
_CITY_SCHEMA = {
    "city_ptr": pl.Int64,
    "country": pl.String,
    "country_name": pl.String,
    "city": pl.String,
    "latitude": pl.Float64,
    "longitude": pl.Float64,
    "accuracy_radius": pl.Int64,
}
BLOCK_FIELDS = (
    "country",
    "country_name",
    "city",
    "latitude",
    "longitude",
    "accuracy_radius",
    "asn",
    "asn_org",
    "network",
    "db_build_epoch",
    "status",
    "cached_at",
)


@dataclass
class MaxMindDatabases:
    """The open ASN and City databases (either may be absent) and what was noticed opening them."""

    asn: MmdbTree | None = None
    city: MmdbTree | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def available(self) -> bool:
        """Whether at least one database is open."""
        return self.asn is not None or self.city is not None

    @property
    def build_epoch(self) -> int:
        """The newest build epoch among the open databases (0 when none is open)."""
        return max((t.build_epoch for t in (self.asn, self.city) if t is not None), default=0)

    def close(self) -> None:
        """Close the open databases."""
        for tree in (self.asn, self.city):
            if tree is not None:
                tree.close()


def open_maxmind(config: RefreshConfig) -> MaxMindDatabases:
    """Open the configured MaxMind databases; raise `MaxMindError` for a bad named file."""
    databases = MaxMindDatabases()
    databases.asn = _open_one(config.maxmind_asn, config.maxmind_dir, ASN_FILES, "ASN", databases)
    databases.city = _open_one(
        config.maxmind_city, config.maxmind_dir, CITY_FILES, "City", databases
    )
    return databases


def _open_one(
    named: Path | None,
    directory: Path,
    candidates: tuple[str, ...],
    kind: str,
    databases: MaxMindDatabases,
) -> MmdbTree | None:
    option = f"--maxmind-{kind.lower()}"
    if named is not None:
        if not named.is_file():
            raise MaxMindError(f"{option} {named}: file not found")
        tree = MmdbTree(named)
        if kind not in tree.database_type:
            tree.close()
            raise MaxMindError(
                f"{option} {named}: this is a {tree.database_type} database, not a {kind} one"
            )
        return tree
    for name in candidates:
        if (directory / name).is_file():
            return MmdbTree(directory / name)
    databases.notes.append(
        f"MaxMind {kind} database not found in {directory} (looked for {', '.join(candidates)}); "
        f"continuing without it"
    )
    return None


def _locate(tree: MmdbTree, rows: pl.DataFrame, prefix: str) -> pl.DataFrame:
    """Add ``<prefix>_ptr`` and ``<prefix>_prefix`` columns for every row (v4 and v6)."""
    parts = []
    for version, octets, column in ((4, ipv4_octets, "ipv4_int"), (6, ipv6_octets, "ipv6_packed")):
        part = rows.filter(pl.col("ip_version") == version)
        if part.height:
            pointer, depth = tree.locate(octets(part[column]))
            part = part.with_columns(
                pl.Series(f"{prefix}_ptr", pointer, dtype=pl.Int64),
                pl.Series(f"{prefix}_prefix", depth, dtype=pl.Int64),
            )
            parts.append(part)
    if not parts:
        return rows.with_columns(
            pl.lit(0, pl.Int64).alias(f"{prefix}_ptr"),
            pl.lit(0, pl.Int64).alias(f"{prefix}_prefix"),
        )
    return pl.concat(parts)


def _decoded(tree: MmdbTree, located: pl.DataFrame, prefix: str) -> list[dict[str, Any]]:
    """Decode each distinct data pointer once, through one representative address."""
    representatives = (
        located.filter(pl.col(f"{prefix}_ptr") > 0)
        .group_by(f"{prefix}_ptr")
        .agg(pl.col("ip").first())
        .iter_rows()
    )
    return [
        {"pointer": pointer, "record": tree.record(address) or {}}
        for pointer, address in representatives
    ]


def _asn_table(tree: MmdbTree, located: pl.DataFrame) -> pl.DataFrame:
    rows = [
        {
            "asn_ptr": item["pointer"],
            "asn": item["record"].get("autonomous_system_number"),
            "asn_org": item["record"].get("autonomous_system_organization"),
        }
        for item in _decoded(tree, located, "asn")
    ]
    return pl.DataFrame(rows, schema=_ASN_SCHEMA)


def _city_table(tree: MmdbTree, located: pl.DataFrame) -> pl.DataFrame:
    rows = []
    for item in _decoded(tree, located, "city"):
        record = item["record"]
        country = record.get("country") or {}
        location = record.get("location") or {}
        rows.append(
            {
                "city_ptr": item["pointer"],
                "country": country.get("iso_code"),
                "country_name": (country.get("names") or {}).get("en"),
                "city": ((record.get("city") or {}).get("names") or {}).get("en"),
                "latitude": location.get("latitude"),
                "longitude": location.get("longitude"),
                "accuracy_radius": location.get("accuracy_radius"),
            }
        )
    return pl.DataFrame(rows, schema=_CITY_SCHEMA)


def _ipv4_network(ipv4_int: pl.Expr, prefix_len: pl.Expr) -> pl.Expr:
    block = pl.lit(2, pl.UInt64).pow((32 - prefix_len).cast(pl.UInt32)).cast(pl.UInt64)
    network = (ipv4_int.cast(pl.UInt64) // block) * block
    octets = [(network // (1 << shift) % 256).cast(pl.String) for shift in (24, 16, 8, 0)]
    return pl.concat_str(
        [octets[0], pl.lit("."), octets[1], pl.lit("."), octets[2], pl.lit("."), octets[3]]
    ) + (pl.lit("/") + prefix_len.cast(pl.String))


def _ipv6_networks(rows: pl.DataFrame) -> pl.Series:
    """Network strings of the (few) IPv6 rows, in row order."""
    networks = [
        str(ipaddress.IPv6Network((packed, length), strict=False)) if length else None
        for packed, length in rows.select("ipv6_packed", "net_prefix").iter_rows()
    ]
    return pl.Series("network_v6", networks, dtype=pl.String)


def with_maxmind(
    frame: pl.DataFrame, databases: MaxMindDatabases, cached_at: datetime
) -> pl.DataFrame:
    """Add the ``maxmind`` block (and its asn, asn_org, status) to stale, non-bogon rows."""
    wanted = pl.col("stale_maxmind") & ~pl.col("is_bogon")
    rows = frame.with_row_index("_row").filter(wanted)
    found = pl.lit(False)
    if databases.asn is not None:
        rows = _locate(databases.asn, rows, "asn")
        rows = rows.join(_asn_table(databases.asn, rows), on="asn_ptr", how="left")
        found = found | (pl.col("asn_ptr") > 0)
    else:
        rows = rows.with_columns(
            pl.lit(0, pl.Int64).alias("asn_prefix"),
            *(pl.lit(None, dtype).alias(n) for n, dtype in _ASN_SCHEMA.items()),
        )
    if databases.city is not None:
        rows = _locate(databases.city, rows, "city")
        rows = rows.join(_city_table(databases.city, rows), on="city_ptr", how="left")
        found = found | (pl.col("city_ptr") > 0)
    else:
        rows = rows.with_columns(
            pl.lit(0, pl.Int64).alias("city_prefix"),
            *(pl.lit(None, dtype).alias(n) for n, dtype in _CITY_SCHEMA.items()),
        )
    rows = rows.with_columns(
        pl.when(pl.col("asn").is_not_null())
        .then(pl.col("asn_prefix"))
        .when(pl.col("country").is_not_null() | pl.col("latitude").is_not_null())
        .then(pl.col("city_prefix"))
        .alias("net_prefix"),
        pl.when(found).then(pl.lit("ok")).otherwise(pl.lit("not_found")).alias("status"),
        pl.lit(databases.build_epoch, pl.Int64).alias("db_build_epoch"),
        pl.lit(cached_at.isoformat()).alias("cached_at"),
    ).sort("_row")
    ipv6_rows = rows.filter(pl.col("ip_version") == 6)
    network = pl.when(pl.col("ip_version") == 4).then(
        _ipv4_network(pl.col("ipv4_int"), pl.col("net_prefix"))
    )
    rows = rows.with_columns(network.alias("network"))
    if ipv6_rows.height:
        v6 = ipv6_rows.select("_row").with_columns(_ipv6_networks(ipv6_rows))
        rows = rows.join(v6, on="_row", how="left").with_columns(
            pl.coalesce("network", "network_v6").alias("network")
        )
    blocks = rows.select(
        "_row",
        pl.col("asn").alias("maxmind_asn"),
        pl.col("asn_org").alias("maxmind_asn_org"),
        pl.col("status").alias("maxmind_status"),
        pl.struct(*BLOCK_FIELDS).struct.json_encode().alias("maxmind"),
    )
    return (
        frame.with_row_index("_row")
        .join(blocks, on="_row", how="left", maintain_order="left")
        .drop("_row")
    )
