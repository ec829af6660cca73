"""What an offline source is to a run: one interface (`OfflineSource`) that each source's
folder implements (MaxMind: `etl.sources.maxmind.source.MaxMindSource`), and the set of them
a run opens (`OfflineSources`).

An offline source reads data on disk: no network, nothing paid for. The run opens every one
before any work (a damaged file is a usage error, exit 2), then, for each source in the
registry (`etl.refresh.sources.offline_sources`), in order:

    source.available                     whether its data is there (else it is not asked,
                                         and ``source.absent`` says why)
    source.notes                         what was noticed opening it (one line each)
    source.version                       the data's version: older blocks are stale
    source.columns                       the columns its step adds to the rows it writes
    n = source.looked_up(frame)          how many rows the step looks up (the phase's count)
    frame = source.add(frame, now)       its block, ``<name>``, and ``<name>_status``
    rows = source.revise(rows, now)      its columns of rows about to be written with their
                                         network answers, revised for what those answers
                                         say (the labels: Team Cymru's AS organization)
    source.report()                      what the run's summary keeps of it
    source.close()
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import polars as pl

from etl.core.freshness import DataVersion
from etl.core.vocabulary import Source


class OfflineSource(Protocol):
    """One offline source as a run uses it (see the module's docstring for the order)."""

    @property
    def name(self) -> Source:
        """The source (its block's key in the enrichment JSON)."""
        ...

    @property
    def available(self) -> bool:
        """Whether its data is there: a run asks it only then."""
        ...

    @property
    def optional(self) -> bool:
        """Whether a run without its data is the operator's choice: the IPs due for it are
        then not counted when nothing else is stale (as for a skipped source)."""
        ...

    @property
    def absent(self) -> str:
        """Why the run does not ask it when its data is not there ("no MaxMind database")."""
        ...

    @property
    def notes(self) -> list[str]:
        """What was noticed opening its data, one line each (a missing file, an old build)."""
        ...

    @property
    def version(self) -> DataVersion:
        """The version of the data open: a block written from an older one is stale."""
        ...

    @property
    def columns(self) -> tuple[str, ...]:
        """The columns `add` gives the rows it writes: its block, ``<name>_status``, and what
        the merge reads of it (MaxMind: the ASN and AS organization)."""
        ...

    def looked_up(self, frame: pl.DataFrame) -> int:
        """How many rows of ``frame`` the step looks up."""
        ...

    def add(self, frame: pl.DataFrame, now: datetime) -> pl.DataFrame:
        """``frame`` with the source's block (``<name>``, JSON) and ``<name>_status`` added to
        the rows it looks up (null on the others)."""
        ...

    def revise(self, rows: pl.DataFrame, now: datetime) -> pl.DataFrame:
        """``rows`` (base rows with the network answers that arrived for them, about to be
        written) with this source's columns revised for what the answers say, or as they are
        (MaxMind needs no other source)."""
        ...

    def report(self) -> Mapping[str, object]:
        """What the run's summary keeps of this source, by `RunSummary` field."""
        ...

    def close(self) -> None:
        """Close its data."""
        ...


@dataclass(frozen=True)
class OfflineSources:
    """The offline sources a run opened, in the registry's order."""

    sources: tuple[OfflineSource, ...] = ()

    def __iter__(self) -> Iterator[OfflineSource]:
        return iter(self.sources)

    @property
    def notes(self) -> list[str]:
        """Every source's notes, in order."""
        return [note for source in self.sources for note in source.notes]

    @property
    def versions(self) -> dict[Source, DataVersion]:
        """The version of each source's data, by source name."""
        return {source.name: source.version for source in self.sources}

    def revise(self, rows: pl.DataFrame, now: datetime) -> pl.DataFrame:
        """``rows`` revised by each source in order (`OfflineSource.revise`)."""
        for source in self.sources:
            rows = source.revise(rows, now)
        return rows

    def unavailable(self) -> dict[Source, str]:
        """The sources whose data is not there, each with why."""
        return {source.name: source.absent for source in self.sources if not source.available}

    def close(self) -> None:
        """Close every source's data."""
        for source in self.sources:
            source.close()
