"""Validation step: exact-as-stored parsing, bogon reasons, IPv4 and IPv6."""

from __future__ import annotations

import ipaddress
import json

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etl.refresh.validation import IPV4_BOGONS, ipv6_reason, with_validation


def classify(values: list[str]) -> dict[str, tuple[bool, str | None]]:
    out = with_validation(pl.DataFrame({"ip": values}, schema={"ip": pl.String}))
    return {
        ip: (bogon, reason)
        for ip, bogon, reason in out.select("ip", "is_bogon", "bogon_reason").iter_rows()
    }


def reference_ipv4(text: str) -> str | None:
    """Scalar oracle: the first bogon network (in table order) containing the address."""
    address = ipaddress.IPv4Address(text)
    for cidr, reason in IPV4_BOGONS:
        if address in ipaddress.IPv4Network(cidr):
            return reason
    return None


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("8.8.8.8", None),
        ("89.160.20.115", None),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("127.0.0.1", "loopback"),
        ("169.254.1.1", "link_local"),
        ("100.64.0.1", "shared"),
        ("100.127.255.255", "shared"),
        ("100.128.0.1", None),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "reserved"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "broadcast"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.255", "multicast"),
        ("192.0.2.1", "documentation"),
        ("198.51.100.1", "documentation"),
        ("203.0.113.1", "documentation"),
        ("198.18.0.1", "reserved"),
        (" 8.8.8.8 ", "invalid"),
        ("8.8.8.8 ", "invalid"),
        ("", "invalid"),
        ("999.1.1.1", "invalid"),
        ("1.2.3.4/24", "invalid"),
        ("01.2.3.4", "invalid"),
        ("1.2.3", "invalid"),
        ("hello", "invalid"),
        ("2a02:1800::1", None),
        ("2001:4860:4860::8888", None),
        ("2001:DB8::1", "documentation"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1", "link_local"),
        ("fe80::1%eth0", "invalid"),
        ("fd12::1", "private"),
        ("ff02::1", "multicast"),
        ("::ffff:8.8.8.8", "reserved"),
        ("2001:db8::/32", "invalid"),
        ("1::", "reserved"),
        ("gggg::1", "invalid"),
    ],
)
def test_known_addresses(text: str, reason: str | None) -> None:
    assert classify([text])[text] == (reason is not None, reason)


def test_validation_block_is_json_with_reason() -> None:
    out = with_validation(pl.DataFrame({"ip": ["10.0.0.1", "8.8.8.8"]}))
    blocks = [json.loads(b) for b in out["validation"]]
    assert blocks == [{"is_bogon": True, "reason": "private"}, {"is_bogon": False, "reason": None}]
    assert out["ip_version"].to_list() == [4, 4]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.ip_addresses(v=4), min_size=1, max_size=50))
def test_ipv4_vectorized_matches_scalar_oracle(addresses: list[ipaddress.IPv4Address]) -> None:
    texts = [str(a) for a in addresses]
    result = classify(texts)
    for text in texts:
        expected = reference_ipv4(text)
        assert result[text] == (expected is not None, expected)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.ip_addresses(v=6), min_size=1, max_size=30))
def test_ipv6_in_any_textual_form(addresses: list[ipaddress.IPv6Address]) -> None:
    texts = [str(a) for a in addresses] + [a.exploded for a in addresses]
    result = classify(texts)
    for address in addresses:
        expected = ipv6_reason(address)
        assert result[str(address)] == result[address.exploded] == (expected is not None, expected)


@settings(max_examples=200, deadline=None)
@given(st.ip_addresses())
def test_not_global_is_always_a_bogon(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    """Whatever the stdlib says is not globally routable is never sent anywhere."""
    if not address.is_global or address.is_multicast:
        assert classify([str(address)])[str(address)][0]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=45))
def test_arbitrary_strings_valid_only_when_the_stdlib_parses_them(text: str) -> None:
    bogon, reason = classify([text])[text]
    try:
        parsed = ipaddress.ip_address(text)
        stdlib_valid = "%" not in text and text == text.strip()
    except ValueError:
        stdlib_valid = False
    if not stdlib_valid:
        assert (bogon, reason) == (True, "invalid")
    else:
        assert reason != "invalid"
        assert parsed is not None


@settings(max_examples=100, deadline=None)
@given(st.ip_addresses(v=4), st.sampled_from([" ", "\t", "\n", "/32", ":80", ".", "0"]))
def test_decorated_addresses_are_invalid(address: ipaddress.IPv4Address, decoration: str) -> None:
    for text in (decoration + str(address), str(address) + decoration):
        try:
            ipaddress.ip_address(text)
            continue  # e.g. "1.2.3.40" is still an address
        except ValueError:
            assert classify([text])[text] == (True, "invalid")
