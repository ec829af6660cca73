"""GreyNoise step: which IPs to ask, and the ``greynoise`` block of each answer (SPEC 2.1).

`greynoise_targets` picks stale, valid IPs; `greynoise_results` turns client answers into frame
rows; `lookup_greynoise` does both for a whole frame (notebooks, tests).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from datetime import datetime

import polars as pl

from etl.clients.greynoise import GreyNoiseAnswer, GreyNoiseClient
from etl.errors import ServiceError

GREYNOISE_COLUMNS: dict[str, pl.DataType] = {
    "ip": pl.String(),
    "greynoise_status": pl.String(),
    "noise": pl.Boolean(),
    "riot": pl.Boolean(),
    "classification": pl.String(),
    "name": pl.String(),
    "last_seen": pl.String(),
    "link": pl.String(),
}


def greynoise_targets(frame: pl.DataFrame, by_priority: bool = False) -> list[str]:
    """The IPs to ask GreyNoise: stale greynoise block, and a valid, global address; in the
    frame's order, or ``by_priority`` (the selection's ``priority`` column: never enriched
    first, then the most recently seen) when a budget may stop GreyNoise before the end."""
    wanted = frame.filter(pl.col("stale_greynoise") & ~pl.col("is_bogon"))
    if by_priority and "priority" in wanted.columns:
        wanted = wanted.sort("priority")
    return wanted["ip"].to_list()


def greynoise_results(answers: Iterable[GreyNoiseAnswer], cached_at: datetime) -> pl.DataFrame:
    """Frame rows (ip, greynoise_status, greynoise block) for a group of answers."""
    rows = [
        (a.ip, a.status, a.noise, a.riot, a.classification, a.name, a.last_seen, a.link)
        for a in answers
    ]
    frame = pl.DataFrame(rows, schema=GREYNOISE_COLUMNS, orient="row")
    block = pl.struct(
        "noise",
        "riot",
        "classification",
        "name",
        "last_seen",
        "link",
        pl.col("greynoise_status").alias("status"),
        pl.lit(cached_at.isoformat()).alias("cached_at"),
    )
    return frame.select("ip", "greynoise_status", block.struct.json_encode().alias("greynoise"))


def lookup_greynoise(
    frame: pl.DataFrame, client: GreyNoiseClient, cached_at: datetime
) -> pl.DataFrame:
    """Add greynoise_status and the block to the rows GreyNoise answered (whole frame).

    A stop (bad key, quota) keeps the answers received before it; the rest get no block.
    """
    answers: list[GreyNoiseAnswer] = []
    with contextlib.suppress(ServiceError):
        for answer in client.lookup(greynoise_targets(frame)):
            answers.append(answer)  # one by one: keep what came before a stop
    return frame.join(greynoise_results(answers, cached_at), on="ip", how="left")
