"""A service is judged by what it delivers (issue 25): a Team Cymru session or a GreyNoise
request that ends in a timeout is a failure for the breaker however many lines it answered
first; a source that delivers nothing for its window is stopped (``stalled``, exit 3); the AS
lookups left without an answer are counted in the summary, the metrics and the run log."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from etl.core.errors import ServiceUnavailableError
from etl.sources.cymru.client import CymruClient, CymruSettings
from etl.sources.failures import CircuitBreaker, Failure, ProgressWatch
from testbed.sample.world import World
from tests.sims import NOT_ASKED, run_module, running, without_count
from tests.test_breakers import refresh
from tests.test_cymru_policy import BANNER, FakeCymru, Reply, ips, row
from tests.test_refresh_greynoise import KEY, build_sample

# -- the rules, in memory ---------------------------------------------------------------------


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@given(st.lists(st.tuples(st.integers(0, 50), st.booleans()), max_size=30), st.integers(1, 100))
def test_the_watch_is_stalled_only_after_a_window_without_a_delivery(
    steps: list[tuple[int, bool]], window: int
) -> None:
    clock = Clock()
    watch = ProgressWatch(window, clock)
    last = clock.now
    for elapsed, delivered in steps:
        clock.now += elapsed
        if delivered:
            watch.delivered()
            last = clock.now
        assert watch.stalled() == (clock.now - last > window)


@given(st.integers(0, 500), st.integers(1, 100), st.integers(0, 1000))  # whole seconds: exact
def test_a_wait_asked_for_counts_as_progress(pause: int, window: int, later: int) -> None:
    clock = Clock()
    watch = ProgressWatch(window, clock)
    watch.delivered(pause)  # a Retry-After: nothing is asked meanwhile
    clock.now += later
    assert watch.stalled() == (later - pause > window)


@given(st.lists(st.booleans(), max_size=40), st.integers(1, 10))
def test_the_breaker_trips_at_the_limit_of_failures_in_a_row(
    outcomes: list[bool], limit: int
) -> None:
    breaker, in_row, tripped = CircuitBreaker(limit), 0, False
    for failed in outcomes:
        if failed:
            in_row += 1
            tripped = tripped or in_row >= limit
            assert breaker.failed(Failure("x", stalled=True)) == tripped
        else:
            in_row = 0
            breaker.succeeded()
    assert (breaker.tripped is not None) == tripped


@given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 3)), max_size=40),
       st.integers(1, 100), st.integers(1, 12))  # fmt: skip
def test_the_watch_finds_a_trickle_only_after_a_whole_window(
    steps: list[tuple[int, int]], window: int, floor: int
) -> None:
    """``trickling``: a whole window since the watch began, and fewer than ``floor`` answers
    within the last window (counted here from the whole history)."""
    clock = Clock()
    began = clock.now
    watch = ProgressWatch(window, clock, floor=floor)
    times: list[float] = []
    for elapsed, answers in steps:
        clock.now += elapsed
        if answers:
            watch.delivered(answers=answers)
            times += [clock.now] * answers
        recent = sum(1 for t in times if t >= clock.now - window)
        assert watch.trickling() == (clock.now - began > window and recent < floor)
    assert not ProgressWatch(window, clock).trickling()  # no floor: never


class Trickle:
    """A socket of a Cymru that answers one line every 25 s (under the 30 s read timeout):
    it never times out, and would take hours for a chunk."""

    def __init__(self, clock: Clock) -> None:
        self.clock, self.rows = clock, [BANNER]

    def settimeout(self, value: float | None, /) -> None:
        pass

    def sendall(self, data: bytes, /) -> None:
        self.rows += [row(q) for q in data.decode().split("\n")[2:-2]]

    def recv(self, size: int, /) -> bytes:
        self.clock.now += 25.0
        return f"{self.rows.pop(0)}\n".encode() if self.rows else b""

    def close(self) -> None:
        pass


def test_a_cymru_that_answers_almost_nothing_is_stopped() -> None:
    clock = Clock()
    settings = CymruSettings(host="whois.test", port=43, sessions=1)
    client = CymruClient(settings, lambda s: None, connect=lambda a, t: Trickle(clock))
    client.progress = ProgressWatch(settings.stall_window, clock, floor=10)
    batches = list(client.lookup(ips(2000)))
    answered = sum(len(b.answers) for b in batches)
    assert 0 < answered < 10 and clock.now - 100.0 < 150  # before: 2,000 lines, 14 hours
    with pytest.raises(ServiceUnavailableError) as stop:
        client.check_blocked()
    assert stop.value.reason == "stalled" and stop.value.run_exit_code == 3
    assert str(stop.value) == (
        "Team Cymru at whois.test:43: it answers, but almost nothing: fewer than 10 queries "
        "answered in 92 s: stopped asking it for this run; the IPs not asked keep their old "
        "blocks"
    )
    failed = {reason for b in batches for reason in b.reasons.values()}
    assert failed == {"fewer than 10 queries answered in 92 s"}


class FirstThenStall:
    """A socket of a Cymru that sends the banner and the first query's line, then nothing
    until the read timeout."""

    def __init__(self, sessions: list[list[str]]) -> None:
        self.sessions, self.out = sessions, b""

    def settimeout(self, value: float | None, /) -> None:
        pass

    def sendall(self, data: bytes, /) -> None:
        queries = data.decode().split("\n")[2:-2]
        self.sessions.append(queries)
        self.out = f"{BANNER}\n{row(queries[0])}\n".encode()

    def recv(self, size: int, /) -> bytes:
        if not self.out:
            raise TimeoutError("timed out")
        piece, self.out = self.out, b""
        return piece

    def close(self) -> None:
        pass


def test_cymru_sessions_that_answer_a_line_then_time_out_trip_the_breaker() -> None:
    sessions: list[list[str]] = []
    settings = CymruSettings(host="whois.test", port=43, sessions=1, retries=2, blocked_after=4)
    client = CymruClient(settings, lambda s: None, connect=lambda a, t: FirstThenStall(sessions))
    batches = list(client.lookup(ips(2000)))
    assert len(sessions) == 4  # three tries of the first chunk, one half: then stopped
    assert sum(len(b.unasked) for b in batches) == 1500  # the other chunks: never sent
    assert all(not b.answers for b in batches)  # a cut session's last line is not kept
    with pytest.raises(ServiceUnavailableError) as stop:
        client.check_blocked()
    assert stop.value.reason == "stalled" and stop.value.run_exit_code == 3
    assert str(stop.value) == (
        "Team Cymru at whois.test:43: 4 sessions in a row stalled after a partial answer "
        "(no answer within 30 s): stopped asking it for this run; the IPs not asked keep "
        "their old blocks"
    )


def test_a_cymru_that_keeps_nothing_for_its_window_is_stalled_without_failures_in_a_row() -> None:
    # Every session is cut by a reset after its first line: not a breaker failure (the
    # queries are asked again), and nothing is kept (the last line of a cut session is
    # dropped). The progress watch stops it once nothing was kept for longer than its window.
    clock = Clock()

    def script(queries: list[str]) -> Reply:
        clock.now += 20.0  # each session takes 20 s
        return Reply(f"{BANNER}\n{row(queries[0])}\n", cut=True)

    fake = FakeCymru(script)
    settings = CymruSettings(host="whois.test", port=43, sessions=1, batch_size=100,
                             retries=2, min_split=500)  # fmt: skip
    client = CymruClient(settings, lambda s: None, connect=fake.connect)
    client.progress = ProgressWatch(settings.stall_window, clock)
    batches = list(client.lookup(ips(1000)))
    assert client.breaker.in_row == 0
    assert settings.stall_window == 3 * 30 + 2  # 3 read timeouts and the longest backoff
    assert len(fake.sessions) == 5  # the first session that ends after 92 s without a kept line
    assert sum(len(b.unasked) for b in batches) == 1000 - 200
    with pytest.raises(ServiceUnavailableError) as stop:
        client.check_blocked()
    assert stop.value.reason == "stalled"
    assert str(stop.value) == (
        "Team Cymru at whois.test:43: no query answered for 92 s (last session: connection "
        "reset without an answer): stopped asking it for this run; the IPs not asked keep "
        "their old blocks"
    )


# -- the simulators ---------------------------------------------------------------------------


def test_a_healthy_slow_cymru_is_not_stopped(tmp_path: Path) -> None:
    addresses = World(1).attacking_ips(400, np.random.default_rng(11))
    with running("cymru", tmp_path / "log.jsonl", "--latency-ms", "5") as sim:
        # A line each 5 ms: 2 s per session, longer than the watch's window (a session that
        # delivered nothing for so long would be stalled).
        settings = CymruSettings(host="127.0.0.1", port=sim.port, batch_size=400, sessions=1,
                                 read_timeout=0.5, backoff=0.01)  # fmt: skip
        assert settings.stall_window < 2
        client = CymruClient(settings)
        batches = list(client.lookup(addresses))
    assert client.breaker.tripped is None and client.stall is None
    assert sum(len(b.answers) for b in batches) == len(addresses)
    client.check_blocked()  # no stop


def test_the_cymru_simulator_answers_the_first_line_then_stalls(tmp_path: Path) -> None:
    with running("cymru", tmp_path / "log.jsonl", "--fault", "first-then-stall") as sim:
        settings = CymruSettings(host="127.0.0.1", port=sim.port, retries=0, read_timeout=0.5,
                                 backoff=0.01, min_split=50)  # fmt: skip
        addresses = World(1).attacking_ips(40, np.random.default_rng(12))
        [batch] = list(CymruClient(settings).lookup(addresses))
    assert batch.answers == {} and set(batch.failed) == set(addresses)
    assert set(batch.reasons.values()) == {"no answer within 0.5 s"}


def run_log_row(db_url: str) -> dict[str, object]:
    con = sqlite3.connect(db_url.removeprefix("sqlite:///"))
    con.row_factory = sqlite3.Row
    found = con.execute("SELECT * FROM etl_run_log ORDER BY run_id DESC LIMIT 1").fetchone()
    con.close()
    return dict(found)


def metric(text: str, name: str) -> int:
    found = re.search(rf"^honeypot_etl_{name} (\d+)$", text, re.MULTILINE)
    assert found, name
    return int(found.group(1))


def test_a_cymru_that_answers_the_first_line_then_stalls_ends_in_under_90_s_with_exit_3(
    tmp_path: Path,
) -> None:
    db_url = build_sample(tmp_path, 2000)
    with running("cymru", tmp_path / "c.jsonl", "--fault", "first-then-stall") as cy:
        result, seconds, summary, metrics = refresh(
            tmp_path, db_url, "--skip", "greynoise", "--cymru", cy.address
        )
        sessions = cy.entries()
    assert result.returncode == 3, result.stderr
    assert seconds < 90
    assert [without_count(x) for x in result.stderr.splitlines() if "Cymru" in x] == [
        f"Team Cymru at {cy.address}: 4 sessions in a row stalled after a partial answer (no "
        "answer within 30 s): stopped asking it for this run; the IPs not asked keep their "
        "old blocks"
    ]
    assert len(sessions) <= 5
    assert summary["stopped"]["cymru"]["reason"] == "stalled"
    assert 'honeypot_etl_source_stopped{source="cymru",reason="stalled"} 1' in metrics
    # Every AS lookup of the run went without an answer, and every count says so.
    asked = {q for entry in sessions for q in entry["queries"] if q.startswith("AS")}
    failed = summary["cymru_as_lookups_failed"]
    assert failed >= len(asked) > 0 and summary["asn_details"] == 0  # and those never sent
    assert metric(metrics, "cymru_as_lookups_failed") == failed
    assert run_log_row(db_url)["cymru_as_lookups_failed"] == failed
    assert f"{failed} AS lookups left without an answer" in summary_table(tmp_path, db_url)


def not_asked_are_counted(said: str, summary: dict[str, Any], source: str) -> None:
    """The IPs a stopped source never sent are ``skipped`` (not sent), and its stop line says
    how many: every IP it had to ask is queried or skipped (before: those never sent were
    nowhere, and no line said how many were left)."""
    [(left, total)] = [
        (int(m[1].replace(",", "")), int(m[2].replace(",", "")))
        for m in map(NOT_ASKED.search, said.splitlines())
        if m
    ]
    counts = summary["sources"][source]
    assert 0 < left <= counts["skipped"] and counts["queried"] + counts["skipped"] == total
    assert summary["stopped"][source]["message"].endswith(f" ({left:,} of the {total:,} to ask)")


def summary_table(tmp_path: Path, db_url: str) -> str:
    """The summary table of the run in the summary JSON (as the CLI prints it)."""
    import json

    from etl.report.summary import RunSummary, SourceCounts, SourceStop

    data = json.loads((tmp_path / "s.json").read_text())
    data["sources"] = {k: SourceCounts(**v) for k, v in data["sources"].items()}
    data["stopped"] = {k: SourceStop(**v) for k, v in data["stopped"].items()}
    return RunSummary(**data).table()


def test_a_greynoise_that_answers_some_requests_then_stalls_is_stopped_with_exit_3(
    tmp_path: Path,
) -> None:
    db_url = build_sample(tmp_path, 300)
    with running("greynoise", tmp_path / "g.jsonl", "--key", KEY, "--fault", "stall-after") as gn:
        result, seconds, summary, metrics = refresh(
            tmp_path, db_url, "--skip", "cymru", "--greynoise-url", gn.url,
            "--greynoise-rate", "50",
        )  # fmt: skip
    assert result.returncode == 3, result.stderr
    assert seconds < 60
    assert [without_count(x) for x in result.stderr.splitlines() if "GreyNoise" in x] == [
        f"GreyNoise at {gn.url}: 10 requests in a row got no answer (no answer within 15 s): "
        "GreyNoise stopped for this run; the IPs not asked keep their old blocks"
    ]
    greynoise = summary["sources"]["greynoise"]
    assert greynoise["ok"] + greynoise["not_found"] + greynoise["skipped"] >= 20 - 2
    assert summary["stopped"]["greynoise"]["reason"] == "stalled"
    assert 'honeypot_etl_source_stopped{source="greynoise",reason="stalled"} 1' in metrics
    assert metric(metrics, "cymru_as_lookups_failed") == 0
    not_asked_are_counted(result.stderr, summary, "greynoise")


def test_a_run_log_made_by_an_earlier_version_gets_the_new_column(tmp_path: Path) -> None:
    db_url = build_sample(tmp_path, 50)
    path = db_url.removeprefix("sqlite:///")
    con = sqlite3.connect(path)
    con.execute("ALTER TABLE etl_run_log DROP COLUMN cymru_as_lookups_failed")
    con.execute("INSERT INTO etl_run_log (run_id, started_at, outcome) VALUES (7, '2026-01-01', 'finished')")  # fmt: skip
    con.commit()
    con.close()
    result = run_module(
        "etl.refresh", "--db", db_url, "--maxmind-dir", str(tmp_path), "--skip", "cymru",
        "--skip", "greynoise", "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    con = sqlite3.connect(path)
    rows = con.execute("SELECT run_id, cymru_as_lookups_failed FROM etl_run_log").fetchall()
    con.close()
    assert sorted(rows) == [(7, 0), (8, 0)]
