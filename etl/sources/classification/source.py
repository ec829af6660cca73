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
    list_files,
    read_lists,
)
from etl.sources.classification.steps import classification_blocks, classify, list_versions

BLOCK: Final = block_of(Source.CLASSIFICATION)
STATUS: Final = f"{Source.CLASSIFICATION}_status"
ORG: Final = "classification_org"  # the AS organization the labels read (null: none known)
# What the labels of a row need again when Team Cymru's answer brings its organization.
ADDRESS_COLUMNS: Final = ("ip_version", "ipv4_int", "ipv6_packed")
CYMRU_ORG: Final = f"{Source.CYMRU}_asn_org"
# Older than this, a list gets a warning (SPEC 3.4): Tor exits come and go within hours.
OLD: Final = {"tor": timedelta(days=2)}
OLD_DEFAULT: Final = timedelta(days=30)


def too_old(name: str) -> timedelta:
    """The age after which list ``name`` gets a warning."""
    return OLD.get(name, OLD_DEFAULT)


def age_words(age: timedelta) -> str:
    """A list's age as every output says it: minutes, hours under 2 days, else days (one
    decimal: "2.1 days" is past Tor's 2 days, where a whole "2 days" would not say so)."""
    seconds = max(age.total_seconds(), 0)
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


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
        lists = (
            read_lists(folder, providers)
            if folder.is_dir()
            else ClassificationLists(
                missing=[item.name for item in list_files(providers)], providers=tuple(providers)
            )
        )
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
        old = [f"{name} ({age_words(ages[name])})" for name in self.old]
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
        """The lists `honeypot-etl lists update` keeps that are past the age that gets a
        warning (SPEC 3.4). A list switched off, or put there by hand (no record), is never
        replaced by it: its age is the operator's affair (an alert it cannot clear helps no
        one)."""
        kept = set(self.lists.recorded) - self.switched_off
        return [name for name, age in self.ages.items() if name in kept and age > too_old(name)]

    @property
    def looked_for(self) -> list[str]:
        """The lists not found, those switched off aside (every one, when none is there)."""
        return [name for name in self.lists.missing if name not in self.switched_off]

    @property
    def missing(self) -> list[str]:
        """The lists not found when others are there (with none at all, the labels are not
        asked: one line says so, `absent`)."""
        return self.looked_for if self.available else []

    @property
    def entries(self) -> dict[str, int]:
        """Each list read: its entries (Tor exits, or ranges)."""
        ranges = dict(self.lists.ranges.group_by("list").len().iter_rows())
        return {
            name: self.lists.tor.height if name == "tor" else int(ranges.get(name, 0))
            for name in self.lists.versions
        }

    @property
    def version(self) -> DataVersion:
        """The version of each list read: a block made from others is stale."""
        return DataVersion(parts=tuple(sorted(list_versions(self.lists).items())))

    @property
    def columns(self) -> tuple[str, ...]:
        """The block and its status; the organization read and the address, for `revise`."""
        return (BLOCK, STATUS, ORG, *ADDRESS_COLUMNS)

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
                pl.lit(None, pl.String).alias(c) for c in (BLOCK, STATUS, ORG)
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
        labelled = rows.select(
            "_row", blocks.alias(BLOCK), pl.lit("ok").alias(STATUS), pl.col("_org").alias(ORG)
        )
        return (
            frame.with_row_index("_row")
            .join(labelled, on="_row", how="left", maintain_order="left")
            .drop("_row")
        )

    def revise(self, rows: pl.DataFrame, now: datetime) -> pl.DataFrame:
        """The rows labelled without an AS organization (MaxMind had none) whose Team Cymru
        answer brings one, labelled again with it: the residential heuristic reads it in the
        same run, and the next run finds the block fresh."""
        needed = (BLOCK, ORG, CYMRU_ORG, *ADDRESS_COLUMNS)
        if any(column not in rows.columns for column in needed):
            return rows
        wanted = pl.col(BLOCK).is_not_null() & pl.col(ORG).is_null()
        again = rows.with_row_index("_row").filter(wanted & pl.col(CYMRU_ORG).is_not_null())
        if again.is_empty():
            return rows
        again = again.with_columns(pl.col(CYMRU_ORG).alias("_org"))
        classified = classify(again, self.lists, pl.col("_org"))
        blocks = classification_blocks(classified, self.lists, again["_org"], now)
        revised = again.select("_row", blocks.alias(BLOCK), pl.col("_org").alias(ORG))
        return rows.with_row_index("_row").update(revised, on="_row").drop("_row")

    def report(self) -> Mapping[str, object]:
        """Each list's age, the old ones and the missing ones (every one, when none is there:
        a monitor sees the labels stop), for the metrics."""
        ages = {name: age.total_seconds() for name, age in self.ages.items()}
        return {"list_ages": ages, "lists_old": self.old, "lists_missing": self.looked_for}

    def close(self) -> None:
        """Nothing to close: the lists are frames."""
