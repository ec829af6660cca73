"""Crashed runs show as ``killed`` (issue 25, item 7): `status` probes the run lock and shows a
``running`` row whose lock is free as ``killed``; the next run marks such rows ``killed`` in the
run log; a killed run's GreyNoise reservation keeps counting on its day."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg

from etl.db import runlog
from etl.db.database import Database
from etl.db.lock import lock_is_free, run_lock
from etl.db.url import parse_database_url
from etl.refresh.config import RefreshConfig
from etl.status.collect import status_report
from etl.status.explore import load_snapshot
from tests.sims import running

KEY = "killed-runs-key"
NOW = datetime(2031, 3, 14, 12, 0, tzinfo=UTC)
ENV = {k: v for k, v in os.environ.items() if k != "COVERAGE_PROCESS_CONFIG"}
ENV["GREYNOISE_API_KEY"] = KEY


def _running_row(db: Database, run_id: int, cap: int) -> None:
    runlog.write_run(db, {
        "run_id": run_id, "started_at": NOW - timedelta(minutes=run_id), "outcome": "running",
        "greynoise_search_cap": cap,
        "greynoise_searches_by_day": json.dumps({NOW.date().isoformat(): cap}),
    })  # fmt: skip


def test_the_lock_probe_and_status_on_either_dialect(any_db_url: str, tmp_path: Path) -> None:
    url = parse_database_url(any_db_url)
    with Database(url, create=True) as db:
        db.ensure_schema()
        _running_row(db, 1, 40)
    config = RefreshConfig(db_url=any_db_url, maxmind_dir=tmp_path / "none", clock=lambda: NOW)
    assert lock_is_free(url)
    with run_lock(url):  # a refresh runs: its row is its own, not a dead run's
        assert not lock_is_free(url)
        assert [r["outcome"] for r in status_report(config).runs] == ["running"]
    assert lock_is_free(url)  # the probe left nothing held
    report = status_report(config)
    assert [(r["run_id"], r["outcome"]) for r in report.runs] == [(1, "killed")]
    assert (report.searches.spent, report.searches.reserved) == (0, 40)
    assert load_snapshot(config).runs["outcome"].to_list() == ["killed"]  # the notebook too
    with Database(url) as db:  # status wrote nothing
        assert [r["outcome"] for r in runlog.recent_runs(db, 5).to_dicts()] == ["running"]


def test_marking_keeps_the_reservation(any_db_url: str) -> None:
    url = parse_database_url(any_db_url)
    notes: list[str] = []
    with Database(url, create=True) as db:
        db.ensure_schema()
        assert runlog.mark_killed(db, notes.append) == [] and notes == []
        _running_row(db, 1, 40)
        _running_row(db, 2, 25)
        before = runlog.day_searches(db, NOW.date())
        assert runlog.mark_killed(db, notes.append) == [1, 2]
        assert notes == [
            "runs 1, 2 wrote no outcome (killed before the end): marked 'killed' in the run log"
        ]
        rows = runlog.recent_runs(db, 5).to_dicts()
        assert [(r["outcome"], r["ended_at"], r["exit_code"]) for r in rows] == [
            ("killed", None, None)
        ] * 2
        assert runlog.day_searches(db, NOW.date()) == before == (0, 65)
        assert runlog.searches_on(db, NOW.date()) == 65


def _refresh(db: Path, mm: Path, cymru: str, greynoise: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "etl.refresh", "--db", f"sqlite:///{db}", "--maxmind-dir",
        str(mm), "--cymru", cymru, "--greynoise-url", greynoise, "--greynoise-rate", "20",
        "--greynoise-daily-budget", "1000", "--commit-every", "10", "--quiet", *extra,
    ]  # fmt: skip


def _first_writes(status: Path, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """Until the run's status file shows its first committed rows."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the refresh ended before it was killed"
        try:
            if json.loads(status.read_text())["phases"].get("write", {}).get("done", 0) > 0:
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.02)
    raise AssertionError("the refresh wrote nothing within a minute")


def test_a_sigkilled_refresh_shows_killed(sample_world: tuple[Path, Path], tmp_path: Path) -> None:
    pristine, mm = sample_world
    db = tmp_path / "h.sqlite"
    db.write_bytes(pristine.read_bytes())
    status = tmp_path / "status.json"
    with (
        running("cymru", tmp_path / "c.jsonl", "--latency-ms", "1") as cymru,
        running("greynoise", tmp_path / "g.jsonl", "--key", KEY) as greynoise,
    ):
        process = subprocess.Popen(
            [*_refresh(db, mm, cymru.address, greynoise.url), "--status-file", str(status)],
            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _first_writes(status, process)
        process.send_signal(signal.SIGKILL)
        process.wait()
        # the dead run cannot fix its status file or its row: `status` tells the truth
        assert json.loads(status.read_text())["state"] == "running"
        shown = subprocess.run(
            [sys.executable, "-m", "etl.status", "--db", f"sqlite:///{db}", "--json",
             "--maxmind-dir", str(mm), "--greynoise-daily-budget", "1000"],
            env=ENV, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        report = json.loads(shown.stdout)
        assert [(r["run_id"], r["outcome"]) for r in report["runs"]] == [(1, "killed")]
        cap = report["runs"][0]["greynoise_search_cap"]
        assert cap and report["searches"]["reserved"] == cap
        con = sqlite3.connect(db)  # status wrote nothing
        assert con.execute("SELECT outcome FROM etl_run_log").fetchall() == [("running",)]
        con.close()
        again = subprocess.run(
            _refresh(db, mm, cymru.address, greynoise.url), env=ENV,
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert again.returncode == 0, again.stderr
    con = sqlite3.connect(db)
    rows = con.execute(
        "SELECT run_id, outcome, ended_at, exit_code, greynoise_searches_by_day, "
        "greynoise_searches FROM etl_run_log ORDER BY run_id"
    ).fetchall()
    con.close()
    assert rows[0][:4] == (1, "killed", None, None)
    assert rows[1][:2] == (2, "finished") and rows[1][2] is not None and rows[1][3] == 0
    # the killed run's reservation still counts on its day: it took the whole daily budget,
    # so the second run did not ask GreyNoise
    assert "GreyNoise daily budget of 1000 Searches" in again.stdout + again.stderr
    day = date.fromisoformat(next(iter(json.loads(rows[0][4]))))
    assert json.loads(rows[0][4]) == {day.isoformat(): cap}
    with Database(parse_database_url(f"sqlite:///{db}")) as opened:
        assert runlog.day_searches(opened, day) == (rows[1][5] or 0, cap)


def test_postgres_probe_sees_another_sessions_lock(pg_url: str) -> None:
    url = parse_database_url(pg_url)
    with psycopg.connect(pg_url, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (0x2F6A5B8E1D3C4A79,))
        assert not lock_is_free(url)
        other.execute("SELECT pg_advisory_unlock(%s)", (0x2F6A5B8E1D3C4A79,))
    assert lock_is_free(url)
