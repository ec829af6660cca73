"""The databases operators really have (SPEC 2.3, 4): WAL-mode SQLite with a loader writing
beside the refresh, a PostgreSQL whose backends die, paths with typos, SIGTERM.

Every run here is the real CLI against the simulators; "asked twice" is read from their logs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from etl.db.database import Database
from etl.db.url import parse_database_url
from testbed.sample.scratch import scratch_database
from tests.sims import Simulator, run_module, running

KEY = "real-databases-key"
ENV = {**os.environ, "GREYNOISE_API_KEY": KEY}
ADVISORY_KEY_LOW = 0x1D3C4A79  # pg_locks.objid of the run lock (etl.db.lock.ADVISORY_KEY)


def build(db_url: str, folder: Path, ips: int, journal_mode: str = "wal") -> None:
    result = run_module(
        "testbed.sample", "--db", db_url, "--ips", str(ips), "--maxmind-dir", str(folder),
        "--journal-mode", journal_mode,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def command(db_url: str, folder: Path, cymru: Simulator, gn: Simulator, *extra: str) -> list[str]:
    return [sys.executable, "-m", "etl.refresh", "--db", db_url, "--maxmind-dir", str(folder),
            "--cymru", cymru.address, "--greynoise-url", gn.url, *extra]  # fmt: skip


def refresh(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args), env=ENV, capture_output=True, text=True, timeout=timeout, check=False
    )


def outcome(db_url: str) -> dict[str, tuple[Any, ...]]:
    """Per IP: ASN, session count and each block's status and answer (no timestamps)."""
    with Database(parse_database_url(db_url)) as db:
        rows = db.query_native(
            "SELECT ip_address, current_asn, session_count, enrichment FROM ip_inventory"
        )
    result = {}
    for ip, asn, sessions, enrichment in rows:
        blocks = json.loads(enrichment) if isinstance(enrichment, str) else enrichment
        for block in blocks.values():
            if isinstance(block, dict):
                block.pop("cached_at", None)
        result[ip] = (asn, sessions, json.dumps(blocks, sort_keys=True))
    return result


def asked_since(gn: Simulator, start: int) -> Counter[str]:
    """How often each IP reached the GreyNoise simulator in its requests from ``start`` on."""
    return Counter(ip for entry in gn.entries()[start:] for ip in entry["ips"])


def wait_for(condition: Callable[[], bool], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def greynoise_done(status: Path) -> int:
    """GreyNoise answers a running refresh has counted, from its status file."""
    return int(status_of(status).get("phases", {}).get("greynoise", {}).get("done", 0))


def status_of(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return {}


@contextmanager
def writer_lock(path: Path, seconds: float) -> Iterator[subprocess.Popen[str]]:
    """Another process (the operator's loader) holds the SQLite write lock for ``seconds``."""
    script = textwrap.dedent(f"""
        import sqlite3, sys, time
        con = sqlite3.connect({str(path)!r}, isolation_level=None, timeout=30)
        con.execute("BEGIN IMMEDIATE")
        con.execute("CREATE TABLE IF NOT EXISTS loader_probe (at REAL)")
        con.execute("INSERT INTO loader_probe VALUES (?)", (time.time(),))
        print("locked", flush=True)
        time.sleep({seconds})
        con.execute("COMMIT")
    """)
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    try:
        yield holder
    finally:
        holder.wait(timeout=seconds + 30)


@pytest.fixture
def sims(tmp_path: Path) -> Iterator[tuple[Simulator, Simulator]]:
    with (
        running("cymru", tmp_path / "c.jsonl", "--latency-ms", "2") as cymru,
        running("greynoise", tmp_path / "g.jsonl", "--key", KEY) as gn,
    ):
        yield cymru, gn


def journal_mode(path: Path) -> str:
    con = sqlite3.connect(path)
    try:
        return str(con.execute("PRAGMA journal_mode").fetchone()[0])
    finally:
        con.close()


@pytest.mark.parametrize("mode", ["wal", "delete"])
def test_a_full_refresh_works_in_either_journal_mode_and_leaves_it_as_found(
    tmp_path: Path, sims: tuple[Simulator, Simulator], mode: str
) -> None:
    db = tmp_path / "h.sqlite"
    build(f"sqlite:///{db}", tmp_path, 1500, mode)
    assert journal_mode(db) == mode
    cymru, gn = sims
    result = refresh(*command(f"sqlite:///{db}", tmp_path, cymru, gn, "--greynoise-rate", "1000",
                              "--commit-every", "300", "--summary-json", str(tmp_path / "s.json")))  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["sources"]["cymru"]["queried"] > 0
    assert summary["sources"]["greynoise"]["ok"] > 0
    assert summary["cymru_batches"] >= 1 and summary["asn_details"] > 0
    assert journal_mode(db) == mode
    con = sqlite3.connect(db)
    assert not con.execute("SELECT name FROM sqlite_master WHERE name LIKE '_etl%'").fetchall()
    missing = con.execute(
        "SELECT count(*) FROM ip_inventory WHERE json_extract(enrichment, '$.validation') IS NULL"
    ).fetchone()[0]
    con.close()
    assert missing == 0
    again = refresh(*command(f"sqlite:///{db}", tmp_path, cymru, gn, "--dry-run"))
    assert (
        "would ask Team Cymru about 0 IPs and 0 AS numbers, and GreyNoise about 0 IPs"
        in again.stderr
    )


@pytest.mark.parametrize("mode", ["wal", "delete"])
def test_another_writers_lock_is_waited_for_and_the_result_is_the_same(
    tmp_path: Path, sims: tuple[Simulator, Simulator], mode: str
) -> None:
    cymru, gn = sims
    pristine = tmp_path / "pristine.sqlite"
    build(f"sqlite:///{pristine}", tmp_path, 1200, mode)
    calm, busy = tmp_path / "calm.sqlite", tmp_path / "busy.sqlite"
    shutil.copy(pristine, calm)
    shutil.copy(pristine, busy)
    options = ("--greynoise-rate", "150", "--commit-every", "200")
    undisturbed = refresh(*command(f"sqlite:///{calm}", tmp_path, cymru, gn, *options))
    assert undisturbed.returncode == 0, undisturbed.stderr
    before = len(gn.entries())
    status = tmp_path / "status.json"
    run = subprocess.Popen(
        command(f"sqlite:///{busy}", tmp_path, cymru, gn, *options, "--status-file", str(status)),
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    wait_for(lambda: greynoise_done(status) > 150)
    with writer_lock(busy, 4.0):  # mid-run, far longer than a chunk takes
        time.sleep(4.0)
    _, stderr = run.communicate(timeout=300)
    assert run.returncode == 0, stderr
    assert "waiting for the database: another process holds the write lock" in stderr
    assert "the database answered again after" in stderr
    assert outcome(f"sqlite:///{busy}") == outcome(f"sqlite:///{calm}")
    second = asked_since(gn, before)
    assert second and max(second.values()) == 1  # no IP asked twice
    assert journal_mode(busy) == mode


def test_answers_are_kept_when_the_lock_never_comes_and_applied_by_the_next_run(
    tmp_path: Path, sims: tuple[Simulator, Simulator]
) -> None:
    cymru, gn = sims
    db = tmp_path / "h.sqlite"
    build(f"sqlite:///{db}", tmp_path, 800)
    # A first run gives the database its id, which the answers kept later name: the stopped
    # run below cannot write it (the lock is held from its start).
    skip = ("--skip", "cymru", "--skip", "greynoise", "--ips", "1")
    assert refresh(*command(f"sqlite:///{db}", tmp_path, cymru, gn, *skip)).returncode == 0
    calm = tmp_path / "calm.sqlite"
    shutil.copy(db, calm)
    options = ("--greynoise-rate", "200", "--commit-every", "200")
    assert refresh(*command(f"sqlite:///{calm}", tmp_path, cymru, gn, *options)).returncode == 0
    first_asked = len(gn.entries())
    # 8 s: the run's start (its run log row tries once, about a second), then 2 s of waiting
    with writer_lock(db, 8.0):
        stopped = refresh(*command(f"sqlite:///{db}", tmp_path, cymru, gn, *options,
                                   "--lock-timeout", "2"))  # fmt: skip
    assert stopped.returncode == 1, stopped.stderr
    assert "gave up after waiting" in stopped.stderr
    assert "Traceback" not in stopped.stderr
    kept = sorted((tmp_path / "h.sqlite.etl-pending").glob("*.parquet"))
    assert kept, stopped.stderr
    assert "the next run applies them before it asks any service" in stopped.stderr
    paid = asked_since(gn, first_asked)
    assert paid
    middle = len(gn.entries())
    dry = refresh(*command(f"sqlite:///{db}", tmp_path, cymru, gn, "--dry-run"))
    assert "answers kept by a stopped run wait in" in dry.stderr
    assert kept == sorted((tmp_path / "h.sqlite.etl-pending").glob("*.parquet"))  # not applied
    finished = refresh(*command(f"sqlite:///{db}", tmp_path, cymru, gn, *options))
    assert finished.returncode == 0, finished.stderr
    assert "applied" in finished.stderr and "that a stopped run had kept" in finished.stderr
    assert not (tmp_path / "h.sqlite.etl-pending").exists()
    again = asked_since(gn, middle)
    assert not set(again) & set(paid)  # what was paid for is not asked again
    total = paid + again
    assert max(total.values()) == 1
    assert outcome(f"sqlite:///{db}") == outcome(f"sqlite:///{calm}")


@pytest.mark.postgres
def test_terminated_postgres_backends_are_reconnected(
    tmp_path: Path, sims: tuple[Simulator, Simulator]
) -> None:
    cymru, gn = sims
    options = ("--greynoise-rate", "150", "--commit-every", "150")
    with scratch_database("etl_calm") as calm:
        build(calm, tmp_path, 900)
        # A copy: a second sample would bring newer MaxMind files, making `calm` all stale.
        with scratch_database("etl_busy", copy_of=calm) as busy:
            summaries = {name: tmp_path / f"{name}.json" for name in ("calm", "busy")}
            first = refresh(*command(calm, tmp_path, cymru, gn, *options,
                                     "--summary-json", str(summaries["calm"])))  # fmt: skip
            assert first.returncode == 0, first.stderr
            before = len(gn.entries())
            status = tmp_path / "status.json"
            run = subprocess.Popen(
                command(busy, tmp_path, cymru, gn, *options, "--status-file", str(status),
                        "--summary-json", str(summaries["busy"])),
                env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            wait_for(lambda: greynoise_done(status) > 150)
            with psycopg.connect(busy, autocommit=True) as admin:
                killed = admin.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                ).fetchone()
                assert killed and killed[0] >= 2  # the run lock's and DuckDB's connections

                def lock_held_again() -> bool:
                    row = admin.execute(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                        "AND objid = %s",
                        (ADVISORY_KEY_LOW,),
                    ).fetchone()
                    return bool(row and row[0] == 1) or run.poll() is not None

                wait_for(lock_held_again, 30)
            _, stderr = run.communicate(timeout=300)
            assert run.returncode == 0, stderr
            assert "the run lock on" in stderr and "taken again" in stderr
            calm_summary, busy_summary = (json.loads(p.read_text()) for p in summaries.values())
            assert busy_summary["selected"] == calm_summary["selected"] > 0
            assert busy_summary["upserted"] == calm_summary["upserted"]
            assert outcome(busy) == outcome(calm)
            second = asked_since(gn, before)
            assert second and max(second.values()) == 1


def test_a_typo_in_the_sqlite_path_creates_nothing(
    tmp_path: Path, sims: tuple[Simulator, Simulator]
) -> None:
    cymru, gn = sims
    typo = tmp_path / "honeypot.sqlit"
    result = refresh(*command(f"sqlite:///{typo}", tmp_path, cymru, gn))
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "does not exist" in errors[0] and "--create" in errors[0]
    assert "Traceback" not in result.stderr
    dry = refresh(*command(f"sqlite:///{typo}", tmp_path, cymru, gn, "--dry-run"))
    assert dry.returncode == 2 and dry.stderr == errors[0] + "\n"  # as a real run (SPEC 5)
    dry = refresh(*command(f"sqlite:///{typo}", tmp_path, cymru, gn, "--dry-run", "--create"))
    assert dry.returncode == 0 and "a real run with --create creates it" in dry.stderr
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith("honeypot")]
    assert not cymru.entries() and not gn.entries()
    created = refresh(*command(f"sqlite:///{typo}", tmp_path, cymru, gn, "--create"))
    assert created.returncode == 0, created.stderr
    assert "created table(s)" in created.stderr and typo.is_file()


def test_a_missing_column_stops_the_run_before_any_service(
    tmp_path: Path, sims: tuple[Simulator, Simulator]
) -> None:
    cymru, gn = sims
    db = tmp_path / "h.sqlite"
    build(f"sqlite:///{db}", tmp_path, 200)
    con = sqlite3.connect(db)
    con.execute("ALTER TABLE ip_inventory DROP COLUMN enrichment_version")
    con.close()
    result = refresh(*command(f"sqlite:///{db}", tmp_path, cymru, gn))
    assert result.returncode == 2, result.stderr
    assert "lacks column(s) enrichment_version" in result.stderr
    assert not cymru.entries() and not gn.entries()


def test_a_read_only_file_stops_the_run_before_any_service(
    tmp_path: Path, sims: tuple[Simulator, Simulator]
) -> None:
    cymru, gn = sims
    db = tmp_path / "h.sqlite"
    build(f"sqlite:///{db}", tmp_path, 200, "delete")
    # chmod does not stop root (the tests' user): an immutable file stops everyone.
    if subprocess.run(["chattr", "+i", str(db)], capture_output=True, check=False).returncode:
        pytest.skip("chattr +i is not available here")
    try:
        result = refresh(*command(f"sqlite:///{db}", tmp_path, cymru, gn))
    finally:
        subprocess.run(["chattr", "-i", str(db)], check=True)
    assert result.returncode == 2, result.stderr
    assert "is read-only for this user" in result.stderr
    assert "Traceback" not in result.stderr
    assert not cymru.entries() and not gn.entries()


def test_sigterm_is_handled_like_ctrl_c(tmp_path: Path, sims: tuple[Simulator, Simulator]) -> None:
    cymru, gn = sims
    db = tmp_path / "h.sqlite"
    build(f"sqlite:///{db}", tmp_path, 600)
    files = {name: tmp_path / name for name in ("status.json", "metrics.prom", "summary.json")}
    run = subprocess.Popen(
        command(f"sqlite:///{db}", tmp_path, cymru, gn, "--greynoise-rate", "50",
                "--status-file", str(files["status.json"]),
                "--metrics-file", str(files["metrics.prom"]),
                "--summary-json", str(files["summary.json"])),
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    wait_for(lambda: greynoise_done(files["status.json"]) > 20)
    run.send_signal(signal.SIGTERM)
    _, stderr = run.communicate(timeout=60)
    assert run.returncode == 1, stderr
    assert "interrupted: committed chunks are kept" in stderr and "Traceback" not in stderr
    assert status_of(files["status.json"])["state"] == "interrupted"
    assert json.loads(files["summary.json"].read_text())["outcome"] == "interrupted"
    assert "honeypot_etl_last_run_success 0" in files["metrics.prom"].read_text()
    rerun = refresh(*command(f"sqlite:///{db}", tmp_path, cymru, gn, "--greynoise-rate", "1000"))
    assert rerun.returncode == 0, rerun.stderr
    done = refresh(*command(f"sqlite:///{db}", tmp_path, cymru, gn, "--dry-run"))
    assert (
        "would ask Team Cymru about 0 IPs and 0 AS numbers, and GreyNoise about 0 IPs"
        in done.stderr
    )


def test_the_demo_writes_under_data_demo_only(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    operator = tmp_path / "data" / "honeypot.sqlite"
    operator.write_bytes(b"the operator's database")
    result = subprocess.run(
        [sys.executable, "-m", "testbed.demo", "--ips", "150"], cwd=tmp_path,
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert operator.read_bytes() == b"the operator's database"
    assert (tmp_path / "data" / "demo" / "honeypot.sqlite").is_file()
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["demo", "honeypot.sqlite"]
