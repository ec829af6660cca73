"""The sample world, its MaxMind files and honeypot databases, and `make demo`."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import sqlite3
import subprocess
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import maxminddb
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etl.sources.greynoise.answers import GreyNoiseAnswer
from etl.sources.greynoise.steps import greynoise_results
from testbed.sample.honeypot import greynoise_block
from testbed.sample.mmdb_files import build_epoch, write_maxmind_files
from testbed.sample.sessions import snapshot_country
from testbed.sample.world import World
from tests.sims import run_module

WORLD = World(1)
SQLITE_TS = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}$")
LOADER_TS = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")  # SQLite's CURRENT_TIMESTAMP


def sample(*args: str) -> subprocess.CompletedProcess[str]:
    return run_module("testbed.sample", *args)


def refresh_maxmind_only(db_url: str, maxmind_dir: Path) -> subprocess.CompletedProcess[str]:
    return run_module(
        "etl.refresh", "--db", db_url, "--maxmind-dir", str(maxmind_dir),
        "--skip", "cymru", "--skip", "greynoise",
    )  # fmt: skip


def test_world_is_determined_by_its_seed() -> None:
    again = World(1)
    assert [p.network for p in again.prefixes] == [p.network for p in WORLD.prefixes]
    assert again.systems == WORLD.systems
    assert [p.network for p in World(2).prefixes] != [p.network for p in WORLD.prefixes]


def test_world_has_the_awkward_cases() -> None:
    names = [s.name for s in WORLD.systems.values()]
    assert any("'" in n and '"' in n for n in names)
    assert any("DROP TABLE" in n for n in names)
    assert any(len(n) >= 200 for n in names)
    assert any(not n.isascii() for n in names)
    assert any(len(p.origins) > 1 for p in WORLD.prefixes)
    assert any(not p.origins for p in WORLD.prefixes)
    assert any(p.network.version == 6 for p in WORLD.prefixes)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_route_agrees_with_a_linear_scan(value: int) -> None:
    address = ipaddress.IPv4Address(value)
    expected = [p for p in WORLD.prefixes if address in p.network]
    assert WORLD.route(address) == (expected[0] if expected else None)


def test_attacking_ips_are_global_and_routed() -> None:
    ips = WORLD.attacking_ips(3000, np.random.default_rng(5))
    assert len(set(ips)) == 3000
    parsed = [ipaddress.ip_address(ip) for ip in ips]
    assert all(address.is_global for address in parsed)
    assert all(WORLD.route(address) is not None for address in parsed)
    assert 20 <= sum(address.version == 6 for address in parsed) <= 120


def test_a_not_observed_ip_has_the_refreshs_own_block() -> None:
    """The sample writes GreyNoise's not-observed IPs as the refresh does: ``classification``
    null, not ``"unknown"`` (GreyNoise's class of IPs it did observe), the whole block equal."""
    cached_at = datetime(2031, 3, 14, 12, tzinfo=UTC)
    ips = WORLD.attacking_ips(400, np.random.default_rng(3))
    unobserved = [ip for ip in ips if ":" not in ip and WORLD.greynoise(ip) is None]
    assert unobserved
    refreshed = greynoise_results([GreyNoiseAnswer.not_observed(ip) for ip in unobserved],
                                  cached_at)  # fmt: skip
    for ip, written in zip(unobserved, refreshed["greynoise"], strict=True):
        block = greynoise_block(WORLD, ip, cached_at)
        assert block["status"] == "not_found" and block["classification"] is None
        assert block == json.loads(written)


@pytest.mark.parametrize("tree_nodes", [None, (150_000, 300_000)])
def test_maxmind_files_follow_the_world(tmp_path: Path, tree_nodes: tuple[int, int] | None) -> None:
    """Filler networks (realistic size) grow the trees and change no world address's answer."""
    asn_path, city_path = write_maxmind_files(WORLD, tmp_path, tree_nodes=tree_nodes)
    assert build_epoch(asn_path) > 1_700_000_000
    for path, wanted in zip((asn_path, city_path), tree_nodes or (0, 0), strict=True):
        with maxminddb.open_database(str(path)) as reader:
            nodes = reader.metadata().node_count
        assert 0.9 * wanted <= nodes <= 1.1 * wanted if wanted else nodes < 60_000, nodes
    ips = WORLD.attacking_ips(2000, np.random.default_rng(9))
    missing = 0
    with (
        maxminddb.open_database(str(asn_path)) as asn,
        maxminddb.open_database(str(city_path)) as city,
    ):
        assert asn.metadata().database_type == "GeoLite2-ASN"
        for ip in ips:
            prefix = WORLD.route(ipaddress.ip_address(ip))
            assert prefix is not None
            record = asn.get(ip)
            if prefix.in_maxmind_asn:
                assert isinstance(record, dict)
                assert record["autonomous_system_number"] == prefix.origins[0]
            else:
                assert record is None
                missing += 1
            located = city.get(ip)
            if prefix.city:
                assert isinstance(located, dict)
                assert located["country"]["iso_code"] == prefix.city[1]  # type: ignore[index]
    assert 0.05 <= missing / len(ips) <= 0.16  # "about 10% of attacking IPs have no ASN"


# -- the honeypot database: sessions as cowrieprocessor's loader leaves them ------------------
SESSIONS_SQL = (
    "SELECT session_id, source_ip, first_event_at, snapshot_asn, snapshot_country, "
    "enrichment_at, event_count, enrichment FROM session_summaries"
)
ROWS_SQL = (
    "SELECT ip_address, created_at, first_seen, current_asn, enrichment_updated_at, enrichment, "
    "session_count FROM ip_inventory"
)
EVENTS_SQL = (
    "SELECT id, session_id, payload, payload_hash, event_type, event_timestamp FROM raw_events"
)


def utc(value: Any) -> Any:
    """A timestamp as read from either dialect (SQLite text, PostgreSQL aware datetime), as
    naive UTC; None stays None."""
    if isinstance(value, str):
        return datetime.fromisoformat(value)
    return value.astimezone(UTC).replace(tzinfo=None) if value is not None else None


def check_shape(con: Any, shape: str) -> Counter[str]:
    """Check a sample database (a sqlite3 or psycopg connection) against the rules of its
    ``shape`` (testbed.sample.honeypot); return the number of sessions per address (the src_ip
    of their raw events)."""
    events: dict[str, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
    for event_id, session_id, payload, digest, kind, moment in con.execute(EVENTS_SQL):
        text = payload if isinstance(payload, str) else json.dumps(payload)
        data = json.loads(text)
        assert digest == hashlib.sha256(text.encode()).hexdigest()
        assert data["session"] == session_id and data["eventid"] == kind
        assert utc(moment) == utc(data["timestamp"].removesuffix("Z"))
        events[session_id].append((event_id, data))
    columns = ("created", "first_seen", "asn", "updated", "enrichment", "sessions")
    rows = {row[0]: dict(zip(columns, row[1:], strict=True)) for row in con.execute(ROWS_SQL)}
    per_address: Counter[str] = Counter()
    sessions = con.execute(SESSIONS_SQL).fetchall()
    assert len(sessions) == len(events)
    for session_id, source_ip, start, asn, country, enriched_at, count, enrichment in sessions:
        mine = [data for _, data in sorted(events[session_id], key=lambda event: event[0])]
        assert len(mine) == count and mine[0]["eventid"] == "cowrie.session.connect"
        moments = [data["timestamp"] for data in mine]
        assert moments == sorted(moments)  # ids ascend in time
        assert len({data.get("src_ip") for data in mine}) == 1  # on every event
        address = mine[0]["src_ip"]
        per_address[address] += 1
        assert enrichment in ("null", None)  # JSON null (psycopg reads it as None)
        if shape == "migrated_v16":
            assert source_ip == address and (asn, country, enriched_at) == (None, None, None)
            continue
        row = rows.get(address)
        linked = row is not None and utc(row["created"]) <= utc(start) and address != ""
        assert source_ip == (address if linked else None), (session_id, address)
        if linked and row["updated"] is not None and utc(row["updated"]) <= utc(start):
            blocks = row["enrichment"]
            blocks = blocks if isinstance(blocks, dict) else json.loads(blocks)
            assert (asn, country) == (row["asn"], snapshot_country(blocks))
            assert utc(enriched_at) == utc(row["updated"])
        else:
            assert (asn, country, enriched_at) == (None, None, None), session_id
    for address, row in rows.items():
        assert row["sessions"] == per_address[address], address
        created, first_seen = utc(row["created"]), utc(row["first_seen"])
        if shape == "migrated_v16":
            assert created == first_seen
        else:
            assert created <= first_seen + timedelta(days=2)
            assert row["updated"] is None or created <= utc(row["updated"])
    return per_address


def test_sample_sqlite_database(tmp_path: Path, shared: Path) -> None:
    db = tmp_path / "honeypot.sqlite"
    result = sample("--db", f"sqlite:///{db}", "--ips", "1500", "--maxmind-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "1500 IPs" in result.stdout and "shape loader" in result.stdout
    con = sqlite3.connect(db)
    per_address = check_shape(con, "loader")
    inventory = {
        row[0]: row[1:]
        for row in con.execute(
            "SELECT ip_address, session_count, first_seen, last_seen, enrichment FROM ip_inventory"
        )
    }
    assert len(per_address) == 1500
    counts = sorted(per_address.values())
    assert counts[len(counts) // 2] <= 2 and counts[-1] >= 1000
    assert 0 < len(per_address) - len(inventory) < 300  # IPs with sessions but no inventory row
    linked, unlinked, snapshots = con.execute(
        "SELECT count(source_ip), count(*) - count(source_ip), count(snapshot_asn) "
        "FROM session_summaries"
    ).fetchone()
    assert linked and unlinked and snapshots
    for address, (count, first_seen, last_seen, enrichment) in inventory.items():
        assert count == per_address[address]
        assert SQLITE_TS.match(first_seen) and SQLITE_TS.match(last_seen)
        assert isinstance(json.loads(enrichment), dict)
    for ingest_at, moment in con.execute("SELECT ingest_at, event_timestamp FROM raw_events"):
        assert LOADER_TS.match(ingest_at) and SQLITE_TS.match(moment)
    blocks = [json.loads(row[3]) for row in inventory.values()]
    assert any(b == {} for b in blocks)
    assert any("dshield" in b and "maxmind" not in b for b in blocks)
    assert any(b.get("greynoise", {}).get("status") == "error" for b in blocks)
    assert any(b.get("cymru", {}).get("status") == "not_found" for b in blocks)
    assert any(b.get("validation", {}).get("is_bogon") for b in blocks)
    # cowrieprocessor's DDL, as its ORM and migration v2 leave it in sqlite_master
    reference = (shared / "compat" / "cowrieprocessor-sqlite.sql").read_text()
    for (sql,) in con.execute("SELECT sql FROM sqlite_master WHERE tbl_name = 'raw_events'"):
        if sql:
            assert f"{sql};" in reference, sql
    assert con.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    # The loader links a session only to a row that exists: nothing breaks the foreign key.
    assert con.execute("PRAGMA foreign_key_check").fetchall() == []
    con.close()
    refresh = refresh_maxmind_only(f"sqlite:///{db}", tmp_path)
    assert refresh.returncode == 0, refresh.stderr
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA foreign_key_check").fetchall() == []
    # Every IP is found through its raw events, and its sessions linked to its new row.
    assert con.execute("SELECT count(*) FROM ip_inventory").fetchone() == (1500,)
    assert con.execute(
        "SELECT count(*) FROM session_summaries s JOIN raw_events e USING (session_id) "
        "WHERE e.event_type = 'cowrie.session.connect' AND s.source_ip IS NULL "
        "AND json_extract(e.payload, '$.src_ip') <> ''"
    ).fetchone() == (0,)
    con.close()
    refused = sample("--db", f"sqlite:///{db}", "--ips", "10", "--maxmind-dir", str(tmp_path))
    assert refused.returncode == 2 and "--replace" in refused.stderr


def test_sample_migrated_by_v16(tmp_path: Path) -> None:
    """The old shape: source_ip on every session (also of IPs without a row), no snapshots."""
    from testbed.sample.build import build_sample

    db = tmp_path / "v16.sqlite"
    built = build_sample(f"sqlite:///{db}", 400, 2, tmp_path / "mm", shape="migrated_v16", events=2)
    assert built.shape == "migrated_v16" and built.linked == built.sessions
    assert built.raw_events == 2 * built.sessions
    con = sqlite3.connect(db)
    per_address = check_shape(con, "migrated_v16")
    assert len(per_address) == 400
    assert con.execute("PRAGMA foreign_key_check").fetchall()  # sessions of missing IPs
    kinds = dict(con.execute("SELECT event_type, count(*) FROM raw_events GROUP BY 1"))
    assert kinds == {
        "cowrie.session.connect": built.sessions,
        "cowrie.session.closed": built.sessions,
    }
    con.close()


def test_events_per_session_and_shape_are_options(tmp_path: Path) -> None:
    db = tmp_path / "h.sqlite"
    result = sample(
        "--db", f"sqlite:///{db}", "--ips", "60", "--maxmind-dir", str(tmp_path),
        "--events-per-session", "5", "--shape", "loader", "--journal-mode", "delete",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    con = sqlite3.connect(db)
    sessions, events = con.execute(
        "SELECT count(*), sum(event_count) FROM session_summaries"
    ).fetchone()
    kinds = dict(con.execute("SELECT event_type, count(*) FROM raw_events GROUP BY 1"))
    assert events == 5 * sessions == sum(kinds.values())
    assert kinds["cowrie.session.connect"] == kinds["cowrie.session.closed"] == sessions
    assert kinds["cowrie.login.failed"] + kinds.get("cowrie.login.success", 0) == 3 * sessions
    assert con.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    con.close()
    assert f"{events} raw events" in result.stdout
    bad = sample("--db", f"sqlite:///{db}x", "--ips", "5", "--shape", "v15")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_sample_postgres_database_refreshes(tmp_path: Path, pg_url: str) -> None:
    result = sample("--db", pg_url, "--ips", "600", "--maxmind-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    import psycopg

    with psycopg.connect(pg_url) as con:
        per_address = check_shape(con, "loader")
        assert len(per_address) == 600
        rows = con.execute("SELECT count(*) FROM ip_inventory").fetchone()
        assert rows is not None and 450 < rows[0] < 600  # "missing" IPs too, as on SQLite
        # The loader's next event takes the next id.
        assert con.execute(
            "SELECT nextval('raw_events_id_seq') = max(id) + 1 FROM raw_events"
        ).fetchone() == (True,)
        columns = con.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = 'raw_events' ORDER BY ordinal_position"
        ).fetchall()
        assert dict(columns)["payload"] == "json"
        assert dict(columns)["event_timestamp"] == "timestamp with time zone"
    refresh = refresh_maxmind_only(pg_url, tmp_path)
    assert refresh.returncode == 0, refresh.stderr
    again = sample("--db", pg_url, "--ips", "200", "--maxmind-dir", str(tmp_path), "--replace")
    assert again.returncode == 0, again.stderr
    with psycopg.connect(pg_url) as con:
        assert len(check_shape(con, "loader")) == 200
    refused = sample("--db", pg_url, "--ips", "10", "--maxmind-dir", str(tmp_path))
    assert refused.returncode == 2 and "--replace" in refused.stderr


def test_sample_rejects_bad_input(tmp_path: Path) -> None:
    assert sample("--ips", "0").returncode == 2
    bad = sample("--db", "mysql://x", "--ips", "5", "--maxmind-dir", str(tmp_path))
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_demo_runs_end_to_end(demo: tuple[Path, str]) -> None:
    folder, output = demo
    assert "Team Cymru simulator on 127.0.0.1:" in output
    assert re.search(r"selected \d+ IPs", output)
    # Chunks are numbered as they finish; the first to finish may hold only AS queries.
    assert re.search(r"Cymru batch \d+/\d+: \d+ IPs enriched", output)
    # Its output is no terminal here: plain lines, a progress line per phase every 5 s.
    assert "--progress-every 5" in output and re.search(
        r"\nwrite: \d+ ip_inventory rows to do", output
    )
    assert re.search(r"greynoise +\d+ +[1-9]\d*", output)  # GreyNoise answered via the simulator
    # The lists came from the lists simulator (the world's own), and labelled every IP.
    assert re.search(r"classification +([1-9]\d*) +\1 ", output), output
    assert re.search(r"lists: 16 in \S+, the oldest", output)
    # The sample is what cowrieprocessor's loader leaves: new IPs only in raw events. The
    # refresh finds and links them; the status afterwards has none left.
    found = re.search(r"found (\d+) sessions without source_ip through their raw events", output)
    assert found and int(found.group(1)) > 0
    assert re.search(r"sessions: \d+ without source_ip found through raw events \([1-9]", output)
    assert "\n0 sessions not linked to their IP yet (0 IPs new, not yet enriched)" in output
    assert (folder / "honeypot.sqlite").exists()
    assert (folder / "maxmind" / "GeoLite2-ASN.mmdb").exists()


def test_realistic_size_and_build_epoch_are_parameters(tmp_path: Path) -> None:
    """Every network of a file with filler is a world prefix with its record, or filler
    (ASN above 400,000) outside every world prefix."""
    asn_path, city_path = write_maxmind_files(
        WORLD, tmp_path, tree_nodes=(40_000, 0), build_epoch=1_600_000_000
    )
    assert build_epoch(asn_path) == build_epoch(city_path) == 1_600_000_000
    world = {p.network: p for p in WORLD.prefixes}
    filler = 0
    with maxminddb.open_database(str(asn_path)) as asn:
        assert asn.metadata().node_count > 36_000
        for network, record in asn:
            number = record["autonomous_system_number"]  # type: ignore[index,call-overload]
            if network in world:
                assert number == world[network].origins[0]
            else:
                filler += 1
                assert number > 400_000
                assert WORLD.route(network.network_address) is None
                assert WORLD.route(network.broadcast_address) is None
                assert network.prefixlen >= 24
                assert network.network_address.is_global
    assert filler > 2000


def test_both_maxmind_files_have_one_build_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sample's maxmind blocks carry the ASN file's build epoch: a City file built later
    would make every block stale (the refresh compares against the newest file)."""
    import itertools
    import time

    import maxminddb

    from testbed.sample.mmdb_files import write_maxmind_files
    from testbed.sample.world import World

    clock = itertools.count(1_800_000_000, 7)  # every look at the clock is 7 s later
    monkeypatch.setattr(time, "time", lambda: float(next(clock)))
    asn, city = write_maxmind_files(World(1), tmp_path, tree_nodes=(40_000, 80_000))
    epochs = set()
    for path in (asn, city):
        with maxminddb.open_database(str(path)) as reader:
            epochs.add(reader.metadata().build_epoch)
    assert len(epochs) == 1


def test_the_sample_makes_the_folder_of_its_new_file(tmp_path: Path) -> None:
    from testbed.sample.build import build_sample

    target = tmp_path / "new" / "folder" / "h.sqlite"
    built = build_sample(f"sqlite:///{target}", 50, 1, tmp_path / "mm")
    assert target.is_file() and built.states.total() == 50
