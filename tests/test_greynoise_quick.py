"""Enterprise mode checks quickly first (SPEC 3.3): ``POST /v3/ip?quick=true`` for every IP,
then the full-context ``POST /v3/ip`` only for the IPs it found; Searches counted as GreyNoise
bills them and capped by ``search_budget``. In memory, with the scripted transport of
test_greynoise_policy."""

from __future__ import annotations

import math
import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etl.core.errors import (
    QuotaExhaustedError,
    ServiceUnavailableError,
    TransportError,
    UnauthorizedError,
)
from etl.sources.greynoise.client import GreyNoiseAnswer, GreyNoiseClient, search_cost
from etl.sources.greynoise.transport import HttpResponse
from tests.test_greynoise_policy import collect, make, not_observed_body, response

QUICK, FULL = "/v3/ip?quick=true", "/v3/ip"


def ips(count: int) -> list[str]:
    return [f"198.18.{n // 250}.{n % 250 + 1}" for n in range(count)]


class Service:
    """GreyNoise's view per IP: ``noise``, ``riot``, ``unseen`` (in data, found false in both),
    ``listed`` (in ips_not_found) or ``absent`` (in neither: an error)."""

    def __init__(self, kinds: dict[str, str]) -> None:
        self.kinds = kinds

    def kind(self, ip: str) -> str:
        return self.kinds.get(ip, "listed")

    def item(self, ip: str, quick: bool) -> dict[str, Any]:
        kind = self.kind(ip)
        scanner: dict[str, Any] = {"found": kind == "noise", "classification": "malicious"}
        business: dict[str, Any] = {"found": kind == "riot", "trust_level": "1"}
        if not quick and kind == "noise":
            scanner.update(actor="Censys", tags=[{"name": "Mirai"}], cves=["CVE-2024-3400"],
                           vpn=False, tor=True, spoofable=False, first_seen="2026-01-02",
                           last_seen="2026-11-20")  # fmt: skip
        if not quick and kind == "riot":
            business.update(name="Cloudflare", last_updated="2026-11-20T12:30:45Z")
        return {"ip": ip, "internet_scanner_intelligence": scanner,
                "business_service_intelligence": business}  # fmt: skip

    def __call__(self, method: str, path: str, body: Any) -> HttpResponse:
        assert method == "POST" and path in (QUICK, FULL)
        asked = body["ips"]
        quick = path == QUICK
        data = [
            self.item(ip, quick) for ip in asked if self.kind(ip) in ("noise", "riot", "unseen")
        ]
        listed = [ip for ip in asked if self.kind(ip) == "listed"]
        return response(200, {"data": data, "request_metadata": {"ips_not_found": listed}})


def sent(transport: Any, path: str) -> list[list[str]]:
    return [body["ips"] for _, p, body in transport.sent if p == path]


def enterprise(service: Any, **overrides: Any) -> tuple[GreyNoiseClient, Any, Any]:
    return make(service, mode="enterprise", **overrides)


def test_full_context_only_for_the_ips_the_quick_check_found() -> None:
    asked = ips(6)
    kinds = dict(zip(asked, ["noise", "riot", "unseen", "listed", "absent", "noise"], strict=True))
    client, transport, _ = enterprise(Service(kinds))
    answers, error = collect(client, asked)
    assert error is None
    assert sent(transport, QUICK) == [asked]
    assert sent(transport, FULL) == [[asked[0], asked[1], asked[5]]]
    by_ip = {a.ip: a for a in answers}
    assert sorted(by_ip) == sorted(asked) and len(answers) == 6
    assert by_ip[asked[2]] == GreyNoiseAnswer.not_observed(asked[2])  # found false in both
    assert by_ip[asked[3]] == GreyNoiseAnswer.not_observed(asked[3])  # in ips_not_found
    assert by_ip[asked[4]] == GreyNoiseAnswer.failed(asked[4], "missing from the answer")
    noise = by_ip[asked[0]]  # the full record, not the quick one
    assert (noise.actor, noise.tags, noise.cves, noise.tor) == ("Censys", ("Mirai",),
                                                                ("CVE-2024-3400",), True)  # fmt: skip
    assert by_ip[asked[1]].name == "Cloudflare" and by_ip[asked[1]].actor is None
    assert client.searches_spent == 1 + 3 and client.requests_sent == 2


def test_nothing_found_means_no_full_lookup() -> None:
    client, transport, _ = enterprise(Service({}), rate=100)
    answers = list(client.lookup(ips(2_500)))
    assert {a.status for a in answers} == {"not_found"} and len(answers) == 2_500
    assert sent(transport, FULL) == []
    assert sorted(map(len, sent(transport, QUICK))) == [500, 1_000, 1_000]
    assert client.searches_spent == 3  # ceil(2,500 / 1,000), not 2,500


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 12_000), st.integers(0, 2**32), st.booleans())
def test_searches_are_one_per_started_thousand_per_quick_check_plus_one_per_found_ip(
    count: int, seed: int, capped: bool
) -> None:
    asked = ips(count)
    kinds = {ip: ("noise", "riot", "listed", "unseen")[(seed >> (n % 29)) % 4]
             for n, ip in enumerate(asked)}  # fmt: skip
    extra = {"budget": 1_000} if capped else {}  # a request cap: as few requests as possible
    client, transport, _ = enterprise(Service(kinds), rate=100, **extra)
    answers = list(client.lookup(asked))
    found = [ip for ip in asked if kinds[ip] in ("noise", "riot")]
    quick = sent(transport, QUICK)
    assert sorted(ip for chunk in quick for ip in chunk) == sorted(asked)
    assert sorted(ip for chunk in sent(transport, FULL) for ip in chunk) == sorted(found)
    quick_searches = sum(math.ceil(len(chunk) / 1_000) for chunk in quick)
    assert quick_searches == math.ceil(count / 1_000)  # chunks in whole thousands
    assert client.searches_spent == quick_searches + len(found)
    assert len(answers) == count and all(len(chunk) <= 10_000 for chunk in quick)


def test_search_cost() -> None:
    assert [search_cost(n, quick=True) for n in (1, 999, 1_000, 1_001, 10_000)] == [1, 1, 1, 2, 10]
    assert search_cost(1_350, quick=False) == 1_350


# -- the Search cap ----------------------------------------------------------------------------


def test_a_full_lookup_larger_than_the_cap_is_cut_to_the_first_ips_that_fit() -> None:
    asked = ips(3_000)
    kinds = {ip: "noise" if n % 2 == 0 else "listed" for n, ip in enumerate(asked)}
    client, transport, _ = enterprise(Service(kinds), search_budget=103)
    answers, error = collect(client, asked)
    assert isinstance(error, QuotaExhaustedError) and error.reason == "daily_budget"
    assert error.run_exit_code == 0
    assert str(error) == ("GreyNoise daily budget of 103 Searches for this run is spent: the IPs "
                          "not asked keep their old blocks")  # fmt: skip
    assert sent(transport, QUICK) == [asked]  # one quick check of 3,000: 3 Searches
    found = [ip for ip in asked if kinds[ip] == "noise"]
    assert sent(transport, FULL) == [found[:100]]  # the first 100 in the order given
    assert client.searches_spent == 103
    statuses = {a.ip: a.status for a in answers}
    assert all(statuses[ip] == "ok" for ip in found[:100])
    assert not set(found[100:]) & set(statuses)  # not asked: no answer, old blocks stay
    assert sum(s == "not_found" for s in statuses.values()) == 1_500


def test_a_cap_too_small_for_the_whole_quick_check_cuts_it_in_thousands() -> None:
    asked = ips(2_500)
    client, transport, _ = enterprise(Service({}), search_budget=2)
    answers, error = collect(client, asked)
    assert isinstance(error, QuotaExhaustedError) and error.reason == "daily_budget"
    assert sent(transport, QUICK) == [asked[:2_000]]
    assert sorted(a.ip for a in answers) == sorted(asked[:2_000])
    assert client.searches_spent == 2


def test_a_spent_cap_sends_nothing() -> None:
    client, transport, _ = enterprise(Service({}), search_budget=0)
    answers, error = collect(client, ips(10))
    assert isinstance(error, QuotaExhaustedError) and error.reason == "daily_budget"
    assert answers == [] and transport.sent == [] and client.searches_spent == 0


def test_a_cap_exactly_enough_finishes_without_a_stop() -> None:
    asked = ips(1_200)
    kinds = {ip: "riot" for ip in asked[:40]}
    client, _, _ = enterprise(Service(kinds), search_budget=2 + 40)
    answers, error = collect(client, asked)
    assert error is None and len(answers) == 1_200 and client.searches_spent == 42


def test_under_a_cap_chunks_go_one_at_a_time_in_priority_order() -> None:
    asked = ips(900)
    kinds = dict.fromkeys(asked, "noise")
    client, transport, _ = enterprise(Service(kinds), batch_size=300, search_budget=2 + 450)
    answers, error = collect(client, asked)
    assert isinstance(error, QuotaExhaustedError)
    # quick 1, full 1 (300), quick 2, full 2 cut to 150; the third chunk is never asked.
    assert [p for _, p, _ in transport.sent] == [QUICK, FULL, QUICK, FULL]
    assert sent(transport, FULL) == [asked[:300], asked[300:450]]
    assert sorted(a.ip for a in answers) == sorted(asked[:450])
    assert client.searches_spent == 2 + 450


def test_the_request_budget_counts_quick_checks_and_full_lookups() -> None:
    asked = ips(10)
    kinds = {asked[0]: "noise"}
    client, transport, _ = enterprise(Service(kinds), budget=1)
    answers, error = collect(client, asked)
    assert isinstance(error, QuotaExhaustedError) and error.reason == "budget"
    assert [p for _, p, _ in transport.sent] == [QUICK]
    # What the quick check settled is kept; the IP it found was never looked up in full.
    assert sorted(a.ip for a in answers) == sorted(asked[1:])


# -- stops and failures between the two requests ---------------------------------------------


def test_a_refused_key_on_the_full_lookup_keeps_what_the_quick_check_settled() -> None:
    asked = ips(5)
    service = Service({asked[0]: "noise", asked[1]: "riot"})

    def script(method: str, path: str, body: Any) -> HttpResponse:
        return response(401, {"message": "Unauthorized"}) if path == FULL else service(
            method, path, body)  # fmt: skip

    client, transport, fake = enterprise(script)
    answers, error = collect(client, asked)
    assert isinstance(error, UnauthorizedError)
    assert sorted(a.ip for a in answers) == sorted(asked[2:])
    assert {a.status for a in answers} == {"not_found"} and fake.sleeps == []
    assert len(transport.sent) == 2


def test_a_failing_full_lookup_is_retried_then_its_ips_are_errors() -> None:
    asked = ips(4)
    service = Service({asked[0]: "noise"})

    def script(method: str, path: str, body: Any) -> HttpResponse:
        return response(503) if path == FULL else service(method, path, body)

    client, transport, _ = enterprise(script, retries=2)
    answers = {a.ip: a.status for a in client.lookup(asked)}
    assert answers == {asked[0]: "error", **dict.fromkeys(asked[1:], "not_found")}
    assert len(sent(transport, FULL)) == 3
    assert client.searches_spent == 1  # a 5xx does no lookup: its Search is given back


def test_a_failing_quick_check_asks_nothing_in_full() -> None:
    client, transport, _ = enterprise(lambda m, p, b: response(200, [1, 2]), retries=0)
    answers = list(client.lookup(ips(3)))
    assert {a.status for a in answers} == {"error"} and len(answers) == 3
    assert sent(transport, FULL) == [] and client.searches_spent == 1  # 200: billed


def test_the_breaker_trips_on_the_full_lookups_too() -> None:
    asked = ips(4_000)
    service = Service(dict.fromkeys(asked, "noise"))

    def script(method: str, path: str, body: Any) -> HttpResponse:
        if path == FULL:
            raise TransportError("x", "connection refused")
        return service(method, path, body)

    client, _, _ = enterprise(script, failures_to_stop=3, retries=5)
    answers, error = collect(client, asked)
    assert isinstance(error, ServiceUnavailableError) and error.reason == "unreachable"
    assert answers == [] or {a.status for a in answers} == {"error"}
    # The quick checks of the two chunks in flight; the refused full lookups are free, and
    # the breaker trips before either chunk is done, so no other chunk is checked.
    assert client.searches_spent == 2


def test_cancel_between_the_quick_check_and_the_full_lookup() -> None:
    asked = ips(5)
    service = Service({asked[0]: "noise"})
    cancelled = threading.Event()

    def script(method: str, path: str, body: Any) -> HttpResponse:
        answer = service(method, path, body)
        client.cancel()
        cancelled.set()
        return answer

    client, transport, _ = enterprise(script)
    answers, error = collect(client, asked)
    assert cancelled.is_set() and error is not None and error.reason == "cancelled"
    assert sent(transport, FULL) == []
    assert sorted(a.ip for a in answers) == sorted(asked[1:])  # settled by the quick check


# -- what is billed ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "billed"),
    [
        (response(429, {"message": "slow down"}, {"Retry-After": "1"}), 0),  # a throttle
        (response(500), 0),
        (TransportError("x", "connection reset without an answer"), 0),
        (TransportError("x", "no answer within 15 s", stalled=True), 1),  # may have been done
    ],
)
def test_an_attempt_without_a_lookup_gives_its_searches_back(
    first: HttpResponse | TransportError, billed: int
) -> None:
    replies = iter([first])

    def script(method: str, path: str, body: Any) -> HttpResponse:
        reply = next(replies, None)
        if isinstance(reply, TransportError):
            raise reply
        return reply or response(404, not_observed_body(path.rsplit("/", 1)[1]))

    client, transport, _ = make(script)
    assert [a.status for a in client.lookup(["203.0.113.5"])] == ["not_found"]
    assert len(transport.sent) == 2 and client.requests_sent == 2
    assert client.searches_spent == 1 + billed


def test_searches_are_counted_exactly_from_many_threads() -> None:
    client, _, _ = make(
        lambda m, p, b: response(404, not_observed_body(p.rsplit("/", 1)[1])), rate=1_000
    )
    answers = list(client.lookup([f"203.0.{n // 250}.{n % 250 + 1}" for n in range(3_000)]))
    assert len(answers) == 3_000 and client.searches_spent == 3_000 == client.requests_sent
