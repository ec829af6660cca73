"""Build cowrieprocessor-shaped honeypot databases with IPs in every enrichment state.

Used by the tests and by bench/: rows are inserted natively (sqlite3 / psycopg COPY) into a
database whose three tiers already exist, in the formats cowrieprocessor writes.
"""

from __future__ import annotations

import ipaddress
import json
import random
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

GARBAGE = (" 8.8.8.8 ", "", "999.1.1.1", "1.2.3.4/24", "not-an-ip", "01.2.3.4")
BOGONS = (
    "10.1.2.3",
    "192.168.7.7",
    "127.0.0.1",
    "169.254.3.3",
    "100.64.0.9",
    "224.0.0.5",
    "0.0.0.0",
    "192.0.2.10",
    "240.1.1.1",
    "fe80::1",
    "::1",
    "2001:db8::5",
    "fd00::7",
)
LEGACY_BLOCKS = {
    "dshield": {"ip": {"number": "x", "count": 3, "ascountry": "CN", "as": 4837}},
    "spur": ["CHINA UNICOM", [], "", ["DATACENTER"]],
    "urlhaus": "",
    "password_stats": {"total_attempts": 3, "breached": True},
}
STATES = (
    "missing",
    "never",
    "legacy",
    "stale_maxmind",
    "fresh",
    "maxmind_error",
    "old_epoch",
    "fresh_no_asn",
)


def sqlite_text(moment: datetime) -> str:
    """cowrieprocessor's SQLite timestamp text."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


@dataclass
class World:
    """What was generated: state of each inventory IP, and session counts per IP."""

    now: datetime
    state: dict[str, str] = field(default_factory=dict)
    sessions: dict[str, int] = field(default_factory=dict)
    inventory: list[dict[str, Any]] = field(default_factory=list)


def _maxmind_block(
    cached_at: datetime, epoch: int, asn: int | None, status: str = "ok"
) -> dict[str, Any]:
    return {
        "country": "SE",
        "country_name": "Sweden",
        "city": "Old",
        "latitude": 1.0,
        "longitude": 2.0,
        "accuracy_radius": 5,
        "asn": asn,
        "asn_org": "Old Org",
        "network": "1.0.0.0/8",
        "db_build_epoch": epoch,
        "status": status,
        "cached_at": cached_at.isoformat(),
    }


def _addresses(rng: random.Random, count: int, networks: list[str]) -> list[str]:
    nets = [ipaddress.ip_network(n) for n in networks if ipaddress.ip_network(n).version == 4]
    seen: set[str] = set()
    while len(seen) < count:
        if nets and rng.random() < 0.6:
            net = rng.choice(nets)
            address = str(net.network_address + rng.randrange(net.num_addresses))
        elif rng.random() < 0.04:
            address = str(ipaddress.IPv6Address(0x2A000000 << 96 | rng.getrandbits(96)))
        else:
            address = str(ipaddress.IPv4Address(rng.randrange(0x01000000, 0xDF000000)))
        if ipaddress.ip_address(address).is_global:
            seen.add(address)
    return sorted(seen)


def plan_world(
    count: int,
    seed: int = 7,
    networks: list[str] | None = None,
    epoch: int = 1770245369,
    allow_missing: bool = True,
    now: datetime | None = None,
) -> World:
    """Decide every IP's state and rows (no database access)."""
    rng = random.Random(seed)
    now = now or datetime.now(UTC)
    world = World(now=now)
    addresses = _addresses(rng, count, networks or []) + list(GARBAGE) + list(BOGONS)
    for index, address in enumerate(addresses):
        state = STATES[index % len(STATES)]
        if state == "missing" and not allow_missing:
            state = "never"
        world.state[address] = state
        world.sessions[address] = 1 if rng.random() < 0.8 else rng.randint(2, 400)
        if state == "missing":
            continue
        last_seen = now - timedelta(hours=rng.randint(1, 2000))
        first_seen = last_seen - timedelta(days=rng.randint(0, 90))
        enrichment: dict[str, Any] = {}
        updated: datetime | None = now - timedelta(days=rng.randint(0, 200))
        current_asn = None
        if state == "never":
            updated = None
        elif state == "legacy":
            enrichment, updated = dict(LEGACY_BLOCKS), None
        elif state == "stale_maxmind":
            enrichment = {
                "maxmind": _maxmind_block(now - timedelta(days=30), epoch, 64500),
                "dshield": LEGACY_BLOCKS["dshield"],
            }
        elif state == "fresh":
            enrichment = {
                "maxmind": _maxmind_block(now - timedelta(days=1), epoch, 64501),
                "spur": LEGACY_BLOCKS["spur"],
            }
            current_asn = 64501
        elif state == "maxmind_error":
            enrichment = {"maxmind": _maxmind_block(now - timedelta(hours=2), epoch, None, "error")}
        elif state == "old_epoch":
            enrichment = {"maxmind": _maxmind_block(now - timedelta(days=1), epoch - 86400, 64502)}
        elif state == "fresh_no_asn":
            enrichment = {
                "maxmind": _maxmind_block(now - timedelta(days=2), epoch, None),
                "cymru": {
                    "asn": 64503,
                    "status": "ok",
                    "cached_at": (now - timedelta(days=3)).isoformat(),
                },
            }
            current_asn = 64503
        world.inventory.append(
            {
                "ip_address": address,
                "current_asn": current_asn,
                "first_seen": first_seen,
                "last_seen": last_seen,
                "session_count": world.sessions[address],
                "enrichment": enrichment,
                "enrichment_updated_at": updated,
                "created_at": first_seen,
                "updated_at": updated or first_seen,
            }
        )
    return world


def _session_rows(world: World) -> list[tuple[Any, ...]]:
    rows = []
    counter = 0
    for address, sessions in world.sessions.items():
        for n in range(sessions):
            counter += 1
            start = world.now - timedelta(days=(counter * 7919) % 90, seconds=n)
            rows.append((f"s{counter:010d}", address, start, start + timedelta(seconds=30)))
    return rows


ASNS = (64500, 64501, 64502, 64503)


def load_sqlite(path: str, world: World) -> None:
    """Insert the world's rows into a SQLite database that has the three tiers."""
    con = sqlite3.connect(path)
    with con:
        con.executemany(
            "INSERT INTO asn_inventory (asn_number, organization_name, first_seen, last_seen, "
            "enrichment, created_at, updated_at) VALUES (?, ?, ?, ?, '{}', ?, ?)",
            [
                (
                    a,
                    f"AS{a} Org",
                    sqlite_text(world.now),
                    sqlite_text(world.now),
                    sqlite_text(world.now),
                    sqlite_text(world.now),
                )
                for a in ASNS
            ],
        )
        con.executemany(
            "INSERT INTO ip_inventory (ip_address, current_asn, first_seen, last_seen, session_count,"
            " enrichment, enrichment_updated_at, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?)",
            [
                (
                    r["ip_address"],
                    r["current_asn"],
                    sqlite_text(r["first_seen"]),
                    sqlite_text(r["last_seen"]),
                    r["session_count"],
                    json.dumps(r["enrichment"]),
                    sqlite_text(r["enrichment_updated_at"]) if r["enrichment_updated_at"] else None,
                    sqlite_text(r["created_at"]),
                    sqlite_text(r["updated_at"]),
                )
                for r in world.inventory
            ],
        )
        con.executemany(
            "INSERT INTO session_summaries (session_id, source_ip, first_event_at, last_event_at) "
            "VALUES (?, ?, ?, ?)",
            [(s, ip, sqlite_text(a), sqlite_text(b)) for s, ip, a, b in _session_rows(world)],
        )
    con.close()


def load_postgres(dsn: str, world: World) -> None:
    """Insert the world's rows into a PostgreSQL database that has the three tiers."""
    import psycopg

    with psycopg.connect(dsn) as con, con.cursor() as cur:
        cur.executemany(
            "INSERT INTO asn_inventory (asn_number, organization_name, first_seen, last_seen, "
            "enrichment) VALUES (%s, %s, %s, %s, '{}')",
            [(a, f"AS{a} Org", world.now, world.now) for a in ASNS],
        )
        with cur.copy(
            "COPY ip_inventory (ip_address, current_asn, first_seen, last_seen, session_count, "
            "enrichment, enrichment_updated_at, created_at, updated_at) FROM STDIN"
        ) as copy:
            for r in world.inventory:
                copy.write_row(
                    (
                        r["ip_address"],
                        r["current_asn"],
                        r["first_seen"],
                        r["last_seen"],
                        r["session_count"],
                        json.dumps(r["enrichment"]),
                        r["enrichment_updated_at"],
                        r["created_at"],
                        r["updated_at"],
                    )
                )
        with cur.copy(
            "COPY session_summaries (session_id, source_ip, first_event_at, last_event_at) FROM STDIN"
        ) as copy:
            for row in _session_rows(world):
                copy.write_row(row)
