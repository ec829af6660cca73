"""Reliability: one run per database, leftovers of killed runs, and kill safety."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from etl.core.errors import RunLockedError
from etl.db.database import Database
from etl.db.lock import run_lock
from etl.db.url import parse_database_url
from tests.sims import Simulator, run_module, running

KEY = "reliability-key"


def build_sample(db_url: str, folder: Path, ips: int) -> None:
    result = run_module(
        "testbed.sample", "--db", db_url, "--ips", str(ips), "--maxmind-dir", str(folder)
    )
    assert result.returncode == 0, result.stderr


def test_the_run_lock_admits_one_holder(any_db_url: str) -> None:
    url = parse_database_url(any_db_url)
    taken = pytest.raises(RunLockedError, match=r"another refresh of .* is running")
    with run_lock(url), taken, run_lock(url):
        pass
    with run_lock(url):  # released
        pass


def sent(simulator: Simulator) -> list[dict[str, Any]]:
    """The requests the simulator logged, but those it throttled (429), which are sent again
    (on a busy machine the paced requests can bunch up)."""
    return [entry for entry in simulator.entries() if entry["status"] != 429]


def test_a_second_refresh_exits_while_the_first_runs(tmp_path: Path, any_db_url: str) -> None:
    db_url = any_db_url
    build_sample(db_url, tmp_path, 300)
    status = tmp_path / "status.json"
    with running("greynoise", tmp_path / "g.jsonl", "--key", KEY, "--rate", "40") as gn:
        base = [sys.executable, "-m", "etl.refresh", "--db", db_url, "--maxmind-dir", str(tmp_path),
                "--skip", "cymru", "--greynoise-url", gn.url, "--greynoise-rate", "40"]  # fmt: skip
        env = {**os.environ, "GREYNOISE_API_KEY": KEY}
        first = subprocess.Popen(
            [*base, "--status-file", str(status)], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if status.exists() and json.loads(status.read_text()).get("phase") == "greynoise":
                break
            time.sleep(0.2)
        second = subprocess.run(
            base, env=env, capture_output=True, text=True, timeout=120, check=False
        )
        during = len(sent(gn))
        assert first.wait(timeout=120) == 0
        asked = [ip for e in sent(gn) for ip in e["ips"]]
    assert second.returncode == 1
    assert "another refresh of" in second.stderr and "Traceback" not in second.stderr
    assert during < len(asked)  # the first run was still asking when the second gave up
    assert len(asked) == len(set(asked))  # no IP was sent twice


def test_staging_tables_of_a_killed_run_are_dropped(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'h.sqlite'}"
    build_sample(db_url, tmp_path, 100)
    con = sqlite3.connect(tmp_path / "h.sqlite")
    con.execute("CREATE TABLE _etl_stage_ip_4242_abcdef (ip_address VARCHAR)")
    con.commit()
    con.close()
    result = run_module("etl.refresh", "--db", db_url, "--maxmind-dir", str(tmp_path),
                        "--skip", "cymru", "--skip", "greynoise")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "dropped 1 staging table(s) left by a killed run" in result.stderr
    with Database(parse_database_url(db_url)) as db:
        assert not db.query_native("SELECT name FROM sqlite_master WHERE name LIKE '_etl%'")


# -- hostile answers -------------------------------------------------------------------------

HOSTILE_IP = "45.33.32.156"  # GreyNoise's actor name for it is hostile (see testbed.sample.world)


def test_hostile_names_are_stored_verbatim_and_touch_nothing_else(tmp_path: Path) -> None:
    import ipaddress

    import polars as pl

    from testbed.sample.mmdb_files import write_maxmind_files
    from testbed.sample.world import AWKWARD_NAMES, World

    world = World(1)
    write_maxmind_files(world, tmp_path)
    awkward = {s.number: s for s in world.systems.values() if s.name in AWKWARD_NAMES}
    sources = [HOSTILE_IP]
    for prefix in world.prefixes:  # one IP routed by each awkward AS
        if prefix.origins and prefix.origins[0] in awkward and prefix.network.version == 4:
            sources.append(str(prefix.network.network_address + 7))
            awkward.pop(prefix.origins[0])
    db_url = f"sqlite:///{tmp_path / 'h.sqlite'}"
    now = datetime.now(UTC)
    fresh = {"status": "ok", "cached_at": now.isoformat()}
    bystander = {  # fresh for every source: not selected, and no answer may reach it
        "validation": {"is_bogon": False, "reason": None},
        "maxmind": {**fresh, "asn": 64999, "db_build_epoch": 9_999_999_999},
        "greynoise": fresh,
        "dshield": {"note": "x'); DROP TABLE ip_inventory;--"},
        "spur": ["|", '\\"q'],
    }
    with Database(parse_database_url(db_url), create=True) as db:
        db.ensure_schema()
        db.append("asn_inventory", pl.DataFrame({
            "asn_number": [64999], "organization_name": ["BYSTANDER, US"],
            "first_seen": [now], "last_seen": [now], "enrichment": ["{}"],
            "created_at": [now], "updated_at": [now],
        }))  # fmt: skip
        db.append("ip_inventory", pl.DataFrame({
            "ip_address": ["93.184.216.34"], "current_asn": [64999], "first_seen": [now],
            "last_seen": [now], "session_count": [3], "enrichment": [json.dumps(bystander)],
            "enrichment_updated_at": [now], "created_at": [now], "updated_at": [now],
        }))  # fmt: skip
        db.append("session_summaries", pl.DataFrame({
            "session_id": [f"h{n}" for n in range(len(sources))], "source_ip": sources,
            "first_event_at": [now] * len(sources), "last_event_at": [now] * len(sources),
        }))  # fmt: skip
    before = (
        sqlite3.connect(tmp_path / "h.sqlite")
        .execute("SELECT * FROM ip_inventory WHERE ip_address = '93.184.216.34'")
        .fetchone()
    )
    with (
        running("cymru", tmp_path / "c.jsonl") as cy,
        running("greynoise", tmp_path / "g.jsonl", "--key", KEY) as gn,
    ):
        result = subprocess.run(
            [sys.executable, "-m", "etl.refresh", "--db", db_url, "--maxmind-dir", str(tmp_path),
             "--cymru", cy.address, "--greynoise-url", gn.url, "--greynoise-rate", "100"],
            env={**os.environ, "GREYNOISE_API_KEY": KEY}, capture_output=True, text=True,
            timeout=300, check=False,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    con = sqlite3.connect(tmp_path / "h.sqlite")
    assert (
        con.execute("SELECT * FROM ip_inventory WHERE ip_address = '93.184.216.34'").fetchone()
        == before
    )
    assert con.execute("SELECT count(*) FROM ip_inventory").fetchone() == (len(sources) + 1,)
    names = dict(con.execute("SELECT asn_number, organization_name FROM asn_inventory"))
    for system in world.systems.values():
        if system.name in AWKWARD_NAMES and system.number in names:
            assert names[system.number] == system.name  # verbatim, from Cymru's AS answer
    assert sum(name in AWKWARD_NAMES for name in names.values()) >= 5
    hostile = json.loads(
        con.execute(
            "SELECT enrichment FROM ip_inventory WHERE ip_address = ?", (HOSTILE_IP,)
        ).fetchone()[0]
    )
    assert hostile["greynoise"]["name"] == world.greynoise(HOSTILE_IP).name  # type: ignore[union-attr]
    assert ipaddress.ip_address(HOSTILE_IP)
    assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_ctrl_c_stops_asking_services_at_once(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'h.sqlite'}"
    build_sample(db_url, tmp_path, 300)
    status = tmp_path / "status.json"
    with running("greynoise", tmp_path / "g.jsonl", "--key", KEY, "--rate", "30") as gn:
        process = subprocess.Popen(
            [sys.executable, "-m", "etl.refresh", "--db", db_url, "--maxmind-dir", str(tmp_path),
             "--skip", "cymru", "--greynoise-url", gn.url, "--greynoise-rate", "30",
             "--status-file", str(status)],
            env={**os.environ, "GREYNOISE_API_KEY": KEY}, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if status.exists() and json.loads(status.read_text())["phase"] == "greynoise":
                break
            time.sleep(0.2)
        time.sleep(1.0)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
        asked_at_exit = len(gn.entries())
        time.sleep(1.0)
        asked_later = len(gn.entries())
    assert process.returncode == 1
    assert "interrupted: committed chunks are kept" in stderr and "Traceback" not in stderr
    assert asked_later == asked_at_exit < 200
    assert json.loads(status.read_text())["state"] == "interrupted"


def test_a_failed_commit_stops_the_network_phases(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from etl.core.errors import DatabaseError
    from etl.core.vocabulary import Source
    from etl.db.write import ChunkWriter
    from etl.refresh.config import RefreshConfig
    from etl.refresh.pipeline import refresh
    from etl.report.summary import LineReporter

    db_url = f"sqlite:///{tmp_path / 'h.sqlite'}"
    build_sample(db_url, tmp_path, 300)
    original = ChunkWriter.write
    calls = []

    def failing_write(self: ChunkWriter, *args: object, **kwargs: object) -> None:
        calls.append(1)
        if len(calls) == 3:  # the base write, a first GreyNoise part, then the disk is full
            raise DatabaseError("database write failed: disk I/O error")
        original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ChunkWriter, "write", failing_write)
    with running("greynoise", tmp_path / "g.jsonl", "--key", KEY, "--rate", "30") as gn:
        config = RefreshConfig(
            db_url=db_url, maxmind_dir=tmp_path, skip=frozenset({Source.CYMRU}),
            greynoise_url=gn.url, greynoise_api_key=KEY, greynoise_rate=30.0,
        )  # fmt: skip
        with pytest.raises(DatabaseError, match="disk I/O error"):
            refresh(config, LineReporter(verbosity=-1))
        time.sleep(0.5)
        asked = len(gn.entries())
        time.sleep(1.5)
        assert len(gn.entries()) == asked < 200  # nothing more was asked after the failure
