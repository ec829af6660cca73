"""Answers paid for but not committed (SPEC 4): kept beside the database for the next run.

When a run must stop before it could commit what the services answered (another writer's lock
never came within the lock timeout, the PostgreSQL server stayed away, the disk is full, the
run was interrupted), those answers are written here as Parquet files. The next run applies
them before it selects anything, so it asks no service about them again.

Where: beside a SQLite file (``<database>.etl-pending/``); for PostgreSQL in a folder of the
machine running the refresh (``pending_dir``, default
``~/.local/state/honeypot-etl/pending/<host>_<port>_<database>/``).

Two kinds of file: ``*.ips.parquet`` (the committer's rows: network blocks together with the
base columns of their IPs) and ``*.asns.parquet`` (Tier 1 AS registration rows).

Each file names the database it was kept for: the database's id (`etl.db.identity`) in the
Parquet key-value metadata (`OWNER_KEY`). A file is applied only to the database with that id
(`PendingFile.belongs`); a file that names none (kept before files named their database, or
by a run that could not give the database its id) only by ``honeypot-etl pending --apply``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Final, Literal

import polars as pl

from etl.core.errors import DatabaseError
from etl.db.backends import dialect_for
from etl.db.url import DatabaseUrl

Kind = Literal["ips", "asns"]
KINDS: Final[tuple[Kind, ...]] = ("ips", "asns")
DEFAULT_STATE_DIR: Final = Path("~/.local/state/honeypot-etl/pending")
OWNER_KEY: Final = "honeypot_etl.database_id"  # Parquet metadata: the id of the database
STAMP_FORMAT: Final = "%Y%m%dT%H%M%S%f"  # UTC, the start of a kept file's name
# Whose a kept file is, seen from one database: kept for it, for another one, or not said.
Belonging = Literal["this", "another", "unknown"]


@dataclass(frozen=True)
class PendingFile:
    """One kept set of answers."""

    path: Path
    kind: Kind

    def read(self) -> pl.DataFrame:
        """The rows of the file."""
        try:
            return pl.read_parquet(self.path)
        except (OSError, pl.exceptions.PolarsError) as exc:
            raise DatabaseError(f"cannot read kept answers {self.path}: {exc}") from exc

    @cached_property
    def owner(self) -> str | None:
        """The id of the database the answers were kept for; None when the file names none
        (or cannot be read)."""
        try:
            return pl.read_parquet_metadata(self.path).get(OWNER_KEY) or None
        except (OSError, pl.exceptions.PolarsError):
            return None

    def belongs(self, database_id: str | None) -> Belonging:
        """Whose the file is, seen from the database with id ``database_id`` (None: one
        without an id, which no file naming a database was kept for)."""
        if self.owner is None:
            return "unknown"
        return "this" if self.owner == database_id else "another"

    def rows(self) -> int | None:
        """How many rows the file holds (None when it cannot be read)."""
        try:
            return int(pl.scan_parquet(self.path).select(pl.len()).collect().item())
        except (OSError, pl.exceptions.PolarsError):
            return None

    def kept_at(self) -> datetime:
        """When it was kept: the stamp its name starts with, else the file's time."""
        try:
            return datetime.strptime(self.path.name.split("-", 1)[0], STAMP_FORMAT).replace(
                tzinfo=UTC
            )
        except ValueError:
            return datetime.fromtimestamp(self.path.stat().st_mtime, UTC)


class PendingAnswers:
    """The folder of kept answers of one database. ``owner``: the id of the database, which
    every file `save` writes names (None: it has none yet, and the files name none)."""

    def __init__(self, folder: Path, owner: str | None = None) -> None:
        self.folder = folder
        self.owner = owner

    @classmethod
    def of(cls, url: DatabaseUrl, state_dir: Path | None = None) -> PendingAnswers:
        """Where the kept answers of ``url`` live (see the module docstring)."""
        return cls(dialect_for(url).pending_folder(state_dir or DEFAULT_STATE_DIR))

    def files(self) -> list[PendingFile]:
        """Kept answers, oldest first."""
        if not self.folder.is_dir():
            return []
        found = []
        for path in sorted(self.folder.iterdir()):
            kind = path.name.removesuffix(".parquet").rsplit(".", 1)[-1]
            if path.suffix == ".parquet" and kind in KINDS:
                found.append(PendingFile(path, kind))
        return found

    def save(self, frames: dict[Kind, pl.DataFrame]) -> list[Path]:
        """Write each non-empty frame to a file of its own (atomically: tmp + rename), naming
        the database it is kept for (``owner``)."""
        stamp = datetime.now(UTC).strftime(STAMP_FORMAT)
        written: list[Path] = []
        frames = {kind: frame for kind, frame in frames.items() if frame.height}
        if not frames:
            return written  # nothing to keep: no folder either
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            for kind, frame in frames.items():
                path = self.folder / f"{stamp}-{os.getpid()}.{kind}.parquet"
                partial = path.with_suffix(".tmp")
                frame.write_parquet(partial, metadata=self._metadata())
                partial.replace(path)
                written.append(path)
        except OSError as exc:
            raise DatabaseError(f"cannot keep answers in {self.folder}: {exc}") from exc
        return written

    def _metadata(self) -> dict[str, str] | None:
        return {OWNER_KEY: self.owner} if self.owner else None

    def discard(self, item: PendingFile) -> None:
        """Forget a file once its rows are committed."""
        item.path.unlink(missing_ok=True)
        if self.folder.is_dir() and not any(self.folder.iterdir()):
            self.folder.rmdir()
