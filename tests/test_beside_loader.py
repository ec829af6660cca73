"""Beside the live loader (issue 23, item 5): cowrieprocessor's loader runs from cron while a
refresh runs. A loader-shaped writer (``python -m tests.loader``, another process) loads new
sessions and events into the same database during a refresh of 8,000 IPs, in the loader's
transactions and with its lock policy (SQLite: ``busy_timeout=5000`` per attempt, 3 retries,
then a 10 s cooldown and exit 1).

The writer must never fail, neither side may lose a row, and SQLite's file must stay sound. The
writer's longest wait for a lock is our longest write-lock hold as the loader sees it; it is
printed (``pytest -s``) and kept as the test's ``longest_wait_s`` property.
"""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from etl.report.summary import RunSummary
from tests.loader import BUSY_TIMEOUT_MS, LoadReport, cowrie_events, load_events, plan_sessions
from tests.sims import running
from tests.test_loader_compat import (
    KEY,
    SEED,
    Db,
    MaxMindWorld,
    Services,
    canonical_ips,
    open_loader_db,
    sample_maxmind,
)

ROOT = Path(__file__).resolve().parents[1]
IPS = 8_000  # the refresh's size: seconds of writes with both simulators
NEW_ONLY = 400  # addresses only the writer brings (and as many loaded ones it comes back with)
CONTINUED = 1_600  # loaded sessions the writer adds events to (rows the refresh links)


@pytest.fixture(params=["sqlite", "postgres"])
def loader_db(request: pytest.FixtureRequest) -> Db:
    """A new cowrieprocessor database (SQLite WAL, then PostgreSQL) for the loader to fill."""
    return open_loader_db(request)


@pytest.fixture(scope="module")
def maxmind_world(tmp_path_factory: pytest.TempPathFactory) -> MaxMindWorld:
    """World ``SEED`` and its MaxMind files, once for the module."""
    return sample_maxmind(tmp_path_factory.mktemp("maxmind"))


def start_writer(
    db: Db, folder: Path, pool: list[str], continued: dict[str, str]
) -> subprocess.Popen[str]:
    """The cron loader: new files of events (new sessions of ``pool``'s addresses, and more
    events of ``continued``'s sessions) loaded one after the other until ``folder/stop``."""
    (folder / "pool.json").write_text(json.dumps(pool))
    (folder / "continued.json").write_text(json.dumps(continued))
    command = [
        sys.executable, "-m", "tests.loader", "--db", db.url, "--folder", str(folder / "logs"),
        "--report", str(folder / "report.json"), "--stop", str(folder / "stop"),
        "--ips", str(folder / "pool.json"), "--continue", str(folder / "continued.json"),
        "--seed", str(SEED),
    ]  # fmt: skip
    return subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True)


def stop_writer(writer: subprocess.Popen[str], folder: Path) -> tuple[LoadReport, str]:
    """Ask the writer to stop after its current file; its report and what it said."""
    (folder / "stop").touch()
    try:
        _, said = writer.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        writer.kill()
        _, said = writer.communicate()
    report = folder / "report.json"
    return (LoadReport.from_json(report.read_text()) if report.exists() else LoadReport()), said


def wait_for_first_batch(writer: subprocess.Popen[str], folder: Path) -> None:
    """Until the writer has committed a batch (it is loading)."""
    deadline = time.monotonic() + 60
    report = folder / "report.json"
    while time.monotonic() < deadline and writer.poll() is None:
        if report.exists() and LoadReport.from_json(report.read_text()).committed:
            return
        time.sleep(0.1)
    raise AssertionError("the writer committed nothing within 60 s")


def raw_event_keys(db: Db, folder: Path) -> set[tuple[str, int]]:
    """(source, offset) of the raw events loaded from the writer's files."""
    rows = db.query(
        "SELECT source, source_offset FROM raw_events WHERE source LIKE %s",
        (f"{folder / 'logs'}%",),
    )
    return {(source, int(offset)) for source, offset in rows}


def miscounted_sessions(db: Db) -> int:
    """Sessions whose event_count is not their raw events' count (a lost upsert)."""
    return db.query(
        "SELECT count(*) FROM session_summaries AS s FULL JOIN (SELECT session_id, count(*) AS n "
        "FROM raw_events GROUP BY session_id) AS r ON r.session_id = s.session_id "
        "WHERE s.session_id IS NULL OR r.session_id IS NULL OR s.event_count <> r.n"
    )[0][0]


def written_during(db: Db, source: str, since: datetime) -> set[str]:
    """Addresses whose ``source`` block was cached at ``since`` or later."""
    found = set()
    for ip, enrichment in db.query("SELECT ip_address, enrichment FROM ip_inventory"):
        blocks = json.loads(enrichment) if isinstance(enrichment, str) else enrichment
        cached = (blocks.get(source) or {}).get("cached_at")
        if cached and datetime.fromisoformat(cached) >= since:
            found.add(ip)
    return found


def check_rows_kept(
    db: Db,
    folder: Path,
    report: LoadReport,
    summary: RunSummary,
    refreshed: set[str],
    since: datetime,
) -> None:
    """Neither side lost a row: every raw event the writer committed is there, every session
    counts its raw events, every row the refresh wrote is there with its blocks."""
    committed = {(b["source"], o) for b in report.committed for o in b["offsets"]}
    assert raw_event_keys(db, folder) == committed, "a raw event the writer committed is gone"
    assert miscounted_sessions(db) == 0, "a session's counts lost a committed batch"
    maxmind = written_during(db, "maxmind", since)
    assert refreshed <= maxmind, f"{len(refreshed - maxmind)} refreshed rows lost their blocks"
    assert len(maxmind) == summary.upserted, "the refresh wrote rows that are not there"
    greynoise = written_during(db, "greynoise", since)
    assert {ip for ip in refreshed if ":" not in ip} <= greynoise, "GreyNoise answers were lost"


def test_a_refresh_beside_the_loader(
    loader_db: Db, maxmind_world: MaxMindWorld, tmp_path: Path, record_property: Any
) -> None:
    db, rng = loader_db, random.Random(SEED)
    addresses = maxmind_world.world.attacking_ips(IPS + NEW_ONLY, np.random.default_rng(SEED))
    loaded = addresses[:IPS]
    plans = plan_sessions(loaded, rng, datetime.now(UTC) - timedelta(days=1), per_ip=(1, 1))
    report = load_events(db.url, tmp_path / "cowrie.json", cowrie_events(plans, rng))
    assert report.failed is None
    canonical = canonical_ips(db)
    continued = dict(rng.sample(sorted(canonical.items()), CONTINUED))
    pool = addresses[IPS:] + rng.sample(loaded, NEW_ONLY)
    writer = start_writer(db, tmp_path, pool, continued)
    try:
        wait_for_first_batch(writer, tmp_path)
        with (
            running("cymru", tmp_path / "cymru.jsonl", "--seed", str(SEED)) as cymru,
            running("greynoise", tmp_path / "gn.jsonl", "--seed", str(SEED), "--key", KEY) as gn,
        ):
            services = Services(cymru, gn)
            started, began = datetime.now(UTC), time.time()
            summary = services.refresh(db, maxmind_world.folder)
            ended = time.time()
    finally:
        writer_report, said = stop_writer(writer, tmp_path)
    during = [b for b in writer_report.committed if began <= b["at"] <= ended]
    wait = writer_report.longest_wait
    record_property("longest_wait_s", round(wait, 3))
    print(
        f"\n{db.kind}: refresh of {summary.selected} IPs in {ended - began:.1f} s; the writer "
        f"committed {len(writer_report.committed)} batches ({len(during)} during the refresh), "
        f"{len(writer_report.failures)} failed attempts, longest wait for a lock {wait:.3f} s; "
        f"our longest write transaction {summary.longest_write_seconds:.3f} s"
    )
    record_property("longest_write_s", summary.longest_write_seconds)
    if db.kind == "sqlite":  # the loader waits 5 s per attempt for the one write lock
        assert summary.longest_write_seconds < 2.5
    for error, times in Counter(f.error for f in writer_report.failures if f.error).items():
        print(
            f"  {times} attempt(s) failed, then retried as the loader does: {error.splitlines()[0]}"
        )
    assert summary.selected >= IPS, f"the refresh selected {summary.selected} of {IPS} loaded IPs"
    assert writer.returncode == 0 and writer_report.failed is None, said
    assert len(during) >= 5, "the writer was not loading during the refresh"
    if db.kind == "sqlite":  # an attempt fails once a lock is held for busy_timeout
        assert wait < BUSY_TIMEOUT_MS / 1000, f"the writer waited {wait:.1f} s for the lock"
        assert not writer_report.failures, writer_report.failures[0].error
    check_rows_kept(db, tmp_path, writer_report, summary, set(loaded), started)
    linked = {s for (s,) in db.query("SELECT session_id FROM session_summaries WHERE source_ip IS NOT NULL")}  # fmt: skip
    assert set(canonical) <= linked, f"{len(set(canonical) - linked)} loaded sessions not linked"
    if db.kind == "sqlite":
        con = sqlite3.connect(db.path)
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert con.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        con.close()
