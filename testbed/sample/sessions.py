"""How the sample's sessions are linked to their IPs: the two shapes of the session tier
(shared/compat/README.md, "What the loader writes").

- ``loader`` (the default): as cowrieprocessor's loader leaves it. A session is linked
  (``source_ip`` set) only when its IP's inventory row existed when it was loaded: each row is
  created up to two days after the IP's first session (never after its enrichment), so the
  sessions before it, every session of a missing IP, and sessions whose ``src_ip`` is the empty
  string have ``source_ip`` NULL; the address is only in their raw events. A linked session
  that started after the row's ``enrichment_updated_at`` has the snapshots copied from it
  (``snapshot_asn`` = current_asn, ``snapshot_country`` = the first of maxmind, cymru and
  dshield countries, ``enrichment_at`` = enrichment_updated_at); the others have NULL ones.
  ``snapshot_ip_type`` stays NULL: the legacy ``spur`` blocks are lists, which the loader's
  reader of ``spur.client.types`` cannot read.
- ``migrated_v16``: a database whose session tier came through cowrieprocessor's v16
  migration: ``source_ip`` set on every session (also of IPs without a row, on SQLite; on
  PostgreSQL, whose foreign key forbids those, missing IPs become never-enriched rows), every
  snapshot NULL, each row created at its IP's first session.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final, Literal

import numpy as np
import polars as pl

Shape = Literal["loader", "migrated_v16"]
SHAPES: Final[tuple[Shape, ...]] = ("loader", "migrated_v16")
ROW_DELAY_DAYS: Final = 2.0  # an inventory row appears up to this long after the first session


def created_after_first_session(
    inventory: pl.DataFrame, now: datetime, rng: np.random.Generator
) -> pl.DataFrame:
    """Each row created up to `ROW_DELAY_DAYS` after its IP's first session, and never after
    it was enriched or now (its updated_at then follows)."""
    delay_us = rng.uniform(0, ROW_DELAY_DAYS * 86_400e6, inventory.height).astype(np.int64)
    created = pl.min_horizontal(
        pl.col("first_seen") + pl.Series(delay_us).cast(pl.Duration("us")),
        pl.col("enrichment_updated_at"),
        pl.lit(now, pl.Datetime("us", "UTC")),
    )
    return inventory.with_columns(created_at=created).with_columns(
        updated_at=pl.coalesce("enrichment_updated_at", "created_at")
    )


def linked_as_loaded(sessions: pl.DataFrame, inventory: pl.DataFrame) -> pl.DataFrame:
    """source_ip and snapshots as the loader set them: linked when the IP's row existed at the
    session's start (and the address is not empty), snapshots copied when the row had been
    enriched by then; NULL otherwise."""
    rows = inventory.select(
        source_ip="ip_address",
        row_created="created_at",
        row_asn="current_asn",
        row_enriched="enrichment_updated_at",
        row_country="snapshot_country",
    )
    start = pl.col("first_event_at")
    linked = (
        pl.col("row_created").is_not_null()
        & (pl.col("row_created") <= start)
        & (pl.col("source_ip") != "")
    )
    copied = linked & (pl.col("row_enriched") <= start).fill_null(False)
    return (
        sessions.join(rows, on="source_ip", how="left", maintain_order="left")
        .with_columns(
            source_ip=pl.when(linked).then("source_ip"),
            snapshot_asn=pl.when(copied).then("row_asn"),
            snapshot_country=pl.when(copied).then("row_country"),
            enrichment_at=pl.when(copied).then("row_enriched"),
        )
        .drop("row_created", "row_asn", "row_enriched", "row_country")
    )


def snapshot_country(blocks: dict[str, Any]) -> str | None:
    """The country the loader copies into a session: coalesce(maxmind.country, cymru.country,
    dshield.ip.ascountry), NULL when none."""
    dshield = blocks.get("dshield")
    candidates = (
        (blocks.get("maxmind") or {}).get("country"),
        (blocks.get("cymru") or {}).get("country"),
        (dshield.get("ip") or {}).get("ascountry") if isinstance(dshield, dict) else None,
    )
    return next((country for country in candidates if country is not None), None)
