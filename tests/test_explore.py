"""The notebook's numbers (`etl.status.explore`, `etl.db.inventory`): coverage among the IPs
that need each source, the forecast over each TTL, errors by reason, runs over time, top ASNs
and countries with full names, GreyNoise classes with not-observed kept apart."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
from hypothesis import given
from hypothesis import strategies as st

from etl.core.freshness import Freshness
from etl.db import runlog
from etl.db.database import Database
from etl.db.inventory import ASN_NAMES_SCHEMA, IP_DETAILS_SCHEMA
from etl.db.url import parse_database_url
from etl.refresh.config import RefreshConfig
from etl.status import explore
from testbed.sample.build import build_sample

NOW = datetime(2031, 3, 14, 12, 0, tzinfo=UTC)


def block(age: timedelta, status: str = "ok", **fields: Any) -> dict[str, Any]:
    return {"status": status, "cached_at": (NOW - age).isoformat(), **fields}


HOUR, DAY = timedelta(hours=1), timedelta(days=1)
# ip -> (sessions, current_asn, enrichment)
ROWS: dict[str, tuple[int, int | None, Any]] = {
    "198.51.100.1": (
        50,
        64500,
        {
            "maxmind": block(
                HOUR, asn=64500, asn_org="EXAMPLE-NET", country="TR", country_name="Türkiye"
            ),
            "greynoise": block(HOUR, classification="malicious", name="scanner"),
        },
    ),
    "198.51.100.2": (
        30,
        64500,
        {
            "maxmind": block(
                8 * DAY, asn=64500, asn_org="EXAMPLE-NET", country="TR", country_name="Türkiye"
            ),
            "greynoise": block(2 * DAY, classification="unknown"),
        },
    ),
    "198.51.100.3": (
        20,
        64501,
        {  # MaxMind has no ASN: Cymru's; its country only from Cymru
            "maxmind": block(HOUR, asn=None, country=None),
            "cymru": block(3 * DAY, asn=64501, asn_org="OTHER-AS", country="TR"),
            "greynoise": block(HOUR, "not_found", classification="unknown"),
        },
    ),
    "198.51.100.4": (9, None, {"greynoise": block(HOUR, "error", error="HTTP 503")}),
    "198.51.100.5": (
        7,
        64502,
        {
            "maxmind": block(HOUR, asn=None, country="ZZ"),  # a code MaxMind gives no name for
            "cymru": block(HOUR, "error", error="no answer line"),
            "greynoise": block(HOUR, "error"),  # written before reasons were kept
        },
    ),
    "198.51.100.6": (  # a Cymru error from before MaxMind had its ASN: not needed any more
        5,
        64500,
        {
            "maxmind": block(HOUR, asn=64500, country="TR", country_name="Türkiye"),
            "cymru": block(2 * DAY, "error", error="no answer line"),
            "greynoise": block(HOUR, classification="benign"),
        },
    ),
    "198.51.100.7": (3, None, [1, 2]),  # not a JSON object: the refresh leaves the row alone
    "2001:db8::1": (4, None, {"greynoise": block(HOUR, "skipped")}),
    "10.0.0.1": (500, 64500, {"validation": {"is_bogon": True, "reason": "private"}}),
}


def crafted(url: str) -> None:
    with Database(parse_database_url(url), create=True) as db:
        db.ensure_schema()
        # current_asn must name an asn_inventory row on PostgreSQL (a foreign key); 64501 and
        # 64502 have one without a name, as cowrieprocessor leaves them
        db.execute_native([
            "INSERT INTO asn_inventory (asn_number, organization_name, organization_country, "
            f"rir_registry, first_seen, last_seen) VALUES ({number}, {name}, NULL, NULL, "
            "'2031-01-01 00:00:00', '2031-01-01 00:00:00')"
            for number, name in ((64500, "'EXAMPLE-NET Example Ltd, TR'"), (64501, "NULL"),
                                 (64502, "NULL"))
        ] + [
            "INSERT INTO ip_inventory (ip_address, current_asn, session_count, first_seen, "
            f"last_seen, enrichment) VALUES ('{ip}', {'NULL' if asn is None else asn}, "
            f"{sessions}, '2031-03-01 00:00:00', '2031-03-13 00:00:00', '{json.dumps(value)}')"
            for ip, (sessions, asn, value) in ROWS.items()
        ])  # fmt: skip
        for run_id, days_ago, rows, searches, errors, code in (
            (1, 2, 400, 120, 3, 0),
            (2, 1, 350, 90, 0, 3),
        ):
            runlog.write_run(db, {
                "run_id": run_id, "started_at": NOW - days_ago * DAY,
                "ended_at": NOW - days_ago * DAY + HOUR, "outcome": "finished",
                "exit_code": code, "ip_rows_written": rows, "greynoise_searches": searches,
                "greynoise_error": errors, "cymru_error": 1,
            })  # fmt: skip


def loaded(url: str) -> explore.Snapshot:
    crafted(url)
    return explore.load_snapshot(
        RefreshConfig(db_url=url, maxmind_dir=Path("/no/maxmind"), clock=lambda: NOW)
    )


def test_every_question_on_sqlite_and_postgres(any_db_url: str) -> None:
    snapshot = loaded(any_db_url)
    ips = snapshot.ips
    assert ips.schema == pl.Schema(IP_DETAILS_SCHEMA) and ips.height == len(ROWS)
    assert ips.filter(pl.col("is_bogon"))["ip"].to_list() == ["10.0.0.1"]
    assert ips.filter(~pl.col("usable"))["ip"].to_list() == ["198.51.100.7"]

    # The IPs counted: .1 to .6 and the IPv6 (not the bogon, not the row whose enrichment is
    # not an object)
    cov = explore.coverage(snapshot.report)
    states = {(s, st_): (n, share) for s, st_, n, _, share in cov.iter_rows()}
    assert {k: v for k, v in states.items() if k[0] == "maxmind"} == {
        ("maxmind", "fresh"): (4, 4 / 7), ("maxmind", "stale"): (1, 1 / 7),
        ("maxmind", "error"): (0, 0.0), ("maxmind", "never"): (2, 2 / 7),
    }  # fmt: skip
    # Cymru: only the IPs MaxMind has no ASN for (.3 fresh, .5 error, .4 and the IPv6 never);
    # not .6, whose old error MaxMind's ASN made moot
    assert {k: v for k, v in states.items() if k[0] == "cymru" and v[0]} == {
        ("cymru", "fresh"): (1, 0.25), ("cymru", "error"): (1, 0.25),
        ("cymru", "never"): (2, 0.5),
    }  # fmt: skip
    assert cov.group_by("source").agg(pl.col("needed").first()).sort("source").rows() == [
        ("classification", 7), ("cymru", 4), ("greynoise", 7), ("maxmind", 7)
    ]  # fmt: skip

    fc = explore.forecast(snapshot.report, snapshot.freshness)
    assert fc.group_by("source").agg(pl.len(), pl.col("ttl_days").first()).sort("source").rows() == [
        ("cymru", 91, 90), ("greynoise", 8, 7), ("maxmind", 8, 7)
    ]  # fmt: skip
    greynoise = fc.filter(pl.col("source") == "greynoise")
    # due today: the two errors; .2 goes stale in 5 days; .1, .3, .6 and the IPv6 (skipped) in 7
    assert greynoise["due"].to_list() == [2, 2, 2, 2, 2, 3, 3, 7]
    assert greynoise["day"].to_list()[::7] == [date(2031, 3, 14), date(2031, 3, 21)]
    cymru = fc.filter(pl.col("source") == "cymru")  # .3: found 3 days ago, stale in 87 days
    assert cymru["due"][0] == 3
    assert cymru.filter(pl.col("going_stale") > 0).select("days_ahead", "due").rows() == [(87, 4)]

    assert explore.errors_by_reason(ips).rows() == [
        ("cymru", "no answer line", 1),  # .5 only: .6 needs Cymru no more
        ("greynoise", "HTTP 503", 1),
        ("greynoise", explore.NO_REASON, 1),
    ]

    runs = explore.runs_over_time(snapshot.runs)
    assert runs.select("run_id", "rows", "searches", "errors", "exit_code").rows() == [
        (1, 400, 120, 4, 0), (2, 350, 90, 1, 3)
    ]  # fmt: skip

    asns = explore.top_asns(ips, snapshot.asns, n=2)
    assert asns.select("asn", "name", "sessions", "ips").rows() == [
        (64500, "EXAMPLE-NET Example Ltd, TR", 85, 3),  # the bogon's 500 sessions left out
        (64501, "OTHER-AS", 20, 1),  # no name in asn_inventory: the Cymru block's
    ]
    assert asns["label"][0] == "AS64500 EXAMPLE-NET Example Ltd, TR"

    assert explore.top_countries(ips).rows() == [
        ("TR", "Türkiye", 105, 4),  # .3's Cymru-only "TR" named from MaxMind's rows
        ("??", "unknown location", 13, 2),  # .4 and the IPv6 (not the unusable row)
        ("ZZ", "ZZ", 7, 1),
    ]

    assert explore.greynoise_classes(ips, snapshot.new_ips).rows() == [
        (explore.OBSERVED, "benign", 1, 5),
        (explore.OBSERVED, "malicious", 1, 50),
        (explore.OBSERVED, "unknown", 1, 30),  # GreyNoise's own class, not "not observed"
        (explore.NOT_OBSERVED, "not observed", 1, 20),
        (explore.NOT_ANSWERED, "error", 2, 16),
        (explore.NOT_ANSWERED, "not asked (IPv6)", 1, 4),
    ]


def test_ips_seen_only_in_sessions_are_apart_for_cymru(tmp_path: Path) -> None:
    """Whether a new IP needs Cymru is known once MaxMind has looked it up; the other sources
    need it anyway. (SQLite: cowrieprocessor's PostgreSQL schema has a foreign key from
    session_summaries to ip_inventory, so a session's IP always has a row there.)"""
    url = f"sqlite:///{tmp_path / 'h.sqlite'}"
    crafted(url)
    with Database(parse_database_url(url)) as db:
        db.execute_native([
            "INSERT INTO session_summaries (session_id, source_ip, first_event_at, last_event_at)"
            " VALUES ('s1', '203.0.113.9', '2031-03-14 01:00:00', '2031-03-14 02:00:00')"
        ])  # fmt: skip
    config = RefreshConfig(db_url=url, maxmind_dir=tmp_path / "none", clock=lambda: NOW)
    cov = explore.coverage(explore.load_snapshot(config).report)
    rows = {(s, st_): (n, needed) for s, st_, n, needed, _ in cov.iter_rows()}
    assert rows[("cymru", "never")] == (2, 4) and rows[("cymru", explore.NOT_KNOWN_YET)] == (1, 4)
    assert rows[("maxmind", "never")] == (3, 8) and rows[("greynoise", "never")] == (1, 8)


def test_an_empty_or_new_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new.sqlite'}"
    with Database(parse_database_url(url), create=True) as db:
        db.ensure_schema()
    inventory = explore.load_snapshot(RefreshConfig(db_url=url, maxmind_dir=tmp_path))
    assert inventory.ips.height == 0 and inventory.runs.height == 0
    assert explore.errors_by_reason(inventory.ips).height == 0
    assert explore.runs_over_time(inventory.runs).height == 0
    assert explore.top_asns(inventory.ips, inventory.asns).height == 0
    assert explore.greynoise_classes(inventory.ips, inventory.new_ips).height == 0
    cov = explore.coverage(inventory.report)
    needed = cov.filter(pl.col("state").is_in(explore.NEEDED_STATES))["share"].to_list()
    assert needed == [0.0] * 16  # four states of four sources


def test_ttl_days_follow_the_settings() -> None:
    freshness = Freshness(maxmind=timedelta(days=3), cymru_ok=timedelta(days=30, hours=1),
                          greynoise=timedelta(hours=12))  # fmt: skip
    assert explore.ttl_days(freshness) == {"maxmind": 3, "cymru": 31, "greynoise": 1}


STATUSES = st.sampled_from(["ok", "not_found", "error", "skipped", None])
ROW = st.fixed_dictionaries({
    "ip": st.text(min_size=1, max_size=6),
    "asn": st.one_of(st.none(), st.integers(1, 6)),
    "sessions": st.integers(0, 1000),
    "maxmind_status": STATUSES, "cymru_status": STATUSES, "greynoise_status": STATUSES,
    "maxmind_error": st.none(), "cymru_error": st.sampled_from([None, "no answer line"]),
    "greynoise_error": st.sampled_from([None, "HTTP 503", "malformed JSON"]),
    "country": st.sampled_from([None, "TR", "US", "ZZ"]),
    "country_name": st.sampled_from([None, "Türkiye", "United States"]),
    "asn_org": st.sampled_from([None, "A", "B"]),
    "classification": st.sampled_from([None, "malicious", "benign", "unknown", "suspicious"]),
    "greynoise_name": st.none(), "is_bogon": st.booleans(),
    "maxmind_asn": st.one_of(st.none(), st.integers(1, 6)), "usable": st.booleans(),
})  # fmt: skip


@given(st.lists(ROW, max_size=40), st.lists(st.integers(1, 50), max_size=5))
def test_every_ip_and_session_is_counted_once(
    rows: list[dict[str, Any]], new_sessions: list[int]
) -> None:
    ips = pl.DataFrame(rows, schema=IP_DETAILS_SCHEMA, orient="row")
    new = pl.DataFrame({"ip": [f"new{i}" for i in range(len(new_sessions))],
                        "sessions": new_sessions}, schema=explore.NEW_IPS_SCHEMA)  # fmt: skip
    counted = ips.filter(pl.col("usable") & ~pl.col("is_bogon"))
    classes = explore.greynoise_classes(ips, new)
    assert classes["ips"].sum() == counted.height + new.height
    assert classes["sessions"].sum() == counted["sessions"].sum() + sum(new_sessions)
    not_observed = classes.filter(pl.col("group") == explore.NOT_OBSERVED)["ips"].sum()
    assert not_observed == counted.filter(pl.col("greynoise_status") == "not_found").height
    countries = explore.top_countries(ips, n=100)
    assert countries["sessions"].sum() == counted["sessions"].sum()
    assert countries["name"].null_count() == 0 and countries["country"].is_unique().all()
    errors = explore.errors_by_reason(ips)
    for source in ("maxmind", "cymru", "greynoise"):
        needs = pl.col("maxmind_asn").is_null() if source == "cymru" else pl.lit(True)
        expected = counted.filter(pl.col(f"{source}_status") == "error", needs).height
        assert errors.filter(pl.col("source") == source)["ips"].sum() == expected
    asns = explore.top_asns(ips, pl.DataFrame(schema=ASN_NAMES_SCHEMA), n=100)
    with_asn = ips.filter(~pl.col("is_bogon") & pl.col("asn").is_not_null())
    assert asns["sessions"].sum() == with_asn["sessions"].sum()


def test_the_two_greynoise_plots_count_the_same_ips(tmp_path: Path) -> None:
    """On a sample database with IPs seen only in sessions (no inventory row yet), the coverage
    plot's GreyNoise bar and the GreyNoise plot count the same IPs, class for class."""
    url = f"sqlite:///{tmp_path / 'h.sqlite'}"
    build_sample(url, 400, 3, tmp_path / "maxmind")
    snapshot = explore.load_snapshot(RefreshConfig(db_url=url, maxmind_dir=tmp_path / "maxmind"))
    assert snapshot.new_ips.height == snapshot.report.session_only_ips > 0
    cov = explore.coverage(snapshot.report).filter(pl.col("source") == "greynoise")
    states = dict(cov.select("state", "ips").iter_rows())
    classes = explore.greynoise_classes(snapshot.ips, snapshot.new_ips)
    answers = dict(classes.select("answer", "ips").iter_rows())
    assert answers[explore.NEVER_ASKED] == states["never"]
    assert answers.get("error", 0) == states["error"]
    answered = classes.filter(pl.col("group") != explore.NOT_ANSWERED)["ips"].sum()
    assert answered + answers.get("not asked (IPv6)", 0) == states["fresh"] + states["stale"]
    assert classes["ips"].sum() == cov["needed"][0] == sum(states.values())
    sessions = snapshot.ips.filter(pl.col("usable") & ~pl.col("is_bogon"))["sessions"].sum()
    assert classes["sessions"].sum() == sessions + snapshot.new_ips["sessions"].sum()


MINUTE = timedelta(minutes=1)


def test_runs_minutes_apart_stay_apart_and_their_ticks_carry_the_day(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'h.sqlite'}"
    starts = [NOW - 2 * DAY, NOW - 10 * MINUTE, NOW - 5 * MINUTE, NOW - MINUTE]
    starts += [NOW + n * HOUR for n in range(1, 17)]  # 20 runs in all
    with Database(parse_database_url(url), create=True) as db:
        db.ensure_schema()
        for run_id, start in enumerate(starts, 1):
            runlog.write_run(db, {"run_id": run_id, "started_at": start, "ended_at": start + MINUTE,
                                  "outcome": "finished", "exit_code": 0})  # fmt: skip
    config = RefreshConfig(db_url=url, maxmind_dir=tmp_path, clock=lambda: NOW + DAY)
    runs = explore.runs_over_time(explore.load_snapshot(config).runs)
    labels = [start.strftime("%m-%d %H:%M") for start in starts]
    assert runs.select("position", "run_id", "label").rows() == [
        (n, n + 1, label) for n, label in enumerate(labels)
    ]
    assert labels[:4] == ["03-12 12:00", "03-14 11:50", "03-14 11:55", "03-14 11:59"]
    ticks = explore.run_ticks(runs)  # 8 of 20: the first, the last, evenly between
    assert ticks["position"].to_list() == [0, 3, 5, 8, 11, 14, 16, 19]
    assert ticks["label"].to_list() == [labels[n] for n in ticks["position"]]
    assert explore.run_ticks(runs.head(4))["label"].to_list() == labels[:4]


def test_network_types_count_sessions_by_type_and_the_busiest_providers() -> None:
    """In the labels' priority order, then the IPs not labelled; of cloud and hosting ranges
    the busiest ``providers`` providers by name, the others together (Tor's provider and a
    residential IP's organization are no hosting companies: never ranked); bogons and
    unusable rows left out."""
    ips = pl.DataFrame(
        {
            "ip": [f"192.0.2.{i}" for i in range(9)],
            "sessions": [5, 3, 2, 1, 4, 12, 6, 9, 2],  # the residential IP's: the most
            "usable": [True] * 8 + [False],
            "is_bogon": [False] * 7 + [True, False],
            "ip_type": ["cloud", "cloud", "datacenter", None, "tor", "residential", "cloud",
                        "cloud", "cloud"],
            "provider": ["aws", "gcp", "Hetzner", None, "tor", "COMCAST Cable", "aws", "aws",
                         "aws"],
        }
    )  # fmt: skip
    assert explore.network_types(ips, providers=1).rows() == [
        ("tor", "", 4, 1),
        ("cloud", "aws", 11, 2),  # the bogon's 9 and the unusable row's 2 left out
        ("cloud", explore.OTHER_PROVIDERS, 3, 1),
        ("datacenter", explore.OTHER_PROVIDERS, 2, 1),
        ("residential", "", 12, 1),
        (explore.NOT_LABELLED, "", 1, 1),
    ]
    assert explore.network_types(ips).filter(pl.col("ip_type") == "datacenter").rows() == [
        ("datacenter", "Hetzner", 2, 1)
    ]
