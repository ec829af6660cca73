"""The run log (README "Run log"): our own table, one row per refresh that opened the database
for writing, read back for the GreyNoise daily budget and by `etl.status`.

A row is written twice: when the run starts (outcome ``running``, and in
``greynoise_searches_by_day`` the Searches it may spend, reserved on the UTC day it starts in)
and when it ends (the real counts). A run killed before its end (``kill -9``, a power cut)
keeps its ``running`` row until the next run takes the run lock: every earlier row still
``running`` then belongs to a dead run, and `mark_killed` makes it ``killed`` (no end time, no
exit code). Its reservation stays as it was: what a killed run may have spent still counts
against that day's budget (`RESERVING`). Only the refresh that holds the run lock writes here,
so run ids are simply counted up.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date
from typing import Any, Final

import polars as pl

from etl.core.errors import DatabaseError
from etl.db.database import Database
from etl.db.ddl import RUN_LOG_COLUMNS, RUN_LOG_TABLE

__all__ = [
    "RESERVING",
    "RUN_LOG_SCHEMA",
    "RUN_LOG_TABLE",
    "day_searches",
    "has_run_log",
    "mark_killed",
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
# Outcomes whose ``greynoise_searches_by_day`` holds a reservation (the Searches the run was
# allowed to spend), not what it spent: a run still running, or one killed before its end.
RESERVING: Final = ("running", "killed")


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
    in ``row`` keep their values; a new row gets their defaults). Columns a run log made by
    an earlier version lacks (its owner has not added them yet) are left out."""
    unknown = set(row) - set(RUN_LOG_SCHEMA)
    if unknown:
        raise ValueError(f"not run log columns: {', '.join(sorted(unknown))}")
    present = db.columns(RUN_LOG_TABLE)
    row = {column: value for column, value in row.items() if column in present}
    schema = {column: RUN_LOG_SCHEMA[column] for column in row}
    frame = pl.DataFrame([row], schema=schema, orient="row")
    db.upsert(RUN_LOG_TABLE, frame, "run_id")


def mark_killed(db: Database, notify: Callable[[str], None]) -> list[int]:
    """Mark ``killed`` every run whose row still says ``running`` (call under the run lock,
    before this run's own row: such a row belongs to a run that died without writing its end).
    Their reservations keep counting (`RESERVING`). A write that fails is one note: the rows
    stay ``running`` (which counts the same) until a later run marks them. The ids marked."""
    if not has_run_log(db):
        return []
    table = db.backend.native_table(RUN_LOG_TABLE)
    with db.duck_errors("reading the run log"):
        rows = db.query_native(f"SELECT run_id FROM {table} WHERE outcome = 'running'")
    ids = sorted(int(row[0]) for row in rows)
    if not ids:
        return []
    named = f"run{'s' if len(ids) > 1 else ''} {', '.join(map(str, ids))}"
    try:
        db.execute_native(
            [f"UPDATE {table} SET outcome = 'killed', exit_code = NULL WHERE outcome = 'running'"]
        )
    except DatabaseError as exc:
        notify(f"the run log could not mark {named} as killed ({exc}); they stay 'running'")
        return []
    notify(f"{named} wrote no outcome (killed before the end): marked 'killed' in the run log")
    return ids


def searches_on(db: Database, day: date) -> int:
    """GreyNoise Searches spent on the UTC ``day`` by every run in the log, counting for a run
    still ``running``, or ``killed``, what it was allowed to spend (0 without a run log)."""
    return sum(day_searches(db, day))


def day_searches(db: Database, day: date) -> tuple[int, int]:
    """GreyNoise Searches of the UTC ``day``: spent by runs that ended, and reserved by runs
    whose row says ``running`` or ``killed`` (`RESERVING`)."""
    if not has_run_log(db):
        return 0, 0
    key = day.isoformat()
    with db.duck_errors("reading the run log"):
        rows = db.query_native(  # a day's key is digits and dashes: safe as a literal
            "SELECT CAST(outcome AS TEXT), CAST(greynoise_searches_by_day AS TEXT) "
            f"FROM {db.backend.native_table(RUN_LOG_TABLE)} "
            f"WHERE CAST(greynoise_searches_by_day AS TEXT) LIKE '%{json.dumps(key)}%'"
        )
    spent = sum(_spent(text, key) for outcome, text in rows if outcome not in RESERVING)
    reserved = sum(_spent(text, key) for outcome, text in rows if outcome in RESERVING)
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
