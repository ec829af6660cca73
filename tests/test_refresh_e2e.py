"""End to end: a cowrieprocessor database in every state, refreshed with MaxMind only."""

from __future__ import annotations

import io
import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import maxminddb
import pytest

from etl.core.vocabulary import Source
from etl.refresh.config import RefreshConfig
from etl.refresh.pipeline import refresh
from etl.report.summary import LineReporter
from tests.world import World, load_postgres, load_sqlite, plan_world

NETWORKS = [
    "89.160.0.0/17",
    "81.2.69.0/24",
    "216.160.64.0/18",
    "175.16.199.0/24",
    "1.128.0.0/11",
    "67.43.152.0/21",
    "2.125.160.216/29",
    "12.81.96.0/19",
]
SQLITE_TS = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}$")
SELECTABLE = {"missing", "never", "legacy", "stale_maxmind", "maxmind_error", "old_epoch"}


def read_sqlite(path: Path) -> dict[str, dict[str, Any]]:
    con = sqlite3.connect(path)
    con.row_factory = sqlite3.Row
    rows = {r["ip_address"]: dict(r) for r in con.execute("SELECT * FROM ip_inventory")}
    con.close()
    for row in rows.values():
        row["enrichment"] = json.loads(row["enrichment"])
    return rows


def read_postgres(url: str) -> dict[str, dict[str, Any]]:
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(url, row_factory=dict_row) as con:
        return {r["ip_address"]: r for r in con.execute("SELECT * FROM ip_inventory")}


def config(db_url: str, mmdb: dict[str, Path], **extra: Any) -> RefreshConfig:
    return RefreshConfig(
        db_url=db_url,
        maxmind_asn=mmdb["asn"],
        maxmind_city=mmdb["city"],
        skip=frozenset({Source.CYMRU, Source.GREYNOISE}),
        commit_every=700,
        quiet=True,
        **extra,
    )


def check_refreshed(
    world: World,
    before: dict[str, dict[str, Any]],
    after: dict[str, dict[str, Any]],
    mmdb: dict[str, Path],
) -> None:
    asn_reader = maxminddb.open_database(str(mmdb["asn"]))
    city_reader = maxminddb.open_database(str(mmdb["city"]))
    for address, state in world.state.items():
        row = after[address]
        old = before.get(address)
        if state not in SELECTABLE:
            assert row["enrichment"] == old["enrichment"], address  # type: ignore[index]
            assert row["enrichment_updated_at"] == old["enrichment_updated_at"]  # type: ignore[index]
            continue
        validation = row["enrichment"]["validation"]
        if validation["is_bogon"]:
            assert "maxmind" not in row["enrichment"] or (
                old and row["enrichment"]["maxmind"] == old["enrichment"].get("maxmind")
            )
            continue
        block = row["enrichment"]["maxmind"]
        asn = (asn_reader.get(address) or {}).get("autonomous_system_number")
        country = ((city_reader.get(address) or {}).get("country") or {}).get("iso_code")
        assert (block["asn"], block["country"]) == (asn, country), address
        assert block["status"] == (
            "ok" if asn_reader.get(address) or city_reader.get(address) else "not_found"
        )
        assert block["db_build_epoch"] == 1770245369
        assert row["current_asn"] == (asn or (old or {}).get("current_asn")), address
        assert row["enrichment_updated_at"] is not None
        if old is None:
            assert row["session_count"] == world.sessions[address]
        else:
            for column in ("first_seen", "last_seen", "session_count", "created_at"):
                assert row[column] == old[column], (address, column)
            for key, value in old["enrichment"].items():
                if key not in ("maxmind", "validation"):
                    assert row["enrichment"][key] == value, (address, key)


def test_sqlite_refresh_in_place(compat_sqlite: Path, mmdb: dict[str, Path]) -> None:
    world = plan_world(2500, networks=NETWORKS)
    load_sqlite(str(compat_sqlite), world)
    before = read_sqlite(compat_sqlite)
    schema_before = (
        sqlite3.connect(compat_sqlite)
        .execute("SELECT sql FROM sqlite_master ORDER BY name")
        .fetchall()
    )
    summary = refresh(config(f"sqlite:///{compat_sqlite}", mmdb))
    after = read_sqlite(compat_sqlite)
    check_refreshed(world, before, after, mmdb)
    assert set(after) == set(world.state)
    assert summary.selected == sum(1 for s in world.state.values() if s in SELECTABLE)
    assert summary.new_ips == sum(1 for s in world.state.values() if s == "missing")
    assert summary.upserted == summary.selected
    for address, row in after.items():
        if world.state[address] in SELECTABLE:
            for column in ("updated_at", "first_seen", "last_seen"):
                assert SQLITE_TS.match(row[column]), (column, row[column])
    schema_after = (
        sqlite3.connect(compat_sqlite)
        .execute("SELECT sql FROM sqlite_master ORDER BY name")
        .fetchall()
    )
    # cowrieprocessor's tables as they were; only our run log, session checks (the world
    # has sessions whose raw events name no address) and id are added beside them
    names = ("etl_run_log", "etl_session_checks", "etl_identity")
    ours = [sql for (sql,) in schema_after if sql and any(name in sql for name in names)]
    assert sorted(sql.split(" (")[0] for sql in ours) == [
        "CREATE TABLE etl_identity", "CREATE TABLE etl_run_log", "CREATE TABLE etl_session_checks",
    ]  # fmt: skip
    # (our tables' primary-key autoindexes have no SQL text; neither has any of theirs)
    assert [row for row in schema_after if row[0] not in ours and row[0]] == [
        row for row in schema_before if row[0]
    ]
    lines = io.StringIO()
    second = refresh(config(f"sqlite:///{compat_sqlite}", mmdb), LineReporter(lines))
    assert second.selected == 0
    assert "nothing is stale in sqlite:///" in lines.getvalue()  # one line, not a table alone
    assert read_sqlite(compat_sqlite) == after


@pytest.mark.postgres
def test_postgres_refresh_in_place(compat_pg: str, mmdb: dict[str, Path]) -> None:
    world = plan_world(2500, networks=NETWORKS, allow_missing=False)
    load_postgres(compat_pg, world)
    before = read_postgres(compat_pg)
    summary = refresh(config(compat_pg, mmdb))
    after = read_postgres(compat_pg)
    check_refreshed(world, before, after, mmdb)
    assert summary.selected == sum(1 for s in world.state.values() if s in SELECTABLE)
    for row in after.values():
        country = (row["enrichment"].get("maxmind") or {}).get("country")
        if country:
            assert row["geo_country"] == country
        assert row["is_bogon"] == bool((row["enrichment"].get("validation") or {}).get("is_bogon"))
    assert refresh(config(compat_pg, mmdb)).selected == 0


def test_ips_limit_takes_never_enriched_then_most_recent(
    compat_sqlite: Path, mmdb: dict[str, Path]
) -> None:
    world = plan_world(400, networks=NETWORKS)
    load_sqlite(str(compat_sqlite), world)
    before = read_sqlite(compat_sqlite)
    summary = refresh(config(f"sqlite:///{compat_sqlite}", mmdb, max_ips=60))
    assert summary.selected == 60
    after = read_sqlite(compat_sqlite)
    touched = {
        ip
        for ip, row in after.items()
        if ip not in before or row["updated_at"] != before[ip]["updated_at"]
    }
    never = {ip for ip, s in world.state.items() if s in ("missing", "never", "legacy")}
    assert len(touched) == 60
    assert touched <= never


def test_single_ip_is_forced_and_dry_run_writes_nothing(
    compat_sqlite: Path, mmdb: dict[str, Path]
) -> None:
    world = plan_world(100, networks=NETWORKS)
    load_sqlite(str(compat_sqlite), world)
    fresh_ip = next(
        ip
        for ip, s in world.state.items()
        if s == "fresh" and ":" not in ip and ip.strip() == ip and ip[0].isdigit()
    )
    before = read_sqlite(compat_sqlite)
    dry = refresh(config(f"sqlite:///{compat_sqlite}", mmdb, dry_run=True))
    assert dry.selected > 0
    assert read_sqlite(compat_sqlite) == before
    summary = refresh(
        config(f"sqlite:///{compat_sqlite}", mmdb, only_ips=(fresh_ip, "203.0.113.200"))
    )
    assert summary.selected == 1
    after = read_sqlite(compat_sqlite)
    assert after[fresh_ip]["enrichment"]["maxmind"]["db_build_epoch"] == 1770245369
    assert (
        after[fresh_ip]["enrichment"]["maxmind"]["cached_at"]
        != before[fresh_ip]["enrichment"]["maxmind"]["cached_at"]
    )
    assert after[fresh_ip]["enrichment"]["spur"] == before[fresh_ip]["enrichment"]["spur"]


def test_new_database_is_created_with_the_cowrieprocessor_schema(
    tmp_path: Path, compat_sqlite: Path, mmdb: dict[str, Path]
) -> None:
    target = tmp_path / "new.sqlite"
    refresh(config(f"sqlite:///{target}", mmdb, create=True))

    def table_info(path: Path) -> dict[str, list[tuple[Any, ...]]]:
        con = sqlite3.connect(path)
        return {
            t: con.execute(f"PRAGMA table_info({t})").fetchall()
            for t in ("asn_inventory", "ip_inventory", "session_summaries")
        }

    def indexes(path: Path) -> set[str]:
        con = sqlite3.connect(path)
        return {
            r[0]
            for r in con.execute(
                "SELECT name FROM sqlite_master WHERE type='index' AND tbl_name IN ('asn_inventory','ip_inventory','session_summaries') AND name NOT LIKE 'sqlite_%'"
            )
        }

    assert table_info(target) == table_info(compat_sqlite)
    assert indexes(target) == indexes(compat_sqlite)
    version = (
        sqlite3.connect(target)
        .execute("SELECT value FROM schema_state WHERE key='schema_version'")
        .fetchone()
    )
    assert version == ("17",)


@pytest.mark.postgres
def test_new_postgres_schema_matches_reference(
    pg_url: str, compat_pg: str, mmdb: dict[str, Path]
) -> None:
    import psycopg

    query = (
        "SELECT table_name, column_name, data_type, character_maximum_length, is_nullable, "
        "column_default, is_generated, generation_expression FROM information_schema.columns "
        "WHERE table_schema='public' AND table_name IN ('asn_inventory','ip_inventory','session_summaries') "
        "ORDER BY table_name, ordinal_position"
    )
    with psycopg.connect(compat_pg) as con:
        reference = con.execute(query).fetchall()
        con.execute("DROP TABLE session_summaries, ip_inventory, asn_inventory CASCADE")
        con.commit()
    refresh(config(compat_pg, mmdb, create=True))  # no table left: not cowrieprocessor's
    with psycopg.connect(compat_pg) as con:
        assert con.execute(query).fetchall() == reference
