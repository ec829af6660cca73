"""What the greynoise block keeps from a v3 answer: the full record's operator fields (actor,
tags, CVEs, VPN/Tor, first_seen, spoofable), null where the answer has none, and the reading of
whole multi bodies (quick or full), whatever their shape."""

from __future__ import annotations

import json
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from etl.sources.greynoise.answers import (
    MISSING,
    GreyNoiseAnswer,
    community_answer,
    enterprise_answer,
    multi_answers,
)
from etl.sources.greynoise.steps import BLOCK_FIELDS, GREYNOISE_COLUMNS, greynoise_results
from testbed.sample.honeypot import greynoise_block
from testbed.sample.world import World

FULL_NOISE = {
    "ip": "71.6.135.131",
    "business_service_intelligence": {"found": False, "trust_level": ""},
    "internet_scanner_intelligence": {
        "ip": "71.6.135.131", "seen": True, "classification": "benign",
        "first_seen": "2018-01-28", "last_seen": "2018-02-28", "found": True,
        "actor": "Shodan.io", "spoofable": True, "cves": ["CVE-2020-1234", "CVE-2021-2345"],
        "tor": False, "vpn": True, "vpn_service": "IPVANISH_VPN",
        "tags": [{"id": "ef0c", "slug": "mirai", "name": "Mirai", "intention": "malicious"},
                 {"slug": "ssh-bruteforcer"}],
    },
}  # fmt: skip
EXTRA = ("actor", "tags", "cves", "vpn", "vpn_service", "tor", "first_seen", "spoofable")


def test_the_full_record_of_a_scanner_keeps_what_operators_use() -> None:
    answer = enterprise_answer(FULL_NOISE)
    assert (answer.status, answer.noise, answer.riot, answer.name) == ("ok", True, False,
                                                                       "Shodan.io")  # fmt: skip
    assert answer.actor == "Shodan.io"
    assert answer.tags == ("Mirai", "ssh-bruteforcer")  # a tag's name, else its slug
    assert answer.cves == ("CVE-2020-1234", "CVE-2021-2345")
    assert (answer.vpn, answer.vpn_service, answer.tor, answer.spoofable) == (
        True, "IPVANISH_VPN", False, True)  # fmt: skip
    assert answer.first_seen == "2018-01-28T00:00:00+00:00"  # like last_seen: midnight UTC
    assert answer.last_seen == "2018-02-28T00:00:00+00:00"


def test_one_tag_object_alone_and_empty_lists() -> None:
    scanner = {**FULL_NOISE["internet_scanner_intelligence"], "tags": {"name": "Mirai"},
               "cves": []}  # fmt: skip
    answer = enterprise_answer({**FULL_NOISE, "internet_scanner_intelligence": scanner})
    assert (answer.tags, answer.cves) == (("Mirai",), ())


def test_fields_absent_or_of_another_shape_are_null() -> None:
    scanner = {"found": True, "classification": "malicious", "tags": "Mirai", "cves": 3,
               "vpn": "yes", "tor": 1, "vpn_service": "", "first_seen": "soon"}  # fmt: skip
    answer = enterprise_answer({"ip": "9.9.9.9", "internet_scanner_intelligence": scanner})
    assert answer.status == "ok"
    assert all(getattr(answer, name) is None for name in EXTRA)


def test_riot_only_quick_and_community_answers_have_no_scanner_context() -> None:
    riot = enterprise_answer(
        {
            "ip": "8.8.8.8",
            "business_service_intelligence": {
                "found": True,
                "name": "Google Public DNS",
                "last_updated": "2026-11-20T12:30:45Z",
            },
            "internet_scanner_intelligence": {"found": False, "actor": "ignored", "tor": True},
        }
    )
    quick = enterprise_answer({"ip": "9.9.9.9", "internet_scanner_intelligence": {
        "found": True, "classification": "malicious"},
        "business_service_intelligence": {"found": False, "trust_level": ""}})  # fmt: skip
    community = community_answer("1.2.3.4", 200, {"noise": False, "riot": True})
    for answer in (riot, quick, community):
        assert answer.status == "ok"
        assert all(getattr(answer, name) is None for name in EXTRA)
    assert riot.name == "Google Public DNS"


def test_found_in_neither_dataset_is_not_found() -> None:
    item = {"ip": "9.9.9.9", "internet_scanner_intelligence": {"found": False},
            "business_service_intelligence": {"found": False, "trust_level": ""}}  # fmt: skip
    assert enterprise_answer(item) == GreyNoiseAnswer.not_observed("9.9.9.9")


def test_the_block_has_every_field_in_order_null_when_absent() -> None:
    answers = [enterprise_answer(FULL_NOISE), GreyNoiseAnswer.not_observed("192.0.2.1"),
               GreyNoiseAnswer.failed("192.0.2.2", "HTTP 503")]  # fmt: skip
    moment = datetime(2026, 12, 1, tzinfo=UTC)
    rows = greynoise_results(answers, moment)
    blocks = [json.loads(text) for text in rows["greynoise"]]
    expected_keys = [*BLOCK_FIELDS, "status", "cached_at"]
    assert expected_keys[-3:] == ["error", "status", "cached_at"]
    assert all(list(block) == expected_keys for block in blocks)
    assert blocks[0]["tags"] == ["Mirai", "ssh-bruteforcer"] and blocks[0]["vpn"] is True
    assert blocks[1]["noise"] is False and blocks[1]["tags"] is None
    assert blocks[1]["error"] is None
    assert blocks[2] == {**dict.fromkeys(BLOCK_FIELDS), "error": "HTTP 503", "status": "error",
                         "cached_at": moment.isoformat()}  # fmt: skip


def test_the_columns_follow_the_answer_fields() -> None:
    names = [field.name for field in fields(GreyNoiseAnswer)]
    assert list(GREYNOISE_COLUMNS) == [n if n != "status" else "greynoise_status" for n in names]


def test_the_sample_database_blocks_have_the_same_keys_as_a_refresh() -> None:
    world = World(1)
    moment = datetime(2026, 12, 1, tzinfo=UTC)
    for address in ("1.2.3.4", "192.0.2.77", "45.33.32.156"):
        assert list(greynoise_block(world, address, moment)) == [*BLOCK_FIELDS, "status",
                                                                  "cached_at"]  # fmt: skip


# -- whole multi bodies -----------------------------------------------------------------------

ASKED = [f"198.18.{n}.1" for n in range(8)]
KEYS = st.sampled_from(
    ["ip", "data", "found", "request_metadata", "ips_not_found", "internet_scanner_intelligence",
     "business_service_intelligence", "classification", "tags"]
)  # fmt: skip
SHAPES: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5) | st.sampled_from(ASKED),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.sampled_from(["data", "request_metadata"]), SHAPES))
def test_any_body_gives_each_asked_ip_one_answer_and_never_raises(body: dict[str, Any]) -> None:
    answers = multi_answers(body, ASKED)
    assert list(answers) == ASKED
    assert all(a.ip == ip and a.status in ("ok", "not_found", "error")
               for ip, a in answers.items())  # fmt: skip
    # An IP the body neither answers nor lists is missing from it; the others have no reason.
    assert all((a.error == MISSING) == (a.status == "error") for a in answers.values())
    assert all(a.error in (None, MISSING) for a in answers.values())


@given(st.lists(st.sampled_from(["noise", "riot", "both", "listed", "absent"]), min_size=8,
                max_size=8), st.booleans())  # fmt: skip
def test_quick_and_full_bodies_read_as_the_ips_were_found(kinds: list[str], quick: bool) -> None:
    data, listed = [], ["203.0.113.250"]  # an IP not asked is ignored
    for ip, kind in zip(ASKED, kinds, strict=True):
        scanner = {"found": kind in ("noise", "both"), "classification": "malicious"}
        business = {"found": kind in ("riot", "both"), "trust_level": "1"}
        if not quick:
            scanner["actor"], business["name"] = "Censys", "Cloudflare"
        if kind == "listed":
            listed.append(ip)
        elif kind != "absent":
            data.append({"ip": ip, "internet_scanner_intelligence": scanner,
                         "business_service_intelligence": business})  # fmt: skip
    body = {"data": data, "request_metadata": {"ips_not_found": listed}}
    answers = multi_answers(body, ASKED)
    for ip, kind in zip(ASKED, kinds, strict=True):
        answer = answers[ip]
        status = {"listed": "not_found", "absent": "error"}.get(kind, "ok")
        assert answer.status == status
        assert answer.error == (MISSING if kind == "absent" else None)
        if status == "ok":
            assert answer.noise == (kind in ("noise", "both"))
            assert answer.riot == (kind in ("riot", "both"))
            assert answer.classification == ("malicious" if answer.noise else "benign")
            assert (answer.name is None) == quick
