"""The GreyNoise simulator answers with the literal bodies of shared/protocols/greynoise.md."""

from __future__ import annotations

import email.utils
import ipaddress
import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from testbed.sample.world import World
from testbed.sim.greynoise.server import _routable_ipv4
from tests.sims import Simulator, running

# Literal bodies of the protocol reference (community OpenAPI examples).
LITERAL_200 = (
    '{"ip": "1.2.3.4", "noise": false, "riot": true, "classification": "benign", '
    '"name": "Cloudflare", "link": "https://viz.greynoise.io/riot/1.2.3.4", '
    '"last_seen": "2020-01-01", "message": "Success"}'
)
LITERAL_404 = (
    '{"ip": "%s", "noise": false, "riot": false, '
    '"message": "IP not observed scanning the internet or contained in RIOT data set."}'
)
LITERAL_400 = '{"message": "Request is not a valid routable IPv4 address"}'
LITERAL_401 = '{"message": "Unauthorized"}'
LITERAL_429_DAILY = (
    '{"plan": "unauthenticated", "rate-limit": "100-lookups/day", '
    '"plan_url": "https://greynoise.io/pricing", "message": "You have hit your daily rate limit '
    "of 100 requests per day. Please create a free account or upgrade your plan at "
    'https://greynoise.io/pricing.\\n"}'
)
LITERAL_429_THROTTLE = '{"message": "You\'ve hit the rate limit for this endpoint."}'
LITERAL_500 = '{"message": "Encountered error while performing request"}'
KEY = "sim-test-key"


def unobserved(world: World) -> str:
    """A routable IPv4 address GreyNoise has never seen."""
    return next(
        f"45.{a}.{b}.7" for a in range(1, 250) for b in range(250)
        if world.greynoise(f"45.{a}.{b}.7") is None
    )  # fmt: skip


@pytest.fixture(scope="module")
def greynoise(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    with running("greynoise", tmp_path_factory.mktemp("gn") / "log.jsonl", "--key", KEY) as sim:
        yield sim


def get(sim: Simulator, ip: str, key: str | None = KEY) -> requests.Response:
    headers = {"key": key} if key else {}
    return requests.get(f"{sim.url}/v3/community/{ip}", headers=headers, timeout=10)


def test_community_literal_bodies(greynoise: Simulator) -> None:
    found = get(greynoise, "1.2.3.4")
    assert (found.status_code, found.text) == (200, LITERAL_200)
    assert found.headers["Content-Type"] == "application/json"
    address = unobserved(World(1))
    missing = get(greynoise, address)
    assert (missing.status_code, missing.text) == (404, LITERAL_404 % address)
    for bad in ("2001:4860:4860::8888", "10.0.0.1", "1.2.3", "192.0.2.1"):
        answer = get(greynoise, bad)
        assert (answer.status_code, answer.text) == (400, LITERAL_400)
    wrong = get(greynoise, "1.2.3.4", key="wrong")
    assert (wrong.status_code, wrong.text) == (401, LITERAL_401)


def test_community_answers_follow_the_world(greynoise: Simulator) -> None:
    world = World(1)
    addresses = [f"61.{n}.17.{n}" for n in range(1, 40)]
    for address in addresses:
        body = get(greynoise, address).json()
        record = world.greynoise(address)
        assert body["noise"] == (record.noise if record else False)
        assert body.get("classification") == (record.classification if record else None)


def test_requests_are_logged(greynoise: Simulator) -> None:
    get(greynoise, "8.8.8.8")
    entry = greynoise.entries()[-1]
    assert (entry["method"], entry["ips"], entry["status"]) == ("GET", ["8.8.8.8"], 200)
    assert KEY not in json.dumps(greynoise.entries())


def test_enterprise_multi_lookup(greynoise: Simulator) -> None:
    address = unobserved(World(1))
    body = {"ips": ["1.2.3.4", "8.8.8.8", address]}
    answer = requests.post(f"{greynoise.url}/v3/ip", json=body, headers={"key": KEY}, timeout=10)
    assert answer.status_code == 200
    data = answer.json()
    assert [item["ip"] for item in data["data"]] == ["1.2.3.4", "8.8.8.8"]
    assert data["data"][0]["business_service_intelligence"]["name"] == "Cloudflare"
    assert data["request_metadata"]["ips_not_found"] == [address]
    too_many = {"ips": ["1.1.1.1"] * 10_001}
    refused = requests.post(
        f"{greynoise.url}/v3/ip", json=too_many, headers={"key": KEY}, timeout=10
    )
    assert (refused.status_code, refused.text) == (400, '{"message": "Invalid parameter"}')


def test_official_sdk_parses_the_answers(greynoise: Simulator) -> None:
    from greynoise.api import APIConfig, GreyNoise

    client = GreyNoise(APIConfig(api_key=KEY, api_server=greynoise.url, use_cache=False))
    address = unobserved(World(1))
    multi = client.ip_multi(["1.2.3.4", "8.8.8.8", address])
    by_ip = {item["ip"]: item for item in multi}
    assert by_ip["8.8.8.8"]["business_service_intelligence"]["found"] is True
    assert by_ip[address]["internet_scanner_intelligence"]["found"] is False
    quick = {item["ip"]: item for item in client.quick(["1.2.3.4", address])}
    assert quick["1.2.3.4"]["business_service_intelligence"]["found"] is True
    single = client.ip("8.8.8.8")
    assert single["business_service_intelligence"]["name"] == "Google Public DNS"


def test_sdk_sees_a_bad_key_as_a_failure(greynoise: Simulator) -> None:
    from greynoise.api import APIConfig, GreyNoise
    from greynoise.exceptions import RequestFailure

    client = GreyNoise(APIConfig(api_key="wrong", api_server=greynoise.url, use_cache=False))
    with pytest.raises(RequestFailure):
        client.ip("8.8.8.8")


def test_daily_limit_literal_body(tmp_path: Path) -> None:
    with running("greynoise", tmp_path / "log.jsonl", "--daily-limit", "100") as sim:
        statuses = [get(sim, "1.2.3.4", key=None).status_code for _ in range(100)]
        spent = get(sim, "1.2.3.4", key=None)
    assert set(statuses) == {200}
    assert (spent.status_code, spent.text) == (429, LITERAL_429_DAILY)


@pytest.mark.parametrize("style", ["seconds", "date", "none"])
def test_token_bucket_throttles_with_retry_after(tmp_path: Path, style: str) -> None:
    args = ("--rate", "5", "--retry-after", style)
    with running("greynoise", tmp_path / "log.jsonl", *args) as sim:
        answers = [get(sim, "1.2.3.4", key=None) for _ in range(12)]
    throttled = [a for a in answers if a.status_code == 429]
    assert 4 <= len(answers) - len(throttled) <= 7
    assert throttled and throttled[0].text == LITERAL_429_THROTTLE
    header = throttled[0].headers.get("Retry-After")
    if style == "seconds":
        assert header is not None and int(header) >= 1
    elif style == "date":
        assert header is not None and email.utils.parsedate_to_datetime(header)
    else:
        assert header is None


def test_faults(tmp_path: Path) -> None:
    with running("greynoise", tmp_path / "a.jsonl", "--fault", "5xx") as sim:
        failed = get(sim, "1.2.3.4")
    assert (failed.status_code, failed.text) == (500, LITERAL_500)
    with running("greynoise", tmp_path / "b.jsonl", "--fault", "malformed") as sim:
        broken = get(sim, "1.2.3.4")
    with pytest.raises(ValueError):
        broken.json()
    with (
        running("greynoise", tmp_path / "c.jsonl", "--fault", "reset") as sim,
        pytest.raises(requests.ConnectionError),
    ):
        get(sim, "1.2.3.4")
    with (
        running("greynoise", tmp_path / "d.jsonl", "--fault", "slow", "--slow-seconds", "3") as sim,
        pytest.raises(requests.Timeout),
    ):
        requests.get(f"{sim.url}/v3/community/1.2.3.4", timeout=0.5)


def test_sigterm_stops_cleanly(tmp_path: Path) -> None:
    with running("greynoise", tmp_path / "log.jsonl") as sim:
        sim.process.send_signal(signal.SIGTERM)
        assert sim.process.wait(timeout=10) == 0


@given(
    st.one_of(
        st.ip_addresses(v=4).map(str),
        st.ip_addresses(v=6).map(str),
        st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n))),
        st.text(alphabet="0123456789. x:", max_size=18),
    )
)
def test_routable_check_matches_ipaddress(text: str) -> None:
    """The simulator's fast check (one bisect) says what ``ipaddress`` says."""
    try:
        address = ipaddress.ip_address(text)
        expected = address.version == 4 and address.is_global and text == str(address)
    except ValueError:
        expected = False
    assert _routable_ipv4(text) == expected


def test_the_simulator_logs_quick_checks_and_searches(tmp_path: Path) -> None:
    ips = [f"61.{n}.17.{n}" for n in range(1, 40)] + ["10.0.0.1"]
    world = World(1)
    with running("greynoise", tmp_path / "log.jsonl", "--key", KEY) as gn:
        post = lambda path: requests.post(f"{gn.url}{path}", json={"ips": ips},  # noqa: E731
                                          headers={"key": KEY}, timeout=10)  # fmt: skip
        quick, full = post("/v3/ip?quick=true"), post("/v3/ip")
        community = requests.get(f"{gn.url}/v3/community/10.0.0.1", headers={"key": KEY},
                                 timeout=10)  # fmt: skip
        refused = requests.post(f"{gn.url}/v3/ip", json={"ips": ips}, timeout=10)
        entries = gn.entries()
    assert (quick.status_code, full.status_code, community.status_code) == (200, 200, 400)
    assert refused.status_code == 401
    found = [ip for ip in ips if ip != "10.0.0.1" and world.greynoise(ip) is not None]
    items = quick.json()["data"]
    assert [item["ip"] for item in items] == found
    for item in items:  # the quick shape: found and classification / trust_level only
        assert set(item) == {"ip", "internet_scanner_intelligence",
                             "business_service_intelligence"}  # fmt: skip
        assert set(item["internet_scanner_intelligence"]) == {"found", "classification"}
        assert set(item["business_service_intelligence"]) == {"found", "trust_level"}
    noise = next(i for i in full.json()["data"] if i["internet_scanner_intelligence"]["found"])
    record = world.greynoise(noise["ip"])
    scanner = noise["internet_scanner_intelligence"]
    assert [tag["name"] for tag in scanner["tags"]] == list(record.tags)
    assert (scanner["cves"], scanner["vpn"], scanner["tor"], scanner["first_seen"]) == (
        list(record.cves), record.vpn, record.tor, record.first_seen)  # fmt: skip
    logged = [(e["path"], e["quick"], e["status"], e["searches"]) for e in entries]
    assert logged == [("/v3/ip", True, 200, 1), ("/v3/ip", False, 200, len(ips)),
                      ("/v3/community/10.0.0.1", False, 400, 0),  # refused: not billed
                      ("/v3/ip", False, 401, 0)]  # fmt: skip
    assert json.dumps(entries).count(KEY) == 0


def test_the_daily_limit_counts_searches_and_refuses_a_request_that_would_pass_it(
    tmp_path: Path,
) -> None:
    ips = [f"61.{n}.17.{n}" for n in range(1, 31)]
    with running("greynoise", tmp_path / "log.jsonl", "--daily-limit", "32") as sim:
        post = lambda path: requests.post(f"{sim.url}{path}", json={"ips": ips},  # noqa: E731
                                          timeout=10)  # fmt: skip
        answers = [post("/v3/ip").status_code, post("/v3/ip").status_code]  # 30, then 30 more
        answers += [post("/v3/ip?quick=true").status_code for _ in range(3)]  # 1 each
        refused = post("/v3/ip?quick=true")
        entries = sim.entries()
    assert answers == [200, 429, 200, 200, 429]
    assert [e["searches"] for e in entries] == [30, 0, 1, 1, 0, 0]
    assert refused.status_code == 429 and refused.json()["rate-limit"] == "32-lookups/day"
