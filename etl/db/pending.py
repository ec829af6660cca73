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
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Literal

import polars as pl

from etl.db.dialect import dialect_for
from etl.db.url import DatabaseUrl
from etl.errors import DatabaseError

Kind = Literal["ips", "asns"]
KINDS: Final[tuple[Kind, ...]] = ("ips", "asns")
DEFAULT_STATE_DIR: Final = Path("~/.local/state/honeypot-etl/pending")


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


class PendingAnswers:
    """The folder of kept answers of one database."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

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
        """Write each non-empty frame to a file of its own (atomically: tmp + rename)."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        written: list[Path] = []
        frames = {kind: frame for kind, frame in frames.items() if frame.height}
        if not frames:
            return written  # nothing to keep: no folder either
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            for kind, frame in frames.items():
                path = self.folder / f"{stamp}-{os.getpid()}.{kind}.parquet"
                partial = path.with_suffix(".tmp")
                frame.write_parquet(partial)
                partial.replace(path)
                written.append(path)
        except OSError as exc:
            raise DatabaseError(f"cannot keep answers in {self.folder}: {exc}") from exc
        return written

    def discard(self, item: PendingFile) -> None:
        """Forget a file once its rows are committed."""
        item.path.unlink(missing_ok=True)
        if self.folder.is_dir() and not any(self.folder.iterdir()):
            self.folder.rmdir()
