"""One refresh per database at a time (SPEC 4): the second run exits with a clear message.

SQLite: an exclusive ``flock`` on ``<database>.etl-lock`` beside the file. PostgreSQL: a
session-level advisory lock held on a dedicated connection. Both are released by the operating
system or the server when the process ends, even by ``kill -9``, so a crash never leaves a lock
behind that needs cleaning by hand.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from etl.db.url import DatabaseUrl, redact
from etl.errors import DatabaseError, RunLockedError

# pg_advisory_lock key: the first 8 bytes of sha1("honeypot-etl refresh"), as a signed bigint.
ADVISORY_KEY: Final = 0x2F6A5B8E1D3C4A79


@contextmanager
def run_lock(url: DatabaseUrl) -> Iterator[None]:
    """Hold the database's refresh lock for the block; raise `RunLockedError` when taken."""
    if url.dialect == "sqlite":
        assert url.sqlite_path is not None
        with _file_lock(url.sqlite_path.with_name(url.sqlite_path.name + ".etl-lock"), url):
            yield
    else:
        with _advisory_lock(url):
            yield


@contextmanager
def _file_lock(path: Path, url: DatabaseUrl) -> Iterator[None]:
    try:
        handle = path.open("a+", encoding="utf-8")
    except OSError as exc:
        raise DatabaseError(f"cannot create the run lock {path}: {exc.strerror}") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise RunLockedError(
                f"another refresh of {url} is running ({holder}); this run stops here and "
                "asks no service. Try again when it has finished."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def _advisory_lock(url: DatabaseUrl) -> Iterator[None]:
    import psycopg

    try:
        connection = psycopg.connect(url.libpq_url, autocommit=True, connect_timeout=30)
    except psycopg.Error as exc:
        reason = redact(str(exc).strip().splitlines()[0], url.secrets())
        raise DatabaseError(f"cannot connect to PostgreSQL {url}: {reason}") from None
    with connection:
        row = connection.execute("SELECT pg_try_advisory_lock(%s)", (ADVISORY_KEY,)).fetchone()
        if not row or not row[0]:
            holder = connection.execute(
                "SELECT string_agg(pid::text, ', ') FROM pg_locks "
                "WHERE locktype = 'advisory' AND granted"
                " AND (classid::bigint << 32 | objid::bigint) = %s",
                (ADVISORY_KEY & 0xFFFFFFFFFFFFFFFF,),
            ).fetchone()
            who = f"server pid {holder[0]}" if holder and holder[0] else "another session"
            raise RunLockedError(
                f"another refresh of {url} is running ({who}); this run stops here and asks "
                "no service. Try again when it has finished."
            )
        try:
            yield
        finally:
            connection.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_KEY,))
