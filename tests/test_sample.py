"""The sample world, its MaxMind files and honeypot databases, and `make demo`."""

from __future__ import annotations

import ipaddress
import json
import re
import sqlite3
import subprocess
from pathlib import Path

import maxminddb
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etl.sample.mmdb_files import build_epoch, write_maxmind_files
from etl.sample.world import World
from tests.sims import run_module

WORLD = World(1)
SQLITE_TS = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}$")


def sample(*args: str) -> subprocess.CompletedProcess[str]:
    return run_module("etl.sample", *args)


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


def test_sample_sqlite_database(tmp_path: Path) -> None:
    db = tmp_path / "honeypot.sqlite"
    result = sample("--db", f"sqlite:///{db}", "--ips", "1500", "--maxmind-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "1500 IPs" in result.stdout
    con = sqlite3.connect(db)
    sessions = dict(con.execute("SELECT source_ip, count(*) FROM session_summaries GROUP BY 1"))
    inventory = {
        row[0]: row[1:]
        for row in con.execute(
            "SELECT ip_address, session_count, first_seen, last_seen, enrichment FROM ip_inventory"
        )
    }
    assert len(sessions) == 1500
    counts = sorted(sessions.values())
    assert counts[len(counts) // 2] <= 2 and counts[-1] >= 1000
    assert 0 < len(sessions) - len(inventory) < 300  # IPs with sessions but no inventory row
    for address, (count, first_seen, last_seen, enrichment) in inventory.items():
        assert count == sessions[address]
        assert SQLITE_TS.match(first_seen) and SQLITE_TS.match(last_seen)
        assert isinstance(json.loads(enrichment), dict)
    blocks = [json.loads(row[3]) for row in inventory.values()]
    assert any(b == {} for b in blocks)
    assert any("dshield" in b and "maxmind" not in b for b in blocks)
    assert any(b.get("greynoise", {}).get("status") == "error" for b in blocks)
    assert any(b.get("cymru", {}).get("status") == "not_found" for b in blocks)
    assert any(b.get("validation", {}).get("is_bogon") for b in blocks)
    # Sessions of never-inventoried IPs break the (unenforced) foreign key until a refresh.
    assert con.execute("PRAGMA foreign_key_check").fetchall()
    con.close()
    refresh = refresh_maxmind_only(f"sqlite:///{db}", tmp_path)
    assert refresh.returncode == 0, refresh.stderr
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA foreign_key_check").fetchall() == []
    con.close()
    refused = sample("--db", f"sqlite:///{db}", "--ips", "10", "--maxmind-dir", str(tmp_path))
    assert refused.returncode == 2 and "--replace" in refused.stderr


def test_sample_postgres_database_refreshes(tmp_path: Path, pg_url: str) -> None:
    result = sample("--db", pg_url, "--ips", "600", "--maxmind-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    import psycopg

    with psycopg.connect(pg_url) as con:
        assert con.execute("SELECT count(*) FROM ip_inventory").fetchone() == (600,)
        orphans = con.execute(
            "SELECT count(*) FROM session_summaries s LEFT JOIN ip_inventory i "
            "ON i.ip_address = s.source_ip WHERE i.ip_address IS NULL"
        ).fetchone()
        assert orphans == (0,)
    refresh = refresh_maxmind_only(pg_url, tmp_path)
    assert refresh.returncode == 0, refresh.stderr
    again = sample("--db", pg_url, "--ips", "200", "--maxmind-dir", str(tmp_path), "--replace")
    assert again.returncode == 0, again.stderr


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
    assert re.search(r"greynoise +\d+ +[1-9]\d*", output)  # GreyNoise answered via the simulator
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

    from etl.sample.mmdb_files import write_maxmind_files
    from etl.sample.world import World

    clock = itertools.count(1_800_000_000, 7)  # every look at the clock is 7 s later
    monkeypatch.setattr(time, "time", lambda: float(next(clock)))
    asn, city = write_maxmind_files(World(1), tmp_path, tree_nodes=(40_000, 80_000))
    epochs = set()
    for path in (asn, city):
        with maxminddb.open_database(str(path)) as reader:
            epochs.add(reader.metadata().build_epoch)
    assert len(epochs) == 1


def test_the_sample_makes_the_folder_of_its_new_file(tmp_path: Path) -> None:
    from etl.sample.build import build_sample

    target = tmp_path / "new" / "folder" / "h.sqlite"
    built = build_sample(f"sqlite:///{target}", 50, 1, tmp_path / "mm")
    assert target.is_file() and built.states.total() == 50
