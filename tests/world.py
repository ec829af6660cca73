"""Build cowrieprocessor-shaped honeypot databases with IPs in every enrichment state.

Used by the tests and by bench/: rows are inserted natively (sqlite3 / psycopg COPY) into a
database whose three tiers already exist, in the formats cowrieprocessor writes, with the
sessions' Cowrie events in ``raw_events`` (created from cowrieprocessor's DDL when absent,
`testbed.sample.raw_events`).

Two shapes (shared/compat/README.md, "What the loader writes"):

- ``loader`` (the default), as cowrieprocessor's loader leaves a database: a session is linked
  (``source_ip`` set) only when its IP's row existed when it started (rows are created up to
  two days after the IP's first session, never after their enrichment); then its snapshots are
  copied from the row if the row had been enriched by then (``snapshot_asn`` = current_asn,
  ``snapshot_country`` = coalesce(maxmind, cymru, dshield countries), ``enrichment_at`` =
  enrichment_updated_at), else NULL. Every session of a missing IP, and every earlier one, has
  ``source_ip`` and snapshots NULL: its address is only in its raw events. Besides: a few
  sessions of missing IPs have legacy raw events (``session_id``, ``event_type``,
  ``event_timestamp`` NULL; the session only in ``payload.session``; one IP has no other
  session), some sessions' closing event carries no ``src_ip``, and two sessions
  (`World.no_address`) have events with no ``src_ip`` at all.
- ``migrated_v16``: a database migrated by cowrieprocessor's v16: ``source_ip`` on every
  session, snapshots NULL, rows created at their first session, every raw event with its
  ``session_id`` (the old shape of this world).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import random
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from testbed.sample import raw_events

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
SHAPES = ("loader", "migrated_v16")
LEGACY_IPS = 3  # missing IPs whose first session has legacy raw events (the first: its only one)
NO_ADDRESS_SESSIONS = 2
SENSOR = "honeypot-test"
SENSOR_ADDRESS = "192.0.2.1"


def _utc(moment: datetime) -> datetime:
    """``moment`` in UTC, without its offset (naive datetimes print several times faster)."""
    return moment.astimezone(UTC).replace(tzinfo=None)


def sqlite_text(moment: datetime) -> str:
    """cowrieprocessor's SQLite timestamp text."""
    return _utc(moment).isoformat(" ", "microseconds")


def _loader_time(moment: datetime) -> str:
    """SQLite's CURRENT_TIMESTAMP text (what the loader leaves in ``ingest_at``)."""
    return _utc(moment).isoformat(" ", "seconds")


@dataclass
class Session:
    """One session_summaries row and what its raw events say.

    ``address``: the src_ip of its events (None: they carry none). ``legacy``: its raw events
    predate ``raw_events.session_id`` (NULL; the session only in ``payload.session``).
    """

    session_id: str
    address: str | None
    first_event_at: datetime
    last_event_at: datetime
    source_ip: str | None = None
    snapshot_asn: int | None = None
    snapshot_country: str | None = None
    enrichment_at: datetime | None = None
    legacy: bool = False


@dataclass
class World:
    """What was generated: state of each inventory IP, session counts per IP, the inventory
    rows and the sessions (``no_address``: ids of the sessions whose events name no IP)."""

    now: datetime
    shape: str = "loader"
    state: dict[str, str] = field(default_factory=dict)
    sessions: dict[str, int] = field(default_factory=dict)
    inventory: list[dict[str, Any]] = field(default_factory=list)
    session_rows: list[Session] = field(default_factory=list)
    no_address: list[str] = field(default_factory=list)

    def unlinked(self) -> list[Session]:
        """Sessions whose source_ip is NULL."""
        return [s for s in self.session_rows if s.source_ip is None]

    def legacy_sessions(self) -> list[Session]:
        """Sessions whose raw events have session_id NULL."""
        return [s for s in self.session_rows if s.legacy]


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


def _enrichment(
    state: str, now: datetime, epoch: int, rng: random.Random
) -> tuple[dict[str, Any], datetime | None, int | None]:
    """A row's enrichment, enrichment_updated_at and current_asn in ``state``."""
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
    return enrichment, updated, current_asn


def snapshot_country(enrichment: dict[str, Any]) -> str | None:
    """coalesce(maxmind.country, cymru.country, dshield.ip.ascountry): what the loader copies."""
    dshield = enrichment.get("dshield")
    for country in (
        (enrichment.get("maxmind") or {}).get("country"),
        (enrichment.get("cymru") or {}).get("country"),
        ((dshield.get("ip") or {}) if isinstance(dshield, dict) else {}).get("ascountry"),
    ):
        if country is not None:
            return str(country)
    return None


def plan_world(
    count: int,
    seed: int = 7,
    networks: list[str] | None = None,
    epoch: int = 1770245369,
    allow_missing: bool = True,
    now: datetime | None = None,
    shape: str = "loader",
) -> World:
    """Decide every IP's state, rows and sessions (no database access). ``allow_missing``
    False: no IP without an inventory row (missing IPs become never-enriched rows), as a
    ``migrated_v16`` database on PostgreSQL must be (its foreign key)."""
    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")
    rng = random.Random(seed)
    now = now or datetime.now(UTC)
    world = World(now=now, shape=shape)
    addresses = _addresses(rng, count, networks or []) + list(GARBAGE) + list(BOGONS)
    for index, address in enumerate(addresses):
        state = STATES[index % len(STATES)]
        if state == "missing" and not allow_missing:
            state = "never"
        world.state[address] = state
        sessions = world.sessions[address] = 1 if rng.random() < 0.8 else rng.randint(2, 400)
        last_seen = now - timedelta(hours=rng.randint(1, 2000))
        first_seen = last_seen - timedelta(days=rng.randint(0, 90))
        starts = _session_starts(first_seen, last_seen, sessions, rng)
        row = None
        if state != "missing":
            row = _inventory_row(address, state, first_seen, last_seen, now, epoch, rng)
            if shape == "migrated_v16":  # as the old shape: created at the first session
                row["created_at"] = first_seen
                row["updated_at"] = row["enrichment_updated_at"] or first_seen
            world.inventory.append(row)
        for start in starts:
            world.session_rows.append(
                _session(world, address, start, row, rng.randint(5, 120), shape == "loader")
            )
    if shape == "loader":
        _add_loader_oddities(world, rng)
    return world


def _session_starts(
    first_seen: datetime, last_seen: datetime, sessions: int, rng: random.Random
) -> list[datetime]:
    """``sessions`` start times from first_seen to last_seen (both included)."""
    span = (last_seen - first_seen).total_seconds()
    middle = sorted(rng.uniform(0, span) for _ in range(max(sessions - 2, 0)))
    starts = [first_seen, *(first_seen + timedelta(seconds=s) for s in middle), last_seen]
    return starts[:sessions] if sessions > 1 else [first_seen]


def _inventory_row(
    address: str,
    state: str,
    first_seen: datetime,
    last_seen: datetime,
    now: datetime,
    epoch: int,
    rng: random.Random,
) -> dict[str, Any]:
    enrichment, updated, current_asn = _enrichment(state, now, epoch, rng)
    delay = timedelta(seconds=rng.uniform(0, 2 * 86400))
    created = min(first_seen + delay, updated or now, now)
    return {
        "ip_address": address,
        "current_asn": current_asn,
        "first_seen": first_seen,
        "last_seen": last_seen,
        "session_count": 0,  # counted below
        "enrichment": enrichment,
        "enrichment_updated_at": updated,
        "created_at": created,
        "updated_at": updated or created,
    }


def _session(
    world: World,
    address: str,
    start: datetime,
    row: dict[str, Any] | None,
    seconds: int,
    as_loaded: bool,
) -> Session:
    """A session of ``address``: linked as the loader would have (``as_loaded``), or as v16
    left it (source_ip always set, snapshots NULL)."""
    session = Session(
        f"s{len(world.session_rows) + 1:010d}", address, start, start + timedelta(seconds=seconds)
    )
    if row is not None:
        row["session_count"] += 1
    if not as_loaded:
        session.source_ip = address
        return session
    if row is None or row["created_at"] > start or address == "":
        return session
    session.source_ip = address
    enriched = row["enrichment_updated_at"]
    if enriched is not None and enriched <= start:
        session.snapshot_asn = row["current_asn"]
        session.snapshot_country = snapshot_country(row["enrichment"])
        session.enrichment_at = enriched
    return session


def _add_loader_oddities(world: World, rng: random.Random) -> None:
    """Legacy raw events for a few sessions of missing IPs (the first such IP gets no other
    session), and sessions whose events name no IP."""
    for _ in range(NO_ADDRESS_SESSIONS):
        start = world.now - timedelta(hours=rng.randint(1, 2000))
        session_id = f"s{len(world.session_rows) + 1:010d}"
        world.session_rows.append(Session(session_id, None, start, start + timedelta(seconds=9)))
        world.no_address.append(session_id)
    missing = [a for a, s in world.state.items() if s == "missing" and a.strip() == a and a]
    for number, address in enumerate(missing[:LEGACY_IPS]):
        sessions = [s for s in world.session_rows if s.address == address]
        if number == 0:
            for other in sessions[1:]:
                world.session_rows.remove(other)
            world.sessions[address] = 1
        sessions[0].legacy = True


# -- raw events ------------------------------------------------------------------------------
def _cowrie_time(moment: datetime) -> str:
    """Cowrie's ``timestamp``: ISO 8601 in UTC with microseconds and ``Z``."""
    return _utc(moment).isoformat(timespec="microseconds") + "Z"


def _events(world: World, sqlite: bool) -> list[tuple[Any, ...]]:
    """raw_events rows (in the order of `RAW_EVENT_COLUMNS`), ids ascending in time: a connect,
    a failed login and the closing event per session; timestamps as SQLite text (``sqlite``)
    or datetimes."""
    rows: list[tuple[Any, ...]] = []
    offsets: dict[str, int] = {}
    quoted: dict[str, str] = {}
    ordered = sorted(world.session_rows, key=lambda s: (s.first_event_at, s.session_id))
    for number, session in enumerate(ordered):
        source = f"/var/log/cowrie/cowrie.json.{session.first_event_at:%Y-%m-%d}"
        ingest_at = min(session.last_event_at + timedelta(minutes=3), world.now)
        ingest_id = hashlib.md5(f"{source}@{ingest_at}".encode()).hexdigest()
        middle = session.first_event_at + (session.last_event_at - session.first_event_at) / 2
        address = session.address
        if address is not None and address not in quoted:
            quoted[address] = json.dumps(address)
        sender = (
            f'"src_ip": {quoted[address]}, "src_port": {40000 + number % 20000}, '
            if address is not None
            else ""
        )
        steps = (
            ("cowrie.session.connect", session.first_event_at, '"protocol": "ssh", ', sender),
            ("cowrie.login.failed", middle, '"username": "root", "password": "123456", ', sender),
            # Upstream's synthetic logs leave src_ip out of some events (never the connect).
            ("cowrie.session.closed", session.last_event_at, "", "" if number % 3 == 0 else sender),
        )
        for kind, moment, extra, src in steps:
            text = (
                f'{{"session": "{session.session_id}", "eventid": "{kind}", {extra}'
                f'"sensor": "{SENSOR}", {src}"dst_ip": "{SENSOR_ADDRESS}", '
                f'"timestamp": "{_cowrie_time(moment)}"}}'
            )
            offset = offsets[source] = offsets.get(source, -1) + 1
            rows.append(
                (
                    len(rows) + 1,
                    ingest_id,
                    _loader_time(ingest_at) if sqlite else ingest_at,
                    source,
                    offset,
                    "2228578",
                    0,
                    text,
                    hashlib.sha256(text.encode()).hexdigest(),
                    0,
                    False,
                    None if session.legacy else session.session_id,
                    None if session.legacy else kind,
                    None if session.legacy else (sqlite_text(moment) if sqlite else moment),
                )
            )
    return rows


RAW_EVENT_COLUMNS = (
    "id, ingest_id, ingest_at, source, source_offset, source_inode, source_generation, payload, "
    "payload_hash, risk_score, quarantined, session_id, event_type, event_timestamp"
)
SESSION_COLUMNS = (
    "session_id, source_ip, first_event_at, last_event_at, event_count, login_attempts, "
    "matcher, enrichment, snapshot_asn, snapshot_country, enrichment_at"
)
ASNS = (64500, 64501, 64502, 64503)


def _session_values(world: World) -> list[tuple[Any, ...]]:
    return [
        (
            s.session_id,
            s.source_ip,
            s.first_event_at,
            s.last_event_at,
            3,
            1,
            SENSOR,
            "null",
            s.snapshot_asn,
            s.snapshot_country,
            s.enrichment_at,
        )
        for s in world.session_rows
    ]


def _sqlite_row(values: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(sqlite_text(v) if isinstance(v, datetime) else v for v in values)


def load_sqlite(path: str, world: World) -> None:
    """Insert the world's rows into a SQLite database that has the three tiers (and
    ``raw_events``, created when absent)."""
    con = sqlite3.connect(path)
    con.execute("PRAGMA cache_size = -200000")  # this connection's: index inserts in memory
    with con:
        con.executemany(
            "INSERT INTO asn_inventory (asn_number, organization_name, first_seen, last_seen, "
            "enrichment, created_at, updated_at) VALUES (?, ?, ?, ?, '{}', ?, ?)",
            [(a, f"AS{a} Org", *[sqlite_text(world.now)] * 4) for a in ASNS],
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
            f"INSERT INTO session_summaries ({SESSION_COLUMNS}) VALUES ({', '.join('?' * 11)})",
            [_sqlite_row(values) for values in _session_values(world)],
        )
        exists = con.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'raw_events'"
        ).fetchone()
        if not exists:
            for statement in (*raw_events.table_statements("sqlite"), *raw_events.SQLITE_INDEXES):
                con.execute(statement)
        con.executemany(
            f"INSERT INTO raw_events ({RAW_EVENT_COLUMNS}) VALUES ({', '.join('?' * 14)})",
            _events(world, sqlite=True),
        )
    con.close()


def load_postgres(dsn: str, world: World) -> None:
    """Insert the world's rows into a PostgreSQL database that has the three tiers (and
    ``raw_events``, created when absent)."""
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
        with cur.copy(f"COPY session_summaries ({SESSION_COLUMNS}) FROM STDIN") as copy:
            for values in _session_values(world):
                copy.write_row(values)
        exists = cur.execute("SELECT to_regclass('public.raw_events')").fetchone()
        created = not (exists and exists[0])
        if created:
            for statement in raw_events.table_statements("postgres"):
                cur.execute(statement)
        with cur.copy(f"COPY raw_events ({RAW_EVENT_COLUMNS}) FROM STDIN") as copy:
            for row in _events(world, sqlite=False):
                copy.write_row(row)
        keys = raw_events.key_statements("postgres")
        for statement in keys if created else keys[-1:]:  # the sequence follows the ids
            cur.execute(statement)
