"""The run log table (README "Run log"): added beside cowrieprocessor's tables, never changing
them, on SQLite and PostgreSQL; rows written with bound values and read back."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from etl.db import runlog
from etl.db.database import Database
from etl.db.ddl import RUN_LOG_COLUMNS, RUN_LOG_TABLE
from etl.db.url import parse_database_url

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
