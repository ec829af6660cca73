"""After cowrieprocessor's loader (issue 23, SPEC 2): Cowrie JSON lines loaded by a loader-shaped
writer (`tests.loader`) into a database made from ../shared/compat's DDL, on SQLite in WAL mode
and on PostgreSQL, then refreshed with both simulators and sample MaxMind files.

The refresh must enrich every attacking IP (found only in raw events: the loader leaves
``source_ip`` NULL while an IP has no inventory row), link every session to its canonical IP, fill
every NULL snapshot as the loader would have at ingest, and change nothing else; a rerun selects
nothing and asks no service.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import random
import sqlite3
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import maxminddb
import numpy as np
import pytest

from etl.refresh.config import RefreshConfig
from etl.refresh.pipeline import refresh
from etl.report.summary import LineReporter, RunSummary
from testbed.sample.mmdb_files import build_epoch, write_maxmind_files
from testbed.sample.world import World
from tests.loader import (
    SNAPSHOT_COLUMNS,
    SessionPlan,
    cowrie_events,
    load_events,
    plan_sessions,
    sqlite_text,
)
from tests.sims import Simulator, running

SEED = 23
KEY = "loader-compat-key"
BOGON = "10.20.30.40"  # a private address a honeypot behind NAT logs
OLD_ASN = 64512  # what the rows known at load time said (private-use AS number)

# -- the database ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Db:
    """A database built from ../shared/compat's DDL: its URL and plain queries on it."""

    url: str
    kind: str  # sqlite or postgres

    @property
    def path(self) -> Path:
        return Path(self.url.removeprefix("sqlite:///"))

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of ``sql`` (``%s`` placeholders)."""
        if self.kind == "sqlite":
            con = sqlite3.connect(self.path)
            try:
                return con.execute(sql.replace("%s", "?"), params).fetchall()
            finally:
                con.close()
        import psycopg

        with psycopg.connect(self.url) as con:
            return con.execute(sql, params).fetchall()  # type: ignore[arg-type]

    def execute(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """``sql`` once per row, in one committed transaction."""
        if self.kind == "sqlite":
            con = sqlite3.connect(self.path)
            try:
                with con:
                    con.executemany(sql.replace("%s", "?"), rows)
            finally:
                con.close()
            return
        import psycopg

        with psycopg.connect(self.url) as con, con.cursor() as cursor:
            cursor.executemany(sql, rows)  # type: ignore[arg-type]

    def columns(self, table: str) -> list[str]:
        """The table's columns, in order."""
        if self.kind == "sqlite":
            return [row[1] for row in self.query(f"PRAGMA table_info({table})")]
        return [
            name
            for (name,) in self.query(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' "
                "AND table_name = %s ORDER BY ordinal_position",
                (table,),
            )
        ]

    def timestamp(self, moment: datetime) -> Any:
        """``moment`` as the database stores it (SQLite: cowrieprocessor's text)."""
        return sqlite_text(moment) if self.kind == "sqlite" else moment

    def json(self, blocks: dict[str, Any]) -> Any:
        """An enrichment object as cowrieprocessor writes it (SQLite: json.dumps text)."""
        if self.kind == "sqlite":
            return json.dumps(blocks)
        from psycopg.types.json import Jsonb

        return Jsonb(blocks)


def open_loader_db(request: pytest.FixtureRequest) -> Db:
    """The database of the test's ``request.param``: SQLite in WAL mode, or PostgreSQL, each made
    from ../shared/compat's DDL (tables, indexes, ``raw_events``)."""
    if request.param == "sqlite":
        path: Path = request.getfixturevalue("compat_sqlite")
        con = sqlite3.connect(path)
        assert con.execute("PRAGMA journal_mode=WAL").fetchone() == ("wal",)
        con.execute("INSERT INTO schema_state (key, value) VALUES ('schema_version', '17')")
        con.commit()
        con.close()
        return Db(f"sqlite:///{path}", "sqlite")
    import psycopg

    url: str = request.getfixturevalue("compat_pg")
    shared: Path = request.getfixturevalue("shared")
    with psycopg.connect(url, autocommit=True) as con:
        con.execute((shared / "compat" / "cowrieprocessor-postgres-raw_events.sql").read_text())  # type: ignore[arg-type]
    return Db(url, "postgres")


@pytest.fixture(params=["sqlite", "postgres"])
def loader_db(request: pytest.FixtureRequest) -> Db:
    """A new cowrieprocessor database (SQLite WAL, then PostgreSQL) for the loader to fill."""
    return open_loader_db(request)


@dataclass(frozen=True)
class MaxMindWorld:
    """The sample world, its MaxMind files (the folder and their build epoch)."""

    world: World
    folder: Path
    epoch: int


def sample_maxmind(folder: Path) -> MaxMindWorld:
    """World ``SEED`` and its small MaxMind files in ``folder`` (the simulators run ``SEED``)."""
    world = World(SEED)
    asn_file, _ = write_maxmind_files(world, folder)
    return MaxMindWorld(world, folder, build_epoch(asn_file))


@pytest.fixture(scope="module")
def maxmind_world(tmp_path_factory: pytest.TempPathFactory) -> MaxMindWorld:
    """World ``SEED`` and its MaxMind files, once for the module."""
    return sample_maxmind(tmp_path_factory.mktemp("maxmind"))


# -- reading it back ----------------------------------------------------------------------------


def digest(db: Db, table: str, order: str, leave_out: Sequence[str] = ()) -> str:
    """A hash of every row of ``table`` (its columns but ``leave_out``, as text)."""
    columns = [c for c in db.columns(table) if c not in leave_out]
    listed = ", ".join(f"CAST({c} AS TEXT)" for c in columns)
    rows = db.query(f"SELECT {listed} FROM {table} ORDER BY {order}")
    return hashlib.sha256(repr((columns, rows)).encode()).hexdigest()


def digests(db: Db) -> tuple[str, str]:
    """Hashes of session_summaries but the columns the refresh fills, and of raw_events."""
    return (
        digest(db, "session_summaries", "session_id", SNAPSHOT_COLUMNS),
        digest(db, "raw_events", "id"),
    )


def sessions(db: Db) -> dict[str, tuple[Any, ...]]:
    """session id -> (source_ip, snapshot_asn, snapshot_country, enrichment_at)."""
    rows = db.query(f"SELECT session_id, {', '.join(SNAPSHOT_COLUMNS)} FROM session_summaries")
    return {row[0]: tuple(row[1:]) for row in rows}


@dataclass(frozen=True)
class Row:
    """An ip_inventory row, its enrichment parsed."""

    current_asn: int | None
    blocks: dict[str, Any]
    enrichment_updated_at: Any
    first_seen: Any
    last_seen: Any
    session_count: int


def inventory(db: Db) -> dict[str, Row]:
    """ip_inventory by address."""
    rows = db.query(
        "SELECT ip_address, current_asn, enrichment, enrichment_updated_at, first_seen, "
        "last_seen, session_count FROM ip_inventory"
    )
    return {
        ip: Row(asn, json.loads(e) if isinstance(e, str) else e, updated, first, last, count)
        for ip, asn, e, updated, first, last, count in rows
    }


def canonical_ips(db: Db) -> dict[str, str]:
    """Each session's canonical IP as the loader picks it: the src_ip of its lowest-id raw
    event that has one."""
    found: dict[str, str] = {}
    for session, payload in db.query("SELECT session_id, payload FROM raw_events ORDER BY id"):
        event = json.loads(payload) if isinstance(payload, str) else payload
        if event.get("src_ip") and session not in found:
            found[session] = event["src_ip"]
    return found


def as_utc(value: Any) -> datetime:
    """A timestamp as SQLite (text, UTC) or PostgreSQL (aware) returns it, as aware UTC."""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def snapshot_country(blocks: dict[str, Any]) -> str | None:
    """SPEC 2: upper(coalesce(maxmind.country, cymru.country, dshield.ip.ascountry))."""
    for path in (("maxmind", "country"), ("cymru", "country"), ("dshield", "ip", "ascountry")):
        value: Any = blocks
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if value is not None:
            return str(value).upper()
    return None


def is_bogon(address: str) -> bool:
    return not ipaddress.ip_address(address).is_global


# -- the checks ---------------------------------------------------------------------------------


def check_enriched(db: Db, ips: set[str]) -> dict[str, Row]:
    """Every address has a row with enrichment (a bogon: its validation block)."""
    rows = inventory(db)
    missing = sorted(ips - set(rows))
    assert not missing, f"{len(missing)} of {len(ips)} attacking IPs have no row: {missing[:5]}"
    for ip in ips:
        row = rows[ip]
        assert "validation" in row.blocks, ip
        if is_bogon(ip):
            continue
        assert row.blocks["maxmind"]["status"] in ("ok", "not_found"), ip
        assert row.blocks["greynoise"]["status"] in ("ok", "not_found", "skipped"), ip
        assert row.enrichment_updated_at is not None, ip
    return rows


def check_new_rows(
    rows: dict[str, Row], new: set[str], db: Db, plans: Sequence[SessionPlan]
) -> None:
    """SPEC 2.2: a new row's first_seen, last_seen and session_count come from its sessions."""
    spans = {s: (as_utc(f), as_utc(last)) for s, f, last in db.query(
        "SELECT session_id, first_event_at, last_event_at FROM session_summaries")}  # fmt: skip
    of_ip: dict[str, list[str]] = {}
    for plan in plans:
        if plan.src_ip in new:
            of_ip.setdefault(plan.src_ip, []).append(plan.session_id)
    for ip, ids in of_ip.items():
        row = rows[ip]
        assert row.session_count == len(ids), ip
        assert as_utc(row.first_seen) == min(spans[s][0] for s in ids), ip
        assert as_utc(row.last_seen) == max(spans[s][1] for s in ids), ip


def check_sessions(
    before: dict[str, tuple[Any, ...]],
    after: dict[str, tuple[Any, ...]],
    canonical: dict[str, str],
    rows: dict[str, Row],
) -> tuple[int, int]:
    """Every session with a canonical IP is linked to it, every NULL snapshot filled by SPEC 2,
    every non-NULL value kept; a session without one is untouched. (linked, filled) counts."""
    assert set(after) == set(before)
    unlinked = [s for s in canonical if after[s][0] is None]
    assert not unlinked, f"{len(unlinked)} of {len(canonical)} sessions not linked to their IP"
    linked = filled = 0
    for session, old in before.items():
        new = after[session]
        ip = canonical.get(session)
        if ip is None:
            assert new == old, f"{session} has no src_ip; it changed: {old} -> {new}"
            continue
        row = rows[ip]
        rule = (ip, row.current_asn, snapshot_country(row.blocks), row.enrichment_updated_at)
        expected = tuple(o if o is not None else r for o, r in zip(old, rule, strict=True))
        assert new == expected, f"session {session} of {ip}: {old} -> {new}, expected {expected}"
        linked += old[0] is None
        filled += any(o is None and n is not None for o, n in zip(old[1:], new[1:], strict=True))
    return linked, filled


# -- running the refresh ------------------------------------------------------------------------


@dataclass
class Services:
    """Both simulators for a test."""

    cymru: Simulator
    greynoise: Simulator

    def requests(self) -> tuple[int, int]:
        """Cymru sessions and GreyNoise requests so far."""
        return len(self.cymru.entries()), len(self.greynoise.entries())

    def asked_about(self) -> set[str]:
        """Every address (or AS) either service was asked about."""
        cymru = {t for e in self.cymru.entries() for q in e["queries"] for t in q.split()}
        return cymru | {ip for e in self.greynoise.entries() for ip in e["ips"]}

    def refresh(self, db: Db, folder: Path, **extra: Any) -> RunSummary:
        config = RefreshConfig(
            db_url=db.url, maxmind_dir=folder, cymru=self.cymru.address,
            greynoise_url=self.greynoise.url, greynoise_api_key=KEY, greynoise_rate=1000.0,
            quiet=True, **extra,
        )  # fmt: skip
        return refresh(config, LineReporter(verbosity=-1))


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    """The Cymru and GreyNoise simulators of world ``SEED`` on 127.0.0.1."""
    with (
        running("cymru", tmp_path / "cymru.jsonl", "--seed", str(SEED)) as cymru,
        running("greynoise", tmp_path / "gn.jsonl", "--seed", str(SEED), "--key", KEY) as gn,
    ):
        yield Services(cymru, gn)


def mixed_events(plans: Sequence[SessionPlan], rng: random.Random) -> list[dict[str, Any]]:
    """Events of every session in time order: half with ``src_ip`` on every event (real Cowrie
    logs), half only on connect (upstream's synthetic logs)."""
    half = len(plans) // 2
    events = cowrie_events(plans[:half], rng) + cowrie_events(
        plans[half:], rng, every_event_ip=False
    )
    return sorted(events, key=lambda event: event["timestamp"])


def load(db: Db, tmp_path: Path, plans: Sequence[SessionPlan], rng: random.Random) -> None:
    """Load the sessions' events as the loader does; the load must not fail."""
    report = load_events(db.url, tmp_path / "cowrie.json", mixed_events(plans, rng))
    assert not report.failures and report.failed is None
    assert report.events_committed == db.query("SELECT count(*) FROM raw_events")[0][0]
    assert len(report.committed) > 2  # several batches: sessions span them


def after_rerun_nothing_changes(db: Db, services: Services, folder: Path) -> None:
    """A second refresh selects nothing, asks no service, writes nothing."""
    state = (sessions(db), inventory(db), digests(db))
    asked = services.requests()
    again = services.refresh(db, folder)
    assert again.selected == 0
    assert services.requests() == asked, "the rerun asked a service"
    assert (sessions(db), inventory(db), digests(db)) == state
    assert (again.sessions_linked, again.snapshots_filled) == (0, 0)
    if db.kind == "sqlite":
        con = sqlite3.connect(db.path)
        assert con.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        con.close()


START = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)


# -- the tests ----------------------------------------------------------------------------------


def test_a_first_load_is_enriched_linked_and_filled(
    loader_db: Db, maxmind_world: MaxMindWorld, services: Services, tmp_path: Path
) -> None:
    """A new database after the loader's first load: every session has source_ip and its
    snapshots NULL; the refresh finds every IP through raw events."""
    db, rng = loader_db, random.Random(SEED)
    ips = [*maxmind_world.world.attacking_ips(150, np.random.default_rng(SEED)), BOGON]
    plans = plan_sessions(ips, rng, START) + plan_sessions([None, None], rng, START, per_ip=(1, 1))
    load(db, tmp_path, plans, rng)
    canonical = canonical_ips(db)
    assert canonical == {p.session_id: p.src_ip for p in plans if p.src_ip is not None}
    before, hashes = sessions(db), digests(db)
    assert all(value is None for values in before.values() for value in values)  # as loaded

    dry = services.refresh(db, maxmind_world.folder, dry_run=True)
    assert services.requests() == (0, 0)
    assert dry.selected == len(ips), (
        f"the dry run selected {dry.selected} of the {len(ips)} IPs found only in raw events"
    )
    summary = services.refresh(db, maxmind_world.folder)
    assert summary.selected == summary.new_ips == len(ips)
    rows = check_enriched(db, set(ips))
    check_new_rows(rows, set(ips), db, plans)
    after = sessions(db)
    linked, filled = check_sessions(before, after, canonical, rows)
    assert linked == len(canonical) and filled > 0
    assert digests(db) == hashes, "a column the refresh must not touch changed"
    # the summary's counts (RunSummary: raw_event_ips, sessions_linked, snapshots_filled)
    assert dry.raw_event_ips == len(ips)
    assert summary.sessions_linked == linked
    assert summary.snapshots_filled == filled
    after_rerun_nothing_changes(db, services, maxmind_world.folder)


def known_blocks(epoch: int) -> dict[str, Any]:
    """A row another tool enriched a month before the load (stale now)."""
    month_ago = (datetime.now(UTC) - timedelta(days=30)).isoformat()
    return {
        "validation": {"is_bogon": False, "reason": None},
        "maxmind": {"country": "SE", "asn": OLD_ASN, "asn_org": "OLD-NET", "status": "ok",
                    "db_build_epoch": epoch - 30 * 86_400, "cached_at": month_ago},
        "spur": {"client": {"types": ["DATACENTER", "VPN"]}},
    }  # fmt: skip


def fresh_blocks(address: str, asn: int, country: str | None, epoch: int) -> dict[str, Any]:
    """A row enriched just now, after the load: fresh for every source."""
    now = datetime.now(UTC).isoformat()
    return {
        "validation": {"is_bogon": False, "reason": None},
        "maxmind": {"country": country, "asn": asn, "status": "ok", "db_build_epoch": epoch,
                    "cached_at": now, "network": None, "asn_org": None},
        "greynoise": {"noise": False, "riot": False, "classification": "unknown", "name": None,
                      "last_seen": None, "link": None, "status": "not_found", "cached_at": now},
    }  # fmt: skip


def add_rows(
    db: Db, rows: dict[str, tuple[int, dict[str, Any], datetime]], count: Counter[str]
) -> None:
    """ip_inventory rows (address -> ASN, enrichment, enriched at), their ASNs first."""
    now = db.timestamp(datetime.now(UTC))
    db.execute(
        "INSERT INTO asn_inventory (asn_number, organization_name, first_seen, last_seen) "
        "VALUES (%s, %s, %s, %s) ON CONFLICT (asn_number) DO NOTHING",
        [(asn, f"AS{asn}", now, now) for asn in sorted({asn for asn, _, _ in rows.values()})],
    )
    db.execute(
        "INSERT INTO ip_inventory (ip_address, current_asn, first_seen, last_seen, session_count,"
        " enrichment, enrichment_updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
        [
            (ip, asn, now, now, count[ip], db.json(blocks), db.timestamp(at))
            for ip, (asn, blocks, at) in rows.items()
        ],
    )


def test_rows_there_at_load_time_or_made_after_it(
    loader_db: Db, maxmind_world: MaxMindWorld, services: Services, tmp_path: Path
) -> None:
    """Rows that existed when the loader ran: their sessions were linked and their snapshots
    copied then, and stay so (first ingest wins), though the rows are refreshed. Rows made after
    the load (fresh): their sessions are linked and filled, and no service is asked about them."""
    db, rng, epoch = loader_db, random.Random(SEED + 1), maxmind_world.epoch
    ips = maxmind_world.world.attacking_ips(160, np.random.default_rng(SEED + 1))
    asn_reader = maxminddb.open_database(str(maxmind_world.folder / "GeoLite2-ASN.mmdb"))
    city_reader = maxminddb.open_database(str(maxmind_world.folder / "GeoLite2-City.mmdb"))

    def maxmind(ip: str) -> tuple[int | None, str | None]:
        asn = (asn_reader.get(ip) or {}).get("autonomous_system_number")  # type: ignore[union-attr]
        city = city_reader.get(ip) or {}
        return asn, (city.get("country") or {}).get("iso_code")  # type: ignore[union-attr]

    v4 = [ip for ip in ips if ":" not in ip]
    known = v4[:15]
    late = [ip for ip in v4[15:] if maxmind(ip)[0] is not None][:15]
    new = [ip for ip in ips if ip not in known and ip not in late]
    plans = plan_sessions(ips, rng, START)
    count = Counter(plan.src_ip for plan in plans if plan.src_ip)
    month_ago = datetime.now(UTC) - timedelta(days=30)
    add_rows(db, {ip: (OLD_ASN, known_blocks(epoch), month_ago) for ip in known}, count)
    load(db, tmp_path, plans, rng)
    canonical = canonical_ips(db)
    before = sessions(db)
    old_at = db.timestamp(month_ago)
    for session, ip in canonical.items():  # the loader linked the known IPs' sessions
        assert before[session] == ((ip, OLD_ASN, "SE", old_at) if ip in known else (None,) * 4)
    now = datetime.now(UTC)
    made = {ip: (asn, fresh_blocks(ip, asn, country, epoch), now)
            for ip in late for asn, country in [maxmind(ip)] if asn is not None}  # fmt: skip
    add_rows(db, made, count)
    late_rows = {ip: inventory(db)[ip] for ip in late}
    hashes = digests(db)

    dry = services.refresh(db, maxmind_world.folder, dry_run=True)
    assert dry.selected == len(new) + len(known), (
        f"the dry run selected {dry.selected} IPs: {len(known)} stale rows and {len(new)} IPs "
        "found only in raw events"
    )
    summary = services.refresh(db, maxmind_world.folder)
    assert summary.selected == len(new) + len(known) and summary.new_ips == len(new)
    assert not set(late) & services.asked_about(), "a service was asked about a fresh row"
    rows = check_enriched(db, set(ips))
    check_new_rows(rows, set(new), db, plans)
    assert {ip: rows[ip] for ip in late} == late_rows
    assert all(rows[ip].current_asn != OLD_ASN for ip in known)  # refreshed, unlike snapshots
    after = sessions(db)
    linked, filled = check_sessions(before, after, canonical, rows)
    assert linked == sum(1 for ip in canonical.values() if ip not in known)
    assert digests(db) == hashes, "a column the refresh must not touch changed"
    assert summary.sessions_linked == linked
    assert summary.snapshots_filled == filled
    # IPs found through raw events: the new ones, and perhaps the ones with fresh rows
    assert len(new) <= dry.raw_event_ips <= len(new) + len(late)
    after_rerun_nothing_changes(db, services, maxmind_world.folder)
