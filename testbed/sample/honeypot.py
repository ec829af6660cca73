"""A cowrieprocessor-shaped honeypot database drawn from a `World`.

Sessions over 90 days with a heavy-tailed skew (a few IPs with thousands of sessions, most with
one or two), their events in ``raw_events`` (`testbed.sample.raw_events`), and inventory rows in
every state a refresh meets: missing (sessions, no row), never enriched, legacy blocks only,
stale per source, errors, fresh, bogons and strings that are not IP addresses.

The session tier comes in two shapes (`testbed.sample.sessions`): ``loader`` (the default, as
cowrieprocessor's loader leaves it) and ``migrated_v16``.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import numpy as np
import polars as pl

from etl.db.database import Database
from testbed.sample.raw_events import EVENTS_PER_SESSION, session_columns, write_raw_events
from testbed.sample.sessions import (
    SHAPES,
    Shape,
    created_after_first_session,
    linked_as_loaded,
    snapshot_country,
)
from testbed.sample.world import COUNTRY_NAMES, Prefix, World

STATES: Final = ("missing", "never", "legacy", "stale", "partial", "error", "fresh")
_STATE_WEIGHTS: Final = (0.10, 0.12, 0.08, 0.30, 0.08, 0.05, 0.27)
# Strings cowrie has stored that are not IP addresses exactly as written.
GARBAGE: Final = (" 8.8.8.8 ", "", "999.1.1.1", "1.2.3.4/24", "not-an-ip", "01.2.3.4")
_BOGON_NETWORKS: Final = (
    "10.0.0.0/8",
    "192.168.0.0/16",
    "172.16.0.0/12",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "100.64.0.0/10",
    "fe80::/64",
    "fd00::/8",
)
LEGACY_BLOCKS: Final = {
    "dshield": {"ip": {"count": "3", "attacks": "7", "ascountry": "CN", "asname": "CHINANET"}},
    "spur": ["CHINANET", [], "", ["DATACENTER"]],
    "urlhaus": "",
}
_HEAVY_HITTERS: Final = 20


@dataclass
class SampleDatabase:
    """What `build_honeypot` wrote: the state of every inventory address, and counts
    (``linked``: sessions whose source_ip is set)."""

    states: dict[str, str] = field(default_factory=dict)
    sessions: int = 0
    linked: int = 0
    raw_events: int = 0
    asns: int = 0


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def maxmind_block(
    world: World, prefix: Prefix | None, cached_at: datetime, epoch: int
) -> dict[str, Any]:
    """The maxmind block the refresh writes for an address in ``prefix``."""
    asn = prefix.origins[0] if prefix and prefix.in_maxmind_asn else None
    city = prefix.city if prefix else None
    return {
        "country": city[1] if city else None,
        "country_name": COUNTRY_NAMES.get(city[1]) if city else None,
        "city": city[0] if city else None,
        "latitude": city[2] if city else None,
        "longitude": city[3] if city else None,
        "accuracy_radius": prefix.accuracy_radius if prefix and city else None,
        "asn": asn,
        "asn_org": world.systems[asn].organization if asn else None,
        "network": str(prefix.network) if prefix and (asn or city) else None,
        "db_build_epoch": epoch,
        "status": "ok" if asn or city else "not_found",
        "cached_at": _iso(cached_at),
    }


def cymru_block(world: World, prefix: Prefix | None, cached_at: datetime) -> dict[str, Any]:
    """The cymru block the refresh writes for an address in ``prefix``."""
    origins = prefix.origins if prefix else ()
    owner = world.systems[origins[0]] if origins else None
    return {
        "asn": owner.number if owner else None,
        "asns": list(origins),
        "asn_org": owner.name if owner else None,
        "country": prefix.country if prefix else None,
        "registry": prefix.registry if prefix else "other",
        "prefix": str(prefix.network) if owner and prefix else None,
        "allocation_date": prefix.allocated if prefix else None,
        "error": None,
        "status": "ok" if owner else "not_found",
        "cached_at": _iso(cached_at),
    }


# The block's keys only the enterprise full-context lookup fills (null in community mode).
FULL_RECORD_ONLY: dict[str, Any] = dict.fromkeys(
    ("actor", "tags", "cves", "vpn", "vpn_service", "tor", "first_seen", "spoofable")
)


def greynoise_block(world: World, address: str, cached_at: datetime) -> dict[str, Any]:
    """The greynoise block the refresh writes for ``address`` (community mode)."""
    if ":" in address:
        return {"status": "skipped", "cached_at": _iso(cached_at)}
    record = world.greynoise(address)
    if record is None:
        return {
            "noise": False,
            "riot": False,
            "classification": None,  # not observed: no class (GreyNoise's "unknown" is one)
            "name": None,
            "last_seen": None,
            "link": None,
            **FULL_RECORD_ONLY,
            "error": None,
            "status": "not_found",
            "cached_at": _iso(cached_at),
        }
    kind = "ip" if record.noise else "riot"
    return {
        "noise": record.noise,
        "riot": record.riot,
        "classification": record.classification,
        "name": record.name,
        "last_seen": f"{record.last_seen}T00:00:00+00:00",
        "link": f"https://viz.greynoise.io/{kind}/{address}",
        **FULL_RECORD_ONLY,
        "error": None,
        "status": "ok",
        "cached_at": _iso(cached_at),
    }


class _Builder:
    """Decides each address's state and produces its inventory row."""

    def __init__(self, world: World, epoch: int, now: datetime, rng: np.random.Generator) -> None:
        self.world, self.epoch, self.now, self.rng = world, epoch, now, rng

    def ago(self, low_days: float, high_days: float) -> datetime:
        return self.now - timedelta(days=float(self.rng.uniform(low_days, high_days)))

    def enrichment(self, address: str, state: str) -> tuple[dict[str, Any], int | None]:
        """The enrichment object and current_asn of a valid, global address in ``state``."""
        if state == "never":
            return {}, None
        if state == "legacy":
            return dict(LEGACY_BLOCKS), None
        prefix = self.world.route(ipaddress.ip_address(address))
        fresh, stale = self.ago(0, 6), self.ago(8, 60)
        epoch = self.epoch
        if state == "stale" and self.rng.random() < 0.25:
            fresh_mm, epoch = fresh, self.epoch - 86_400 * 30  # a newer MaxMind build exists
        else:
            fresh_mm = stale if state == "stale" else fresh
        blocks: dict[str, Any] = {"validation": {"is_bogon": False, "reason": None}}
        blocks["maxmind"] = maxmind_block(self.world, prefix, fresh_mm, epoch)
        asn = blocks["maxmind"]["asn"]
        if asn is None:
            cymru = cymru_block(self.world, prefix, fresh)
            if state == "stale":
                days = (91, 200) if cymru["status"] == "ok" else (8, 30)
                cymru["cached_at"] = _iso(self.ago(*days))
            elif state == "error":
                cymru = {
                    "error": "no answer within 30 s",
                    "status": "error",
                    "cached_at": _iso(self.ago(0, 2)),
                }
            blocks["cymru"] = cymru
            asn = cymru.get("asn")
        if state != "partial":
            greynoise = greynoise_block(self.world, address, stale if state == "stale" else fresh)
            if state == "error" and ":" not in address:
                greynoise = {
                    "error": "HTTP 503",
                    "status": "error",
                    "cached_at": _iso(self.ago(0, 2)),
                }
            blocks["greynoise"] = greynoise
        if self.rng.random() < 0.2:
            blocks["dshield"] = LEGACY_BLOCKS["dshield"]
        return blocks, asn


def _session_frame(addresses: list[str], now: datetime, rng: np.random.Generator) -> pl.DataFrame:
    """Sessions over 90 days: mostly one or two per IP, a few IPs with thousands."""
    n = len(addresses)
    counts = np.minimum(np.floor(rng.pareto(1.6, n)) + 1, 900).astype(np.int64)
    heavy = rng.choice(n, size=min(_HEAVY_HITTERS, max(1, n // 500)), replace=False)
    counts[heavy] = rng.integers(1000, 5000, size=heavy.size)
    span = 90 * 86_400
    last = rng.uniform(0, 1, n) ** 2 * span  # seconds before now of the IP's last session
    window = rng.uniform(0, 1, n) * (span - last)  # how long the IP has been active
    ip_index = np.repeat(np.arange(n), counts)
    offsets = last[ip_index] + rng.uniform(0, 1, ip_index.size) * window[ip_index]
    start_us = (now.timestamp() - offsets) * 1e6
    duration_us = rng.exponential(40.0, ip_index.size) * 1e6
    # Drawn and dropped: the counters once drawn here now follow the raw events, and a seed
    # keeps the states, rows and sessions it always had (tests and benchmarks rely on them).
    for low, high in ((3, 60), (1, 20), (0, 15)):
        rng.integers(low, high, ip_index.size)
    return pl.DataFrame(
        {
            "session_id": (pl.int_range(0, ip_index.size, eager=True) * 7919 + 4242)
            .cast(pl.String)
            .str.zfill(12),
            "ip": ip_index,  # the address's position in ``addresses``
            "source_ip": pl.Series(addresses, dtype=pl.String).gather(ip_index),
            "first_event_at": pl.Series(start_us.astype(np.int64)).cast(pl.Datetime("us", "UTC")),
            "last_event_at": pl.Series((start_us + duration_us).astype(np.int64)).cast(
                pl.Datetime("us", "UTC")
            ),
        }
    )


def _bogons(count: int, rng: np.random.Generator) -> list[str]:
    found: set[str] = set()
    while len(found) < count:
        network = ipaddress.ip_network(_BOGON_NETWORKS[int(rng.integers(len(_BOGON_NETWORKS)))])
        offset = int(rng.integers(1, min(network.num_addresses - 1, 1 << 62)))
        found.add(str(network.network_address + offset))
    return sorted(found)


def build_honeypot(
    db: Database,
    world: World,
    ips: int,
    epoch: int,
    seed: int,
    now: datetime | None = None,
    shape: Shape = "loader",
    events: int = EVENTS_PER_SESSION,
) -> SampleDatabase:
    """Fill an empty honeypot database with ``ips`` source addresses, their sessions in
    ``shape`` (see the module docstring) and ``events`` raw events per session."""
    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {', '.join(SHAPES)}, got {shape!r}")
    now = now or datetime.now(UTC)
    rng = np.random.default_rng(seed)
    loader_rng = np.random.default_rng([seed, 23])  # what the loader adds: its own stream
    bogons = _bogons(max(2, ips // 200), rng)
    garbage = list(GARBAGE[: max(0, min(len(GARBAGE), ips // 1000))])
    attackers = world.attacking_ips(max(1, ips - len(bogons) - len(garbage)), rng)
    addresses = attackers + bogons + garbage
    sessions = _session_frame(addresses, now, rng)
    per_ip = sessions.group_by("source_ip").agg(
        pl.col("first_event_at").min().alias("first_seen"),
        pl.col("last_event_at").max().alias("last_seen"),
        pl.len().cast(pl.Int64).alias("session_count"),
    )
    states = rng.choice(len(STATES), size=len(addresses), p=_STATE_WEIGHTS)
    builder = _Builder(world, epoch, now, rng)
    sample = SampleDatabase(sessions=sessions.height)
    # v16 set source_ip on every session; PostgreSQL's foreign key then forbids "missing" IPs.
    no_missing = shape == "migrated_v16" and db.dialect == "postgres"
    rows = _inventory_rows(addresses, len(attackers), states, builder, sample, no_missing)
    inventory = _inventory_frame(rows, per_ip)
    if shape == "loader":
        inventory = created_after_first_session(inventory, now, loader_rng)
        sessions = linked_as_loaded(sessions, inventory)
    sessions = session_columns(sessions, events, loader_rng)
    sample.linked = sessions["source_ip"].count()
    asns = _asn_rows(world, inventory["current_asn"].drop_nulls().unique().sort(), now, rng)
    counts = inventory.group_by("current_asn").agg(
        pl.len().alias("unique_ip_count"),
        pl.col("session_count").sum().alias("total_session_count"),
    )
    asns = asns.join(counts, left_on="asn_number", right_on="current_asn", how="left")
    sample.asns = asns.height
    db.append("asn_inventory", asns)
    db.append("ip_inventory", inventory.drop("snapshot_country"))
    db.append("session_summaries", sessions.drop("ip", "src_port"))
    sample.raw_events = write_raw_events(db, sessions, addresses, events, loader_rng, now)
    return sample


# address, current_asn, enrichment (JSON), enrichment_updated_at, the country the loader copies
InventoryRow = tuple[str, int | None, str, datetime | None, str | None]


def _inventory_rows(
    addresses: list[str],
    attacker_count: int,
    states: Any,
    builder: _Builder,
    sample: SampleDatabase,
    no_missing: bool,
) -> list[InventoryRow]:
    """One inventory row per address in its drawn state (recorded in ``sample.states``)."""
    rows: list[InventoryRow] = []
    for index, address in enumerate(addresses):
        state = STATES[states[index]]
        if state == "missing" and no_missing:
            state = "never"
        if index >= attacker_count:  # bogons and garbage: never validated, or validated
            state = "missing" if state == "missing" else ("never" if index % 2 else "validated")
        sample.states[address] = state
        if state == "missing":
            continue
        if state == "validated":
            validation = json.dumps({"validation": _validation(address)})
            rows.append((address, None, validation, builder.ago(1, 30), None))
            continue
        blocks, asn = builder.enrichment(address, state)
        touched = None if state == "never" else builder.ago(0, 6)
        rows.append((address, asn, json.dumps(blocks), touched, snapshot_country(blocks)))
    return rows


def _inventory_frame(rows: list[InventoryRow], per_ip: pl.DataFrame) -> pl.DataFrame:
    """The ip_inventory rows with their sessions' first/last seen and counts."""
    inventory = pl.DataFrame(
        rows,
        schema={
            "ip_address": pl.String,
            "current_asn": pl.Int64,
            "enrichment": pl.String,
            "enrichment_updated_at": pl.Datetime("us", "UTC"),
            "snapshot_country": pl.String,
        },
        orient="row",
    ).join(per_ip, left_on="ip_address", right_on="source_ip", how="left", maintain_order="left")
    return inventory.with_columns(
        pl.col("first_seen").alias("created_at"),
        pl.coalesce("enrichment_updated_at", "first_seen").alias("updated_at"),
        pl.when(pl.col("current_asn").is_not_null())
        .then(pl.col("enrichment_updated_at"))
        .alias("asn_last_verified"),
    )


def _validation(address: str) -> dict[str, Any]:
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return {"is_bogon": True, "reason": "invalid"}
    reason = (
        "loopback" if parsed.is_loopback else "link_local" if parsed.is_link_local else "private"
    )
    return {"is_bogon": True, "reason": reason}


def _asn_rows(
    world: World, numbers: pl.Series, now: datetime, rng: np.random.Generator
) -> pl.DataFrame:
    """asn_inventory rows: some complete and recent, some lacking registration data, some old."""
    rows = []
    for number in numbers.to_list():
        system = world.systems[number]
        draw = rng.random()
        updated = now - timedelta(
            days=float(rng.uniform(100, 300) if draw < 0.2 else rng.uniform(0, 60))
        )
        complete = draw >= 0.5
        rows.append(
            (
                number,
                system.organization,
                system.country if complete else None,
                system.registry if complete else None,
                updated - timedelta(days=30),
                updated,
                "{}",
                updated - timedelta(days=30),
                updated,
            )
        )
    return pl.DataFrame(
        rows,
        schema={
            "asn_number": pl.Int64,
            "organization_name": pl.String,
            "organization_country": pl.String,
            "rir_registry": pl.String,
            "first_seen": pl.Datetime("us", "UTC"),
            "last_seen": pl.Datetime("us", "UTC"),
            "enrichment": pl.String,
            "created_at": pl.Datetime("us", "UTC"),
            "updated_at": pl.Datetime("us", "UTC"),
        },
        orient="row",
    )
