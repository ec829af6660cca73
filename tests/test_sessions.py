"""Sessions the loader left unlinked (SPEC 2, issue 23): their IPs found through raw events,
linked and their snapshots filled once the IP's row is written, on databases built from
cowrieprocessor's own DDL with rows shaped as its loader writes them."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from etl.core.errors import ReaderStoppedError
from etl.core.vocabulary import Source
from etl.db import reader as reader_module
from etl.db import sessions as sessions_module
from etl.db.database import Database
from etl.db.sessions import SessionLinker, find_sessions
from etl.db.url import parse_database_url
from etl.refresh.config import RefreshConfig
from etl.refresh.pipeline import refresh
from etl.status.collect import status_report
from etl.status.text import render

# Addresses MaxMind's test databases know: (ASN, country)
US_209 = "216.160.83.56"  # AS209, US
SE_29518 = "89.160.20.112"  # AS29518, SE
GB = "81.2.69.142"  # GB, no ASN
KNOWN = "2.125.160.216"  # GB, no ASN; given a fresh row before the run
ROW_TIME = "2026-12-01 10:00:00.000000"
KEPT = ("session_id", "source_ip", "snapshot_asn", "snapshot_country", "enrichment_at")


class Target:
    """A compat database of one dialect, with the loader's kind of rows."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.dialect = parse_database_url(url).dialect
        self.next_id = 0

    @contextmanager
    def connection(self) -> Iterator[Any]:
        if self.dialect == "sqlite":
            con = sqlite3.connect(self.url.removeprefix("sqlite:///"), isolation_level=None)
            try:
                yield con
            finally:
                con.close()
        else:
            import psycopg

            with psycopg.connect(self.url, autocommit=True) as con:
                yield con

    def run(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self.dialect == "postgres":
            sql = sql.replace("?", "%s")
        with self.connection() as con:
            cursor = con.execute(sql, params)
            return list(cursor.fetchall()) if cursor.description else []

    def event(self, session: str | None, payload: dict[str, Any] | str, named: str) -> None:
        """A raw event as the loader writes it (``session``: raw_events.session_id)."""
        self.next_id += 1
        text = payload if isinstance(payload, str) else json.dumps(payload)
        self.run(
            "INSERT INTO raw_events (id, source, source_offset, payload, session_id, event_type, "
            "event_timestamp) VALUES (?, 'cowrie.json', ?, ?, ?, 'cowrie.session.connect', ?)",
            (self.next_id, self.next_id, text, session, "2026-11-20 10:00:00"),
        )
        del named

    def session(
        self, session: str, day: int, source_ip: str | None = None, **snapshots: Any
    ) -> None:
        columns = ["session_id", "source_ip", "first_event_at", "last_event_at", "enrichment"]
        values: list[Any] = [
            session, source_ip, f"2026-11-{day:02d} 10:00:00", f"2026-11-{day:02d} 10:05:00", "null",
        ]  # fmt: skip
        columns += list(snapshots)
        values += list(snapshots.values())
        marks = ", ".join("?" * len(values))
        self.run(
            f"INSERT INTO session_summaries ({', '.join(columns)}) VALUES ({marks})", tuple(values)
        )

    def sessions(self) -> dict[str, tuple[Any, ...]]:
        rows = self.run(f"SELECT {', '.join(KEPT)} FROM session_summaries")
        return {str(row[0]): tuple(None if v is None else str(v) for v in row[1:]) for row in rows}

    def digest(self) -> str:
        """Every column of session_summaries but the four the link may fill, and every
        raw event."""
        with self.connection() as con:
            if self.dialect == "sqlite":
                names = [r[1] for r in con.execute("PRAGMA table_info(session_summaries)")]
            else:
                names = [r[0] for r in con.execute(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_name = 'session_summaries' ORDER BY ordinal_position").fetchall()]  # fmt: skip
            other = [n for n in names if n not in KEPT[1:]]
            rows = con.execute(
                f"SELECT {', '.join(other)} FROM session_summaries ORDER BY session_id"
            ).fetchall()
            events = con.execute("SELECT * FROM raw_events ORDER BY id").fetchall()
        return hashlib.sha256(repr((rows, events)).encode()).hexdigest()


@pytest.fixture(params=["sqlite", "postgres"])
def target(request: pytest.FixtureRequest, shared: Path) -> Target:
    """A database from cowrieprocessor's DDL, raw_events included, in WAL mode for SQLite."""
    if request.param == "sqlite":
        path = request.getfixturevalue("compat_sqlite")
        con = sqlite3.connect(path)
        con.execute("PRAGMA journal_mode = WAL")
        con.close()
        return Target(f"sqlite:///{path}")
    url = request.getfixturevalue("compat_pg")
    import psycopg

    with psycopg.connect(url, autocommit=True) as con:
        con.execute((shared / "compat" / "cowrieprocessor-postgres-raw_events.sql").read_text())  # type: ignore[arg-type]
    return Target(url)


def config(url: str, mmdb: dict[str, Path], **more: Any) -> RefreshConfig:
    return RefreshConfig(
        db_url=url, maxmind_asn=mmdb["asn"], maxmind_city=mmdb["city"],
        skip=frozenset({Source.CYMRU, Source.GREYNOISE}), **more,
    )  # fmt: skip


def fill_world(db: Target) -> None:
    """Sessions in every shape the loader leaves, and one row made after their load."""
    fresh = json.dumps({"maxmind": {"country": "gb", "asn": None, "status": "not_found",
                                    "cached_at": "2026-12-05T00:00:00+00:00",
                                    "db_build_epoch": 4102444800}})  # fmt: skip
    db.run(
        "INSERT INTO asn_inventory (asn_number, first_seen, last_seen, enrichment, created_at, "
        "updated_at) VALUES (64500, ?, ?, '{}', ?, ?)",
        (ROW_TIME,) * 4,
    )
    db.run(
        "INSERT INTO ip_inventory (ip_address, current_asn, first_seen, last_seen, session_count, "
        "enrichment, enrichment_updated_at, created_at, updated_at) "
        "VALUES (?, 64500, ?, ?, 3, ?, ?, ?, ?)",
        (KNOWN, ROW_TIME, ROW_TIME, fresh, ROW_TIME, ROW_TIME, ROW_TIME),
    )
    # s1: the first event has no src_ip; the lowest-id one that has one decides.
    db.session("s1", 10)
    db.event("s1", {"session": "s1", "eventid": "cowrie.client.version"}, "no address")
    db.event("s1", {"session": "s1", "src_ip": US_209}, "canonical")
    db.event("s1", {"session": "s1", "src_ip": SE_29518}, "later")
    # s2: loaded before raw_events.session_id existed: the session is only in the payload.
    db.session("s2", 12)
    db.event(None, {"session": "s2", "src_ip": SE_29518}, "legacy")
    # s3: no address in any event.
    db.session("s3", 13)
    db.event("s3", {"session": "s3", "eventid": "cowrie.command.input"}, "no address")
    # s4: the same IP as s1, later.
    db.session("s4", 20)
    db.event("s4", {"session": "s4", "src_ip": US_209}, "canonical")
    # s5: an IP whose row was made after the load: linked without asking anyone.
    db.session("s5", 14)
    db.event("s5", {"session": "s5", "src_ip": KNOWN}, "canonical")
    # s6: linked by the loader, one snapshot set already: never overwritten.
    db.session("s6", 15, KNOWN, snapshot_country="FR")
    db.event("s6", {"session": "s6", "src_ip": KNOWN}, "canonical")
    # s7: a string that is no address gets a validation row, and its session is linked.
    db.session("s7", 16)
    db.event("s7", {"session": "s7", "src_ip": "999.1.1.1"}, "invalid")
    # s8: a GB address with no ASN in MaxMind.
    db.session("s8", 17)
    db.event("s8", {"session": "s8", "src_ip": GB}, "canonical")


def test_unlinked_sessions_are_found_linked_and_filled(
    target: Target, mmdb: dict[str, Path]
) -> None:
    fill_world(target)
    before = target.digest()
    summary = refresh(config(target.url, mmdb))
    assert summary.exit_code == 0
    # The IPs of s1/s4, s2, s7, s8: new; KNOWN's row is fresh and not selected.
    assert summary.new_ips == summary.raw_event_ips == 4
    assert summary.sessions_to_link == 6 and summary.sessions_without_address == 1
    assert summary.sessions_linked == 6
    sessions = target.sessions()
    assert {s: row[0] for s, row in sessions.items()} == {
        "s1": US_209, "s2": SE_29518, "s3": None, "s4": US_209, "s5": KNOWN, "s6": KNOWN,
        "s7": "999.1.1.1", "s8": GB,
    }  # fmt: skip
    rows = {
        str(ip): (asn, str(updated) if updated else None, count, str(first)[:10], str(last)[:16])
        for ip, asn, updated, count, first, last in target.run(
            "SELECT ip_address, current_asn, enrichment_updated_at, session_count, first_seen, "
            "last_seen FROM ip_inventory"
        )
    }
    # New rows: first_seen, last_seen and session_count from all their sessions.
    assert rows[US_209][2:] == (2, "2026-11-10", "2026-11-20 10:05")
    assert rows[SE_29518][2] == 1 and rows["999.1.1.1"][2] == 1
    assert rows[KNOWN][1] is not None and rows[KNOWN][1].startswith("2026-12-01")  # untouched
    # Snapshots: current_asn, the upper-cased country, enrichment_updated_at; only where NULL.
    s1, s5, s6, s7, s8 = (sessions[s] for s in ("s1", "s5", "s6", "s7", "s8"))
    assert s1[1:3] == ("209", "US") and s1[3] == rows[US_209][1]
    assert s5[1:4] == ("64500", "GB", rows[KNOWN][1])
    assert s6[1:4] == ("64500", "FR", rows[KNOWN][1])  # FR was set: kept
    assert s7[1:4] == (None, None, None)  # a validation row: nothing to copy
    assert s8[1:3] == (None, "GB")
    assert sessions["s3"] == (None, None, None, None)
    assert summary.snapshots_filled == 6  # s1, s2, s4, s5, s6, s8
    assert target.digest() == before  # no other column, no raw event changed
    assert target.run("SELECT session_id, last_event_id FROM etl_session_checks") == [("s3", 5)]

    again = refresh(config(target.url, mmdb))
    assert (again.selected, again.sessions_linked, again.snapshots_filled) == (0, 0, 0)
    assert again.sessions_without_address == 0  # s3 is not read again
    # A new event of s3 that names an address: found on the next run.
    target.event("s3", {"session": "s3", "src_ip": GB}, "late")
    with Database(parse_database_url(target.url)) as db:
        found = find_sessions(db)
    assert found.to_link().rows() == [("s3", GB)] and found.unresolved.height == 0


def test_a_dry_run_counts_what_raw_events_give_and_writes_nothing(
    target: Target, mmdb: dict[str, Path]
) -> None:
    fill_world(target)
    before = (target.digest(), target.sessions())
    summary = refresh(config(target.url, mmdb, dry_run=True))
    assert summary.raw_event_ips == 4 and summary.sessions_to_link == 6
    assert summary.sessions_linked == 0
    assert (target.digest(), target.sessions()) == before
    assert not target.run("SELECT 1 FROM ip_inventory WHERE ip_address <> ?", (KNOWN,))
    assert "would link them" in summary.table()


def test_only_the_asked_for_ips_are_linked(target: Target, mmdb: dict[str, Path]) -> None:
    fill_world(target)
    summary = refresh(config(target.url, mmdb, only_ips=(SE_29518,)))
    assert summary.selected == 1 and summary.sessions_linked == 1
    linked = {s for s, row in target.sessions().items() if row[0] is not None}
    assert linked == {"s2", "s6"}


def test_sessions_without_raw_events_table_stay_and_say_so(
    tmp_path: Path, mmdb: dict[str, Path], compat_sqlite: Path
) -> None:
    con = sqlite3.connect(compat_sqlite)
    con.execute("DROP TABLE raw_events")
    con.execute(
        "INSERT INTO session_summaries (session_id, first_event_at, last_event_at) "
        "VALUES ('x', '2026-11-01 00:00:00', '2026-11-01 00:01:00')"
    )
    con.commit()
    con.close()
    summary = refresh(config(f"sqlite:///{compat_sqlite}", mmdb))
    assert summary.selected == 0
    assert any("no raw_events table" in note for note in summary.notes)


COUNTRY = st.one_of(
    st.none(),
    st.sampled_from(["gb", "US", "XX", "xx", "", "USA", "u1", " de", "Fr"]),
    st.text(alphabet="abcXYZ 1", max_size=3),
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.tuples(COUNTRY, COUNTRY, COUNTRY, st.booleans()), min_size=1, max_size=8))
def test_the_snapshot_country_follows_the_loaders_rule(
    compat_sqlite: Path, countries: list[tuple[str | None, str | None, str | None, bool]]
) -> None:
    """upper(coalesce(maxmind.country, cymru.country, dshield.ip.ascountry)) where that is a
    two-letter code other than the 'XX' fallback, else NULL; a set value is never changed."""
    con = sqlite3.connect(compat_sqlite, isolation_level=None)
    con.execute("DELETE FROM session_summaries")
    con.execute("DELETE FROM ip_inventory")
    expected = {}
    for n, (maxmind, cymru, dshield, preset) in enumerate(countries):
        ip = f"192.0.2.{n}"
        blocks: dict[str, Any] = {"maxmind": {"country": maxmind}, "cymru": {"country": cymru},
                                  "dshield": {"ip": {"ascountry": dshield}}}  # fmt: skip
        con.execute(
            "INSERT INTO ip_inventory (ip_address, first_seen, last_seen, enrichment, "
            "enrichment_updated_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (ip, ROW_TIME, ROW_TIME, json.dumps(blocks), ROW_TIME, ROW_TIME, ROW_TIME),
        )
        con.execute(
            "INSERT INTO session_summaries (session_id, source_ip, snapshot_country) "
            "VALUES (?, ?, ?)",
            (f"s{n}", ip, "NL" if preset else None),
        )
        first = next((c for c in (maxmind, cymru, dshield) if c is not None), None)
        code = first.upper() if first is not None else None
        valid = code is not None and len(code) == 2 and code.isalpha() and code.isascii()
        expected[f"s{n}"] = "NL" if preset else (code if valid and code != "XX" else None)
    con.close()
    with Database(parse_database_url(f"sqlite:///{compat_sqlite}")) as db:
        empty = pl.DataFrame(schema={"session_id": pl.String, "ip": pl.String})
        linker = SessionLinker(db, empty)
        linker.link(pl.Series([f"192.0.2.{n}" for n in range(len(countries))]))
        counts = linker.counts()
        linker.close()
        rows = db.query_native("SELECT session_id, snapshot_country FROM session_summaries")
    assert dict(rows) == expected
    assert counts["filled"] == len(countries)  # every session gets enrichment_at at least


def test_status_counts_the_sessions_left_unlinked(target: Target, mmdb: dict[str, Path]) -> None:
    fill_world(target)
    settings = config(target.url, mmdb)
    report = status_report(settings)
    counts = (report.unlinked_sessions, report.unlinked_ips, report.sessions_without_address)
    assert counts == (6, 4, 1) and report.session_only_ips == 4
    assert "6 sessions not linked to their IP yet (4 IPs new, not yet enriched)" in render(report)
    refresh(settings)
    report = status_report(settings)
    counts = (report.unlinked_sessions, report.unlinked_ips, report.sessions_without_address)
    assert counts == (0, 0, 1) and report.session_only_ips == 0


def test_an_ip_with_many_sessions_is_linked_in_short_transactions(
    target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Transactions are cut by sessions, not by IP: a scanner's many sessions never make one
    long write (the loader waits 5 s for the lock)."""
    monkeypatch.setattr(sessions_module, "LINK_BATCH_SESSIONS", 3)
    fill_world(target)
    for n in range(8):
        target.session(f"heavy{n}", 21)
        target.event(f"heavy{n}", {"session": f"heavy{n}", "src_ip": KNOWN}, "canonical")
    with Database(parse_database_url(target.url)) as db:
        found = find_sessions(db)
        writes: list[int] = []
        original = db.write

        def counted(loads: Any, statements: Any, params: Any = None, action: str = "") -> None:
            writes.extend(frame.height for _, frame in loads)
            original(loads, statements, params, action)

        monkeypatch.setattr(db, "write", counted)
        linker = SessionLinker(db, found.to_link())
        linker.link(pl.Series([KNOWN, GB]))  # GB has no row: nothing of it is linked
        counts = linker.counts()
        linker.close()
    assert counts["linked"] == 9  # s5 and the 8 heavy sessions
    assert max(writes) <= 3 + 2  # 3 sessions, and the marks of the two IPs
    linked = {s for s, row in target.sessions().items() if row[0] == KNOWN}
    assert linked == {"s5", "s6", *(f"heavy{n}" for n in range(8))}


def test_status_counts_an_address_found_later_once(target: Target, mmdb: dict[str, Path]) -> None:
    fill_world(target)
    settings = config(target.url, mmdb)
    refresh(settings)
    target.event("s3", {"session": "s3", "src_ip": GB}, "late")
    report = status_report(settings)
    assert (report.unlinked_sessions, report.sessions_without_address) == (1, 0)


def test_a_reader_process_that_ended_is_started_again_one_that_ends_in_a_query_is_an_error(
    sample_world: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "h.sqlite"
    path.write_bytes(sample_world[0].read_bytes())
    with Database(parse_database_url(f"sqlite:///{path}"), lock_timeout=60) as db:
        assert db.query_frame("SELECT count(*) AS n FROM db.main.ip_inventory").item() > 0
        reader = db.backend._reader  # type: ignore[attr-defined]
        os.kill(reader._process.pid, signal.SIGKILL)
        reader._process.wait()
        assert db.query_frame("SELECT 1 AS one").item() == 1  # a new child
        monkeypatch.setattr(reader_module, "_read_block", _ended)
        started = time.monotonic()
        with pytest.raises(ReaderStoppedError, match=r"ended .* during a query"):
            db.query_frame("SELECT 1 AS one")
        assert time.monotonic() - started < 10  # not retried for the lock timeout


def _ended(stream: Any) -> bytes:
    raise EOFError("the reader process closed its output")


def test_raw_events_from_before_their_session_id_column(
    compat_sqlite: Path, mmdb: dict[str, Path]
) -> None:
    """Every session is found through ``payload.session``; one without an address is not
    read again."""
    target = Target(f"sqlite:///{compat_sqlite}")
    fill_world(target)
    target.run("DROP INDEX ix_raw_events_session_id")
    target.run("ALTER TABLE raw_events DROP COLUMN session_id")
    summary = refresh(config(target.url, mmdb))
    assert (summary.sessions_linked, summary.sessions_without_address) == (6, 1)
    assert target.sessions()["s1"][0] == US_209  # the lowest id with an address decides
    again = refresh(config(target.url, mmdb))
    assert (again.selected, again.sessions_linked, again.sessions_without_address) == (0, 0, 0)
