"""--greynoise-daily-budget: the GreyNoise Searches of one UTC day, across runs, read from the
run log; the IPs it covers chosen by priority; a run that straddles midnight."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from etl.cli.refresh import main
from etl.core.freshness import Freshness
from etl.core.vocabulary import Source
from etl.db import runlog
from etl.db.database import Database
from etl.db.select import SelectionRules, select_stale
from etl.db.url import parse_database_url
from etl.refresh.config import RefreshConfig
from etl.refresh.pipeline import refresh
from etl.refresh.validation import with_validation
from etl.report.summary import LineReporter, RunSummary
from etl.sources.greynoise.steps import greynoise_targets
from testbed.sample.build import build_sample
from tests.sims import Simulator, running

KEY = "daily-budget-test-key"
DAY = date(2031, 3, 14)
WORKERS = 64  # requests in flight at --greynoise-rate 500: the order is kept up to them


def at(hour: int, minute: int = 0, second: int = 0, day: date = DAY) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=UTC)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1,000-IP sample (about 700 IPs GreyNoise would be asked about), copied per test."""
    folder = tmp_path_factory.mktemp("budget")
    build_sample(f"sqlite:///{folder / 'h.sqlite'}", 1000, 5, folder)
    return folder


@pytest.fixture
def db_url(world: Path, tmp_path: Path) -> str:
    for name in ("GeoLite2-ASN.mmdb", "GeoLite2-City.mmdb"):
        (tmp_path / name).write_bytes((world / name).read_bytes())
    (tmp_path / "h.sqlite").write_bytes((world / "h.sqlite").read_bytes())
    return f"sqlite:///{tmp_path / 'h.sqlite'}"


def config(
    db_url: str, gn: Simulator, clock: Callable[[], datetime], **extra: Any
) -> RefreshConfig:
    folder = Path(db_url.removeprefix("sqlite:///")).parent
    settings: dict[str, Any] = {"greynoise_rate": 500.0, "greynoise_daily_budget": 300, **extra}
    return RefreshConfig(
        db_url=db_url, maxmind_dir=folder, greynoise_url=gn.url, greynoise_api_key=KEY,
        skip=frozenset({Source.CYMRU}), clock=clock, **settings,
    )  # fmt: skip


def lookups(gn: Simulator) -> list[str]:
    """The IPs the simulator was asked about, in the order the requests came."""
    return [ip for entry in gn.entries() for ip in entry["ips"]]


def quiet(notes: list[str]) -> LineReporter:
    reporter = LineReporter(verbosity=-1)
    reporter.note = notes.append  # type: ignore[method-assign]
    return reporter


def by_priority(db_url: str) -> list[str]:
    """The IPv4 addresses GreyNoise would be asked about, in the order of --ips."""
    rules = SelectionRules(now=datetime.now(UTC), freshness=Freshness(),
                           asked=frozenset({"maxmind", "greynoise"}))  # fmt: skip
    with Database(parse_database_url(db_url), read_only=True) as db:
        frame = with_validation(select_stale(db, rules))
    return [ip for ip in greynoise_targets(frame, by_priority=True) if ":" not in ip]


def test_two_runs_in_one_day_share_300_searches_by_priority(db_url: str, tmp_path: Path) -> None:
    order = by_priority(db_url)
    assert len(order) > 400
    notes: list[str] = []
    with running("greynoise", tmp_path / "gn.jsonl", "--key", KEY) as gn:
        first = refresh(config(db_url, gn, lambda: at(9), greynoise_budget=200), quiet(notes))
        after_first = lookups(gn)
        second = refresh(config(db_url, gn, lambda: at(15)), quiet(notes))
        third = refresh(config(db_url, gn, lambda: at(23, 59, 59)), quiet(notes))
        asked = lookups(gn)
    assert len(asked) == len(set(asked)) == 300  # never more, no IP asked twice
    assert (first.greynoise_searches, second.greynoise_searches, third.greynoise_searches) == (
        200, 100, 0
    )  # fmt: skip
    assert [s.greynoise_budget_left for s in (first, second, third)] == [100, 0, 0]
    assert [s.exit_code for s in (first, second, third)] == [0, 0, 0]
    assert second.stopped["greynoise"].reason == "daily_budget"
    assert third.stopped["greynoise"].reason == "daily_budget"
    assert third.sources["greynoise"].queried == 0
    spent = [n for n in notes if "daily budget" in n]
    assert len(spent) == 2, notes  # one line per run that met it
    assert "GreyNoise daily budget of 300 Searches for 2031-03-14 (UTC) is spent" in spent[1]
    # the budget went to the IPs --ips would choose first, whatever the storage order
    assert set(order[: 200 - WORKERS]) <= set(after_first) <= set(order[: 200 + WORKERS])


def test_a_run_that_straddles_midnight(db_url: str, tmp_path: Path) -> None:
    log = tmp_path / "gn.jsonl"
    with running("greynoise", log, "--key", KEY) as gn:
        refresh(config(db_url, gn, lambda: at(20), greynoise_budget=100), quiet([]))

        def passes_midnight() -> datetime:  # after 100 more requests it is the next day
            sent = log.read_text().count("\n")
            return at(23, 59, 59) if sent < 200 else at(0, 0, 1, DAY + timedelta(days=1))

        # 50 requests a second after a burst of 45: the run samples its count every 0.2 s at
        # least, and midnight comes after about a second
        slower = config(db_url, gn, passes_midnight, greynoise_rate=50.0)
        straddling = refresh(slower, quiet([]))
        next_day = refresh(
            config(db_url, gn, lambda: at(0, 30, 0, DAY + timedelta(days=1))), quiet([])
        )
        total = len(lookups(gn))
    days = straddling.greynoise_searches_by_day
    before, after = days[DAY.isoformat()], days[(DAY + timedelta(days=1)).isoformat()]
    # capped by what its first day had left; each Search counted on the day it was spent
    assert straddling.greynoise_searches == before + after == 200
    assert before >= 50 and after >= 20
    assert straddling.greynoise_budget_left == 300 - after
    # the new day started with a full budget, less what was spent after midnight
    assert next_day.greynoise_searches == 300 - after and next_day.greynoise_budget_left == 0
    assert total == 100 + 200 + next_day.greynoise_searches
    with Database(parse_database_url(db_url), read_only=True) as db:
        rows = runlog.recent_runs(db, 3).to_dicts()[::-1]
        assert runlog.searches_on(db, DAY) == 100 + before <= 300
        assert runlog.searches_on(db, DAY + timedelta(days=1)) == 300
    assert json.loads(rows[1]["greynoise_searches_by_day"]) == days
    assert rows[1]["greynoise_search_cap"] == 200 and rows[2]["greynoise_search_cap"] == 300 - after


def test_through_the_command_line(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GREYNOISE_API_KEY", KEY)
    folder = Path(db_url.removeprefix("sqlite:///")).parent
    with running("greynoise", tmp_path / "gn.jsonl", "--key", KEY) as gn:
        args = ["--db", db_url, "--maxmind-dir", str(folder), "--skip", "cymru", "--quiet",
                "--greynoise-url", gn.url, "--greynoise-rate", "500",
                "--greynoise-daily-budget", "300", "--summary-json", str(tmp_path / "s.json")]  # fmt: skip
        codes = [main([*args, "--greynoise-budget", "250"]), main(args)]
        asked = lookups(gn)
    err = capsys.readouterr().err
    summary = json.loads((tmp_path / "s.json").read_text())
    assert codes == [0, 0] and len(asked) == 300
    assert summary["greynoise_budget_left"] == 0 and summary["greynoise_searches"] == 50
    assert summary["greynoise_daily_budget"] == 300
    assert err.count("GreyNoise daily budget of 50 Searches for this run is spent") == 1
    assert "Traceback" not in err


def test_a_killed_run_keeps_its_reservation(db_url: str, tmp_path: Path) -> None:
    folder = Path(db_url.removeprefix("sqlite:///")).parent
    with running("greynoise", tmp_path / "gn.jsonl", "--key", KEY, "--rate", "20") as gn:
        command = [sys.executable, "-m", "etl.refresh", "--db", db_url, "--maxmind-dir",
                   str(folder), "--skip", "cymru", "--greynoise-url", gn.url,
                   "--greynoise-rate", "20", "--greynoise-daily-budget", "300",
                   "--greynoise-budget", "250"]  # fmt: skip
        process = subprocess.Popen(
            command, env={**os.environ, "GREYNOISE_API_KEY": KEY},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while len(gn.entries()) < 20 and time.monotonic() < deadline:
            time.sleep(0.2)
        process.send_signal(signal.SIGKILL)
        process.wait()
        sent = len(lookups(gn))
    with Database(parse_database_url(db_url), read_only=True) as db:
        rows = runlog.recent_runs(db, 5).to_dicts()
        today = datetime.now(UTC).date()
        reserved = runlog.searches_on(db, today)
    assert [(r["outcome"], r["ended_at"], r["greynoise_search_cap"]) for r in rows] == [
        ("running", None, 300)
    ]
    assert sent < reserved == 300  # what it may have spent counts until the day ends


def test_a_summary_without_a_daily_budget_says_nothing_of_it() -> None:
    assert "daily budget" not in RunSummary().table()
    assert (
        "150 of 300 Searches left"
        in RunSummary(greynoise_daily_budget=300, greynoise_budget_left=150).table()
    )
