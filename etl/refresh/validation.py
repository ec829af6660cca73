"""Validation step: which stored strings are real, routable IP addresses.

IPv4 (the bulk of any honeypot) is parsed and classified with Polars expressions only.
IPv6 strings, a small minority, are parsed by the stdlib ``ipaddress`` once per distinct value.
A string is valid only exactly as stored: no trimming, no CIDR suffix, no zone index.
"""

from __future__ import annotations

import ipaddress
from typing import Final

import polars as pl

# Reasons in the `validation` block; checked in this order (most specific first).
IPV4_BOGONS: Final[tuple[tuple[str, str], ...]] = (
    ("0.0.0.0/32", "unspecified"),
    ("0.0.0.0/8", "reserved"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link_local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "reserved"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "reserved"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "reserved"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("255.255.255.255/32", "broadcast"),
    ("240.0.0.0/4", "reserved"),
)

_IPV6_BOGONS: Final[tuple[tuple[str, str], ...]] = (
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::ffff:0:0/96", "reserved"),
    ("64:ff9b:1::/48", "private"),
    ("100::/64", "reserved"),
    ("2001::/23", "reserved"),
    ("2001:db8::/32", "documentation"),
    ("2002::/16", "reserved"),
    ("3fff::/20", "documentation"),
    ("fc00::/7", "private"),
    ("fe80::/10", "link_local"),
    ("fec0::/10", "reserved"),
    ("ff00::/8", "multicast"),
)
# IPv6 global unicast is 2000::/3; everything else not listed above is reserved.
_IPV6_GLOBAL = ipaddress.IPv6Network("2000::/3")

_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4_PATTERN = rf"^{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}$"

VALIDATION_COLUMNS = ("ip_version", "ipv4_int", "ipv6_packed", "is_bogon", "bogon_reason")


def ipv4_network_bounds(cidr: str) -> tuple[int, int]:
    """First and last address of an IPv4 network, as integers."""
    network = ipaddress.IPv4Network(cidr)
    return int(network.network_address), int(network.broadcast_address)


def _ipv4_reason(ipv4_int: pl.Expr) -> pl.Expr:
    reason: pl.Expr = pl.lit(None, dtype=pl.String)
    for cidr, name in reversed(IPV4_BOGONS):
        low, high = ipv4_network_bounds(cidr)
        reason = pl.when(ipv4_int.is_between(low, high)).then(pl.lit(name)).otherwise(reason)
    return reason


_IPV6_BOGON_NETWORKS = [(ipaddress.IPv6Network(cidr), name) for cidr, name in _IPV6_BOGONS]


def ipv6_reason(address: ipaddress.IPv6Address) -> str | None:
    """Bogon reason of an IPv6 address, or None when it is globally routable."""
    for network, name in _IPV6_BOGON_NETWORKS:
        if address in network:
            return name
    return None if address in _IPV6_GLOBAL else "reserved"


def _parse_ipv6(text: str) -> ipaddress.IPv6Address | None:
    if "%" in text or text != text.strip():
        return None
    try:
        return ipaddress.IPv6Address(text)
    except ValueError:
        return None


def _ipv6_table(candidates: pl.Series) -> pl.DataFrame:
    """Classify the distinct IPv6-looking strings (a small set) with ``ipaddress``."""
    rows = []
    for text in candidates.unique().to_list():
        address = _parse_ipv6(text)
        rows.append(
            {
                "ip": text,
                "v6_valid": address is not None,
                "ipv6_packed": address.packed if address else None,
                "v6_reason": ipv6_reason(address) if address else "invalid",
            }
        )
    schema = {"ip": pl.String, "v6_valid": pl.Boolean, "ipv6_packed": pl.Binary}
    return pl.DataFrame(rows, schema={**schema, "v6_reason": pl.String})


def with_validation(frame: pl.DataFrame) -> pl.DataFrame:
    """Add ip_version, ipv4_int, ipv6_packed, is_bogon, bogon_reason and the validation block."""
    ip = pl.col("ip")
    octets = ip.str.extract_groups(_IPV4_PATTERN)
    ipv4_int = (
        pl.sum_horizontal(
            octets.struct.field(str(i + 1)).cast(pl.UInt32) * (1 << (8 * (3 - i))) for i in range(4)
        )
        .cast(pl.UInt32)
        .alias("ipv4_int")
    )
    parsed = frame.with_columns(ipv4_int).with_columns(
        pl.when(ip.str.contains(_IPV4_PATTERN)).then(pl.col("ipv4_int")).alias("ipv4_int")
    )
    ipv6 = _ipv6_table(parsed.filter(ip.str.contains(":", literal=True))["ip"])
    joined = parsed.join(ipv6, on="ip", how="left")
    ip_version = (
        pl.when(pl.col("ipv4_int").is_not_null())
        .then(pl.lit(4, dtype=pl.Int8))
        .when(pl.col("v6_valid").fill_null(False))
        .then(pl.lit(6, dtype=pl.Int8))
    )
    reason = (
        pl.when(pl.col("ipv4_int").is_not_null())
        .then(_ipv4_reason(pl.col("ipv4_int")))
        .when(pl.col("v6_valid").fill_null(False))
        .then(pl.col("v6_reason"))
        .otherwise(pl.lit("invalid"))
    )
    return (
        joined.with_columns(ip_version.alias("ip_version"), reason.alias("bogon_reason"))
        .with_columns(pl.col("bogon_reason").is_not_null().alias("is_bogon"))
        .with_columns(
            pl.struct(is_bogon=pl.col("is_bogon"), reason=pl.col("bogon_reason"))
            .struct.json_encode()
            .alias("validation")
        )
        .drop("v6_valid", "v6_reason")
    )
