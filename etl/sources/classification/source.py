"""The infrastructure labels as an offline source of the run (`etl.sources.offline`): the lists
of the lists folder read once (`read_lists`), their versions as the data's version, and the
step that adds the ``ip_classification`` block (`classify`, `classification_blocks`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

import polars as pl

from etl.core.freshness import DataVersion
from etl.core.vocabulary import Source, block_of
from etl.sources.classification.lists import (
    DEFAULT_PROVIDERS,
    ClassificationLists,
    read_lists,
)
from etl.sources.classification.steps import classification_blocks, classify, list_versions

BLOCK: Final = block_of(Source.CLASSIFICATION)
STATUS: Final = f"{Source.CLASSIFICATION}_status"
# Older than this, a list gets a warning (SPEC 3.4): Tor exits come and go within hours.
OLD: Final = {"tor": timedelta(days=2)}
OLD_DEFAULT: Final = timedelta(days=30)


def too_old(name: str) -> timedelta:
    """The age after which list ``name`` gets a warning."""
    return OLD.get(name, OLD_DEFAULT)


@dataclass(frozen=True)
class ClassificationSource:
    """The lists as the run uses them (none read: the labels are skipped, or none is there)."""

    lists: ClassificationLists = field(default_factory=ClassificationLists)
    folder: Path | None = None
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    switched_off: frozenset[str] = frozenset()  # lists whose URL is empty: not "missing"
    name: Source = field(default=Source.CLASSIFICATION, init=False)
    optional: bool = field(default=True, init=False)  # labels need lists the operator fetches

    @classmethod
    def open(
        cls,
        folder: Path,
        providers: Sequence[str] = DEFAULT_PROVIDERS,
        now: datetime | None = None,
        switched_off: Iterable[str] = (),
    ) -> ClassificationSource:
        """Read every list of ``folder`` (a folder that does not exist holds none; a list
        switched off is still read when its file is there: lists copied in by hand)."""
        lists = read_lists(folder, providers) if folder.is_dir() else ClassificationLists()
        return cls(lists, folder, now or datetime.now(UTC), frozenset(switched_off))

    @property
    def available(self) -> bool:
        """Whether any list is there (no block is written from no lists at all)."""
        return self.lists.available

    @property
    def absent(self) -> str:
        """Why the labels are not asked without lists."""
        return f"no lists in {self.folder} (`honeypot-etl lists update` fetches them)"

    @property
    def notes(self) -> list[str]:
        """A list missing (the types it gives are not assigned), a list too old."""
        if not self.available:
            return []
        notes = []
        missing = self.missing
        if missing:
            notes.append(
                f"{len(missing)} list(s) missing in {self.folder}: {', '.join(missing)}; the "
                "labels they give are not assigned (`honeypot-etl lists update` fetches them)"
            )
        ages = self.ages
        old = [f"{name} ({ages[name].days} days)" for name in self.old]
        if old:
            notes.append(
                f"warning: old list(s) in {self.folder}: {', '.join(old)}; "
                "`honeypot-etl lists update` fetches them anew"
            )
        return notes

    @property
    def ages(self) -> dict[str, timedelta]:
        """Each list read: how long since its source last confirmed it."""
        return {name: self.now - fetched for name, fetched in self.lists.fetched.items()}

    @property
    def old(self) -> list[str]:
        """The lists read that are past the age that gets a warning (SPEC 3.4)."""
        return [name for name, age in self.ages.items() if age > too_old(name)]

    @property
    def missing(self) -> list[str]:
        """The lists looked for and not found, those switched off aside (none when no list is
        there at all: then the labels are not asked)."""
        if not self.available:
            return []
        return [name for name in self.lists.missing if name not in self.switched_off]

    @property
    def version(self) -> DataVersion:
        """The version of each list read: a block made from others is stale."""
        return DataVersion(parts=tuple(sorted(list_versions(self.lists).items())))

    @property
    def columns(self) -> tuple[str, ...]:
        """The block and its status."""
        return (BLOCK, STATUS)

    def looked_up(self, frame: pl.DataFrame) -> int:
        """The stale rows that are no bogon (a bogon is never labelled)."""
        return int((frame["stale_classification"] & ~frame["is_bogon"]).sum())

    def add(self, frame: pl.DataFrame, now: datetime) -> pl.DataFrame:
        """The ``ip_classification`` block and its status of the rows looked up. The AS
        organization read is MaxMind's (this run's, when it looked the row up), else Team
        Cymru's (as stored)."""
        wanted = pl.col("stale_classification") & ~pl.col("is_bogon")
        rows = frame.with_row_index("_row").filter(wanted)
        if rows.is_empty():
            return frame.with_columns(
                pl.lit(None, pl.String).alias(BLOCK), pl.lit(None, pl.String).alias(STATUS)
            )
        looked_up = (
            pl.col("maxmind_status").is_not_null()
            if "maxmind_status" in frame.columns
            else pl.lit(False)
        )
        maxmind_org = (
            pl.col("maxmind_asn_org")
            if "maxmind_asn_org" in frame.columns
            else pl.lit(None, pl.String)
        )
        org = (
            pl.when(looked_up)
            .then(pl.coalesce(maxmind_org, pl.col("old_cymru_org")))
            .otherwise(pl.col("old_as_org"))
        )
        rows = rows.with_columns(org.alias("_org"))
        classified = classify(rows, self.lists, pl.col("_org"))
        blocks = classification_blocks(classified, self.lists, rows["_org"], now)
        labelled = rows.select("_row").with_columns(blocks.alias(BLOCK), pl.lit("ok").alias(STATUS))
        return (
            frame.with_row_index("_row")
            .join(labelled, on="_row", how="left", maintain_order="left")
            .drop("_row")
        )

    def report(self) -> Mapping[str, object]:
        """Each list's age, the old ones and the missing ones, for the metrics."""
        ages = {name: age.total_seconds() for name, age in self.ages.items()}
        return {"list_ages": ages, "lists_old": self.old, "lists_missing": self.missing}

    def close(self) -> None:
        """Nothing to close: the lists are frames."""
