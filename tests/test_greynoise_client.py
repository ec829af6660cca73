"""GreyNoise client: pacing, Retry-After, field mapping, and the simulator's every answer."""

from __future__ import annotations

import email.utils
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from etl.core.errors import (
    QuotaExhaustedError,
    ServiceUnavailableError,
    UnauthorizedError,
    UsageError,
)
from etl.sources.greynoise.client import (
    GreyNoiseAnswer,
    GreyNoiseClient,
    GreyNoiseSettings,
    Pacer,
    community_answer,
    enterprise_answer,
    is_daily_limit,
    retry_after_seconds,
)
from testbed.sample.world import World
from tests.sims import Simulator, running

WORLD = World(1)
KEY = "client-test-key"
IPS = [ip for ip in WORLD.attacking_ips(400, np.random.default_rng(21)) if ":" not in ip]


def expected(ip: str) -> GreyNoiseAnswer:
    """The community answer the simulator's world implies."""
    record = WORLD.greynoise(ip)
    if record is None:
        return GreyNoiseAnswer.not_observed(ip)
    kind = "ip" if record.noise else "riot"
    return GreyNoiseAnswer(
        ip, "ok", record.noise, record.riot, record.classification, record.name,
        f"{record.last_seen}T00:00:00+00:00", f"https://viz.greynoise.io/{kind}/{ip}",
    )  # fmt: skip


def client_for(sim: Simulator, key: str = KEY, **overrides: object) -> GreyNoiseClient:
    options: dict[str, object] = {"rate": 200, "backoff": 0.01, **overrides}
    settings = GreyNoiseSettings(url=sim.url, **options)  # type: ignore[arg-type]
    return GreyNoiseClient(settings, key)


@pytest.fixture(scope="module")
def greynoise(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    with running("greynoise", tmp_path_factory.mktemp("gn") / "log.jsonl", "--key", KEY) as sim:
        yield sim


# -- pure parts ----------------------------------------------------------------------------


def test_pacer_bursts_one_second_then_spaces_requests_and_pauses_everyone() -> None:
    now = [100.0]
    pacer = Pacer(rate=10, clock=lambda: now[0])
    # The burst (9), the rate's 10th; the 11th a second after the first (no window holds 11).
    assert [round(pacer.reserve(), 3) for _ in range(12)] == [0.0] * 9 + [0.1, 1.0, 1.0]
    pacer.pause(5)
    assert round(pacer.reserve(), 3) == 5.0
    now[0] += 60
    assert pacer.reserve() == 0.0


@given(st.integers(min_value=0, max_value=10**6))
def test_retry_after_in_seconds(seconds: int) -> None:
    assert retry_after_seconds(str(seconds)) == seconds


@given(st.integers(min_value=0, max_value=86_400))
def test_retry_after_as_http_date(ahead: int) -> None:
    now = 1_800_000_000.0
    header = email.utils.formatdate(now + ahead, usegmt=True)
    assert retry_after_seconds(header, now=now) == pytest.approx(ahead, abs=1)


@given(st.text(max_size=40))
def test_retry_after_garbage_never_crashes(text: str) -> None:
    value = retry_after_seconds(text)
    assert value is None or value >= 0


def test_daily_limit_is_told_from_a_throttle() -> None:
    assert is_daily_limit({"plan": "unauthenticated", "rate-limit": "100-lookups/day"})
    assert is_daily_limit({"message": "You have hit your daily rate limit"})
    assert not is_daily_limit({"message": "You've hit the rate limit for this endpoint."})
    assert not is_daily_limit(None)


def test_community_mapping() -> None:
    body = {"ip": "1.2.3.4", "noise": False, "riot": True, "classification": "benign",
            "name": "Cloudflare", "link": "https://viz.greynoise.io/riot/1.2.3.4",
            "last_seen": "2020-01-01", "message": "Success"}  # fmt: skip
    assert community_answer("1.2.3.4", 200, body) == GreyNoiseAnswer(
        "1.2.3.4", "ok", False, True, "benign", "Cloudflare", "2020-01-01T00:00:00+00:00",
        "https://viz.greynoise.io/riot/1.2.3.4",
    )  # fmt: skip
    unseen = {"ip": "1.2.3.4", "noise": False, "riot": False, "message": "IP not observed"}
    assert community_answer("1.2.3.4", 404, unseen) == GreyNoiseAnswer.not_observed("1.2.3.4")
    for other in (None, {"message": "Not Found"}, {**unseen, "ip": "1.2.3.5"}):
        with pytest.raises(ValueError, match="HTTP 404"):
            community_answer("1.2.3.4", 404, other)
    with pytest.raises(ValueError):
        community_answer("1.2.3.4", 200, {"message": "Success"})


@pytest.mark.parametrize(
    ("item", "fields"),
    [
        (  # noise only, full
            {"ip": "9.9.9.9", "internet_scanner_intelligence": {"found": True,
             "classification": "malicious", "actor": "unknown", "last_seen": "2025-11-20"},
             "business_service_intelligence": {"found": False, "trust_level": ""}},
            (True, False, "malicious", "unknown", "2025-11-20T00:00:00+00:00",
             "https://viz.greynoise.io/ip/9.9.9.9"),
        ),
        (  # RIOT only: benign, its name, the date of last_updated, a riot link
            {"ip": "9.9.9.9", "internet_scanner_intelligence": {"found": False,
             "classification": ""}, "business_service_intelligence": {"found": True,
             "name": "Quad9", "last_updated": "2025-01-15T12:30:45Z", "trust_level": "1"}},
            (False, True, "benign", "Quad9", "2025-01-15T00:00:00+00:00",
             "https://viz.greynoise.io/riot/9.9.9.9"),
        ),
        (  # quick: no name, no dates
            {"ip": "9.9.9.9", "internet_scanner_intelligence": {"found": True,
             "classification": "benign"}, "business_service_intelligence": {"found": True,
             "trust_level": "1"}},
            (True, True, "benign", None, None, "https://viz.greynoise.io/ip/9.9.9.9"),
        ),
    ],
)  # fmt: skip
def test_enterprise_mapping(item: dict[str, object], fields: tuple[object, ...]) -> None:
    answer = enterprise_answer(item)
    assert answer.status == "ok"
    got = (answer.noise, answer.riot, answer.classification, answer.name, answer.last_seen,
           answer.link)  # fmt: skip
    assert got == fields


def test_settings_are_checked() -> None:
    for bad in ({"mode": "free"}, {"rate": 0}, {"budget": -1}, {"url": "ftp://x"}):
        with pytest.raises(UsageError):
            GreyNoiseSettings(**bad)  # type: ignore[arg-type]


# -- against the simulator -----------------------------------------------------------------


def test_community_answers_match_the_world(greynoise: Simulator) -> None:
    before = len(greynoise.entries())
    client = client_for(greynoise)
    answers = {a.ip: a for a in client.lookup([*IPS[:150], "2001:4860:4860::8888"])}
    assert answers["2001:4860:4860::8888"].status == "skipped"
    assert {ip: answers[ip] for ip in IPS[:150]} == {ip: expected(ip) for ip in IPS[:150]}
    entries = greynoise.entries()[before:]
    assert sorted(ip for e in entries for ip in e["ips"]) == sorted(IPS[:150])  # once each, no v6
    assert client.requests_sent == 150


def expected_full(ip: str) -> GreyNoiseAnswer:
    """The enterprise answer the simulator's world implies (full context when found)."""
    record = WORLD.greynoise(ip)
    if record is None:
        return GreyNoiseAnswer.not_observed(ip)
    if not record.noise:
        return GreyNoiseAnswer(ip, "ok", False, True, "benign", record.name,
                               f"{record.last_seen}T00:00:00+00:00",
                               f"https://viz.greynoise.io/riot/{ip}")  # fmt: skip
    return GreyNoiseAnswer(
        ip, "ok", True, False, record.classification, record.name,
        f"{record.last_seen}T00:00:00+00:00", f"https://viz.greynoise.io/ip/{ip}",
        actor=record.name, tags=record.tags, cves=record.cves, vpn=record.vpn,
        vpn_service=record.vpn_service or None, tor=record.tor,
        first_seen=f"{record.first_seen}T00:00:00+00:00", spoofable=record.spoofable,
    )  # fmt: skip


def test_enterprise_mode_checks_quickly_then_asks_full_context_for_the_found(
    greynoise: Simulator,
) -> None:
    before = len(greynoise.entries())
    client = client_for(greynoise, mode="enterprise", batch_size=300)
    answers = {a.ip: a for a in client.lookup(IPS)}
    entries = greynoise.entries()[before:]
    quick = [e for e in entries if e["quick"]]
    full = [e for e in entries if not e["quick"]]
    found = {ip for ip in IPS if WORLD.greynoise(ip) is not None}
    assert {e["method"] for e in entries} == {"POST"} and len(quick) == 2 == len(full)
    assert sorted(ip for e in quick for ip in e["ips"]) == sorted(IPS)
    assert sorted(ip for e in full for ip in e["ips"]) == sorted(found)  # only those found
    assert client.requests_sent == 4
    assert answers == {ip: expected_full(ip) for ip in IPS}
    assert client.searches_spent == 2 + len(found) == sum(e["searches"] for e in entries)


def test_enterprise_spreads_a_small_run_over_requests_unless_a_budget_counts_them(
    greynoise: Simulator,
) -> None:
    many = [f"198.51.{i // 250}.{i % 250 + 1}" for i in range(4_500)]
    found = sum(WORLD.greynoise(ip) is not None for ip in many)
    before = len(greynoise.entries())
    client = client_for(greynoise, mode="enterprise")
    answers = [a.ip for a in client.lookup(many)]
    entries = greynoise.entries()[before:]
    sizes = sorted(len(e["ips"]) for e in entries if e["quick"])
    assert sorted(answers) == sorted(many)  # each IP once
    # 4,500 IPs over about twice as many quick checks as workers, in whole thousands (a quick
    # check bills per started 1,000): 5 Searches, not 8 for 4 x 1,125.
    assert sizes == [500, 2_000, 2_000]
    assert client.searches_spent == 5 + found
    budgeted = client_for(greynoise, mode="enterprise", budget=10)
    assert len(list(budgeted.lookup(many))) == 4_500
    assert budgeted.requests_sent == 2  # one quick check and one full lookup
    assert len(list(client.lookup(many[:1_500]))) == 1_500
    assert client.requests_sent == 6 + 4  # never under 1,000 IPs a quick check: 1,000 + 500


def test_throttling_is_waited_out(tmp_path: Path) -> None:
    with running("greynoise", tmp_path / "log.jsonl", "--rate", "20") as sim:
        client = client_for(sim, rate=60)
        answers = list(client.lookup(IPS[:40]))
        statuses = [e["status"] for e in sim.entries()]
    assert all(a.status in ("ok", "not_found") for a in answers) and len(answers) == 40
    assert 429 in statuses


def test_daily_limit_stops_and_keeps_what_was_answered(tmp_path: Path) -> None:
    args = ("--key", KEY, "--daily-limit", "30")
    with running("greynoise", tmp_path / "log.jsonl", *args) as sim:
        client = client_for(sim)
        answers: list[GreyNoiseAnswer] = []
        with pytest.raises(QuotaExhaustedError):
            for answer in client.lookup(IPS[:100]):
                answers.append(answer)
        entries = sim.entries()
    assert len(answers) == 30
    assert all(a.status in ("ok", "not_found") for a in answers)
    assert len(entries) <= 30 + GreyNoiseSettings(rate=200).workers


def test_bad_key_stops_at_once(greynoise: Simulator) -> None:
    before = len(greynoise.entries())
    client = client_for(greynoise, key="wrong")
    with pytest.raises(UnauthorizedError) as raised:
        list(client.lookup(IPS))
    assert "wrong" not in str(raised.value)
    assert len(greynoise.entries()) - before <= client.settings.workers


def test_budget_caps_requests(greynoise: Simulator) -> None:
    client = client_for(greynoise, budget=25)
    answers: list[GreyNoiseAnswer] = []
    with pytest.raises(QuotaExhaustedError):
        for answer in client.lookup(IPS):
            answers.append(answer)
    assert client.requests_sent == 25 == len(answers)


def test_persistent_malformed_answers_become_errors(tmp_path: Path) -> None:
    with running("greynoise", tmp_path / "log.jsonl", "--fault", "malformed") as sim:
        answers = list(client_for(sim, retries=2).lookup(IPS[:10]))
    assert [a.status for a in answers] == ["error"] * 10


@pytest.mark.parametrize(
    ("fault", "words"), [("5xx", "HTTP 500"), ("reset", "connection reset without an answer")]
)
def test_persistent_failures_trip_the_breaker(tmp_path: Path, fault: str, words: str) -> None:
    with running("greynoise", tmp_path / "log.jsonl", "--fault", fault) as sim:
        client = client_for(sim, retries=2)
        answers: list[GreyNoiseAnswer] = []
        with pytest.raises(ServiceUnavailableError, match=re.escape(f"({words})")) as stop:
            answers.extend(client.lookup(IPS))
        sent = len(sim.entries())
    assert stop.value.reason == "unreachable" and stop.value.run_exit_code == 3
    assert sent <= 10 + client.settings.workers  # not every IP three times
    assert {a.status for a in answers} <= {"error"} and len(answers) <= 10 // 3


@pytest.mark.parametrize("fault", ["5xx", "reset", "slow"])
def test_occasional_faults_are_retried(tmp_path: Path, fault: str) -> None:
    args = ("--fault", fault, "--fault-rate", "0.2", "--slow-seconds", "2")
    with running("greynoise", tmp_path / "log.jsonl", *args) as sim:
        # A short timeout only where the fault is slowness: a loaded machine answers late.
        client = client_for(sim, retries=5, timeout=0.5 if fault == "slow" else 10.0)
        answers = {a.ip: a for a in client.lookup(IPS[:60])}
    assert answers == {ip: expected(ip) for ip in IPS[:60]}


def test_lookup_greynoise_adds_the_block_to_the_rows_that_need_it(greynoise: Simulator) -> None:
    import json
    from datetime import UTC, datetime

    import polars as pl

    from etl.sources.greynoise.steps import lookup_greynoise

    frame = pl.DataFrame(
        {
            "ip": ["1.2.3.4", IPS[0], "2001:4860:4860::8888", "10.0.0.1", IPS[1]],
            "stale_greynoise": [True, True, True, True, False],
            "is_bogon": [False, False, False, True, False],
        }
    )
    result = lookup_greynoise(frame, client_for(greynoise), datetime.now(UTC))
    assert result["ip"].to_list() == frame["ip"].to_list()
    assert result["greynoise_status"].to_list() == [
        "ok", expected(IPS[0]).status, "skipped", None, None,
    ]  # fmt: skip
    block = json.loads(result["greynoise"][0])
    assert (block["riot"], block["name"], block["status"]) == (True, "Cloudflare", "ok")
