"""One refresh per database at a time (SPEC 4): the second run exits with a clear message.

SQLite: an exclusive ``flock`` on ``<database>.etl-lock`` beside the file. PostgreSQL: a
session-level advisory lock held on a dedicated connection. Both are released by the operating
system or the server when the process ends, even by ``kill -9``, so a crash never leaves a lock
behind that needs cleaning by hand.

A PostgreSQL lock lives as long as its connection: a server restart or ``pg_terminate_backend``
releases it. `RunLock.verify` (called before every PostgreSQL write attempt) checks the
connection and, when it is gone, connects again and re-takes the lock, or raises
`RunLockedError` when another refresh took it meanwhile.

Whether the previous holder finished (`RunLock.unfinished`): a run that stops before its end
(Ctrl-C, SIGTERM, a failure, ``kill -9``) may have committed chunks without recomputing the
ASN counts they change (`ChunkWriter.recount_asns` runs last); the next run then recomputes
every ASN's counts. SQLite keeps the mark in the lock file (``pid N running`` until
``finished``). PostgreSQL keeps it in our table ``etl_identity`` (row ``run``, written when the
lock is taken, deleted by `finished`): not in the staging tables a killed run leaves, which a
run stopped cleanly drops (`etl.db.postgres.drop_own_stages`), although its counts are as
partial as a killed one's.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Final, TextIO

from etl.core.errors import DatabaseError, RunLockedError
from etl.db.ddl import IDENTITY_TABLE, identity_ddl
from etl.db.recognise import postgres_connect_error
from etl.db.side_files import run_lock_path
from etl.db.url import DatabaseUrl

if TYPE_CHECKING:
    import psycopg

# pg_advisory_lock key: the first 8 bytes of sha1("honeypot-etl refresh"), as a signed bigint.
ADVISORY_KEY: Final = 0x2F6A5B8E1D3C4A79
# PostgreSQL: the row of ``etl_identity`` that says a run holds (or held) the lock and has not
# finished; how long writing or deleting it may wait (best effort: a run is never held up by it).
RUN_MARK: Final = "run"
RUN_MARK_WAIT: Final = "5s"


class RunLock:
    """A held run lock. `verify` is a no-op for SQLite (a file lock cannot be lost).

    ``unfinished``: the previous holder stopped before `finished` (SQLite: read from the lock
    file; PostgreSQL: from the row ``run`` of ``etl_identity``; see the module docstring).
    """

    unfinished = False

    def verify(self) -> None:
        """Make sure the lock is still held; re-take it if its connection was lost."""

    def finished(self) -> None:
        """Record that this run got to its end (ASN counts recomputed)."""


class FileLock(RunLock):
    """SQLite: the open, flocked ``<database>.etl-lock`` file."""

    def __init__(self, handle: TextIO, previous: str) -> None:
        self.handle = handle
        self.unfinished = bool(previous) and not previous.endswith("finished")
        self._write(f"pid {os.getpid()} running")

    def _write(self, text: str) -> None:
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(text)
        self.handle.flush()

    def finished(self) -> None:
        """Mark the run as ended (the next run then need not recount every ASN)."""
        self._write(f"pid {os.getpid()} finished")


def run_lock(
    url: DatabaseUrl, notify: Callable[[str], None] | None = None
) -> AbstractContextManager[RunLock]:
    """Hold the database's refresh lock for the block; raise `RunLockedError` when taken.
    ``notify`` hears when a PostgreSQL lock lost with its connection is taken again. SQLite:
    `file_lock` on ``<database>.etl-lock``; PostgreSQL: `advisory_lock`."""
    if url.sqlite_path is not None:
        return file_lock(run_lock_path(url.sqlite_path), url)
    return advisory_lock(url, notify)


def lock_is_free(url: DatabaseUrl) -> bool:
    """Whether no refresh holds the database's run lock now (read-only: nothing is written or
    created, the lock is released at once). SQLite: a non-blocking ``flock`` on
    ``<database>.etl-lock`` (no such file: no refresh ever ran); PostgreSQL:
    ``pg_try_advisory_lock`` and unlock on a connection of its own."""
    if url.sqlite_path is not None:
        path = run_lock_path(url.sqlite_path)
        try:
            handle = path.open("r", encoding="utf-8")
        except FileNotFoundError:
            return True
        except OSError as exc:
            raise DatabaseError(f"cannot read the run lock {path}: {exc.strerror}") from None
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            fcntl.flock(handle, fcntl.LOCK_UN)
            return True
    return _advisory_lock_is_free(url)


def lock_holder(url: DatabaseUrl) -> str | None:
    """Who holds the database's run lock now (`lock_is_free`, read-only), or None when it is
    free: ``pid N`` of the refresh (SQLite: from its lock file), ``server pid N`` of its
    session (PostgreSQL), else ``another process``."""
    if lock_is_free(url):
        return None
    if url.sqlite_path is not None:
        try:
            text = run_lock_path(url.sqlite_path).read_text(encoding="utf-8").strip()
        except OSError:
            text = ""
        return text.removesuffix(" running")[:80] or "another process"
    import psycopg

    try:
        with psycopg.connect(url.libpq_url, autocommit=True, connect_timeout=30) as connection:
            row = connection.execute(_HOLDER_QUERY, (ADVISORY_KEY & 0xFFFFFFFFFFFFFFFF,)).fetchone()
    except psycopg.Error:
        row = None
    return f"server pid {row[0]}" if row and row[0] else "another session"


_HOLDER_QUERY: Final = (
    "SELECT string_agg(pid::text, ', ') FROM pg_locks WHERE locktype = 'advisory' AND granted"
    " AND (classid::bigint << 32 | objid::bigint) = %s"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)  # advisory locks belong to one database: another database's refresh holds its own


def _advisory_lock_is_free(url: DatabaseUrl) -> bool:
    import psycopg

    try:
        connection = psycopg.connect(url.libpq_url, autocommit=True, connect_timeout=30)
    except psycopg.Error as exc:
        raise postgres_connect_error(url, str(exc)) from None
    with connection:
        row = connection.execute("SELECT pg_try_advisory_lock(%s)", (ADVISORY_KEY,)).fetchone()
        if not row or not row[0]:
            return False
        connection.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_KEY,))
        return True


def _locked(url: DatabaseUrl, holder: str) -> RunLockedError:
    return RunLockedError(
        f"another refresh of {url} is running ({holder}); this run stops here and asks no "
        "service. Try again when it has finished."
    )


@contextmanager
def file_lock(path: Path, url: DatabaseUrl) -> Iterator[FileLock]:
    """SQLite: hold an exclusive ``flock`` on ``path`` (`RunLockedError` when taken)."""
    try:
        handle = path.open("a+", encoding="utf-8")
    except OSError as exc:
        raise DatabaseError(f"cannot create the run lock {path}: {exc.strerror}") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip().removesuffix(" running") or "another process"
            raise _locked(url, holder) from None
        handle.seek(0)
        try:
            yield FileLock(handle, handle.read().strip())
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def advisory_lock(
    url: DatabaseUrl, notify: Callable[[str], None] | None = None
) -> Iterator[AdvisoryLock]:
    """PostgreSQL: hold the advisory lock for the block (`RunLockedError` when taken)."""
    advisory = AdvisoryLock(url, notify)
    try:
        advisory.acquire()
        yield advisory
    finally:
        advisory.release()


class AdvisoryLock(RunLock):
    """PostgreSQL: ``pg_try_advisory_lock`` on a connection of its own."""

    def __init__(self, url: DatabaseUrl, notify: Callable[[str], None] | None = None) -> None:
        self.url = url
        self.notify = notify or (lambda _message: None)
        self.connection: psycopg.Connection[tuple[object, ...]] | None = None
        self.unfinished = False
        self.marked = False  # this run's ``run`` row is written

    def acquire(self) -> None:
        """Connect and take the lock; `RunLockedError` when another session holds it."""
        import psycopg

        try:
            # Keepalives: a server gone without a word (failover, cut network) is noticed
            # within about a minute, not after the kernel's two hours.
            self.connection = psycopg.connect(
                self.url.libpq_url,
                autocommit=True,
                connect_timeout=30,
                keepalives=1,
                keepalives_idle=30,
                keepalives_interval=10,
                keepalives_count=3,
            )
        except psycopg.Error as exc:
            raise postgres_connect_error(self.url, str(exc)) from None
        row = self.connection.execute("SELECT pg_try_advisory_lock(%s)", (ADVISORY_KEY,)).fetchone()
        if not row or not row[0]:
            holder = self.connection.execute(
                _HOLDER_QUERY, (ADVISORY_KEY & 0xFFFFFFFFFFFFFFFF,)
            ).fetchone()
            self.release()
            raise _locked(
                self.url, f"server pid {holder[0]}" if holder and holder[0] else "another session"
            )
        self._mark()

    def _mark(self) -> None:
        """Once, under the lock: read whether the previous holder finished, then say that
        this run has not (yet). Best effort: a database where it cannot be written (no
        privileges yet, created later by the run) is tried again by `verify`, before every
        write; a killed run's staging tables still tell the next run then."""
        import psycopg

        if self.marked or self.connection is None:
            return
        table = f"public.{IDENTITY_TABLE}"
        with suppress(psycopg.Error), self.connection.transaction():
            self.connection.execute(f"SET LOCAL lock_timeout = '{RUN_MARK_WAIT}'")
            self.connection.execute(f"SET LOCAL statement_timeout = '{RUN_MARK_WAIT}'")
            self.connection.execute(identity_ddl("postgres"))
            row = self.connection.execute(
                f"SELECT value FROM {table} WHERE name = %s", (RUN_MARK,)
            ).fetchone()
            self.unfinished = self.unfinished or row is not None
            self.connection.execute(
                f"INSERT INTO {table} (name, value, created_at) VALUES (%s, %s, now()) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value, "
                "created_at = excluded.created_at",
                (RUN_MARK, f"pid {os.getpid()} running"),
            )
            self.marked = True

    def finished(self) -> None:
        """Delete the ``run`` row: the next run need not recount every ASN. Best effort (a
        row left makes the next run recount all, which is only slower)."""
        import psycopg

        if self.connection is None or not self.marked:
            return
        with suppress(psycopg.Error), self.connection.transaction():
            self.connection.execute(f"SET LOCAL statement_timeout = '{RUN_MARK_WAIT}'")
            self.connection.execute(
                f"DELETE FROM public.{IDENTITY_TABLE} WHERE name = %s", (RUN_MARK,)
            )

    def verify(self) -> None:
        """Check the lock's connection; re-take the lock on a new one when it was lost."""
        import psycopg

        if self.connection is not None:
            try:
                self.connection.execute("SELECT 1")
                self._mark()
                return
            except psycopg.Error:
                self.release()
        self.acquire()
        self.notify(f"the run lock on {self.url} was lost with its connection: taken again")

    def release(self) -> None:
        """Unlock and close (a lost connection has nothing to unlock)."""
        import psycopg

        if self.connection is None:
            return
        with suppress(psycopg.Error):
            if not self.connection.closed:
                self.connection.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_KEY,))
        with suppress(psycopg.Error):
            self.connection.close()
        self.connection = None
