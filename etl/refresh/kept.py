"""Kept answers as an operator handles them (``honeypot-etl pending``).

A refresh applies, before it selects anything, the answers a stopped run kept for its own
database (`etl.refresh.pipeline.apply_pending`). The rest is here: which files wait and
which database each was kept for (`kept_answers`, read-only: no database id is made),
applying them by hand,
also those that name no database, under the run lock as a refresh would (`apply_kept`), and
removing them (`discard_kept`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from etl.core.errors import SchemaError, SettingError
from etl.db.database import Database
from etl.db.identity import database_id
from etl.db.lock import run_lock
from etl.db.pending import Belonging, Kind, PendingAnswers
from etl.db.recognise import recognise
from etl.db.url import DatabaseUrl
from etl.refresh.config import RefreshConfig
from etl.refresh.pipeline import apply_pending
from etl.report.summary import Reporter

COMMAND = "honeypot-etl pending"


@dataclass(frozen=True)
class KeptFile:
    """One file of kept answers, as listed."""

    name: str
    kind: Kind
    rows: int | None  # None: the file cannot be read
    kept_at: datetime
    owner: str | None  # the id of the database it was kept for; None: it names none
    belongs: Belonging  # seen from the listed database


@dataclass(frozen=True)
class KeptAnswers:
    """The kept answers of one database: its URL (no password), its id, the folder."""

    database: str
    database_id: str | None
    folder: Path
    files: tuple[KeptFile, ...]
    now: datetime


def kept_answers(config: RefreshConfig) -> KeptAnswers:
    """The kept files of the configured database and which database each was kept for. Reads
    only (the database is opened read-only, and only when there are files)."""
    url = _existing(config)
    pending = PendingAnswers.of(url, config.pending_dir)
    files = pending.files()
    owner = _database_id(url, config) if files else None
    listed = tuple(
        KeptFile(f.path.name, f.kind, f.rows(), f.kept_at(), f.owner, f.belongs(owner))
        for f in files
    )
    return KeptAnswers(str(url), owner, pending.folder, listed, config.clock())


def apply_kept(config: RefreshConfig, reporter: Reporter) -> None:
    """Apply the files kept for the configured database and those that name none, to the
    IPs it knows (`apply_pending`), under the run lock, as a refresh would; files of another
    database are left alone."""
    url = _existing(config)
    pending = PendingAnswers.of(url, config.pending_dir)
    if not pending.files():
        reporter.note(f"no kept answers in {pending.folder}: nothing to apply")
        return
    with (
        run_lock(url, reporter.note) as held,
        Database(url, lock_timeout=config.lock_timeout, notify=reporter.note) as db,
    ):
        db.guard = held.verify
        db.check_writable()
        if not db.columns("ip_inventory"):
            raise SchemaError(f"{db.url} has no ip_inventory table: it knows none of these IPs")
        apply_pending(db, pending, config, reporter, unknown_owner=True)
        if not held.unfinished:  # else the next refresh must still recount every ASN
            held.finished()


def discard_kept(config: RefreshConfig, reporter: Reporter, foreign_only: bool = False) -> int:
    """Remove the kept files of the configured database (``foreign_only``: only those kept
    for another database), under the run lock; return how many."""
    url = _existing(config)
    pending = PendingAnswers.of(url, config.pending_dir)
    with run_lock(url, reporter.note):  # no refresh keeps or applies answers meanwhile
        files = pending.files()
        if foreign_only and files:
            owner = _database_id(url, config)
            files = [item for item in files if item.belongs(owner) == "another"]
        for item in files:
            pending.discard(item)
    what = "of another database " if foreign_only else ""
    reporter.note(f"discarded {len(files)} file(s) of kept answers {what}from {pending.folder}")
    return len(files)


def _existing(config: RefreshConfig) -> DatabaseUrl:
    """The configured database; a SQLite file that does not exist, and a database the
    refresh cannot use (`recognise`: before any lock file is made), are usage errors."""
    url = config.database.check_folder()
    if url.sqlite_path is None or url.sqlite_path.is_file():
        recognise(url, read_only=True, timeout=config.lock_timeout)
        return url
    folder = PendingAnswers.of(url, config.pending_dir).folder
    left = f"; answers kept for a database at that path are in {folder}" if folder.is_dir() else ""
    raise SettingError(
        "db_url", f"names a SQLite database that does not exist: {url.sqlite_path}{left}"
    )


def _database_id(url: DatabaseUrl, config: RefreshConfig) -> str | None:
    """The database's id, read without writing anything."""
    with Database(url, read_only=True, lock_timeout=config.lock_timeout) as db:
        return database_id(db)


def render(kept: KeptAnswers) -> str:
    """The listing ``honeypot-etl pending`` prints."""
    if not kept.files:
        return f"no kept answers for {kept.database} (none in {kept.folder})"
    lines = [
        f"kept answers in {kept.folder}",
        f"for {kept.database} (database id {kept.database_id or 'none yet'}):",
    ]
    for item in kept.files:
        rows = "unreadable" if item.rows is None else f"{item.rows:,} rows"
        age = _age((kept.now - item.kept_at).total_seconds())
        lines.append(f"  {item.name}  {item.kind:<4}  {rows:>12}  kept {age} ago  {_whose(item)}")
    lines.append(_advice(kept.files))
    return "\n".join(lines)


def _whose(item: KeptFile) -> str:
    if item.belongs == "this":
        return "this database"
    if item.belongs == "another":
        return f"another database (id {item.owner})"
    return "no database named"


def _advice(files: tuple[KeptFile, ...]) -> str:
    """What each kind of file becomes, and the command for it."""
    count = {b: sum(1 for f in files if f.belongs == b) for b in ("this", "another", "unknown")}
    said = []
    if count["this"]:
        said.append(f"{count['this']} kept for this database: the next refresh applies them")
    if count["another"]:
        said.append(
            f"{count['another']} of another database: never applied here "
            f"(`{COMMAND} --discard --foreign` removes them)"
        )
    if count["unknown"]:
        said.append(
            f"{count['unknown']} naming no database: `{COMMAND} --apply` applies them to the "
            "IPs this database knows"
        )
    return "; ".join(said) + f". `{COMMAND} --discard` removes every file."


def _age(seconds: float) -> str:
    """``seconds`` in the largest whole unit: 40 s, 12 min, 5 h, 3 d."""
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit}"
    return f"{max(0, int(seconds))} s"
