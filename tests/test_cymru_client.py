"""Team Cymru bulk whois: the parser (property tests) and the client against the simulator."""

from __future__ import annotations

import ipaddress
import json
import math
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from etl.core.errors import ServiceUnavailableError, UsageError
from etl.sources.cymru.client import (
    NOT_FOUND_IP,
    AsAnswer,
    BulkParser,
    CymruClient,
    CymruSettings,
    IpAnswer,
)
from testbed.sample.world import World
from tests.sims import Simulator, running

WORLD = World(1)
REGISTRIES = ("arin", "ripencc", "apnic", "lacnic", "afrinic", "other")

ipv4 = st.integers(min_value=1 << 24, max_value=(223 << 24) - 1).map(
    lambda v: str(ipaddress.IPv4Address(v))
)
ipv6 = st.integers(min_value=0x2000 << 112, max_value=(0x3FFF << 112)).map(
    lambda v: str(ipaddress.IPv6Address(v))
)
as_name = st.text(
    st.characters(blacklist_characters="|\n\r", blacklist_categories=("Cs", "Cc")), min_size=1
).filter(lambda s: s.strip() not in ("", "NA") and s == s.strip())


def row(asns: str, ip: str, prefix: str, cc: str, registry: str, date: str, name: str) -> str:
    """A verbose row laid out like the service's (padding is not a limit)."""
    width = 16 if ":" not in ip else 40
    return (
        f"{asns:<8}| {ip:<{width}} | {prefix:<19} | {cc:<2} | {registry:<8} | {date:<10} | {name}"
    )


@settings(max_examples=300)
@given(
    ip=st.one_of(ipv4, ipv6),
    asns=st.lists(st.integers(1, 2**32 - 1), min_size=1, max_size=3, unique=True),
    cc=st.sampled_from(["US", "DE", "CN", ""]),
    registry=st.sampled_from(REGISTRIES),
    date=st.one_of(
        st.just(""), st.dates().map(lambda d: f"{d.year:04d}-{d.month:02d}-{d.day:02d}")
    ),
    name=as_name,
    space_separated=st.booleans(),
)
def test_any_row_parses_back_to_its_fields(
    ip: str,
    asns: list[int],
    cc: str,
    registry: str,
    date: str,
    name: str,
    space_separated: bool,
) -> None:
    assume(not (len(date) == 10 and date[4] != "-"))
    prefix = "10.0.0.0/8"
    parser = BulkParser([ip])
    parser.feed("Bulk mode; whois.cymru.com [2024-10-15 05:46:42 +0000]")
    if space_separated:
        parser.feed(row(" ".join(map(str, asns)), ip, prefix, cc, registry.upper(), date, name))
    else:
        for asn in asns:
            parser.feed(row(str(asn), ip, prefix, cc, registry, date, name))
    answer = parser.result(complete=True)[ip]
    assert answer == IpAnswer(tuple(asns), name, cc or None, registry, prefix, date or None)
    assert parser.garbage == 0


@settings(max_examples=300)
@given(
    ips=st.lists(st.one_of(ipv4, ipv6), min_size=1, max_size=8, unique=True),
    junk=st.lists(st.text(max_size=120), max_size=12),
    seed=st.integers(0, 1000),
)
def test_junk_lines_never_crash_nor_attach_data_to_another_ip(
    ips: list[str], junk: list[str], seed: int
) -> None:
    queries = ips[:-1]  # the last address is never asked: rows about it are junk too
    rows = [row("64500", ip, "192.0.2.0/24", "US", "arin", "2001-01-01", "X, US") for ip in ips]
    lines = rows + [line for text in junk for line in text.splitlines()]
    np.random.default_rng(seed).shuffle(lines)
    parser = BulkParser(queries)
    for line in lines:
        parser.feed(line)
    result = parser.result(complete=True)
    assert set(result) <= set(queries)
    for answer in result.values():
        assert answer == NOT_FOUND_IP or (
            isinstance(answer, IpAnswer) and answer.asns[:1] == (64500,)
        )


def test_literal_lines_of_the_protocol_reference() -> None:
    queries = ["74.125.225.229", "2001:4860:4860::8888", "10.0.0.1", "193.32.71.189"]
    parser = BulkParser(queries)
    for line in (
        "Bulk mode; whois.cymru.com [2024-10-15 05:46:42 +0000]",
        "AS      | IP               | BGP Prefix          | CC | Registry | Allocated  | AS Name",
        "15169   | 74.125.225.229   | 74.125.225.0/24     | US | arin     | 2007-03-13 | GOOGLE, US",
        "15169   | 2001:4860:4860::8888                     | 2001:4860::/32      | US | arin     "
        "| 2005-03-14 | GOOGLE, US",
        "NA      | 10.0.0.1         | NA                  |    | other    |            | NA",
        "NA      | 193.32.71.189    | NA                  | UA | ripencc  | 2018-04-26 | NA",
    ):
        parser.feed(line)
    result = parser.result(complete=True)
    assert result["74.125.225.229"] == IpAnswer(
        (15169,), "GOOGLE, US", "US", "arin", "74.125.225.0/24", "2007-03-13"
    )
    assert result["2001:4860:4860::8888"].found
    assert result["10.0.0.1"] == IpAnswer((), None, None, "other", None, None)
    assert result["193.32.71.189"] == IpAnswer((), None, "UA", "ripencc", None, "2018-04-26")


def test_error_lines_map_back_through_the_preamble() -> None:
    parser = BulkParser(["1.1.1.1", "2.2.2.2", "3.3.3.3"])
    parser.feed("Error: no ASN or IP match on line 4.")  # begin, verbose, 1.1.1.1, 2.2.2.2
    parser.feed("Error: no ASN or IP match on line 99.")
    parser.feed(row("13335", "1.1.1.1", "1.1.1.0/24", "AU", "apnic", "2011-08-11", "CF, US"))
    result = parser.result(complete=True)
    assert result["2.2.2.2"] == NOT_FOUND_IP
    assert result["1.1.1.1"].found
    assert "3.3.3.3" not in result  # no row and no error line by EOF: retried, never not_found
    assert parser.garbage == 1


def test_ipv6_echoed_in_another_form_matches_by_value() -> None:
    parser = BulkParser(["2001:db8::1"])
    parser.feed(row("64500", "2001:0DB8:0:0:0:0:0:1", "2001:db8::/32", "US", "arin", "", "X"))
    assert parser.result(complete=True)["2001:db8::1"].found


def test_a_cut_session_drops_the_last_answer() -> None:
    parser = BulkParser(["1.1.1.1", "2.2.2.2"])
    parser.feed(row("1", "1.1.1.1", "1.1.1.0/24", "US", "arin", "", "A"))
    parser.feed(row("2", "2.2.2.2", "2.2.2.0/24", "US", "arin", "", "B"))
    assert set(parser.result(complete=False)) == {"1.1.1.1"}


def test_as_rows_and_hostile_fields() -> None:
    parser = BulkParser(["AS12389", "AS64999", "AS1"])
    parser.feed("12389   | RU | ripencc  | 2005-07-01 | ROSTELECOM-AS, RU")
    parser.feed("NA      |    | other    |            | NA")
    parser.feed("1       | USA | a-very-long-registry | 2005 | x'); DROP TABLE ip_inventory;--")
    result = parser.result(complete=True)
    assert result["AS12389"] == AsAnswer("ROSTELECOM-AS, RU", "RU", "ripencc", "2005-07-01")
    assert result["AS64999"] == AsAnswer(None, None, None, None)
    assert result["AS1"] == AsAnswer("x'); DROP TABLE ip_inventory;--", None, None, None)


def test_an_as_query_without_an_answer_of_its_own_is_no_not_found() -> None:
    """SPEC 3.2: a garbled line in place of an AS answer leaves that query unanswered (an
    error, asked again), and an `NA` row answers the query of its own line only."""
    parser = BulkParser(["AS12389", "AS64999", "AS3", "AS4"])
    parser.feed("%%% garbled")  # in place of AS12389's answer
    parser.feed("NA      |    | other    |            | NA")  # AS64999: unknown
    parser.feed("3       | US | arin     | 2001-01-01 | THREE, US")
    parser.feed("| | | | |")  # in place of AS4's answer
    result = parser.result(complete=True)
    assert "AS12389" not in result and "AS4" not in result
    assert result["AS64999"] == AsAnswer(None, None, None, None)
    assert result["AS3"] == AsAnswer("THREE, US", "US", "arin", "2001-01-01")


@given(st.lists(st.sampled_from(["row", "na", "garbled", "error"]), min_size=1, max_size=30))
def test_each_as_answer_line_is_attributed_to_its_own_query(kinds: list[str]) -> None:
    """One answer line per AS query, each a row, an NA row, an error line or garbage: only a
    row or NA answers, only the service's own word is not found."""
    queries = [f"AS{100 + i}" for i in range(len(kinds))]
    parser = BulkParser(queries)
    for line_number, (query, kind) in enumerate(zip(queries, kinds, strict=True), start=3):
        parser.feed(
            {
                "row": f"{query[2:]:<8}| US | arin     | 2001-01-01 | NAME-{query}",
                "na": "NA      |    | other    |            | NA",
                "error": f"Error: no ASN or IP match on line {line_number}.",
                "garbled": "%%% garbled \x7f line",
            }[kind]
        )
    result = parser.result(complete=True)
    for query, kind in zip(queries, kinds, strict=True):
        if kind == "row":
            assert result[query].found and result[query].name == f"NAME-{query}"
        elif kind in ("na", "error"):
            assert result[query] == AsAnswer(None, None, None, None)
        else:
            assert query not in result


def test_garbled_as_answers_are_asked_again_never_not_found(tmp_path: Path) -> None:
    """Against the simulator garbling every third answer: a known AS ends with its data or as
    failed (error), an unknown one as not found or failed; a known AS is never not found."""
    known = sorted(WORLD.systems)[:60]
    unknown = [4_000_000_000 + i for i in range(6)]
    queries = [f"AS{n}" for n in [*known, *unknown]]
    with running("cymru", tmp_path / "log.jsonl", "--fault", "garble") as sim:
        batches = list(client_for(sim, batch_size=20, retries=1).lookup(queries))
    answers = {q: a for b in batches for q, a in b.answers.items()}
    failed = {q for b in batches for q in b.failed}
    assert failed  # the simulator garbles every session: some answers never come
    for number in known:
        system = WORLD.systems[number]
        answer = answers.get(f"AS{number}")
        assert f"AS{number}" in failed or answer == AsAnswer(
            system.name, system.country, system.registry, system.allocated or None
        )
    for number in unknown:
        answer = answers.get(f"AS{number}")
        assert f"AS{number}" in failed or (answer is not None and not answer.found)


def test_cymru_address_option() -> None:
    assert CymruSettings.parse_address("127.0.0.1:4343") == ("127.0.0.1", 4343)
    assert CymruSettings.parse_address("whois.cymru.com") == ("whois.cymru.com", 43)
    for bad in ("host:", ":43", "host:http", "host:70000"):
        with pytest.raises(UsageError):
            CymruSettings.parse_address(bad)


# -- the client against the simulator ------------------------------------------------------


def expected(ip: str) -> IpAnswer:
    """What the simulator's world says about an IP."""
    prefix = WORLD.route(ipaddress.ip_address(ip))
    if prefix is None:
        return IpAnswer((), None, None, "other", None, None)
    if not prefix.origins:
        return IpAnswer((), None, prefix.country, prefix.registry, None, prefix.allocated)
    owner = WORLD.systems[prefix.origins[0]]
    return IpAnswer(
        prefix.origins, owner.name, prefix.country, prefix.registry, str(prefix.network),
        prefix.allocated,
    )  # fmt: skip


@pytest.fixture(scope="module")
def cymru(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    with running("cymru", tmp_path_factory.mktemp("cymru") / "log.jsonl") as sim:
        yield sim


def client_for(sim: Simulator, **overrides: float) -> CymruClient:
    settings = CymruSettings(host="127.0.0.1", port=sim.port, backoff=0.01, **overrides)  # type: ignore[arg-type]
    return CymruClient(settings)


def test_ten_thousand_ips_in_bulk_sessions(cymru: Simulator) -> None:
    before = len(cymru.entries())
    ips = WORLD.attacking_ips(10_000, np.random.default_rng(3))
    batches = list(client_for(cymru).lookup(ips))
    assert len(batches) == math.ceil(10_000 / 500)
    answers = {ip: answer for batch in batches for ip, answer in batch.answers.items()}
    assert all(not batch.failed for batch in batches)
    assert answers == {ip: expected(ip) for ip in ips}
    sessions = cymru.entries()[before:]
    assert len(sessions) == 20
    assert all(s["mode"] == "bulk" and len(s["queries"]) == 500 for s in sessions)


def test_as_lookups(cymru: Simulator) -> None:
    numbers = [*sorted(WORLD.systems)[:30], 4_000_000_000]
    batches = list(client_for(cymru).lookup([f"AS{n}" for n in numbers]))
    answers = {q: a for b in batches for q, a in b.answers.items()}
    for number in numbers[:-1]:
        system = WORLD.systems[number]
        assert answers[f"AS{number}"] == AsAnswer(
            system.name, system.country, system.registry, system.allocated or None
        )
    assert not answers["AS4000000000"].found


@pytest.mark.parametrize("fault", ["drop", "garbage"])
def test_faulty_sessions_are_retried_until_answered(tmp_path: Path, fault: str) -> None:
    ips = WORLD.attacking_ips(1_000, np.random.default_rng(4))
    args = ("--fault", fault, "--fault-rate", "0.3")
    with running("cymru", tmp_path / "log.jsonl", *args) as sim:
        batches = list(client_for(sim, batch_size=100, retries=4).lookup(ips))
        entries = sim.entries()
    answers = {ip: answer for batch in batches for ip, answer in batch.answers.items()}
    assert answers == {ip: expected(ip) for ip in ips}
    assert all(entry["mode"] == "bulk" for entry in entries)
    assert 10 <= len(entries) <= 10 * (1 + 4 + 4)


def test_always_dropped_sessions_end_as_failures(tmp_path: Path) -> None:
    ips = WORLD.attacking_ips(200, np.random.default_rng(6))
    with running("cymru", tmp_path / "log.jsonl", "--fault", "drop") as sim:
        client = client_for(sim, batch_size=100, retries=1, min_split=25)
        batches = list(client.lookup(ips))
        entries = sim.entries()
    failed = {ip for batch in batches for ip in batch.failed}
    answered = {ip: a for batch in batches for ip, a in batch.answers.items()}
    assert failed and failed.isdisjoint(answered)
    assert failed | set(answered) == set(ips)
    assert all(answered[ip] == expected(ip) for ip in answered)
    # Two chunks of 100: two tries each, then one session per half (halves of under 50 are
    # not split again), never single IPs.
    assert all(entry["mode"] == "bulk" for entry in entries)
    assert len(entries) == client.sessions == 2 * (2 + 2)


def test_stalled_sessions_time_out(tmp_path: Path) -> None:
    ips = WORLD.attacking_ips(50, np.random.default_rng(7))
    with running("cymru", tmp_path / "log.jsonl", "--fault", "stall") as sim:
        client = client_for(sim, batch_size=50, retries=0, read_timeout=0.5)
        (batch,) = list(client.lookup(ips))
    assert batch.failed and len(batch.answers) < 50


def test_refused_connections_mean_blocked(tmp_path: Path) -> None:
    with running("cymru", tmp_path / "log.jsonl") as sim:
        port = sim.port
    client = CymruClient(
        CymruSettings(host="127.0.0.1", port=port, batch_size=10, backoff=0.01, blocked_after=3)
    )
    batches = list(client.lookup([f"1.2.3.{n}" for n in range(1, 60)]))
    assert all(batch.unasked == batch.queries for batch in batches)  # never sent: no answer
    assert client.sessions <= 5
    with pytest.raises(ServiceUnavailableError):
        client.check_blocked()


def test_lookup_cymru_adds_the_block_to_the_rows_that_need_it(cymru: Simulator) -> None:
    import polars as pl

    from etl.sources.cymru.steps import lookup_cymru

    ip = "193.32.71.189"  # allocated, not routed: NA
    frame = pl.DataFrame(
        {
            "ip": ["74.125.225.229", ip, "10.0.0.1", "8.8.8.8"],
            "stale_cymru": [True, True, True, True],
            "is_bogon": [False, False, True, False],
            "old_maxmind_asn": [None, None, None, None],
            "maxmind_status": ["not_found", "not_found", None, "ok"],
            "maxmind_asn": [None, None, None, 15169],
        },
        schema_overrides={"old_maxmind_asn": pl.Int64, "maxmind_asn": pl.Int64},
    )
    result = lookup_cymru(frame, client_for(cymru), datetime.now(UTC))
    assert result["ip"].to_list() == frame["ip"].to_list()
    assert result["cymru_status"].to_list() == ["ok", "not_found", None, None]
    assert result["cymru_asn"].to_list() == [15169, None, None, None]
    block = json.loads(result["cymru"][1])
    assert (block["status"], block["country"], block["registry"]) == ("not_found", "UA", "ripencc")
