"""``honeypot-etl status``: the freshness of every source, what goes stale this week, the
GreyNoise Searches of today, MaxMind build ages and the last runs; read-only, asking nothing."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from etl.cli.app import main as app_main
from etl.cli.status import main
from etl.db import runlog
from etl.db.database import Database
from etl.db.url import parse_database_url
from etl.refresh.config import RefreshConfig
from etl.status.collect import status_report
from etl.status.text import render
from tests.sims import run_module
from tests.world import load_postgres, load_sqlite, plan_world

NOW = datetime(2031, 3, 14, 12, 0, tzinfo=UTC)
NEW_IP = "203.0.113.77"


def block(age: timedelta, status: str = "ok", **fields: Any) -> dict[str, Any]:
    return {"status": status, "cached_at": (NOW - age).isoformat(), **fields}


# ip -> enrichment: every state, with blocks that go stale at known moments (TTLs: MaxMind and
# GreyNoise 7 days, Cymru 90 days, 7 when not found)
ROWS: dict[str, Any] = {
    "198.51.100.1": {  # MaxMind stale at 18:00 today; GreyNoise in 6 days; Cymru not needed
        "maxmind": block(timedelta(days=7) - timedelta(hours=6), asn=64500),
        "greynoise": block(timedelta(days=1)),
    },
    "198.51.100.2": {  # MaxMind fresh a week; Cymru not_found for 4 more days; GreyNoise error
        "maxmind": block(timedelta(hours=1), asn=None),
        "cymru": block(timedelta(days=3), "not_found"),
        "greynoise": block(timedelta(hours=1), "error"),
    },
    "198.51.100.3": {  # MaxMind stale; Cymru ok until 23:00 today; GreyNoise never asked
        "maxmind": block(timedelta(days=8), asn=None),
        "cymru": block(timedelta(days=89, hours=13), asn=64501),
    },
    "10.0.0.1": {"validation": {"is_bogon": True, "reason": "private"}},
    "198.51.100.4": "not json",
}


@pytest.fixture
def crafted(tmp_path: Path) -> str:
    """A database with the rows of `ROWS`, one IP seen only in sessions, and two runs."""
    url = f"sqlite:///{tmp_path / 'h.sqlite'}"
    with Database(parse_database_url(url), create=True) as db:
        db.ensure_schema()
        db.execute_native(
            [
                "INSERT INTO ip_inventory (ip_address, first_seen, last_seen, enrichment) "
                f"VALUES ('{ip}', '2031-03-01 00:00:00', '2031-03-13 00:00:00', "
                f"'{value if isinstance(value, str) else json.dumps(value)}')"
                for ip, value in ROWS.items()
            ]
            + [
                "INSERT INTO session_summaries (session_id, source_ip, first_event_at, "
                f"last_event_at) VALUES ('s1', '{NEW_IP}', '2031-03-14 01:00:00', "
                "'2031-03-14 02:00:00')"
            ]
        )
        for run_id, outcome, searches in ((1, "finished", 120), (2, "running", 50)):
            runlog.write_run(db, {
                "run_id": run_id, "started_at": NOW - timedelta(hours=3 - run_id),
                "ended_at": NOW - timedelta(hours=1) if outcome == "finished" else None,
                "outcome": outcome, "exit_code": 0 if outcome == "finished" else None,
                "selected": 4, "ip_rows_written": 4, "greynoise_error": 1,
                "greynoise_searches": searches if outcome == "finished" else None,
                "greynoise_search_cap": 50 if outcome == "running" else None,
                "greynoise_searches_by_day": json.dumps({"2031-03-14": searches}),
                "stopped": "greynoise: daily_budget" if outcome == "finished" else None,
            })  # fmt: skip
    return url


def config(url: str, tmp_path: Path, **extra: Any) -> RefreshConfig:
    return RefreshConfig(db_url=url, maxmind_dir=tmp_path / "none", clock=lambda: NOW, **extra)


def test_every_state_and_the_week_ahead(crafted: str, tmp_path: Path) -> None:
    report = status_report(config(crafted, tmp_path, greynoise_daily_budget=300))
    data = report.to_dict()
    assert (data["inventory_ips"], data["session_only_ips"], data["bogons"], data["unusable"]) == (
        4, 1, 1, 1
    )  # fmt: skip
    states = {name: source["states"] for name, source in data["sources"].items()}
    assert states == {
        # the IP seen only in a session: never asked, but for Cymru not known (needed only if
        # MaxMind, which has not looked it up yet, has no ASN for it)
        "maxmind": {"fresh": 2, "stale": 1, "error": 0, "never": 1, "not_needed": 0,
                    "not_known": 0},
        "cymru": {"fresh": 2, "stale": 0, "error": 0, "never": 0, "not_needed": 1,
                  "not_known": 1},
        "greynoise": {"fresh": 1, "stale": 0, "error": 1, "never": 2, "not_needed": 0,
                      "not_known": 0},
        # no row has labels yet
        "classification": {"fresh": 0, "stale": 0, "error": 0, "never": 4, "not_needed": 0,
                           "not_known": 0},
    }  # fmt: skip
    assert [data["sources"][s]["due"] for s in ("maxmind", "cymru", "greynoise")] == [2, 0, 3]
    week = {name: source["going_stale"] for name, source in data["sources"].items()}
    days = [f"2031-03-{day}" for day in range(14, 21)]
    assert all(list(going) == days for going in week.values())
    assert {name: {d: n for d, n in going.items() if n} for name, going in week.items()} == {
        "maxmind": {"2031-03-14": 1},
        "cymru": {"2031-03-14": 1, "2031-03-18": 1},
        "greynoise": {"2031-03-20": 1},
        "classification": {},  # labels go stale with their lists, not with time
    }
    assert data["searches"] == {"day": "2031-03-14", "spent": 120, "reserved": 50,
                                "daily_budget": 300, "left": 130}  # fmt: skip
    # run 2's row says 'running', but no refresh holds the run lock: it was killed
    assert [(r["run_id"], r["outcome"], r["errors"]) for r in data["runs"]] == [
        (2, "killed", 1), (1, "finished", 1)
    ]  # fmt: skip
    assert data["maxmind"] == [] and any(
        "MaxMind ASN database not found" in n for n in report.notes
    )
    json.dumps(data)  # all of it JSON


def test_the_text_report(crafted: str, tmp_path: Path) -> None:
    text = render(status_report(config(crafted, tmp_path, greynoise_daily_budget=300)))
    lines = text.splitlines()
    assert lines[0] == f"status of {crafted} at 2031-03-14 12:00 UTC"
    assert any(line.split() == ["cymru", "2", "0", "0", "0", "1", "1", "0"] for line in lines)
    assert any(line.split() == ["maxmind", "2", "1", "0", "1", "-", "-", "2"] for line in lines)
    days = ["03-14", "03-15", "03-16", "03-17", "03-18", "03-19", "03-20", "(UTC", "days)"]
    assert any(line.split() == ["goes", "stale", *days] for line in lines)
    # no lists: the labels cannot be asked, so none is due (a backlog alert could not clear)
    assert any(line.split()[:1] == ["classification"] and line.endswith(" -") for line in lines)
    header = next(i for i, line in enumerate(lines) if line.startswith("source"))
    table = lines[header : header + 5]  # the heading and the four sources
    assert len({len(line) for line in table}) == 1  # columns line up past the longest name
    assert (
        "GreyNoise Searches on 2031-03-14 (UTC): 120 spent, 50 reserved by a run still running "
        "or killed; 130 left of the daily budget of 300" in text
    )
    assert "<=50" in text and "greynoise: daily_budget" in text
    without = render(status_report(config(crafted, tmp_path)))
    assert "no daily budget set (--greynoise-daily-budget)" in without


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_sqlite_read_only_creates_nothing(compat_sqlite: Path, tmp_path: Path) -> None:
    load_sqlite(str(compat_sqlite), plan_world(300, now=datetime.now(UTC)))
    con = sqlite3.connect(compat_sqlite)
    con.execute("PRAGMA journal_mode = wal")  # as cowrieprocessor leaves it
    con.close()
    tables = "SELECT type, name, sql FROM sqlite_master ORDER BY name"
    before = sqlite3.connect(compat_sqlite).execute(tables).fetchall()
    hashed = digest(compat_sqlite)
    report = status_report(RefreshConfig(db_url=f"sqlite:///{compat_sqlite}", maxmind_dir=tmp_path))
    assert report.inventory_ips > 300 and report.runs == []
    assert "no run log yet: no refresh has written to this database" in report.notes
    assert digest(compat_sqlite) == hashed
    wal = Path(f"{compat_sqlite}-wal")
    assert not wal.exists() or wal.stat().st_size == 0  # SQLite's own index files at most
    assert sqlite3.connect(compat_sqlite).execute(tables).fetchall() == before


def test_postgres_read_only_creates_nothing(compat_pg: str, tmp_path: Path) -> None:
    load_postgres(compat_pg, plan_world(300, allow_missing=False))
    listing = "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
    with Database(parse_database_url(compat_pg)) as db:
        before = sorted(db.query_native(listing))
    report = status_report(RefreshConfig(db_url=compat_pg, maxmind_dir=tmp_path))
    assert report.inventory_ips > 300
    with Database(parse_database_url(compat_pg)) as db:
        assert sorted(db.query_native(listing)) == before
        assert not db.columns("etl_run_log")


def test_status_on_postgres_after_a_run(pg_url: str, tmp_path: Path) -> None:
    from etl.core.vocabulary import Source
    from etl.refresh.pipeline import refresh
    from etl.report.summary import LineReporter
    from testbed.sample.build import build_sample

    build_sample(pg_url, 150, 3, tmp_path / "mm")
    skip = frozenset({Source.CYMRU, Source.GREYNOISE})
    ran = refresh(RefreshConfig(db_url=pg_url, maxmind_dir=tmp_path / "mm", skip=skip),
                  LineReporter(verbosity=-1))  # fmt: skip
    report = status_report(RefreshConfig(db_url=pg_url, maxmind_dir=tmp_path / "mm"))
    assert [(r["run_id"], r["outcome"], r["selected"]) for r in report.runs] == [
        (1, "finished", ran.selected)
    ]
    assert report.sources["maxmind"].states["fresh"] > 0 and len(report.maxmind) == 2


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("ETL_DB_URL", "")
    monkeypatch.setenv("GREYNOISE_DAILY_BUDGET", "")

    def invoke(*args: str, command: Any = main) -> tuple[int, str, str]:
        code = command(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


def test_the_command_and_its_json(cli: Any, crafted: str, tmp_path: Path) -> None:
    base = ["--db", crafted, "--maxmind-dir", str(tmp_path)]
    code, out, _ = cli(*base, "--json", "--runs", "1", "--greynoise-daily-budget", "500")
    data = json.loads(out)
    assert code == 0 and [r["run_id"] for r in data["runs"]] == [2]
    today = datetime.now(UTC).date().isoformat()  # the runs were in 2031
    assert data["searches"] == {"day": today, "spent": 0, "reserved": 0, "daily_budget": 500,
                                "left": 500}  # fmt: skip
    code, out, _ = cli("status", *base, command=app_main)
    assert code == 0 and out.startswith(f"status of {crafted} at ") and "last runs:" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "--db names a SQLite database that does not exist: "),
        (["--db", "sqlite:////no/such.sqlite"], "the folder '/no' does not exist"),
        (["--runs", "-1"], "--runs must be between 0 and 1,000, got -1"),
        (["--greynoise-daily-budget", "-5"], "--greynoise-daily-budget must be between 0 and"),
        (["--maxmind-asn", "/no/such.mmdb"], "--maxmind-asn /no/such.mmdb: file not found"),
        (["--config", "/no/etl.toml"], "config file /no/etl.toml does not exist"),
        (["--ips", "5"], "No such option: --ips"),
    ],
)
def test_usage_errors_are_one_line_exit_2(
    cli: Any, tmp_path: Path, args: list[str], message: str
) -> None:
    code, out, err = cli("--db", f"sqlite:///{tmp_path / 'x.sqlite'}", *args)
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert err.startswith("error: ") and message in err, err
    assert not (tmp_path / "x.sqlite").exists()


def test_an_unreachable_server_is_one_line_without_its_password(cli: Any) -> None:
    code, _, err = cli("--db", "postgresql://etl:s3cret-pw@127.0.0.1:9/cowrie")
    assert (
        code == 1 and err.startswith("error: cannot connect to PostgreSQL") and "s3cret" not in err
    )


def test_python_m_etl_status_is_quick(crafted: str, tmp_path: Path) -> None:
    started = time.monotonic()
    result = run_module("etl.status", "--db", crafted, "--maxmind-dir", str(tmp_path))
    seconds = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("status of ") and seconds < 10  # about 1 s unloaded
