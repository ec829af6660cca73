"""Merge step: turn the enriched frame into the rows the write path stages.

Pure frame logic: which ASN an IP now points at, whether the row counts as freshly enriched,
and the JSON blocks this run produced.
"""

from __future__ import annotations

import polars as pl

from etl.core.vocabulary import ANSWERED, BLOCKS, ENRICHING
from etl.db.write import MAX_PG_INTEGER


def _column(frame: pl.DataFrame, name: str, dtype: pl.DataType) -> pl.Expr:
    return pl.col(name) if name in frame.columns else pl.lit(None, dtype)


def current_asn(frame: pl.DataFrame) -> pl.Expr:
    """MaxMind's ASN, else Cymru's; only values that fit the integer column."""
    asn = pl.coalesce(
        _column(frame, "maxmind_asn", pl.Int64()), _column(frame, "cymru_asn", pl.Int64())
    )
    return pl.when(asn.is_between(1, MAX_PG_INTEGER)).then(asn)


def answered(frame: pl.DataFrame) -> pl.Expr:
    """True where at least one enriching source answered ``ok`` or ``not_found`` in this run
    (`ENRICHING`: labels alone do not make a row freshly enriched)."""
    statuses = [
        _column(frame, f"{source}_status", pl.String()).is_in(ANSWERED) for source in ENRICHING
    ]
    return pl.any_horizontal(statuses).fill_null(False)


def merged_enrichment(frame: pl.DataFrame) -> pl.DataFrame:
    """The ip_inventory stage rows: ASN, sessions for new rows, freshness flag, JSON blocks."""
    return frame.select(
        pl.col("ip").alias("ip_address"),
        current_asn(frame).alias("current_asn"),
        _column(frame, "first_seen", pl.Datetime("us", "UTC")).alias("first_seen"),
        _column(frame, "last_seen", pl.Datetime("us", "UTC")).alias("last_seen"),
        _column(frame, "session_count", pl.Int64()).alias("session_count"),
        answered(frame).cast(pl.Int32).alias("touched"),
        *(_column(frame, block, pl.String()).alias(block) for block in BLOCKS),
    )


def asn_rows(frame: pl.DataFrame) -> pl.DataFrame:
    """The asn_inventory stage rows for every ASN the chunk's IPs point at.

    The organization name comes from the source that gave the ASN; the registration country
    and registry only from Cymru's AS answers (an IP's geolocation is not the AS's country).
    """
    name = pl.coalesce(
        pl.when(_column(frame, "maxmind_asn", pl.Int64()).is_not_null()).then(
            _column(frame, "maxmind_asn_org", pl.String())
        ),
        _column(frame, "cymru_asn_org", pl.String()),
    )
    return (
        frame.select(
            current_asn(frame).alias("asn_number"),
            name.alias("organization_name"),
            _column(frame, "asn_country", pl.String()).alias("organization_country"),
            _column(frame, "asn_registry", pl.String()).alias("rir_registry"),
        )
        .filter(pl.col("asn_number").is_not_null())
        .group_by("asn_number")
        .agg(pl.all().drop_nulls().first())
        .sort("asn_number")
    )
