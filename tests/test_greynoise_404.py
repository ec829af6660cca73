"""Issue 25, items 2, 9 and 10: a 404 is "not observed" only when GreyNoise says so (any other
404, as from a wrong ``--greynoise-url``, is an ``error`` and trips the breaker), ``not_found``
blocks have no classification, and the pacer never sends more than the rate in one second."""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etl.core.errors import ServiceUnavailableError
from etl.sources.greynoise.answers import community_answer, multi_answers
from etl.sources.greynoise.client import GreyNoiseAnswer
from etl.sources.greynoise.pacing import Pacer
from etl.sources.greynoise.transport import HttpResponse
from etl.status import explore
from tests.sims import run_module, running
from tests.test_greynoise_policy import collect, make, not_observed_body, response

WRONG_PATH = {"message": "Not Found"}  # what a web server answers for a path it does not serve
KEY = "gn-404-key"


def ips(count: int) -> list[str]:
    return [f"203.0.113.{n}" for n in range(1, count + 1)]


def community_ip(path: str) -> str:
    return path.rsplit("/", 1)[1]


# -- community -----------------------------------------------------------------------------


def test_greynoise_not_observed_404_is_not_found_without_a_classification() -> None:
    client, _, _ = make(lambda m, p, b: response(404, not_observed_body(community_ip(p))))
    [answer] = list(client.lookup(["203.0.113.7"]))
    assert answer.status == "not_found" and (answer.noise, answer.riot) == (False, False)
    assert answer.classification is None
    assert GreyNoiseAnswer.not_observed("203.0.113.7").classification is None
    assert community_answer("203.0.113.7", 404, not_observed_body("203.0.113.7")) == answer


@pytest.mark.parametrize(
    "body",
    [
        WRONG_PATH,
        b"<html><body>404 Not Found</body></html>",  # a web server's page
        None,  # no body
        {"ip": "198.51.100.1", "noise": False, "riot": False},  # another IP's answer
        {"ip": "203.0.113.1", "noise": False},  # riot missing
        {"ip": "203.0.113.1", "noise": "false", "riot": False},  # not booleans
    ],
)
def test_any_other_404_is_an_error_http_404(body: Any) -> None:
    reply = HttpResponse(404, {}, body) if isinstance(body, bytes) else response(404, body)
    client, transport, _ = make(lambda m, p, b: reply)
    [answer] = list(client.lookup(["203.0.113.1"]))
    assert answer == GreyNoiseAnswer.failed("203.0.113.1", "HTTP 404")
    assert len(transport.sent) == 1  # not retried: a wrong URL stays wrong
    assert client.searches_spent == 0  # GreyNoise made no lookup


def test_ten_wrong_404s_in_a_row_stop_greynoise_and_name_the_url_setting() -> None:
    client, transport, _ = make(lambda m, p, b: response(404, WRONG_PATH))
    answers, error = collect(client, ips(50))
    assert isinstance(error, ServiceUnavailableError)
    assert "check --greynoise-url" in str(error) and "HTTP 404" in str(error)
    assert {a.status for a in answers} <= {"error"} and answers
    assert {a.error for a in answers} == {"HTTP 404"}
    assert len(transport.sent) < 50  # stopped early: the others keep their old blocks


def test_a_real_not_observed_404_breaks_the_row_of_wrong_ones() -> None:
    def script(method: str, path: str, body: Any) -> HttpResponse:
        ip = community_ip(path)
        unseen = int(ip.rsplit(".", 1)[1]) % 3 == 0
        return response(404, not_observed_body(ip) if unseen else WRONG_PATH)

    # Rate 1: three workers, so the breaker sees any row of wrong ones at most 4 long.
    client, _, _ = make(script, failures_to_stop=5, rate=1)
    answers, error = collect(client, ips(30))
    assert error is None
    assert sorted(a.status for a in answers) == ["error"] * 20 + ["not_found"] * 10


# -- v3 multi / quick ----------------------------------------------------------------------


def test_v3_404_listing_the_ips_as_not_found_is_not_found() -> None:
    asked = ips(3)
    body = {"data": [], "request_metadata": {"message": "ok", "ips_not_found": asked}}
    client, _, _ = make(lambda m, p, b: response(404, body), mode="enterprise")
    answers = list(client.lookup(asked))
    assert [a.status for a in answers] == ["not_found"] * 3
    assert {a.classification for a in answers} == {None}
    assert multi_answers(body, asked)[asked[0]].classification is None


def test_v3_wrong_path_404s_are_errors_and_trip_the_breaker() -> None:
    client, transport, _ = make(
        lambda m, p, b: response(404, WRONG_PATH),
        mode="enterprise",
        batch_size=2,
        budget=1000,  # a cap: chunks of batch_size, so one request per two IPs
    )
    answers, error = collect(client, ips(60))
    assert isinstance(error, ServiceUnavailableError) and "check --greynoise-url" in str(error)
    assert answers and {(a.status, a.error) for a in answers} == {("error", "HTTP 404")}
    assert len(transport.sent) < 30
    assert client.searches_spent == 0


# -- pacing: never more than the rate in any one second ------------------------------------


def most_in_one_second(times: list[float]) -> int:
    """The most send times any window [t, t + 1 s) holds (it suffices to start at each)."""
    ordered = sorted(times)
    return max(sum(1 for u in ordered if t <= u < t + 1.0 - 1e-9) for t in ordered)


@pytest.mark.parametrize(("rate", "most"), [(10, 10), (100, 100)])
def test_the_first_second_holds_the_rate_and_no_more(rate: int, most: int) -> None:
    now = [0.0]
    pacer = Pacer(rate, lambda: now[0])
    times = [now[0] + pacer.reserve() for _ in range(3 * rate)]
    assert sum(1 for t in times if t < 1.0) == most
    assert most_in_one_second(times) == most


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(min_value=1.0, max_value=200.0, allow_nan=False),
    gaps=st.lists(
        st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=2.0, allow_nan=False)),
        min_size=1,
        max_size=400,
    ),
    pause=st.one_of(st.none(), st.tuples(st.integers(0, 399), st.floats(0.0, 3.0))),
)
def test_no_one_second_window_holds_more_than_the_rate(
    rate: float, gaps: list[float], pause: tuple[int, float] | None
) -> None:
    """Requests arriving at any times (bursts, idle spells, a 429's pause among them): the
    times the pacer lets them go never put more than the rate into one second."""
    now = [100.0]
    pacer = Pacer(rate, lambda: now[0])
    times: list[float] = []
    for index, gap in enumerate(gaps):
        now[0] += gap
        if pause is not None and pause[0] == index:
            pacer.pause(pause[1])
        times.append(now[0] + pacer.reserve())
    assert most_in_one_second(times) <= max(1, int(rate))


@given(rate=st.floats(min_value=0.05, max_value=1.0, exclude_max=True))
def test_below_one_a_second_requests_are_spaced_by_the_interval(rate: float) -> None:
    now = [0.0]
    pacer = Pacer(rate, lambda: now[0])
    times = [pacer.reserve() for _ in range(5)]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 1 / rate - 1e-9


# -- the real command, against the simulator -----------------------------------------------


def greynoise_blocks(db_file: Path) -> dict[str, dict[str, Any]]:
    con = sqlite3.connect(db_file)
    rows = con.execute("SELECT ip_address, enrichment FROM ip_inventory").fetchall()
    con.close()
    blocks = {ip: json.loads(e or "{}").get("greynoise") for ip, e in rows}
    return {ip: b for ip, b in blocks.items() if b}


def test_refresh_with_a_doubled_path_writes_no_not_found_and_exits_3(tmp_path: Path) -> None:
    db_file = tmp_path / "h.sqlite"
    db_url = f"sqlite:///{db_file}"
    made = run_module(
        "testbed.sample", "--db", db_url, "--ips", "80", "--maxmind-dir", str(tmp_path)
    )
    assert made.returncode == 0, made.stderr
    before = greynoise_blocks(db_file)
    env = {**os.environ, "GREYNOISE_API_KEY": KEY}
    args = ["--db", db_url, "--maxmind-dir", str(tmp_path), "--skip", "cymru",
            "--greynoise-rate", "200"]  # fmt: skip
    with running("greynoise", tmp_path / "gn.jsonl", "--key", KEY) as gn:
        wrong = run_module("etl.refresh", *args, "--greynoise-url", f"{gn.url}/v3", env=env)
        after = greynoise_blocks(db_file)
        output = wrong.stdout + wrong.stderr
        assert wrong.returncode == 3, output
        assert "check --greynoise-url" in output and "HTTP 404" in output
        changed = {  # IPv6 is skipped without a request
            ip: b for ip, b in after.items() if b != before.get(ip) and b["status"] != "skipped"
        }
        assert changed  # the IPs asked before the stop are errors ...
        assert {(b["status"], b.get("error")) for b in changed.values()} == {("error", "HTTP 404")}
        # ... and no block became not_found (fresh for 7 days) by this run
        assert not [ip for ip, b in changed.items() if b["status"] == "not_found"]

        # The right URL: GreyNoise's own 404s are not_found, with no classification.
        right = run_module("etl.refresh", *args, "--greynoise-url", gn.url, env=env)
        assert right.returncode == 0, right.stdout + right.stderr
        fresh = greynoise_blocks(db_file)
        unseen = [
            b for ip, b in fresh.items() if b["status"] == "not_found" and b != before.get(ip)
        ]
        assert unseen and {b["classification"] for b in unseen} == {None}
        assert not [b for b in fresh.values() if b["status"] == "error"]


def test_requests_held_back_by_a_pause_do_not_all_go_at_its_end() -> None:
    """Ten requests sleep towards their slot when another worker's 429 pauses everyone; ten
    more reserve after the pause began. Together they still keep to the rate."""
    now = [0.0]
    pacer = Pacer(10, lambda: now[0], capacity=10)
    sent = [now[0] + pacer.reserve() for _ in range(10)]  # a full bucket: ten at once
    sleeping = [pacer.reserve() for _ in range(10)]  # their slots: a second later
    assert sleeping == [pytest.approx(1.0)] * 10
    now[0] = 0.5
    pacer.pause(5.0)  # until 5.5
    sent += [now[0] + pacer.reserve() for _ in range(10)]  # reserved during the pause
    now[0] = 1.0  # the sleepers wake at their slot, in the pause
    sent += [now[0] + pacer.woke() for _ in range(10)]
    assert min(sent[10:]) >= 5.5
    assert most_in_one_second(sent) <= 10


def test_the_notebook_counts_new_and_old_not_found_blocks_alike() -> None:
    """`not_found` with ``classification`` null (now) or ``"unknown"`` (older blocks) is "not
    observed"; an observed IP of GreyNoise's own class ``unknown`` stays apart."""
    ips = pl.DataFrame(
        {
            "usable": [True] * 3,
            "is_bogon": [False] * 3,
            "greynoise_status": ["not_found", "not_found", "ok"],
            "classification": [None, "unknown", "unknown"],
            "sessions": [1, 2, 4],
        }
    )
    assert explore.greynoise_classes(ips).rows() == [
        (explore.OBSERVED, "unknown", 1, 4),
        (explore.NOT_OBSERVED, explore.NOT_OBSERVED, 2, 3),
    ]
