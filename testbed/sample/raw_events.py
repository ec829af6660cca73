"""cowrieprocessor's ``raw_events`` table, and the events its loader stores for the sample's
sessions (shared/compat/README.md, "What the loader writes"; loader-example.json).

The DDL is written by hand from shared/compat (cowrieprocessor 57326ea, schema_version 17):
SQLite as its ORM creates the table, plus migration v2's unique index; PostgreSQL as pg_dump
shows the ORM's table. The refresh never creates this table: only the sample does (and the
tests' world). Keys and indexes are made after the rows are in (one bulk build instead of
millions of index updates); the schema they leave is the same.

Each session gets ``events`` events, ids ascending in time (sessions in order of their first
event, as the loader meets them in Cowrie's daily files): ``cowrie.session.connect``, login
attempts, and ``cowrie.session.closed``. Every event carries ``src_ip``, as in real Cowrie logs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Final

import numpy as np
import polars as pl

from etl.db.database import Database

TABLE: Final = "raw_events"
EVENTS_PER_SESSION: Final = 3
CHUNK_SESSIONS: Final = 100_000  # sessions whose events are built and inserted at once

# -- DDL -------------------------------------------------------------------------------------
# Exactly the text cowrieprocessor's ORM leaves in sqlite_master (tabs, ", " line ends).
SQLITE_TABLE: Final = (
    "CREATE TABLE raw_events (\n"
    "\tid INTEGER NOT NULL, \n"
    "\tingest_id VARCHAR(64), \n"
    "\tingest_at DATETIME DEFAULT CURRENT_TIMESTAMP NOT NULL, \n"
    "\tsource VARCHAR(512) NOT NULL, \n"
    "\tsource_offset BIGINT, \n"
    "\tsource_inode VARCHAR(128), \n"
    "\tsource_generation INTEGER DEFAULT '0' NOT NULL, \n"
    "\tpayload JSON NOT NULL, \n"
    "\tpayload_hash VARCHAR(64), \n"
    "\trisk_score INTEGER, \n"
    "\tquarantined BOOLEAN DEFAULT 0 NOT NULL, \n"
    "\tsession_id VARCHAR(64), \n"
    "\tevent_type VARCHAR(128), \n"
    "\tevent_timestamp DATETIME, \n"
    "\tCONSTRAINT pk_raw_events PRIMARY KEY (id), \n"
    "\tCONSTRAINT uq_raw_events_source_offset UNIQUE "
    "(source, source_inode, source_generation, source_offset)\n"
    ")"
)
SQLITE_INDEXES: Final = (
    "CREATE INDEX ix_raw_events_session_id ON raw_events (session_id)",
    "CREATE INDEX ix_raw_events_ingest_at ON raw_events (ingest_at)",
    "CREATE INDEX ix_raw_events_event_timestamp ON raw_events (event_timestamp)",
    "CREATE INDEX ix_raw_events_event_type ON raw_events (event_type)",
    # migration v2
    "CREATE UNIQUE INDEX uq_raw_events_source_gen ON raw_events"
    "(source, source_inode, source_generation, source_offset)",
)
POSTGRES_TABLE: Final = (
    """CREATE TABLE public.raw_events (
    id integer NOT NULL,
    ingest_id character varying(64),
    ingest_at timestamp with time zone DEFAULT now() NOT NULL,
    source character varying(512) NOT NULL,
    source_offset bigint,
    source_inode character varying(128),
    source_generation integer DEFAULT 0 NOT NULL,
    payload json NOT NULL,
    payload_hash character varying(64),
    risk_score integer,
    quarantined boolean DEFAULT false NOT NULL,
    session_id character varying(64),
    event_type character varying(128),
    event_timestamp timestamp with time zone
)""",
    """CREATE SEQUENCE public.raw_events_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1""",
    "ALTER SEQUENCE public.raw_events_id_seq OWNED BY public.raw_events.id",
    "ALTER TABLE ONLY public.raw_events ALTER COLUMN id "
    "SET DEFAULT nextval('public.raw_events_id_seq'::regclass)",
)
POSTGRES_KEYS: Final = (
    "ALTER TABLE ONLY public.raw_events ADD CONSTRAINT pk_raw_events PRIMARY KEY (id)",
    "ALTER TABLE ONLY public.raw_events ADD CONSTRAINT uq_raw_events_source_offset "
    "UNIQUE (source, source_inode, source_generation, source_offset)",
    "CREATE INDEX ix_raw_events_event_timestamp ON public.raw_events USING btree (event_timestamp)",
    "CREATE INDEX ix_raw_events_event_type ON public.raw_events USING btree (event_type)",
    "CREATE INDEX ix_raw_events_ingest_at ON public.raw_events USING btree (ingest_at)",
    "CREATE INDEX ix_raw_events_session_id ON public.raw_events USING btree (session_id)",
)


def table_statements(dialect: str) -> tuple[str, ...]:
    """The statements that create the table, without its keys and indexes."""
    return (SQLITE_TABLE,) if dialect == "sqlite" else POSTGRES_TABLE


def key_statements(dialect: str) -> tuple[str, ...]:
    """Its keys and indexes (after the rows; on PostgreSQL the id sequence follows the ids)."""
    if dialect == "sqlite":
        return SQLITE_INDEXES
    return (
        *POSTGRES_KEYS,
        "SELECT setval('public.raw_events_id_seq', coalesce(max(id), 0) + 1, false) "
        "FROM public.raw_events",
    )


# -- what the events say ---------------------------------------------------------------------
SENSORS: Final = ("honeypot-a", "honeypot-b", "honeypot-c")
SENSOR_ADDRESSES: Final = ("198.51.100.10", "198.51.100.24", "203.0.113.7")  # dst_ip
USERNAMES: Final = ("root", "admin", "user", "ubnt", "pi", "oracle", "test", "support")
PASSWORDS: Final = ("123456", "password", "admin", "root", "1234", "12345678", "qwerty", "")
LOG_FOLDER: Final = "/var/log/cowrie"
_FIRST_INODE: Final = 2_228_000
_CRON_MINUTES: Final = 5  # the loader runs from cron: a session is stored within minutes
_SUCCESS_SHARE: Final = 0.1  # sessions whose last login attempt succeeds


def log_file(day: pl.Expr) -> pl.Expr:
    """Cowrie's rotated JSON log of a day: the file the loader read a session's events from."""
    return pl.concat_str(pl.lit(f"{LOG_FOLDER}/cowrie.json."), day.dt.strftime("%Y-%m-%d"))


def session_columns(sessions: pl.DataFrame, events: int, rng: np.random.Generator) -> pl.DataFrame:
    """The loader's session_summaries columns for ``events`` events per session: counts,
    ``matcher`` (the sensor), ``source_files`` (JSON list), ``enrichment`` (JSON text
    ``null``, as after ``--skip-enrich``), and the source port of its events (``src_port``,
    dropped before the insert)."""
    logins = max(events - 2, 0)
    sensor = pl.Series(SENSORS).gather(rng.integers(0, len(SENSORS), sessions.height))
    return sessions.with_columns(
        event_count=pl.lit(events, pl.Int64),
        command_count=pl.lit(0, pl.Int64),
        login_attempts=pl.lit(logins, pl.Int64),
        matcher=sensor,
        source_files=pl.concat_str(
            pl.lit('["'), log_file(pl.col("first_event_at").dt.date()), pl.lit('"]')
        ),
        enrichment=pl.lit("null"),
        src_port=pl.Series(rng.integers(1024, 65536, sessions.height)),
    )


def write_raw_events(
    db: Database,
    sessions: pl.DataFrame,
    addresses: Sequence[str],
    events: int,
    rng: np.random.Generator,
    now: datetime,
) -> int:
    """Create ``raw_events`` and store ``events`` events for every session; return how many.

    ``sessions``: session_id, ip (index into ``addresses``, the src_ip as stored),
    first_event_at, last_event_at, matcher, src_port.
    """
    if events < 1:
        raise ValueError(f"a session has at least one event, got {events}")
    db.execute_native(list(table_statements(db.dialect)))
    ordered = _with_sources(sessions.sort("first_event_at", "session_id"), events, now)
    encoded = pl.Series([json.dumps(address) for address in addresses], dtype=pl.String)
    for start in range(0, ordered.height, CHUNK_SESSIONS):
        chunk = ordered.slice(start, CHUNK_SESSIONS)
        frame = event_frame(chunk, start * events + 1, events, encoded, rng)
        if db.dialect == "sqlite":  # a loader run's time, as SQLite's CURRENT_TIMESTAMP writes it
            frame = frame.with_columns(pl.col("ingest_at").dt.strftime("%Y-%m-%d %H:%M:%S"))
        db.append(TABLE, frame)
    db.execute_native(list(key_statements(db.dialect)))
    return ordered.height * events


def _with_sources(sessions: pl.DataFrame, events: int, now: datetime) -> pl.DataFrame:
    """Per session (in time order): its daily log file, the file's inode, the loader run that
    stored it (from cron, minutes after the session ended: its time and id), and the offset of
    its first event in the file."""
    day = pl.col("first_event_at").dt.date()
    cron = f"{_CRON_MINUTES}m"
    frame = sessions.with_row_index("position").with_columns(
        source=log_file(day),
        source_inode=(day.dt.epoch("d") + _FIRST_INODE).cast(pl.String),
        ingest_at=pl.min_horizontal(
            pl.col("last_event_at").dt.truncate(cron).dt.offset_by(cron) + pl.duration(seconds=7),
            pl.lit(now, pl.Datetime("us", "UTC")),
        ),
    )
    first = pl.col("position").min().over("source")
    run = pl.concat_str("source", pl.col("ingest_at").dt.epoch("s").cast(pl.String), separator="@")
    frame = frame.with_columns(offset=(pl.col("position") - first) * events, run=run)
    runs = frame["run"].unique().to_list()
    run_ids = {r: hashlib.md5(r.encode(), usedforsecurity=False).hexdigest() for r in runs}
    return frame.with_columns(ingest_id=pl.col("run").replace_strict(run_ids)).drop("run")


def event_frame(
    sessions: pl.DataFrame,
    first_id: int,
    events: int,
    encoded: pl.Series,
    rng: np.random.Generator,
) -> pl.DataFrame:
    """The raw_events rows of ``sessions`` (`_with_sources` columns), ids from ``first_id``."""
    n = sessions.height
    step = np.tile(np.arange(events), n)
    rows = sessions.select(
        "session_id", "ip", "first_event_at", "last_event_at", "matcher", "src_port",
        "source", "source_inode", "ingest_at", "ingest_id", "offset",
    )[np.repeat(np.arange(n), events)]  # fmt: skip
    closed = (step == events - 1) & (events > 1)
    login = (step > 0) & ~closed
    success = login & (step == events - 2) & (rng.random(step.size) < _SUCCESS_SHARE)
    kind = np.where(
        step == 0,
        "cowrie.session.connect",
        np.where(
            closed,
            "cowrie.session.closed",
            np.where(success, "cowrie.login.success", "cowrie.login.failed"),
        ),
    )
    users = pl.Series([json.dumps(u) for u in USERNAMES]).gather(
        rng.integers(0, len(USERNAMES), step.size)
    )
    words = pl.Series([json.dumps(p) for p in PASSWORDS]).gather(
        rng.integers(0, len(PASSWORDS), step.size)
    )
    first_us = rows["first_event_at"].dt.epoch("us").to_numpy()
    span_us = rows["last_event_at"].dt.epoch("us").to_numpy() - first_us
    moment_us = first_us + span_us * step // max(events - 1, 1)
    frame = rows.with_columns(
        id=pl.Series(np.arange(first_id, first_id + step.size, dtype=np.int64)),
        step=pl.Series(step),
        event_type=pl.Series(kind),
        login=pl.Series(login),
        username=users,
        password=words,
        src_ip=encoded.gather(rows["ip"]),
        dst_ip=pl.col("matcher").replace_strict(dict(zip(SENSORS, SENSOR_ADDRESSES, strict=True))),
        event_timestamp=pl.from_epoch(pl.Series(moment_us), "us").dt.replace_time_zone("UTC"),
    )
    frame = frame.with_columns(payload=_payload())
    hashes = [hashlib.sha256(text.encode()).hexdigest() for text in frame["payload"].to_list()]
    return frame.select(
        "id",
        "ingest_id",
        "ingest_at",
        "source",
        source_offset=pl.col("offset") + pl.col("step"),
        source_inode="source_inode",
        source_generation=pl.lit(0, pl.Int64),
        payload="payload",
        payload_hash=pl.Series(hashes, dtype=pl.String),
        risk_score=pl.lit(0, pl.Int64),
        quarantined=pl.lit(False),
        session_id="session_id",
        event_type="event_type",
        event_timestamp="event_timestamp",
    )


def _payload() -> pl.Expr:
    """A Cowrie event as the loader stores it: JSON text with Python's default separators."""

    def optional(condition: pl.Expr, *parts: str | pl.Expr) -> pl.Expr:
        return pl.when(condition).then(pl.concat_str(parts)).otherwise(pl.lit(""))

    step = pl.col("step")
    return pl.concat_str(
        pl.lit('{"session": "'),
        "session_id",
        pl.lit('", "eventid": "'),
        "event_type",
        optional(step == 0, pl.lit('", "protocol": "ssh')),
        pl.lit('", "sensor": "'),
        "matcher",
        pl.lit('", '),
        optional(
            pl.col("login"),
            pl.lit('"username": '),
            "username",
            pl.lit(', "password": '),
            "password",
            pl.lit(", "),
        ),
        pl.lit('"src_ip": '),
        "src_ip",
        pl.lit(', "src_port": '),
        pl.col("src_port").cast(pl.String),
        pl.lit(', "dst_ip": "'),
        "dst_ip",
        pl.lit('", "timestamp": "'),
        pl.col("event_timestamp").dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ"),
        pl.lit('"}'),
    )
