"""MaxMind step: geolocation and ASN for the whole frame, through MaxMind's own reader.

Each distinct address is looked up at most once per database with the ``maxminddb`` C
extension (memory-mapped; IPv4 in ascending order, so an address inside the network just
answered shares that answer), the answers become one small frame, and one join puts them onto
the rows.
Opening a database reads its metadata only, so a run of a few thousand IPs does not pay for
the millions of search-tree nodes of a real GeoLite2 file.

Files come from the maxmind_asn / maxmind_city settings (must exist) or from the maxmind_dir
setting (GeoLite2-ASN.mmdb; GeoLite2-City.mmdb or GeoIP2-City.mmdb; a folder that does not exist
is refused earlier, by `etl.refresh.config.check_given`, unless it is the default). A file
missing from the folder is one warning line, and a build time of 0 in the run's metrics; the
run goes on:
- without either file, MaxMind is not asked (every IP needs Team Cymru for its ASN);
- with one of the two, a block it writes holds what that file says, but it is no complete
  answer: its status is ``error`` and its ``error`` says which file was missing (``no City
  database``). While the file stays missing, complete blocks are kept as they are and such
  blocks are fresh for the usual TTL (`etl.db.select`: no run rewrites every row); the first
  run that has both files looks them up again.
A file that is there but damaged, named or found, stops the run with exit 2
(`etl.sources.maxmind.check`: checked at open, before any work, and at every lookup, all of
which come before any row is written). A build older than GeoLite2's 30-day licence window is
reported once, as a note.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import maxminddb
import polars as pl

from etl.core.errors import MaxMindError, MaxMindFileError
from etl.sources.maxmind.check import READ_ERRORS, RecordError, check_whole, damaged, field

ASN_FILES = ("GeoLite2-ASN.mmdb",)
CITY_FILES = ("GeoLite2-City.mmdb", "GeoIP2-City.mmdb")
LICENCE_WINDOW = timedelta(days=30)
_MODE = getattr(maxminddb, "MODE_MMAP_EXT", maxminddb.MODE_AUTO)

_ASN_SCHEMA = {"asn_found": pl.Boolean, "asn": pl.Int64, "asn_org": pl.String}
_CITY_SCHEMA = {
    "city_found": pl.Boolean,
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
    "error",  # why the block is an error: the database that was missing (else null)
    "status",
    "cached_at",
)
Address = str | ipaddress.IPv6Address


@dataclass
class MaxMindDatabase:
    """One open .mmdb file and its metadata."""

    path: Path
    reader: Any
    database_type: str
    build_epoch: int

    @classmethod
    def open(cls, path: Path) -> MaxMindDatabase:
        """Open ``path`` memory-mapped; raise `MaxMindError` when it is not a MaxMind DB."""
        try:
            reader = maxminddb.open_database(str(path), _MODE)
        except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
            raise MaxMindError(f"{path} is not a readable MaxMind DB (.mmdb) file: {exc}") from exc
        meta = reader.metadata()
        kind = str(meta.database_type)
        shape = asn_row if "ASN" in kind else city_row if "City" in kind else None
        try:
            check_whole(path, meta, None if shape is None else lambda record: shape(record, 0))
        except MaxMindError:
            reader.close()
            raise
        return cls(path, reader, kind, int(meta.build_epoch))

    def lookup(
        self, addresses: list[Address], numbers: list[int | None]
    ) -> list[tuple[dict[str, Any] | None, int]]:
        """(record or None, prefix length in the address's own family) of every address.

        ``numbers`` holds each IPv4 address as an integer, ascending (None for IPv6): an
        address inside the network answered for the one before it shares that answer, so
        the reader is asked once per network met, at most once per address.
        """
        get = self.reader.get_with_prefix_len
        found: list[tuple[dict[str, Any] | None, int]] = []
        answer: tuple[dict[str, Any] | None, int] = (None, 0)
        end = -1
        try:
            for address, number in zip(addresses, numbers, strict=True):
                if number is None or number > end:
                    answer = get(address)
                    end = -1 if number is None else number | ((1 << (32 - answer[1])) - 1)
                found.append(answer)
        except READ_ERRORS as exc:
            raise damaged(self.path, f"a lookup failed: {exc}") from exc
        return found

    def rows(
        self,
        addresses: list[Address],
        numbers: list[int | None],
        row: Callable[[Any, int], tuple[Any, ...]],
    ) -> list[tuple[Any, ...]]:
        """``row(record, prefix)`` of every address (`lookup`); a record of the wrong shape
        is a damaged file."""
        try:
            return [row(record, prefix) for record, prefix in self.lookup(addresses, numbers)]
        except RecordError as exc:
            raise damaged(
                self.path, f"a record is not what a MaxMind database holds: {exc}"
            ) from exc

    def close(self) -> None:
        """Close the reader."""
        self.reader.close()


@dataclass
class MaxMindDatabases:
    """The open ASN and City databases (either may be absent) and what was noticed opening them.

    ``missing``: the kinds (``asn``, ``city``) looked for in the folder and not found there (a
    kind neither named nor looked for is not missing: the library's ``open_maxmind(asn=...)``).
    """

    asn: MaxMindDatabase | None = None
    city: MaxMindDatabase | None = None
    notes: list[str] = dataclass_field(default_factory=list)
    missing: list[str] = dataclass_field(default_factory=list)

    @property
    def available(self) -> bool:
        """Whether at least one database is open."""
        return self.asn is not None or self.city is not None

    @property
    def build_epoch(self) -> int:
        """The newest build epoch among the open databases (0 when none is open)."""
        return max(self.build_epochs.values(), default=0)

    @property
    def build_epochs(self) -> dict[str, int]:
        """Build epoch of each database the run opened or looked for, by kind (``asn``,
        ``city``): 0 for one `missing` (in the metrics, a build time that no age alert lets
        pass)."""
        pairs = (("asn", self.asn), ("city", self.city))
        found = {kind: db.build_epoch for kind, db in pairs if db is not None}
        return {
            kind: found.get(kind, 0)
            for kind in ("asn", "city")
            if kind in found or kind in self.missing
        }

    @property
    def lacking(self) -> str | None:
        """What each block of this run lacks when one database is missing (the ``error`` of
        its blocks, `with_maxmind`): ``no ASN database``, ``no City database``; else None."""
        if not self.missing:
            return None
        return "no " + " or ".join(_KIND_NAMES[kind] for kind in self.missing) + " database"

    def close(self) -> None:
        """Close the open databases."""
        for database in (self.asn, self.city):
            if database is not None:
                database.close()


def open_maxmind(
    *,
    asn: Path | None = None,
    city: Path | None = None,
    directory: Path | None = None,
    now: datetime | None = None,
) -> MaxMindDatabases:
    """Open the ASN and City databases (named files, else found in ``directory``).

    Raises `MaxMindError` for a named file that is missing, unreadable or of the wrong kind.
    """
    databases = MaxMindDatabases()
    databases.asn = _open_one(asn, directory, ASN_FILES, "ASN", databases)
    try:
        databases.city = _open_one(city, directory, CITY_FILES, "City", databases)
    except BaseException:
        databases.close()  # the ASN file is open already
        raise
    if directory is not None and databases.missing:
        databases.notes.append(_missing_note(databases, directory))
    moment = now or datetime.now(UTC)
    for kind, database in (("ASN", databases.asn), ("City", databases.city)):
        if database is not None and (note := _age_note(kind, database, moment)):
            databases.notes.append(note)
    return databases


def _open_one(
    named: Path | None,
    directory: Path | None,
    candidates: tuple[str, ...],
    kind: str,
    databases: MaxMindDatabases,
) -> MaxMindDatabase | None:
    setting = f"maxmind_{kind.lower()}"
    if named is not None:
        if not named.is_file():
            raise MaxMindFileError(setting, f"{named}: file not found")
        database = MaxMindDatabase.open(named)
        if kind not in database.database_type:
            database.close()
            raise MaxMindFileError(
                setting, f"{named}: this is a {database.database_type} database, not a {kind} one"
            )
        return database
    if directory is None:
        return None
    for name in candidates:
        if (directory / name).is_file():
            return MaxMindDatabase.open(directory / name)
    databases.missing.append(kind.lower())
    return None


_KIND_NAMES = {"asn": "ASN", "city": "City"}


def _missing_note(databases: MaxMindDatabases, directory: Path) -> str:
    """The one warning line about the databases not found in ``directory``."""
    where = f"{directory}{'' if directory.is_dir() else ' (no such folder)'}"
    if databases.asn is None and databases.city is None:
        return (
            f"warning: MaxMind ASN database not found in {where}, nor a City database (looked "
            f"for {', '.join(ASN_FILES + CITY_FILES)}): MaxMind is not asked, every IP needs "
            "Team Cymru for its ASN"
        )
    (kind,) = databases.missing
    candidates = ASN_FILES if kind == "asn" else CITY_FILES
    lacks = "an ASN (every IP needs Team Cymru for it)" if kind == "asn" else "geolocation"
    return (
        f"warning: MaxMind {_KIND_NAMES[kind]} database not found in {where} (looked for "
        f"{', '.join(candidates)}): MaxMind blocks get no {lacks}, status error "
        f"({databases.lacking}), and are looked up again once it is there"
    )


def _age_note(kind: str, database: MaxMindDatabase, now: datetime) -> str | None:
    """The licence warning for a build older than 30 days, else None."""
    built = datetime.fromtimestamp(database.build_epoch, UTC)
    if now - built <= LICENCE_WINDOW:
        return None
    return (
        f"MaxMind {kind} database {database.path} was built on {built:%Y-%m-%d} "
        f"({(now - built).days} days ago); GeoLite2's licence asks for an update within 30 days"
    )


def asn_row(record: Any, prefix: int) -> tuple[Any, ...]:
    """(found, asn, organisation, prefix) of an ASN record; `RecordError` for a wrong shape."""
    if record is not None and not isinstance(record, dict):
        raise RecordError(f"a record is {type(record).__name__}")
    asn = field(record, "autonomous_system_number", kind=int)
    if asn is not None and not 0 <= asn < 1 << 32:
        raise RecordError("the AS number is out of range")
    organisation = field(record, "autonomous_system_organization", kind=str)
    return (record is not None, asn, organisation, prefix)


def _asn_answers(
    database: MaxMindDatabase, addresses: list[Address], numbers: list[int | None]
) -> pl.DataFrame:
    rows = database.rows(addresses, numbers, asn_row)
    return pl.DataFrame(rows, schema={**_ASN_SCHEMA, "asn_prefix": pl.Int64}, orient="row")


def city_row(record: Any, prefix: int) -> tuple[Any, ...]:
    """(found, country, country name, city, latitude, longitude, accuracy radius, prefix) of a
    City record; `RecordError` for a wrong shape."""
    if record is None:
        return (False, None, None, None, None, None, None, prefix)
    if not isinstance(record, dict):
        raise RecordError(f"a record is {type(record).__name__}")
    radius = field(record, "location", "accuracy_radius", kind=int)
    if radius is not None and not 0 <= radius < 1 << 31:
        raise RecordError("the accuracy radius is out of range")
    number = (int, float)
    return (
        True,
        field(record, "country", "iso_code", kind=str),
        field(record, "country", "names", "en", kind=str),
        field(record, "city", "names", "en", kind=str),
        field(record, "location", "latitude", kind=number),
        field(record, "location", "longitude", kind=number),
        radius,
        prefix,
    )


def _city_answers(
    database: MaxMindDatabase, addresses: list[Address], numbers: list[int | None]
) -> pl.DataFrame:
    rows = database.rows(addresses, numbers, city_row)
    return pl.DataFrame(rows, schema={**_CITY_SCHEMA, "city_prefix": pl.Int64}, orient="row")


def _absent(schema: dict[str, Any], prefix_column: str, height: int) -> pl.DataFrame:
    columns = {name: pl.Series(name, [None] * height, dtype) for name, dtype in schema.items()}
    frame = pl.DataFrame({**columns, prefix_column: pl.Series([0] * height, dtype=pl.Int64)})
    return frame.with_columns(pl.col(next(iter(schema))).fill_null(False))


def lookup_addresses(databases: MaxMindDatabases, distinct: pl.DataFrame) -> pl.DataFrame:
    """One row of answers per distinct address (columns ip, ip_version, ipv4_int,
    ipv6_packed); IPv4 in ascending order, IPv6 given to the reader as its packed bytes."""
    distinct = distinct.sort("ipv4_int", nulls_last=True)
    addresses: list[Address] = [
        ipaddress.IPv6Address(packed) if version == 6 else ip
        for ip, version, packed in distinct.select("ip", "ip_version", "ipv6_packed").iter_rows()
    ]
    numbers: list[int | None] = distinct["ipv4_int"].to_list()
    height = len(addresses)
    asn = (
        _asn_answers(databases.asn, addresses, numbers)
        if databases.asn is not None
        else _absent(_ASN_SCHEMA, "asn_prefix", height)
    )
    city = (
        _city_answers(databases.city, addresses, numbers)
        if databases.city is not None
        else _absent(_CITY_SCHEMA, "city_prefix", height)
    )
    return pl.concat([distinct.select("ip"), asn, city], how="horizontal")


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
        str(ipaddress.IPv6Network((packed, length), strict=False)) if length is not None else None
        for packed, length in rows.select("ipv6_packed", "net_prefix").iter_rows()
    ]
    return pl.Series("network_v6", networks, dtype=pl.String)


def _with_network(rows: pl.DataFrame) -> pl.DataFrame:
    """Add ``network``: the matched network of each row (IPv4 vectorized, IPv6 per row)."""
    network = pl.when(pl.col("ip_version") == 4).then(
        _ipv4_network(pl.col("ipv4_int"), pl.col("net_prefix"))
    )
    rows = rows.with_columns(network.alias("network"))
    ipv6_rows = rows.filter(pl.col("ip_version") == 6)
    if not ipv6_rows.height:
        return rows
    v6 = ipv6_rows.select("_row").with_columns(_ipv6_networks(ipv6_rows))
    return rows.join(v6, on="_row", how="left").with_columns(
        pl.coalesce("network", "network_v6").alias("network")
    )


def _status(lacking: str | None) -> pl.Expr:
    """``ok`` when either database knows the address, else ``not_found``; ``error`` for every
    block when a database is missing (``lacking``): no block is complete without both."""
    if lacking is not None:
        return pl.lit("error")
    return (
        pl.when(pl.col("asn_found") | pl.col("city_found"))
        .then(pl.lit("ok"))
        .otherwise(pl.lit("not_found"))
    )


def with_maxmind(
    frame: pl.DataFrame, databases: MaxMindDatabases, cached_at: datetime
) -> pl.DataFrame:
    """Add the ``maxmind`` block (and its asn, asn_org, status) to stale, non-bogon rows."""
    wanted = pl.col("stale_maxmind") & ~pl.col("is_bogon")
    rows = frame.with_row_index("_row").filter(wanted)
    distinct = rows.select("ip", "ip_version", "ipv4_int", "ipv6_packed").unique("ip")
    rows = rows.join(lookup_addresses(databases, distinct), on="ip", how="left")
    rows = rows.with_columns(
        pl.when(pl.col("asn").is_not_null())
        .then(pl.col("asn_prefix"))
        .when(pl.col("country").is_not_null() | pl.col("latitude").is_not_null())
        .then(pl.col("city_prefix"))
        .alias("net_prefix"),
        _status(databases.lacking).alias("status"),
        pl.lit(databases.lacking, pl.String).alias("error"),
        pl.lit(databases.build_epoch, pl.Int64).alias("db_build_epoch"),
        pl.lit(cached_at.isoformat()).alias("cached_at"),
    ).sort("_row")
    blocks = _with_network(rows).select(
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
