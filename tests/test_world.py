"""The tests' world (tests/world.py): databases as cowrieprocessor's loader leaves them, or as its
v16 migration left them."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

from tests.world import World, load_postgres, load_sqlite, plan_world

SESSIONS_SQL = (
    "SELECT session_id, source_ip, snapshot_asn, snapshot_country, enrichment_at "
    "FROM session_summaries ORDER BY session_id"
)
EVENTS_SQL = (
    "SELECT id, session_id, payload, event_type, event_timestamp FROM raw_events ORDER BY id"
)


def check_loaded(
    world: World, sessions: list[tuple[Any, ...]], events: list[tuple[Any, ...]]
) -> None:
    """The database holds the world's sessions and their events, as planned."""
    planned = {s.session_id: s for s in world.session_rows}
    assert {row[0] for row in sessions} == set(planned)
    for session_id, source_ip, asn, country, enriched in sessions:
        session = planned[session_id]
        assert source_ip == session.source_ip
        assert (asn, country) == (session.snapshot_asn, session.snapshot_country)
        assert (enriched is None) == (session.enrichment_at is None)
    seen: dict[str, list[dict[str, Any]]] = {}
    for _, session_id, payload, kind, moment in events:
        data = payload if isinstance(payload, dict) else json.loads(payload)
        session = planned[data["session"]]
        if session.legacy:
            assert (session_id, kind, moment) == (None, None, None)
        else:
            assert session_id == data["session"] and kind == data["eventid"] and moment
        seen.setdefault(data["session"], []).append(data)
    assert set(seen) == set(planned)
    for session_id, payloads in seen.items():
        canonical = next((p["src_ip"] for p in payloads if "src_ip" in p), None)
        assert canonical == planned[session_id].address
        assert payloads[0]["eventid"] == "cowrie.session.connect"
    counts = Counter(s.address for s in world.session_rows if s.address is not None)
    assert counts == Counter(world.sessions)
    assert {r["ip_address"]: r["session_count"] for r in world.inventory} == {
        r["ip_address"]: world.sessions[r["ip_address"]] for r in world.inventory
    }


def test_loader_shape(compat_sqlite: Path) -> None:
    world = plan_world(120, networks=["89.160.0.0/17"])
    rows = {r["ip_address"]: r for r in world.inventory}
    for session in world.session_rows:
        row = rows.get(session.address) if session.address else None  # "": never linked
        expected = row is not None and row["created_at"] <= session.first_event_at
        assert session.source_ip == (session.address if expected else None)
    assert all(world.sessions[s.address] for s in world.session_rows if s.address is not None)
    missing = {ip for ip, state in world.state.items() if state == "missing"}
    assert missing and all(s.source_ip is None for s in world.session_rows if s.address in missing)
    linked = [s for s in world.session_rows if s.source_ip]
    assert any(s.snapshot_asn for s in linked) and any(s.snapshot_country is None for s in linked)
    legacy = world.legacy_sessions()
    assert len(legacy) == 3 and world.sessions[legacy[0].address or ""] == 1
    assert len(world.no_address) == 2
    load_sqlite(str(compat_sqlite), world)
    con = sqlite3.connect(compat_sqlite)
    check_loaded(world, con.execute(SESSIONS_SQL).fetchall(), con.execute(EVENTS_SQL).fetchall())
    assert con.execute("PRAGMA foreign_key_check").fetchall() == []
    con.close()


def test_migrated_v16_shape(compat_sqlite: Path) -> None:
    world = plan_world(80, shape="migrated_v16")
    assert not world.unlinked() and not world.legacy_sessions() and not world.no_address
    assert all(s.snapshot_asn is None and s.enrichment_at is None for s in world.session_rows)
    assert all(r["created_at"] == r["first_seen"] for r in world.inventory)
    load_sqlite(str(compat_sqlite), world)
    con = sqlite3.connect(compat_sqlite)
    check_loaded(world, con.execute(SESSIONS_SQL).fetchall(), con.execute(EVENTS_SQL).fetchall())
    assert con.execute("PRAGMA foreign_key_check").fetchall()  # sessions of missing IPs
    con.close()


def test_loader_shape_on_postgres(compat_pg: str) -> None:
    import psycopg

    world = plan_world(100, networks=["89.160.0.0/17"])
    load_postgres(compat_pg, world)
    with psycopg.connect(compat_pg) as con:
        check_loaded(
            world, con.execute(SESSIONS_SQL).fetchall(), con.execute(EVENTS_SQL).fetchall()
        )
        row = con.execute(
            "SELECT nextval('raw_events_id_seq') - max(id) FROM raw_events"
        ).fetchone()
        assert row == (1,)
