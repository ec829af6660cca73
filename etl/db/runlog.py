"""The run log (README "Run log"): our own table, one row per refresh that opened the database
for writing, read back for the GreyNoise daily budget and by `etl.status`.

A row is written twice: when the run starts (outcome ``running``, and in
``greynoise_searches_by_day`` the Searches it may spend, reserved on the UTC day it starts in)
and when it ends (the real counts). A run killed before its end (``kill -9``, a power cut)
keeps its ``running`` row, so what it may have spent still counts against that day's budget.
Only the refresh that holds the run lock writes here, so run ids are simply counted up.
"""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import polars as pl

from etl.db.database import Database
from etl.db.ddl import RUN_LOG_COLUMNS, RUN_LOG_TABLE

__all__ = [
    "RUN_LOG_SCHEMA",
    "RUN_LOG_TABLE",
    "day_searches",
    "has_run_log",
    "next_run_id",
    "recent_runs",
    "searches_on",
    "write_run",
]

_POLARS_TYPES: dict[str, pl.DataType] = {
    "id": pl.Int64(),
    "count": pl.Int64(),
    "number": pl.Int64(),
    "time": pl.Datetime("us", "UTC"),
    "word": pl.String(),
    "text": pl.String(),
}
RUN_LOG_SCHEMA: dict[str, pl.DataType] = {
    column: _POLARS_TYPES[kind.partition(" ")[0]] for column, kind in RUN_LOG_COLUMNS.items()
}


def has_run_log(db: Database) -> bool:
    """Whether the database has the run log table (a database no refresh wrote has none)."""
    return bool(db.columns(RUN_LOG_TABLE))


def next_run_id(db: Database) -> int:
    """The id of the next run (call under the run lock: only one refresh writes the log)."""
    rows = db.query_native(
        f"SELECT coalesce(max(run_id), 0) + 1 FROM {db.backend.native_table(RUN_LOG_TABLE)}"
    )
    return int(rows[0][0])


def write_run(db: Database, row: dict[str, Any]) -> None:
    """Insert the run's row, or replace the values of the run ``row["run_id"]`` (columns not
    in ``row`` keep their values; a new row gets their defaults)."""
    unknown = set(row) - set(RUN_LOG_SCHEMA)
    if unknown:
        raise ValueError(f"not run log columns: {', '.join(sorted(unknown))}")
    schema = {column: RUN_LOG_SCHEMA[column] for column in row}
    frame = pl.DataFrame([row], schema=schema, orient="row")
    db.upsert(RUN_LOG_TABLE, frame, "run_id")


def searches_on(db: Database, day: date) -> int:
    """GreyNoise Searches spent on the UTC ``day`` by every run in the log, counting for a run
    still ``running`` (or killed) what it was allowed to spend (0 without a run log)."""
    return sum(day_searches(db, day))


def day_searches(db: Database, day: date) -> tuple[int, int]:
    """GreyNoise Searches of the UTC ``day``: spent by runs that ended, and reserved by runs
    whose row says ``running`` (running now, or killed)."""
    if not has_run_log(db):
        return 0, 0
    key = day.isoformat()
    with db.duck_errors("reading the run log"):
        rows = db.query_native(  # a day's key is digits and dashes: safe as a literal
            "SELECT CAST(outcome AS TEXT), CAST(greynoise_searches_by_day AS TEXT) "
            f"FROM {db.backend.native_table(RUN_LOG_TABLE)} "
            f"WHERE CAST(greynoise_searches_by_day AS TEXT) LIKE '%{json.dumps(key)}%'"
        )
    spent = sum(_spent(text, key) for outcome, text in rows if outcome != "running")
    reserved = sum(_spent(text, key) for outcome, text in rows if outcome == "running")
    return spent, reserved


def _spent(text: str | None, key: str) -> int:
    """The Searches a row's ``greynoise_searches_by_day`` holds for the day ``key``."""
    try:
        value = json.loads(text or "{}").get(key, 0)
    except (ValueError, AttributeError):  # not JSON, or not an object: someone edited it
        return 0
    return value if isinstance(value, int) and value > 0 else 0


def recent_runs(db: Database, limit: int) -> pl.DataFrame:
    """The last ``limit`` runs, newest first (columns of `RUN_LOG_SCHEMA`; empty without a
    run log)."""
    if not has_run_log(db):
        return pl.DataFrame(schema=RUN_LOG_SCHEMA)
    present = db.columns(RUN_LOG_TABLE)
    columns = [c for c in RUN_LOG_SCHEMA if c in present]
    select = ", ".join(_typed(column) for column in columns)
    sql = (
        f"SELECT {select} FROM {db.table(RUN_LOG_TABLE)} "
        "ORDER BY TRY_CAST(run_id AS BIGINT) DESC LIMIT getvariable('etl_runs')"
    )
    with db.duck_errors("reading the run log"):
        frame = db.query_frame(sql, {"etl_runs": limit})
    return frame.cast({c: RUN_LOG_SCHEMA[c] for c in columns})


def _typed(column: str) -> str:
    """DuckDB SQL reading ``column`` as its type (SQLite gives every value as text)."""
    kind = RUN_LOG_SCHEMA[column]
    text = f"CAST({column} AS VARCHAR)"
    if isinstance(kind, pl.Datetime):
        return f"TRY_CAST({text} AS TIMESTAMPTZ) AS {column}"
    if kind == pl.Int64():
        return f"TRY_CAST({text} AS BIGINT) AS {column}"
    return f"{text} AS {column}"
