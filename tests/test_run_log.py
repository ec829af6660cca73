"""The run log table (README "Run log"): added beside cowrieprocessor's tables, never changing
them, on SQLite and PostgreSQL; rows written with bound values and read back."""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import etl.refresh.runlog
from etl.core.errors import DatabaseBusyError, DatabaseError
from etl.core.vocabulary import Source
from etl.db import runlog
from etl.db.database import Database
from etl.db.ddl import RUN_LOG_COLUMNS, RUN_LOG_TABLE
from etl.db.url import parse_database_url
from etl.refresh.config import RefreshConfig
from etl.refresh.pipeline import refresh
from etl.report.summary import LineReporter
from etl.sources.greynoise.searches import SearchMeter
from testbed.sample.build import build_sample

HOSTILE = "x'); DROP TABLE ip_inventory;--"
START = datetime(2025, 1, 2, 23, 59, 30, tzinfo=UTC)


def schema_state(db: Database) -> list[tuple[object, ...]]:
    table = db.backend.native_table("schema_state")
    return sorted(db.query_native(f"SELECT * FROM {table}"))


@pytest.fixture(params=["sqlite", "postgres"])
def compat_url(request: pytest.FixtureRequest) -> str:
    """A database built from cowrieprocessor's reference DDL, with its schema_version row."""
    if request.param == "sqlite":
        url = f"sqlite:///{request.getfixturevalue('compat_sqlite')}"
    else:
        url = str(request.getfixturevalue("compat_pg"))
    with Database(parse_database_url(url)) as db:  # the PostgreSQL file has no schema_state
        db.execute_native(db.backend.schema_state_statements(bool(db.columns("schema_state"))))
    return url


def test_the_run_log_is_added_and_cowrieprocessor_still_finds_its_schema_current(
    compat_url: str,
) -> None:
    with Database(parse_database_url(compat_url)) as db:
        tables_before = {t: db.columns(t) for t in ("asn_inventory", "ip_inventory")}
        state_before = schema_state(db)
        assert db.ensure_schema().created == (RUN_LOG_TABLE,)
        assert db.columns(RUN_LOG_TABLE) == set(RUN_LOG_COLUMNS)
        assert {t: db.columns(t) for t in tables_before} == tables_before
        assert schema_state(db) == state_before == [("schema_version", "17")]
        assert db.ensure_schema().created == ()  # once only


def test_rows_are_written_with_bound_values_and_read_back(any_db_url: str) -> None:
    with Database(parse_database_url(any_db_url), create=True) as db:
        db.ensure_schema()
        first = runlog.next_run_id(db)
        assert first == 1
        running = {"run_id": first, "started_at": START, "outcome": "running",
                   "greynoise_searches_by_day": '{"2025-01-02": 200}'}  # fmt: skip
        runlog.write_run(db, running)
        assert runlog.searches_on(db, date(2025, 1, 2)) == 200
        ended = {**running, "outcome": "failed", "exit_code": 1, "error": HOSTILE,
                 "ended_at": datetime(2025, 1, 3, 0, 0, 5, tzinfo=UTC), "selected": 7,
                 "greynoise_searches_by_day": '{"2025-01-02": 20, "2025-01-03": 30}'}  # fmt: skip
        runlog.write_run(db, ended)
        assert runlog.searches_on(db, date(2025, 1, 2)) == 20
        assert runlog.searches_on(db, date(2025, 1, 3)) == 30
        assert runlog.searches_on(db, date(2025, 1, 4)) == 0
        assert runlog.next_run_id(db) == 2
        rows = runlog.recent_runs(db, 5).to_dicts()
        assert db.columns("ip_inventory")  # still there
    assert len(rows) == 1
    row = rows[0]
    assert (row["run_id"], row["outcome"], row["exit_code"], row["error"]) == (
        1,
        "failed",
        1,
        HOSTILE,
    )
    assert row["started_at"] == START and row["selected"] == 7 and row["greynoise_requests"] == 0


def test_a_row_that_is_not_json_counts_nothing(tmp_path: Path) -> None:
    with Database(parse_database_url(f"sqlite:///{tmp_path / 'h.sqlite'}"), create=True) as db:
        db.ensure_schema()
        for run_id, text in enumerate(('{"2025-01-02": 5}', '["2025-01-02"]', '"2025-01-02'), 1):
            runlog.write_run(db, {"run_id": run_id, "started_at": START, "outcome": "finished",
                                  "greynoise_searches_by_day": text})  # fmt: skip
        assert runlog.searches_on(db, date(2025, 1, 2)) == 5
        with pytest.raises(ValueError, match="not run log columns: nope"):
            runlog.write_run(db, {"run_id": 9, "nope": 1})


def test_without_a_run_log_nothing_is_read_nor_created(tmp_path: Path, compat_sqlite: Path) -> None:
    with Database(parse_database_url(f"sqlite:///{compat_sqlite}"), read_only=True) as db:
        assert runlog.searches_on(db, date(2025, 1, 2)) == 0
        assert runlog.recent_runs(db, 3).height == 0
        assert not runlog.has_run_log(db)


# -- the rows runs leave ----------------------------------------------------------------------


class StopAt(LineReporter):
    """Quiet lines; raises ``error`` when the phase ``phase`` starts."""

    def __init__(self, phase: str, error: BaseException) -> None:
        super().__init__(verbosity=-1)
        self.phase, self.error = phase, error

    def phase_started(self, phase: str, total: int) -> None:
        if phase == self.phase:
            raise self.error


@pytest.fixture
def sample_url(any_db_url: str, tmp_path: Path) -> str:
    """A 200-IP sample database (SQLite in WAL mode, or PostgreSQL) and its MaxMind files."""
    build_sample(any_db_url, 200, 3, tmp_path / "mm")
    return any_db_url


def offline(db_url: str, tmp_path: Path, **extra: Any) -> RefreshConfig:
    """A refresh that asks no network service."""
    skip = frozenset({Source.CYMRU, Source.GREYNOISE})
    return RefreshConfig(db_url=db_url, maxmind_dir=tmp_path / "mm", skip=skip, **extra)


def runs(db_url: str) -> list[dict[str, Any]]:
    with Database(parse_database_url(db_url), read_only=True) as db:
        return list(reversed(runlog.recent_runs(db, 100).to_dicts()))


def test_every_run_that_writes_leaves_one_row_dry_runs_none(
    sample_url: str, tmp_path: Path
) -> None:
    first = refresh(offline(sample_url, tmp_path), LineReporter(verbosity=-1))
    refresh(offline(sample_url, tmp_path, dry_run=True), LineReporter(verbosity=-1))
    with pytest.raises(KeyboardInterrupt):
        refresh(offline(sample_url, tmp_path, only_ips=("1.2.3.4",)),
                StopAt("validate", KeyboardInterrupt("signal 15")))  # fmt: skip
    with pytest.raises(DatabaseBusyError):
        busy = DatabaseBusyError(f"database write gave up: {HOSTILE}")
        refresh(offline(sample_url, tmp_path, only_ips=("1.2.3.4",)), StopAt("maxmind", busy))
    rows = runs(sample_url)
    assert [(r["run_id"], r["outcome"], r["exit_code"]) for r in rows] == [
        (1, "finished", 0), (2, "interrupted", 1), (3, "failed", 1)
    ]  # fmt: skip
    done = rows[0]
    assert first.run_id == 1 and first.outcome == "finished"
    assert done["started_at"] == datetime.fromisoformat(first.started_at or "")
    assert done["started_at"] <= done["ended_at"]
    assert (done["selected"], done["new_ips"], done["bogons"]) == (
        first.selected, first.new_ips, first.bogons
    )  # fmt: skip
    for count in ("queried", "ok", "not_found", "error", "skipped"):
        assert done[f"maxmind_{count}"] == getattr(first.sources["maxmind"], count)
    assert done["maxmind_queried"] > 0 and done["cymru_queried"] == 0
    assert (done["ip_rows_written"], done["asn_rows_written"]) == (
        first.upserted, first.asn_upserted
    )  # fmt: skip
    assert done["greynoise_searches"] == 0 and done["greynoise_searches_by_day"] == "{}"
    assert done["error"] is None and done["etl_version"]
    assert rows[1]["error"] == "interrupted (signal 15): committed chunks are kept"
    assert rows[2]["error"] == f"run failed: database write gave up: {HOSTILE}"


def test_the_sqlite_file_stays_in_wal_mode(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'h.sqlite'}"
    build_sample(url, 50, 3, tmp_path / "mm")
    refresh(offline(url, tmp_path), LineReporter(verbosity=-1))
    con = sqlite3.connect(tmp_path / "h.sqlite")
    assert con.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert con.execute("SELECT outcome FROM etl_run_log").fetchall() == [("finished",)]
    con.close()


def test_a_log_that_cannot_be_written_never_hides_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'h.sqlite'}"
    build_sample(url, 50, 3, tmp_path / "mm")
    real = etl.refresh.runlog.write_run

    def only_the_first(db: Database, row: dict[str, Any]) -> None:
        if row["outcome"] != "running":
            raise DatabaseError("the disk is full")
        real(db, row)

    monkeypatch.setattr(etl.refresh.runlog, "write_run", only_the_first)
    notes: list[str] = []
    reporter = StopAt("maxmind", DatabaseBusyError("gave up after 300 s"))
    reporter.note = notes.append  # type: ignore[method-assign]
    with pytest.raises(DatabaseBusyError, match="gave up after 300 s"):
        refresh(offline(url, tmp_path), reporter)
    assert any(
        "could not be written (the disk is full); its row says 'running'" in note for note in notes
    )
    summary = refresh(offline(url, tmp_path), LineReporter(verbosity=-1))  # a completed run
    assert summary.exit_code == 0 and summary.outcome == "finished"
    # as after a kill: the second run marked the first 'killed', its own row says 'running'
    assert [r["outcome"] for r in runs(url)] == ["killed", "running"]


def test_another_writers_lock_does_not_hold_the_run_back(tmp_path: Path) -> None:
    """The loader holds the write lock as the run starts: the run goes on without its
    'running' row (its commits wait for the lock, as ever) and writes its row at the end."""
    url = f"sqlite:///{tmp_path / 'h.sqlite'}"
    build_sample(url, 50, 3, tmp_path / "mm")
    loader = sqlite3.connect(tmp_path / "h.sqlite", isolation_level=None, check_same_thread=False)
    loader.execute("BEGIN IMMEDIATE")
    timer = threading.Timer(3.0, loader.execute, ("COMMIT",))
    timer.start()
    notes: list[str] = []
    reporter = LineReporter(verbosity=-1)
    reporter.note = notes.append  # type: ignore[method-assign]
    try:
        summary = refresh(offline(url, tmp_path, lock_timeout=30), reporter)
    finally:
        timer.join()
        loader.close()
    assert summary.outcome == "finished" and summary.upserted > 0
    assert any("it is written when the run ends" in note for note in notes), notes
    assert not any("up to 0 s" in note for note in notes), notes  # one try, no waiting line
    assert [(r["run_id"], r["outcome"]) for r in runs(url)] == [(1, "finished")]


def test_the_meter_counts_searches_on_the_day_they_were_spent() -> None:
    now = [datetime(2031, 3, 14, 23, 59, 59, tzinfo=UTC)]
    meter = SearchMeter(lambda: now[0])
    for total in (10, 25, 25, 20):  # 5 given back
        meter.sample(total)
    now[0] += timedelta(seconds=2)  # midnight
    for total in (19, 40, 38):  # one given back after midnight: it was spent the day before
        meter.sample(total)
    assert meter.by_day == {"2031-03-14": 19, "2031-03-15": 19}
    assert sum(meter.by_day.values()) == meter.counted == 38


def test_a_run_log_this_role_cannot_alter_is_written_without_the_new_columns(
    pg_url: str, tmp_path: Path
) -> None:
    """PostgreSQL: only a table's owner may add columns. A cron role with the privileges the
    README lists meets a run log made by an earlier version: the run says so in one line
    (with the statement for the owner) and logs its row without the new column."""
    import secrets
    import subprocess
    import sys

    import psycopg

    from tests.test_real_databases import ENV, build

    build(pg_url, tmp_path, 60)
    role = f"etl_cron_{secrets.token_hex(4)}"
    admin = psycopg.connect(pg_url, autocommit=True)
    try:
        admin.execute("ALTER TABLE etl_run_log DROP COLUMN cymru_as_lookups_failed")
        admin.execute(f"CREATE ROLE {role} LOGIN")
        admin.execute(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}")
        admin.execute(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}")
        admin.execute(f"GRANT CREATE, USAGE ON SCHEMA public TO {role}")
        as_role = pg_url.replace("postgres@", f"{role}@", 1)
        assert as_role != pg_url
        result = subprocess.run(
            [sys.executable, "-m", "etl.refresh", "--db", as_role, "--maxmind-dir",
             str(tmp_path), "--skip", "cymru", "--skip", "greynoise", "--quiet"],
            env=ENV, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr  # before: exit 1 at the ALTER TABLE
        [line] = [x for x in result.stderr.splitlines() if "run log" in x]
        assert "ALTER TABLE public.etl_run_log ADD COLUMN cymru_as_lookups_failed" in line
        logged = admin.execute("SELECT outcome FROM etl_run_log ORDER BY run_id").fetchall()
        assert logged and logged[-1][0] == "finished"
    finally:
        admin.execute(f"DROP OWNED BY {role}")
        admin.execute(f"DROP ROLE IF EXISTS {role}")
        admin.close()
