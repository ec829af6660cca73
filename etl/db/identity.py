"""Which database this is, and which IPs it knows: what kept answers are checked against.

A database gets an id of ours, a random UUID, in our small table ``etl_identity``
(`etl.db.ddl.IDENTITY_TABLE`) the first time a real run (or ``honeypot-etl pending --apply``)
opens it for writing; a dry run and ``status`` never make it. Answers a stopped run keeps
carry the id of the database they were received for (`etl.db.pending`). A file put at the same
path later (a new demo world, another honeypot's database) has another id or none, so they are
not applied to it. A copy restored from a backup has the id, but not every IP the answers are
for: answers are applied only to the IPs the database knows (`known_ips`).

The id cannot be made while another writer holds a SQLite database's write lock: the run
then goes on without it (one try, as the run log's first row), and answers it keeps name no
database (applied only by ``honeypot-etl pending --apply``).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Final

import polars as pl

from etl.core.errors import DatabaseError, RunLockedError
from etl.db.database import Database
from etl.db.ddl import IDENTITY_TABLE, identity_ddl
from etl.db.dialect import sql_string
from etl.db.sessions import find_sessions
from etl.db.sqlite import sqlite_timestamp

ID_NAME: Final = "database_id"  # the row of `IDENTITY_TABLE` that holds the id
KNOWN_BATCH: Final = 1_000  # addresses looked up per query (literals in an IN list)


def database_id(db: Database) -> str | None:
    """The database's id; None when it has none yet."""
    if not db.columns(IDENTITY_TABLE):
        return None
    table = db.backend.native_table(IDENTITY_TABLE)
    rows = db.query_native(f"SELECT value FROM {table} WHERE name = {sql_string(ID_NAME)}")
    return str(rows[0][0]) if rows else None


# How long claiming the id waits for another writer's lock (the loader commits in short
# batches; a run that cannot claim it keeps its answers without an owner: `pending --apply`).
CLAIM_WAIT: Final = 5.0


def claim_database_id(db: Database, now: datetime) -> str | None:
    """The database's id, made now (a new UUID) when it has none. It waits quietly at most
    `CLAIM_WAIT` seconds for another writer's lock (the loader's batches are short): None
    when it could not be written (a later run makes it)."""
    found = database_id(db)
    if found is not None:
        return found
    stamp = sqlite_timestamp(now) if db.dialect == "sqlite" else now.isoformat()
    table = db.backend.native_table(IDENTITY_TABLE)
    insert = (
        f"INSERT INTO {table} (name, value, created_at) VALUES ({sql_string(ID_NAME)}, "
        f"{sql_string(str(uuid.uuid4()))}, {sql_string(stamp)}) ON CONFLICT (name) DO NOTHING"
    )
    try:
        with db.waiting_at_most(CLAIM_WAIT, quiet=True):
            db.execute_native([identity_ddl(db.dialect), insert])
    except RunLockedError:
        raise
    except DatabaseError:  # still busy (another writer), or not allowed: a later run makes it
        return None
    return database_id(db)


def known_ips(db: Database, ips: pl.Series) -> pl.Series:
    """Those of ``ips`` the database knows: with an ``ip_inventory`` row, named by a
    session's ``source_ip``, or the address of a session the loader left unlinked (found in
    its raw events, as a run finds them: `find_sessions`)."""
    wanted = ips.drop_nulls().unique().to_list()
    named = (("ip_inventory", "ip_address"), ("session_summaries", "source_ip"))
    present = [(db.backend.native_table(t), c) for t, c in named if db.columns(t)]
    found: set[str] = set()
    for start in range(0, len(wanted) if present else 0, KNOWN_BATCH):
        listed = ", ".join(sql_string(str(ip)) for ip in wanted[start : start + KNOWN_BATCH])
        selects = [f"SELECT {c} FROM {t} WHERE {c} IN ({listed})" for t, c in present]
        found |= {str(row[0]) for row in db.query_native(" UNION ".join(selects))}
    if len(found) < len(wanted):  # new IPs of unlinked sessions: only in raw events
        found |= set(find_sessions(db).sessions["ip"].drop_nulls().to_list())
    return pl.Series(ips.name, [ip for ip in wanted if ip in found], dtype=pl.String)
