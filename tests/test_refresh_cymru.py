"""A refresh with the Team Cymru step, against the simulator, on sample databases."""

from __future__ import annotations

import ipaddress
import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from etl.core.vocabulary import Source
from etl.refresh.config import RefreshConfig
from etl.refresh.pipeline import refresh
from etl.report.summary import LineReporter
from testbed.sample.world import World
from tests.sims import Simulator, run_module, running

WORLD = World(1)


def build_sample(db_url: str, folder: Path, ips: int = 1500) -> None:
    result = run_module(
        "testbed.sample", "--db", db_url, "--ips", str(ips), "--maxmind-dir", str(folder)
    )
    assert result.returncode == 0, result.stderr


def rows(db_url: str) -> tuple[dict[str, dict[str, Any]], dict[int, dict[str, Any]]]:
    """ip_inventory and asn_inventory, enrichment parsed."""
    if db_url.startswith("sqlite"):
        con = sqlite3.connect(db_url.removeprefix("sqlite:///"))
        con.row_factory = sqlite3.Row
        ips = [dict(r) for r in con.execute("SELECT * FROM ip_inventory")]
        asns = [dict(r) for r in con.execute("SELECT * FROM asn_inventory")]
        con.close()
    else:
        import psycopg
        from psycopg.rows import dict_row

        with psycopg.connect(db_url, row_factory=dict_row) as pg:
            ips = pg.execute("SELECT * FROM ip_inventory").fetchall()
            asns = pg.execute("SELECT * FROM asn_inventory").fetchall()
    for row in ips + asns:
        if isinstance(row["enrichment"], str):
            row["enrichment"] = json.loads(row["enrichment"])
    return {r["ip_address"]: r for r in ips}, {r["asn_number"]: r for r in asns}


def config(db_url: str, folder: Path, sim: Simulator, **extra: Any) -> RefreshConfig:
    return RefreshConfig(
        db_url=db_url,
        maxmind_dir=folder,
        cymru=sim.address,
        skip=frozenset({Source.GREYNOISE}),
        **extra,
    )


def expected_block(ip: str) -> dict[str, Any]:
    prefix = WORLD.route(ipaddress.ip_address(ip))
    if prefix is None or not prefix.origins:
        return {
            "asn": None,
            "asns": [],
            "status": "not_found",
            "country": prefix.country if prefix else None,
            "registry": prefix.registry if prefix else "other",
        }
    return {
        "asn": prefix.origins[0],
        "asns": list(prefix.origins),
        "asn_org": WORLD.systems[prefix.origins[0]].name,
        "prefix": str(prefix.network),
        "country": prefix.country,
        "registry": prefix.registry,
        "allocation_date": prefix.allocated,
        "status": "ok",
    }


@pytest.fixture
def cymru(tmp_path: Path) -> Any:
    with running("cymru", tmp_path / "cymru.jsonl") as sim:
        yield sim


def test_cymru_fills_the_asn_fallback_and_tier_1(
    tmp_path: Path, cymru: Simulator, any_db_url: str
) -> None:
    db_url = any_db_url
    build_sample(db_url, tmp_path)
    before, _ = rows(db_url)
    started = datetime.now(UTC)
    summary = refresh(config(db_url, tmp_path, cymru), LineReporter(verbosity=-1))
    after, asns = rows(db_url)
    asked = {q for entry in cymru.entries() for q in entry["queries"] if not q.startswith("AS")}
    assert summary.sources["cymru"].queried == len(asked) > 50
    assert summary.sources["cymru"].error == 0
    for ip, row in after.items():
        block = row["enrichment"].get("cymru")
        fresh = block and datetime.fromisoformat(block["cached_at"]) >= started
        if ip not in asked:
            assert not fresh
            continue
        assert fresh and block["status"] in ("ok", "not_found")
        assert {k: block.get(k) for k in expected_block(ip)} == expected_block(ip), ip
        assert row["enrichment"]["maxmind"]["asn"] is None  # only IPs MaxMind has no ASN for
        if block["status"] == "ok":
            assert row["current_asn"] == block["asn"]
        old = before.get(ip, {"enrichment": {}})["enrichment"]
        assert {k: v for k, v in old.items() if k not in ("cymru", "maxmind", "validation")} == {
            k: v
            for k, v in row["enrichment"].items()
            if k not in ("cymru", "maxmind", "validation")
        }
    # Tier 1: registration data from Cymru's AS answers, and counts recomputed.
    asked_as = [int(q[2:]) for e in cymru.entries() for q in e["queries"] if q.startswith("AS")]
    assert asked_as and len(asked_as) == len(set(asked_as))
    sessions = cymru.entries()
    assert all(e["mode"] == "bulk" for e in sessions)
    # IPs and MaxMind's ASNs share chunks of at most 500, spread over both sessions; ASNs only
    # Cymru revealed follow in one more.
    assert len(sessions) <= max(-(-(len(asked) + len(asked_as)) // 500), 2) + 1
    for number in set(asked_as):
        system = WORLD.systems[number]
        assert asns[number]["organization_country"] == system.country
        assert asns[number]["rir_registry"] == system.registry
        assert asns[number]["organization_name"] == system.name
    for number, asn in asns.items():
        members = [r for r in after.values() if r["current_asn"] == number]
        assert asn["unique_ip_count"] == len(members), number
        assert asn["total_session_count"] == sum(r["session_count"] for r in members)
    again = refresh(config(db_url, tmp_path, cymru), LineReporter(verbosity=-1))
    assert again.sources["cymru"].queried == 0


def test_dropped_sessions_leave_errors_that_the_next_run_completes(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'h.sqlite'}"
    build_sample(db_url, tmp_path, ips=1000)
    with running("cymru", tmp_path / "bad.jsonl", "--fault", "drop") as sim:
        first = refresh(
            config(db_url, tmp_path, sim, batch_size=40, retry_backoff=0.05),
            LineReporter(verbosity=-1),
        )
    assert first.sources["cymru"].error > 0
    failed, _ = rows(db_url)
    errors = {
        ip for ip, r in failed.items() if r["enrichment"].get("cymru", {}).get("status") == "error"
    }
    assert errors
    with running("cymru", tmp_path / "good.jsonl") as sim:
        second = refresh(config(db_url, tmp_path, sim), LineReporter(verbosity=-1))
        asked = {q for e in sim.entries() for q in e["queries"] if not q.startswith("AS")}
    assert errors <= asked
    assert second.sources["cymru"].error == 0
    done, _ = rows(db_url)
    assert all(done[ip]["enrichment"]["cymru"]["status"] in ("ok", "not_found") for ip in errors)


def test_garbage_lines_do_not_corrupt_answers(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'h.sqlite'}"
    build_sample(db_url, tmp_path, ips=800)
    with running("cymru", tmp_path / "junk.jsonl", "--fault", "garbage") as sim:
        summary = refresh(config(db_url, tmp_path, sim), LineReporter(verbosity=-1))
    assert summary.sources["cymru"].ok > 0
    after, _ = rows(db_url)
    for ip, row in after.items():
        block = row["enrichment"].get("cymru")
        if block and block["status"] == "ok":
            assert block["asn"] in WORLD.route(ipaddress.ip_address(ip)).origins  # type: ignore[union-attr]
