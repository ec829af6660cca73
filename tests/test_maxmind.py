"""MaxMind step against MaxMind's official test databases and their source JSON."""

from __future__ import annotations

import ipaddress
import json
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etl.config import RefreshConfig
from etl.errors import MaxMindError
from etl.maxmind import MaxMindDatabases, open_maxmind, with_maxmind
from etl.mmdb import MmdbTree, ipv4_octets
from etl.validation import with_validation

EPOCH = 1770245369
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def databases(mmdb: dict[str, Path]) -> Any:
    dbs = open_maxmind(RefreshConfig(maxmind_asn=mmdb["asn"], maxmind_city=mmdb["city"]))
    yield dbs
    dbs.close()


def lookup(databases: MaxMindDatabases, addresses: list[str]) -> dict[str, dict[str, Any] | None]:
    frame = pl.DataFrame({"ip": addresses}).with_columns(pl.lit(True).alias("stale_maxmind"))
    out = with_maxmind(with_validation(frame), databases, NOW)
    return {ip: json.loads(b) if b else None for ip, b in out.select("ip", "maxmind").iter_rows()}


# The answers documented in shared/maxmind-test-data/README.md.
DOCUMENTED = {
    "1.0.0.1": (15169, "Google Inc.", "1.0.0.0/24", None, None, None),
    "89.160.20.115": (29518, "Bredband2 AB", "89.160.0.0/17", "SE", "Sweden", "Linköping"),
    "12.81.96.1": (7018, None, "12.81.96.0/19", None, None, None),
    "216.160.83.58": (209, None, "216.160.64.0/18", "US", "United States", "Milton"),
    "2600:7000::1": (6939, "Hurricane Electric, Inc.", "2600:7000::/24", None, None, None),
    "2a02:1800::1": (6848, "Telenet N.V.", "2a02:1800::/24", None, None, None),
    "81.2.69.142": (None, None, "81.2.69.142/31", "GB", "United Kingdom", "London"),
    "2001:480::1": (None, None, "2001:480::/43", "US", "United States", "San Diego"),
    "67.43.156.1": (35908, None, "67.43.152.0/21", "BT", "Bhutan", None),
    "2a02:d500::1": (None, None, "2a02:d500::/29", None, None, None),
    "175.16.199.1": (None, None, "175.16.199.0/24", "CN", "China", "Changchun"),
}


@pytest.mark.parametrize("address", sorted(DOCUMENTED))
def test_documented_answers(databases: MaxMindDatabases, address: str) -> None:
    block = lookup(databases, [address])[address]
    assert block is not None
    asn, org, network, country, country_name, city = DOCUMENTED[address]
    assert (block["asn"], block["asn_org"], block["network"]) == (asn, org, network)
    assert (block["country"], block["country_name"], block["city"]) == (country, country_name, city)
    assert block["status"] == "ok"
    assert block["db_build_epoch"] == EPOCH
    assert block["cached_at"] == NOW.isoformat()


def test_location_fields(databases: MaxMindDatabases) -> None:
    block = lookup(databases, ["89.160.20.115"])["89.160.20.115"]
    assert block is not None
    assert (block["latitude"], block["longitude"], block["accuracy_radius"]) == (
        58.4167,
        15.6167,
        76,
    )
    no_country = lookup(databases, ["2a02:d500::1"])["2a02:d500::1"]
    assert no_country is not None
    assert (no_country["latitude"], no_country["longitude"], no_country["accuracy_radius"]) == (
        48.69096,
        9.14062,
        100,
    )


def test_miss_is_not_found_and_bogons_are_never_looked_up(databases: MaxMindDatabases) -> None:
    result = lookup(databases, ["8.8.8.8", "10.0.0.1", " 1.0.0.1", "1.0.0.1"])
    assert result["8.8.8.8"] is not None
    assert result["8.8.8.8"]["status"] == "not_found"
    assert result["8.8.8.8"]["asn"] is None
    assert result["10.0.0.1"] is None
    assert result[" 1.0.0.1"] is None
    assert result["1.0.0.1"] is not None


def test_rows_not_stale_are_left_alone(databases: MaxMindDatabases) -> None:
    frame = pl.DataFrame({"ip": ["1.0.0.1", "89.160.20.115"], "stale_maxmind": [False, True]})
    out = with_maxmind(with_validation(frame), databases, NOW)
    assert out["maxmind"][0] is None
    assert out["maxmind_asn"].to_list() == [None, 29518]
    assert out["ip"].to_list() == ["1.0.0.1", "89.160.20.115"]


def _oracle(
    networks: dict[str, dict[str, Any]], address: str
) -> tuple[dict[str, Any] | None, str | None]:
    """Longest-prefix match over the JSON source: the independent expectation."""
    ip = ipaddress.ip_address(address)
    best: tuple[int, str] | None = None
    for cidr in networks:
        net = ipaddress.ip_network(cidr)
        if net.version == ip.version and ip in net and (best is None or net.prefixlen > best[0]):
            best = (net.prefixlen, cidr)
    return (networks[best[1]], best[1]) if best else (None, None)


def _addresses_near(networks: dict[str, Any], rng: random.Random, count: int) -> list[str]:
    out = []
    for cidr in rng.sample(sorted(networks), min(count, len(networks))):
        net = ipaddress.ip_network(cidr)
        if net.version == 4:
            out.append(str(net.network_address + rng.randrange(net.num_addresses)))
    return out


@settings(max_examples=15, deadline=None)
@given(st.integers(min_value=0, max_value=2**32))
def test_vectorized_join_equals_json_longest_prefix(
    databases: MaxMindDatabases, mmdb_networks: dict[str, dict[str, dict[str, Any]]], seed: int
) -> None:
    """Records must equal the JSON source; prefixes equal the reference reader's (the tree
    merges adjacent networks with equal records, so the JSON's CIDR is not always the answer)."""
    rng = random.Random(seed)
    asn_nets, city_nets = mmdb_networks["asn"], mmdb_networks["city"]
    addresses = sorted(
        set(_addresses_near(asn_nets, rng, 40) + _addresses_near(city_nets, rng, 40))
    )
    addresses = [a for a in addresses if ipaddress.ip_address(a).is_global]
    result = lookup(databases, addresses)
    for address in addresses:
        block = result[address]
        assert block is not None
        asn_record, asn_net = _oracle(asn_nets, address)
        city_record, city_net = _oracle(city_nets, address)
        assert block["asn"] == (asn_record or {}).get("autonomous_system_number"), address
        assert block["asn_org"] == (asn_record or {}).get("autonomous_system_organization")
        country = (city_record or {}).get("country") or {}
        assert block["country"] == country.get("iso_code"), address
        reader = databases.asn if block["asn"] is not None else databases.city
        assert reader is not None
        _, prefix = reader.reader.get_with_prefix_len(address)
        network = ipaddress.ip_network(f"{address}/{prefix}", strict=False)
        assert block["network"] == (str(network) if asn_net or city_net else None), address
        assert block["status"] == ("ok" if asn_record or city_record else "not_found")


def test_named_file_missing_or_not_mmdb(tmp_path: Path, mmdb: dict[str, Path]) -> None:
    with pytest.raises(MaxMindError, match="file not found"):
        open_maxmind(RefreshConfig(maxmind_asn=tmp_path / "nope.mmdb"))
    junk = tmp_path / "junk.mmdb"
    junk.write_bytes(b"definitely not a maxmind database" * 10)
    with pytest.raises(MaxMindError, match="not a readable MaxMind DB"):
        open_maxmind(RefreshConfig(maxmind_city=junk))
    with pytest.raises(MaxMindError, match=r"not a ASN one"):
        open_maxmind(RefreshConfig(maxmind_asn=mmdb["city"]))


def test_directory_lookup_and_missing_files_reported(tmp_path: Path, mmdb: dict[str, Path]) -> None:
    (tmp_path / "GeoIP2-City.mmdb").write_bytes(mmdb["geoip2_city"].read_bytes())
    dbs = open_maxmind(RefreshConfig(maxmind_dir=tmp_path))
    try:
        assert dbs.asn is None
        assert dbs.city is not None
        assert dbs.city.database_type == "GeoIP2-City"
        assert len(dbs.notes) == 1
        assert "ASN database not found" in dbs.notes[0]
        block = lookup(dbs, ["89.160.20.115"])["89.160.20.115"]
        assert block is not None
        assert block["asn"] is None
        assert block["country"] == "SE"
    finally:
        dbs.close()
    empty = open_maxmind(RefreshConfig(maxmind_dir=tmp_path / "absent"))
    assert not empty.available
    assert empty.build_epoch == 0


def test_a_search_tree_cut_short_is_a_clear_error(mmdb: dict[str, Path]) -> None:
    """The tree is read on the first walk; fewer bytes than the metadata promises is refused."""
    tree = MmdbTree(mmdb["asn"])
    try:
        tree.node_count = tree.path.stat().st_size  # more nodes than the file can hold
        with pytest.raises(MaxMindError, match="search tree is cut short"):
            tree.locate(ipv4_octets(pl.Series([16909060], dtype=pl.UInt32)))
    finally:
        tree.close()
