"""The order of a selection: chosen by priority, returned in storage order."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from etl.core.freshness import Freshness
from etl.db.database import Database
from etl.db.select import SelectionRules, freshness_counts, select_stale
from etl.db.url import parse_database_url

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
FRESH = '{"maxmind": {"status": "ok", "cached_at": "2026-11-27T00:00:00+00:00"}}'
STALE = '{"maxmind": {"status": "ok", "cached_at": "2026-10-01T00:00:00+00:00"}}'
# (ip, last_seen, enriched at, enrichment), in the order the rows are inserted (stored).
ROWS = [
    ("198.51.100.9", "2026-11-01 00:00:00.000000", "2026-10-01 00:00:00.000000", STALE),
    ("192.0.2.200", "2026-11-20 00:00:00.000000", None, "{}"),
    ("203.0.113.5", "2026-11-25 00:00:00.000000", "2026-10-01 00:00:00.000000", STALE),
    ("198.51.100.1", "2026-11-26 00:00:00.000000", "2026-11-27 00:00:00.000000", FRESH),
    ("192.0.2.7", "2026-11-10 00:00:00.000000", "2026-10-01 00:00:00.000000", STALE),
]
NEW_IP = "203.0.113.77"  # has a session, no inventory row


def literal(text: str | None) -> str:
    return "NULL" if text is None else f"'{text}'"


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(parse_database_url(f"sqlite:///{tmp_path / 's.sqlite'}"), create=True)
    database.ensure_schema()
    database.execute_native(
        [
            "INSERT INTO ip_inventory (ip_address, first_seen, last_seen, enrichment, "
            f"enrichment_updated_at) VALUES ('{ip}', '{seen}', '{seen}', '{enrichment}', "
            f"{literal(enriched)})"
            for ip, seen, enriched, enrichment in ROWS
        ]
        + [
            "INSERT INTO session_summaries (session_id, source_ip, first_event_at, last_event_at)"
            f" VALUES ('s1', '{NEW_IP}', '2026-11-27 00:00:00', '2026-11-27 01:00:00')"
        ]
    )
    yield database
    database.close()


def rules(max_ips: int | None = None) -> SelectionRules:
    return SelectionRules(
        now=NOW, freshness=Freshness(), asked=frozenset({"maxmind"}), max_ips=max_ips,
    )  # fmt: skip


def test_selection_comes_back_new_ips_first_then_in_storage_order(db: Database) -> None:
    frame = select_stale(db, rules())
    stale = [ip for ip, _seen, _at, enrichment in ROWS if enrichment != FRESH]
    assert frame["ip"].to_list() == [NEW_IP, *stale]


def test_ips_limit_chooses_by_priority_whatever_the_storage_order(db: Database) -> None:
    # never enriched (the new IP, then 192.0.2.200), then the most recently seen stale row
    frame = select_stale(db, rules(max_ips=3))
    assert frame["ip"].to_list() == [NEW_IP, "192.0.2.200", "203.0.113.5"]
    frame = select_stale(db, rules(max_ips=4))
    assert frame["ip"].to_list() == [NEW_IP, "192.0.2.200", "203.0.113.5", "192.0.2.7"]


def test_freshness_counts_follow_the_selection(sample_world: tuple[Path, Path]) -> None:
    """Never asked, error and stale are what a run selects, source by source (Cymru: among
    the IPs with no MaxMind ASN); every IP is counted once per source."""
    path, _ = sample_world
    now = datetime.now(UTC)
    with Database(parse_database_url(f"sqlite:///{path}"), read_only=True) as db:
        counts = freshness_counts(db, only(now, "maxmind", "cymru", "greynoise"))
        new_ips = int(select_stale(db, only(now, "maxmind"))["is_new"].sum())
        for source in ("maxmind", "cymru", "greynoise"):
            mine = counts.filter(pl.col("source") == source)
            due = mine.filter(pl.col("state").is_in(["never", "error", "stale"]))["ips"].sum()
            selected = int(select_stale(db, only(now, source))[f"stale_{source}"].sum())
            assert due == selected if source != "cymru" else 0 < due <= selected
        inventory = db.query_native("SELECT count(*) FROM ip_inventory")[0][0]
    per_source = counts.group_by("source").agg(pl.col("ips").sum())
    assert dict(per_source.iter_rows()) == {
        "maxmind": inventory
        + new_ips
        - counts.filter(pl.col("source") == "inventory")["ips"].sum(),
        **{
            s: dict(per_source.iter_rows())["maxmind"]
            for s in ("cymru", "greynoise", "classification")
        },
        "inventory": counts.filter(pl.col("source") == "inventory")["ips"].sum(),
    }
    fresh = counts.filter(pl.col("state") == "fresh")
    assert fresh.height and fresh["stale_on"].null_count() == 0
    assert fresh["stale_on"].min() >= now.date()


def only(now: datetime, *sources: str) -> SelectionRules:
    return SelectionRules(now=now, freshness=Freshness(), asked=frozenset(sources))
