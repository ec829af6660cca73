"""Discovery of unlinked sessions (issue 23, item 4): its cost follows the unlinked sessions,
not the history.

1. The select phase (sessions found through raw events, then the stale selection) with 2,000
   unlinked sessions (200 new IPs) among 20,000 linked ones (about 200,000 raw events), and
   among 200,000 linked ones (about 2,000,000 raw events); the same 2,000 inventory rows in
   both. Target: the second at most 2x the first plus 0.5 s, and the bytes read must not grow
   with raw_events. SQLite: bytes read by our process and its reader child (``rchar``: every
   byte read() returned, page cache or not). PostgreSQL: the server's buffer reads for the
   database (``pg_stat_database`` blks_hit + blks_read, 8 KiB each).
2. A database migrated from an older loader: 1,000,000 sessions (100,000 IPs, 3 raw events
   each), all unlinked, discovered and linked in one refresh (MaxMind only: the other
   sources' cost is the other benchmarks'); the whole process's time and peak memory.

Usage: python bench/discovery.py [select] [migrated] [sqlite|postgres ...]
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from etl.core.freshness import Freshness  # noqa: E402
from etl.core.vocabulary import SOURCES  # noqa: E402
from etl.db.database import Database  # noqa: E402
from etl.db.select import SelectionRules, select_stale  # noqa: E402
from etl.db.sessions import find_sessions  # noqa: E402
from etl.db.url import parse_database_url  # noqa: E402
from testbed.sample.raw_events import key_statements, table_statements  # noqa: E402
from testbed.sample.scratch import scratch_database  # noqa: E402

INVENTORY = 2_000
UNLINKED = 2_000
NEW_IPS = 200
EVENTS_LINKED = 9  # per linked session: 20,000 x 9 + 2,000 x 10 = 200,000 events
EVENTS_UNLINKED = 10
NOW = datetime(2026, 12, 1, tzinfo=UTC)


def _ip(n: int, base: int) -> str:
    value = base + n
    return f"{value >> 24 & 255}.{value >> 16 & 255}.{value >> 8 & 255}.{value & 255}"


def _rows(
    linked: int, unlinked: int, ips: int, new_ips: int, per_linked: int, per_unlinked: int
) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]], list[str], list[str]]:
    """Sessions (id, source_ip, first, last) and raw events (id, session_id, payload,
    event_type, event_timestamp) as the loader writes them; the known and the new IPs."""
    rng = np.random.default_rng(7)
    known = [_ip(n, 0x2D000000) for n in range(ips)]
    new = [_ip(n, 0x5B000000) for n in range(new_ips)]
    sessions: list[tuple[object, ...]] = []
    events: list[tuple[object, ...]] = []
    owners = rng.integers(0, ips, linked)
    event_id = 0
    for n in range(linked + unlinked):
        is_linked = n < linked
        ip = known[owners[n]] if is_linked else new[n % new_ips]
        session = f"{n:012x}"
        start = NOW.timestamp() - float(rng.uniform(0, 90 * 86400))
        first = datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        last = datetime.fromtimestamp(start + 40, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        sessions.append((session, ip if is_linked else None, first, last))
        for k in range(per_linked if is_linked else per_unlinked):
            event_id += 1
            kind = "cowrie.session.connect" if k == 0 else "cowrie.login.failed"
            payload = json.dumps({"session": session, "eventid": kind, "src_ip": ip,
                                  "sensor": "honeypot-a", "timestamp": first})  # fmt: skip
            events.append((event_id, "cowrie.json", session, payload, kind, first))
    return sessions, events, known, new


def build(
    url: str, linked: int, unlinked: int, ips: int, new_ips: int, per: tuple[int, int]
) -> int:
    """A cowrieprocessor database (tiers, raw_events) with these sessions and events; returns
    the number of raw events."""
    sessions, events, known, _ = _rows(linked, unlinked, ips, new_ips, *per)
    dialect = parse_database_url(url).dialect
    if dialect == "sqlite":
        path = url.removeprefix("sqlite:///")
        con = sqlite3.connect(path)
        con.execute("PRAGMA journal_mode = WAL")
        con.close()
    with Database(parse_database_url(url), create=True) as db:
        db.ensure_schema()
    stamp = NOW.strftime("%Y-%m-%d %H:%M:%S.%f")
    inventory = [(ip, stamp, stamp, 1, "{}", stamp, stamp) for ip in known]
    inserts: dict[str, tuple[str, list[Any]]] = {
        "ip_inventory": ("INSERT INTO ip_inventory (ip_address, first_seen, last_seen, "
                         "session_count, enrichment, created_at, updated_at) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?)", inventory),
        "session_summaries": ("INSERT INTO session_summaries (session_id, source_ip, "
                              "first_event_at, last_event_at) VALUES (?, ?, ?, ?)", sessions),
        "raw_events": ("INSERT INTO raw_events (id, source, session_id, payload, event_type, "
                       "event_timestamp) VALUES (?, ?, ?, ?, ?, ?)", events),
    }  # fmt: skip
    if dialect == "sqlite":
        con = sqlite3.connect(path)
        for statement in table_statements("sqlite"):
            con.execute(statement)
        for sql, rows in inserts.values():
            con.executemany(sql, rows)
        for statement in key_statements("sqlite"):
            con.execute(statement)
        con.commit()
        con.close()
        return len(events)
    import psycopg

    with psycopg.connect(url, autocommit=True) as pg:
        for statement in table_statements("postgres"):
            pg.execute(statement)
        for table, (sql, rows) in inserts.items():
            columns = sql.split("(", 1)[1].split(")", 1)[0]
            with pg.cursor().copy(f"COPY public.{table} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        for statement in key_statements("postgres"):
            pg.execute(statement)
        pg.execute("ANALYZE")
    return len(events)


def _rchar(pid: int | str) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    return 0


def _children() -> list[str]:
    found = []
    for task in Path("/proc/self/task").iterdir():
        found += (task / "children").read_text().split()
    return found


def _pg_blocks(url: str) -> int:
    import psycopg

    time.sleep(1.2)  # the server reports a backend's counters within a second
    with psycopg.connect(url, autocommit=True) as con:
        row = con.execute(
            "SELECT blks_hit + blks_read FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    return int(row[0]) if row else 0


def select_phase(url: str) -> tuple[float, int, int]:
    """Seconds of discovery and selection (best of 3), the bytes read, the IPs selected."""
    rules = SelectionRules(NOW, Freshness(), frozenset(SOURCES))
    best, read, selected = float("inf"), 0, 0
    dialect = parse_database_url(url).dialect
    for _ in range(3):
        with Database(parse_database_url(url)) as db:
            db.query_native("SELECT 1")
            time.sleep(0.8)  # the reader child has started
            before = _rchar("self") + sum(_rchar(p) for p in _children())
            blocks = _pg_blocks(url) if dialect == "postgres" else 0
            started = time.perf_counter()
            found = find_sessions(db)
            frame = select_stale(db, rules, found)
            seconds = time.perf_counter() - started
            after = _rchar("self") + sum(_rchar(p) for p in _children())
            pg_read = (_pg_blocks(url) - blocks) * 8192 if dialect == "postgres" else 0
            read = pg_read or after - before
            best, selected = min(best, seconds), frame.height
    return best, read, selected


@contextmanager
def database(dialect: str, folder: Path, name: str) -> Iterator[str]:
    if dialect == "sqlite":
        yield f"sqlite:///{folder / f'{name}.sqlite'}"
        return
    with scratch_database(f"etl_disc_{name}") as url:
        yield url


def bench_select(dialect: str, folder: Path) -> None:
    print(f"\nselect phase, {dialect}: {UNLINKED:,} unlinked sessions ({NEW_IPS} new IPs), "
          f"{INVENTORY:,} inventory rows")  # fmt: skip
    print(f"{'linked sessions':>16} {'raw events':>11} {'select s':>9} {'MB read':>8} {'IPs':>6}")
    results = []
    for linked in (20_000, 200_000):
        with database(dialect, folder, f"select{linked}") as url:
            events = build(
                url, linked, UNLINKED, INVENTORY, NEW_IPS, (EVENTS_LINKED, EVENTS_UNLINKED)
            )
            os.sync()
            seconds, read, selected = select_phase(url)
        results.append((seconds, read))
        print(f"{linked:>16,} {events:>11,} {seconds:>9.2f} {read / 1e6:>8.1f} {selected:>6,}",
              flush=True)  # fmt: skip
    (small, small_read), (large, large_read) = results
    limit = 2 * small + 0.5
    verdict = "ok" if large <= limit else "MISSED"
    growth = large_read / max(small_read, 1)
    print(f"large / small: {large:.2f} s against <= 2 x {small:.2f} + 0.5 = {limit:.2f} s "
          f"{verdict}; bytes read x{growth:.1f} for x10 raw events")  # fmt: skip


def bench_migrated(dialect: str, folder: Path) -> None:
    sessions, ips = 1_000_000, 100_000
    print(f"\nmigrated database, {dialect}: {sessions:,} sessions of {ips:,} IPs, all unlinked, "
          "3 raw events each; one refresh (MaxMind only)")  # fmt: skip
    mm = folder / "mm"
    if not mm.exists():
        scratch = f"sqlite:///{folder / 'mm.sqlite'}"
        command = [sys.executable, "-m", "testbed.sample", "--db", scratch, "--ips", "10",
                   "--maxmind-dir", str(mm)]  # fmt: skip
        subprocess.run(command, check=True, capture_output=True, cwd=ROOT)
    with database(dialect, folder, "migrated") as url:
        started = time.perf_counter()
        events = build(url, 0, sessions, 1, ips, (0, 3))
        print(f"built in {time.perf_counter() - started:.0f} s: {events:,} raw events", flush=True)
        os.sync()
        log = folder / f"migrated-{dialect}.log"
        command = [sys.executable, "-m", "etl.refresh", "--db", url, "--maxmind-dir", str(mm),
                   "--skip", "cymru", "--skip", "greynoise", "--config", os.devnull]  # fmt: skip
        with log.open("w") as out:
            started = time.perf_counter()
            process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=out)
            _, status, usage = os.wait4(process.pid, 0)
            seconds = time.perf_counter() - started
        if os.waitstatus_to_exitcode(status):
            raise SystemExit(log.read_text()[-2000:])
        lines = log.read_text().splitlines()
        shown = [
            line for line in lines if line.startswith(("sessions:", "phases:", "selected", "wrote"))
        ]
        print(f"refresh: {seconds:.1f} s, peak memory {usage.ru_maxrss / 1024:.0f} MB")
        for line in shown:
            print(f"  {line}")


def main() -> None:
    args = sys.argv[1:]
    parts = [a for a in args if a in ("select", "migrated")] or ["select", "migrated"]
    dialects = [a for a in args if a in ("sqlite", "postgres")] or ["sqlite", "postgres"]
    with tempfile.TemporaryDirectory() as tmp:
        for dialect in dialects:
            if "select" in parts:
                bench_select(dialect, Path(tmp))
            if "migrated" in parts:
                bench_migrated(dialect, Path(tmp))


if __name__ == "__main__":
    main()
