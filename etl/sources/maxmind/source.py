"""MaxMind as an offline source of the run (`etl.sources.offline.OfflineSource`): the ASN and
City files open (`open_maxmind`), their build as the data's version, and the step that adds
the ``maxmind`` block (`with_maxmind`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import polars as pl

from etl.core.freshness import DataVersion
from etl.core.vocabulary import Source
from etl.sources.maxmind.steps import MaxMindDatabases, open_maxmind, with_maxmind


@dataclass(frozen=True)
class MaxMindSource:
    """MaxMind's files as the run uses them (none open: the source is skipped or absent)."""

    databases: MaxMindDatabases = field(default_factory=MaxMindDatabases)
    name: Source = field(default=Source.MAXMIND, init=False)
    absent: str = field(default="no MaxMind database", init=False)
    optional: bool = field(default=False, init=False)  # a run without it is a missing file

    @classmethod
    def open(
        cls, asn: Path | None, city: Path | None, directory: Path, now: datetime
    ) -> MaxMindSource:
        """Open the named files, else those found in ``directory`` (`open_maxmind`; raises
        `MaxMindError` for a file that cannot be used)."""
        return cls(open_maxmind(asn=asn, city=city, directory=directory, now=now))

    @property
    def available(self) -> bool:
        """Whether at least one of the two files is open."""
        return self.databases.available

    @property
    def notes(self) -> list[str]:
        """A file missing from the folder, a build older than the licence window."""
        return self.databases.notes

    @property
    def version(self) -> DataVersion:
        """The newest build among the files open, and what the blocks lack without the other."""
        return DataVersion(self.databases.build_epoch, self.databases.lacking)

    @property
    def columns(self) -> tuple[str, ...]:
        """The block, its status, and the ASN and AS organization the merge reads."""
        return ("maxmind", "maxmind_asn", "maxmind_asn_org", "maxmind_status")

    def looked_up(self, frame: pl.DataFrame) -> int:
        """The stale rows that are no bogon (a bogon is never looked up)."""
        return int((frame["stale_maxmind"] & ~frame["is_bogon"]).sum())

    def add(self, frame: pl.DataFrame, now: datetime) -> pl.DataFrame:
        """The ``maxmind`` block, its ASN, AS organization and status (`with_maxmind`)."""
        return with_maxmind(frame, self.databases, now)

    def revise(self, rows: pl.DataFrame, now: datetime) -> pl.DataFrame:
        """As they are: MaxMind's blocks need no other source's answer."""
        return rows

    def report(self) -> Mapping[str, object]:
        """The build time of each file, for the metrics' age alert."""
        return {"maxmind_build_epochs": self.databases.build_epochs}

    def close(self) -> None:
        """Close the files."""
        self.databases.close()
