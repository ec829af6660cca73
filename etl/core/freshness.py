"""How long each source's answer stays fresh (SPEC 2.2).

A module of its own, below every layer that reads it: the configuration (`etl.refresh.config`)
holds one, the stale selection (`etl.db.select`) applies it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class Freshness:
    """How long each source's block stays fresh (SPEC 2.2)."""

    maxmind: timedelta = timedelta(days=7)
    cymru_ok: timedelta = timedelta(days=90)
    cymru_not_found: timedelta = timedelta(days=7)
    greynoise: timedelta = timedelta(days=7)
    asn_details: timedelta = timedelta(days=90)


@dataclass(frozen=True)
class DataVersion:
    """The version of an offline source's data a run uses (`etl.sources.offline`): a block
    written from an older ``epoch`` (or from other ``parts``) is stale whatever its age.
    ``lacking``: what this run's blocks lack when part of the data is missing ("no City
    database"; None when whole)."""

    epoch: int = 0
    lacking: str | None = None
    # Data made of several parts, each with its version (the labels' lists: name, sha256).
    parts: tuple[tuple[str, str], ...] = ()
