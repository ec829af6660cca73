"""GreyNoise client policy in memory: a scripted transport answers, a fake clock tells the time.

The same rules run against the real HTTP simulator in test_greynoise_client.py; here each
answer is chosen per request, so that every branch is reached quickly and exactly.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from etl.core.errors import (
    QuotaExhaustedError,
    ServiceUnavailableError,
    ThrottledError,
    TransportError,
    UnauthorizedError,
)
from etl.sources.greynoise.client import GreyNoiseAnswer, GreyNoiseClient, GreyNoiseSettings, Pacer
from etl.sources.greynoise.transport import HttpResponse

URL = "http://greynoise.test"
NOISE = {"ip": "", "noise": True, "riot": False, "classification": "malicious", "name": "x",
         "last_seen": "2026-11-01", "link": "https://viz.greynoise.io/ip/x"}  # fmt: skip
DAILY = {"plan": "community", "rate-limit": "50-lookups/week", "message": "daily limit"}


def response(
    status: int, body: Any = None, headers: Mapping[str, str] | None = None
) -> HttpResponse:
    content = b"" if body is None else json.dumps(body).encode()
    return HttpResponse(status, dict(headers or {}), content)


Script = Callable[[str, str, Any], HttpResponse]


class ScriptedTransport:
    """Answers each request with ``script(method, path, body)`` and records what was sent."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.sent: list[tuple[str, str, Any]] = []
        self.closed = False
        self._lock = threading.Lock()

    def request(
        self, method: str, url: str, headers: Mapping[str, str], body: Any, timeout: float
    ) -> HttpResponse:
        assert headers == {"key": "k"} and timeout > 0
        path = url.removeprefix(URL)
        with self._lock:
            self.sent.append((method, path, body))
            return self.script(method, path, body)

    def close(self) -> None:
        self.closed = True

    def count(self, path: str) -> int:
        return sum(1 for _, p, _ in self.sent if p == path)


class FakeTime:
    """A clock that moves only when someone sleeps; every sleep is recorded."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now += seconds


def make(script: Script, **overrides: Any) -> tuple[GreyNoiseClient, ScriptedTransport, FakeTime]:
    fake = FakeTime()
    transport = ScriptedTransport(script)
    settings = GreyNoiseSettings(url=URL, **{"rate": 10, "backoff": 1.0, **overrides})
    client = GreyNoiseClient(settings, "k", fake.sleep, transport=transport, clock=fake.clock)
    return client, transport, fake


def community_ok(method: str, path: str, body: Any) -> HttpResponse:
    ip = path.rsplit("/", 1)[1]
    return response(200, {**NOISE, "ip": ip})


def not_observed_body(ip: str) -> dict[str, Any]:
    """GreyNoise's community 404 for an IP it has not observed (shared/protocols/greynoise.md)."""
    message = "IP not observed scanning the internet or contained in RIOT data set."
    return {"ip": ip, "noise": False, "riot": False, "message": message}


def ips(count: int) -> list[str]:
    return [f"203.0.113.{n}" for n in range(1, count + 1)]


def collect(
    client: GreyNoiseClient, asked: list[str]
) -> tuple[list[GreyNoiseAnswer], Exception | None]:
    answers: list[GreyNoiseAnswer] = []
    try:
        for answer in client.lookup(asked):
            answers.append(answer)
    except Exception as exc:
        return answers, exc
    return answers, None


def test_a_throttling_429_waits_its_retry_after_then_asks_again() -> None:
    replies = iter([response(429, {"message": "slow down"}, {"Retry-After": "7"})])
    client, transport, fake = make(lambda m, p, b: next(replies, None) or community_ok(m, p, b))
    [answer] = list(client.lookup(["203.0.113.9"]))
    assert answer.status == "ok" and answer.noise is True
    assert transport.count("/v3/community/203.0.113.9") == 2
    assert fake.sleeps == [pytest.approx(7.0)]  # the whole pause, no backoff on top
    assert client.requests_sent == 2


def test_a_retry_after_beyond_the_limit_stops_greynoise() -> None:
    client, transport, _ = make(
        lambda m, p, b: response(429, {"message": "wait"}, {"Retry-After": "3600"}),
        max_retry_after=300,
    )
    answers, error = collect(client, ["203.0.113.1"])
    assert isinstance(error, ThrottledError) and answers == []
    assert error.run_exit_code == 0  # like a daily limit: normal operation
    assert len(transport.sent) == 1


FAILURES = [
    (TransportError("x", "connection refused"), "unreachable"),
    (TransportError("x", "no answer within 15 s", stalled=True), "stalled"),
    (None, "unreachable"),  # a 503 every time
]


@pytest.mark.parametrize(("failure", "reason"), FAILURES)
def test_failures_in_a_row_trip_the_breaker_and_stop_greynoise(
    failure: TransportError | None, reason: str
) -> None:
    def script(method: str, path: str, body: Any) -> HttpResponse:
        if failure is None:
            return response(503)
        raise failure

    client, transport, _ = make(script, failures_to_stop=10, retries=3)
    answers, error = collect(client, ips(2000))
    assert isinstance(error, ServiceUnavailableError) and error.reason == reason
    assert error.run_exit_code == 3 and "10 requests in a row got no answer" in str(error)
    assert len(transport.sent) <= 10 + client.settings.workers  # not 2,000 x 4 attempts
    # Only an IP whose every attempt failed before the trip is an error; the rest are never
    # asked again and keep their old blocks.
    assert {a.status for a in answers} <= {"error"} and len(answers) <= 10 // 4


def test_any_answer_breaks_the_row_of_failures() -> None:
    calls = iter(range(10_000))

    def script(method: str, path: str, body: Any) -> HttpResponse:
        if next(calls) % 3 == 2:
            return community_ok(method, path, body)
        raise TransportError("x", "connection refused")

    # The breaker may count a success after failures sent later, by as many as there are other
    # workers (3 at rate 1): an answer every 3rd call keeps any row it sees below 5.
    client, _, _ = make(script, failures_to_stop=5, retries=10, rate=1)
    answers, error = collect(client, ips(50))
    assert error is None and {a.status for a in answers} == {"ok"}


def test_the_daily_limit_body_stops_the_run_and_leaves_the_rest_unasked() -> None:
    client, transport, _ = make(lambda m, p, b: response(429, DAILY))
    answers, error = collect(client, ips(100))
    assert isinstance(error, QuotaExhaustedError)
    assert answers == []  # no IP gets an answer: their old blocks stay as they are
    assert len(transport.sent) <= client.settings.workers  # only what was already in flight


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_key_stops_at_once_without_retrying(status: int) -> None:
    client, transport, fake = make(lambda m, p, b: response(status, {"message": "no"}))
    answers, error = collect(client, ips(100))
    assert isinstance(error, UnauthorizedError) and answers == []
    assert len(transport.sent) <= client.settings.workers
    assert len({p for _, p, _ in transport.sent}) == len(transport.sent)  # none asked twice
    assert fake.sleeps == []  # no backoff: retrying would not help


def test_server_errors_are_retried_with_backoff_then_the_ip_is_an_error() -> None:
    client, transport, fake = make(lambda m, p, b: response(503), retries=3, backoff=1.0)
    [answer] = list(client.lookup(["203.0.113.5"]))
    assert answer == GreyNoiseAnswer.failed("203.0.113.5", "HTTP 503")
    assert len(transport.sent) == 4  # one try and three retries
    assert len(fake.sleeps) == 3
    for sleep, base in zip(fake.sleeps, (1.0, 2.0, 4.0), strict=True):
        assert base / 2 <= sleep <= base  # doubled each time, with jitter


def test_a_server_error_then_an_answer_is_ok() -> None:
    replies = iter([response(502)])
    client, transport, _ = make(
        lambda m, p, b: next(replies, None) or response(404, not_observed_body("203.0.113.5"))
    )
    assert list(client.lookup(["203.0.113.5"])) == [GreyNoiseAnswer.not_observed("203.0.113.5")]
    assert len(transport.sent) == 2


def test_a_dropped_connection_is_retried_like_a_server_error() -> None:
    def script(method: str, path: str, body: Any) -> HttpResponse:
        raise TransportError("reset")

    client, transport, _ = make(script, retries=2)
    assert [a.status for a in client.lookup(["203.0.113.5"])] == ["error"]
    assert len(transport.sent) == 3


def test_malformed_bodies_are_errors_and_a_400_is_skipped() -> None:
    bodies = {"203.0.113.1": HttpResponse(200, {}, b"{not json"),
              "203.0.113.2": response(200, {"noise": "yes"}),
              "203.0.113.3": response(400, {"message": "invalid ip"})}  # fmt: skip
    client, _, _ = make(lambda m, p, b: bodies[p.rsplit("/", 1)[1]])
    statuses = {a.ip: a.status for a in client.lookup(list(bodies))}
    assert statuses == {"203.0.113.1": "error", "203.0.113.2": "error", "203.0.113.3": "skipped"}


def test_the_budget_counts_requests_and_stops_when_spent() -> None:
    client, transport, _ = make(community_ok, budget=5)
    answers, error = collect(client, ips(20))
    assert isinstance(error, QuotaExhaustedError)
    assert len(transport.sent) == 5 == client.requests_sent
    assert sorted(a.ip for a in answers) == sorted(
        p.rsplit("/", 1)[1] for _, p, _ in transport.sent
    )


def test_the_search_budget_stops_with_reason_daily_budget() -> None:
    client, transport, _ = make(community_ok, search_budget=7)  # one Search per request
    answers, error = collect(client, ips(20))
    assert isinstance(error, QuotaExhaustedError) and error.reason == "daily_budget"
    assert len(transport.sent) == len(answers) == 7 == client.searches_spent
    client, transport, _ = make(community_ok, search_budget=0)
    answers, error = collect(client, ips(3))
    assert isinstance(error, QuotaExhaustedError) and not transport.sent and not answers


def test_a_quick_check_that_finds_nothing_costs_one_search_under_a_budget() -> None:
    def not_found(method: str, path: str, body: Any) -> HttpResponse:
        return response(200, {"data": [], "request_metadata": {"ips_not_found": body["ips"]}})

    client, transport, _ = make(not_found, mode="enterprise", search_budget=25)
    answers, error = collect(client, ips(60))
    assert error is None and {a.status for a in answers} == {"not_found"} and len(answers) == 60
    assert [path for _, path, _ in transport.sent] == ["/v3/ip?quick=true"]
    assert client.searches_spent == 1  # not 60: no full lookup for IPs the check did not find


def test_ipv6_is_skipped_in_community_mode_without_a_request() -> None:
    client, transport, _ = make(community_ok)
    answers = {a.ip: a.status for a in client.lookup(["2001:db8::1", "203.0.113.7"])}
    assert answers == {"2001:db8::1": "skipped", "203.0.113.7": "ok"}
    assert [p for _, p, _ in transport.sent] == ["/v3/community/203.0.113.7"]


def test_enterprise_maps_data_ips_not_found_and_missing_ips() -> None:
    def script(method: str, path: str, body: Any) -> HttpResponse:
        assert method == "POST" and path in ("/v3/ip?quick=true", "/v3/ip")
        data = [{"ip": "203.0.113.1", "internet_scanner_intelligence": {
            "found": True, "classification": "malicious", "last_seen": "2026-11-02"}},
            {"ip": "192.0.2.99", "internet_scanner_intelligence": {"found": True}}]  # fmt: skip
        return response(200, {"data": data, "request_metadata": {"ips_not_found": ["203.0.113.2"]}})

    client, transport, _ = make(script, mode="enterprise")
    answers = {a.ip: a for a in client.lookup(["203.0.113.1", "203.0.113.2", "203.0.113.3"])}
    assert answers["203.0.113.1"].status == "ok" and answers["203.0.113.1"].noise is True
    assert answers["203.0.113.2"] == GreyNoiseAnswer.not_observed("203.0.113.2")
    assert answers["203.0.113.3"].status == "error"  # neither found nor listed as not found
    assert "192.0.2.99" not in answers  # never asked: ignored
    assert transport.sent == [
        ("POST", "/v3/ip?quick=true", {"ips": ["203.0.113.1", "203.0.113.2", "203.0.113.3"]}),
        ("POST", "/v3/ip", {"ips": ["203.0.113.1"]}),  # full context only for what was found
    ]


def test_enterprise_requests_go_out_together_within_the_burst() -> None:
    def script(method: str, path: str, body: Any) -> HttpResponse:
        return response(200, {"data": [], "request_metadata": {"ips_not_found": body["ips"]}})

    client, transport, fake = make(script, mode="enterprise", rate=10)
    answers = list(client.lookup(ips(250) * 16))  # 4,000 queries: spread over 4 requests
    assert len(transport.sent) == 4 and len(answers) == 4000
    assert fake.sleeps == []  # 4 tokens of a 10-token bucket: nobody waits


def test_community_sends_its_burst_without_waiting() -> None:
    client, transport, fake = make(community_ok, rate=10)
    assert len(list(client.lookup(ips(9)))) == 9  # the burst of a 10/s bucket
    assert fake.sleeps == []
    client.close()
    assert transport.closed


def test_cancel_sends_nothing_more() -> None:
    client, transport, _ = make(community_ok)
    client.cancel()
    answers, error = collect(client, ips(5))
    assert answers == [] and transport.sent == [] and error is not None


# -- the token bucket, on a hand-moved clock --------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def send_times(pacer: Pacer, clock: Clock, count: int) -> list[float]:
    """When each of ``count`` requests, reserved one after another right now, may go."""
    return [clock.now + pacer.reserve() for _ in range(count)]


@given(st.integers(1, 100))
def test_a_full_bucket_sends_its_burst_at_once_then_rate_per_second(rate: int) -> None:
    clock = Clock()
    pacer = Pacer(rate, clock)
    burst = int(pacer.capacity)
    # A second's worth less 0.1 s of it (at least one request less, at least one left).
    assert burst == max(1, math.floor(rate * 0.9) if rate >= 10 else rate - 1)
    times = send_times(pacer, clock, 3 * rate)
    assert times[:burst] == [50.0] * burst and times[burst] > 50.0
    # At most R in any one second (a window starting at each request), so R/s in the long run.
    assert max(sum(t <= u < t + 1.0 for u in times) for t in times) == rate
    assert 52.0 <= times[-1] < 53.0


def test_a_given_capacity_is_the_burst() -> None:
    clock = Clock()
    # Ten at once; the eleventh a second after the first (no one-second window holds 11).
    assert send_times(Pacer(10, clock, capacity=10), clock, 11)[9:] == [50.0, 51.0]


def test_idle_time_refills_the_bucket_up_to_its_capacity_only() -> None:
    clock = Clock()
    pacer = Pacer(10, clock)  # a burst of 9
    send_times(pacer, clock, 3)  # six tokens left
    clock.now = 50.2  # two back: eight; but the one-second window has room for seven only
    assert send_times(pacer, clock, 9) == [50.2] * 7 + [51.0, 51.0]
    clock.now += 3600  # a long idle spell refills no more than the capacity
    times = send_times(pacer, clock, 11)
    assert times.count(clock.now) == 9 and times[9] == pytest.approx(clock.now + 0.1)
    assert times[10] == clock.now + 1.0


def test_a_pause_holds_everyone_and_its_end_refills_the_bucket() -> None:
    clock = Clock()
    pacer = Pacer(10, clock, capacity=10)
    send_times(pacer, clock, 10)
    pacer.pause(5)
    assert pacer.held() == pytest.approx(5)
    times = send_times(pacer, clock, 11)
    assert times[:10] == [pytest.approx(55.0)] * 10  # the service refilled while we waited
    assert times[10] == pytest.approx(56.0)  # a second after the first of those ten
    clock.now = 56.0
    assert pacer.held() == 0.0


def test_a_fractional_rate_still_sends_one_request() -> None:
    clock = Clock()
    pacer = Pacer(0.5, clock)
    assert send_times(pacer, clock, 2) == [50.0, 52.0]
