"""Timestamps as stored (SQLite text in several forms, epoch numbers) to UTC timestamps, in
DuckDB: the same rule for the selection SQL and for frames read natively."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import duckdb
import polars as pl

# Text to TIMESTAMPTZ: the direct cast takes cowrieprocessor's form and ISO forms (fast path);
# epoch numbers, and what the cast refuses, get the slower checks.
TIMESTAMP_MACRO: Final = r"""
CREATE OR REPLACE TEMP MACRO etl_ts(x) AS coalesce(
    TRY_CAST(x AS TIMESTAMPTZ),
    CASE WHEN regexp_full_match(trim(x), '[0-9]+(\.[0-9]+)?')
         THEN to_timestamp(CAST(trim(x) AS DOUBLE))
         ELSE TRY_CAST(replace(trim(x), 'Z', '+00:00') AS TIMESTAMPTZ) END)
"""


def parse_timestamps(
    duck: duckdb.DuckDBPyConnection, frame: pl.DataFrame, columns: Sequence[str]
) -> pl.DataFrame:
    """``frame`` with its text ``columns`` parsed by `TIMESTAMP_MACRO` (UTC; NULL where the
    text is no timestamp)."""
    if not frame.height:
        return frame.with_columns(pl.col(c).cast(pl.Datetime("us", "UTC")) for c in columns)
    duck.execute(TIMESTAMP_MACRO)  # ``duck``: an `offline_connection`, in UTC
    texts = frame.select(pl.col(c).cast(pl.String) for c in columns)
    duck.from_arrow(texts.__arrow_c_stream__()).to_view("etl_timestamp_texts")
    try:
        parsed = pl.DataFrame(
            duck.sql(
                "SELECT "
                + ", ".join(f"etl_ts({c}) AS {c}" for c in columns)
                + " FROM etl_timestamp_texts"
            )
        )
    finally:
        duck.execute("DROP VIEW IF EXISTS etl_timestamp_texts")
    return frame.with_columns(
        parsed[c].cast(pl.Datetime("us")).dt.replace_time_zone("UTC") for c in columns
    )
