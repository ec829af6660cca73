"""MaxMind step against MaxMind's official test databases and their source JSON."""

from __future__ import annotations

import ipaddress
import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etl.core.errors import MaxMindError
from etl.core.vocabulary import Source
from etl.refresh.config import RefreshConfig
from etl.refresh.pipeline import refresh
from etl.refresh.validation import with_validation
from etl.report.metrics import render_metrics
from etl.report.summary import RunSummary
from etl.sources.maxmind import check as maxmind_check
from etl.sources.maxmind.steps import MaxMindDatabases, open_maxmind, with_maxmind

EPOCH = 1770245369
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
BUILT = datetime.fromtimestamp(EPOCH, UTC)  # 2026-02-04: older than 30 days at NOW


@pytest.fixture(scope="module")
def databases(mmdb: dict[str, Path]) -> Any:
    dbs = open_maxmind(asn=mmdb["asn"], city=mmdb["city"], now=NOW)
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
        open_maxmind(asn=tmp_path / "nope.mmdb")
    junk = tmp_path / "junk.mmdb"
    junk.write_bytes(b"definitely not a maxmind database" * 10)
    with pytest.raises(MaxMindError, match="not a readable MaxMind DB"):
        open_maxmind(city=junk)
    with pytest.raises(MaxMindError, match=r"not a ASN one"):
        open_maxmind(asn=mmdb["city"])


def test_directory_lookup_and_missing_files_reported(tmp_path: Path, mmdb: dict[str, Path]) -> None:
    (tmp_path / "GeoIP2-City.mmdb").write_bytes(mmdb["geoip2_city"].read_bytes())
    dbs = open_maxmind(directory=tmp_path, now=BUILT + timedelta(days=30))
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
    empty = open_maxmind(directory=tmp_path / "absent")
    assert not empty.available
    assert empty.build_epoch == 0


def test_corrupt_files_are_one_clear_error(
    tmp_path: Path, mmdb: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Garbage bytes are refused at open; a damaged search tree by the test lookups at open,
    else at the first lookup that meets it."""
    garbage = tmp_path / "GeoLite2-ASN.mmdb"
    garbage.write_bytes(random.Random(7).randbytes(50_000))
    for opened in (lambda: open_maxmind(asn=garbage), lambda: open_maxmind(directory=tmp_path)):
        with pytest.raises(MaxMindError, match=r"GeoLite2-ASN\.mmdb is not a readable MaxMind DB"):
            opened()
    damaged = tmp_path / "damaged.mmdb"
    data = bytearray(mmdb["asn"].read_bytes())
    data[: 1341 * 7] = b"\xff" * (1341 * 7)  # every record points far beyond the file
    damaged.write_bytes(bytes(data))
    with pytest.raises(MaxMindError, match=r"damaged\.mmdb is damaged \(a test lookup failed"):
        open_maxmind(asn=damaged)
    monkeypatch.setattr(maxmind_check, "PROBES_V4", ())
    monkeypatch.setattr(maxmind_check, "PROBES_V6", ())
    dbs = open_maxmind(asn=damaged)
    try:
        with pytest.raises(MaxMindError, match=r"damaged\.mmdb is damaged \(a lookup failed"):
            lookup(dbs, ["1.0.0.1"])
    finally:
        dbs.close()


def test_a_build_older_than_30_days_is_one_note(mmdb: dict[str, Path]) -> None:
    old = open_maxmind(asn=mmdb["asn"], city=mmdb["city"], now=BUILT + timedelta(days=31))
    old.close()
    assert len(old.notes) == 2  # one line per database, naming the file and its build date
    assert all("2026-02-04 (31 days ago)" in note for note in old.notes), old.notes
    assert str(mmdb["asn"]) in old.notes[0]
    assert "ASN" in old.notes[0]
    assert str(mmdb["city"]) in old.notes[1]
    assert "30 days" in old.notes[0]
    fresh = open_maxmind(asn=mmdb["asn"], city=mmdb["city"], now=BUILT + timedelta(days=30))
    fresh.close()
    assert fresh.notes == []
    assert fresh.build_epochs == {"asn": EPOCH, "city": EPOCH}


def test_a_run_reports_the_build_time_as_note_and_metric(
    compat_sqlite: Path, mmdb: dict[str, Path]
) -> None:
    summary = refresh(
        RefreshConfig(
            db_url=f"sqlite:///{compat_sqlite}",
            maxmind_asn=mmdb["asn"],
            maxmind_city=mmdb["city"],
            skip=frozenset({Source.CYMRU, Source.GREYNOISE}),
            quiet=True,
        )
    )
    assert summary.maxmind_build_epochs == {"asn": EPOCH, "city": EPOCH}
    assert sum("GeoLite2's licence" in note for note in summary.notes) == 2  # the files are old
    text = render_metrics(summary, True, 1_800_000_000.0, None)
    for kind in ("asn", "city"):
        assert (
            f'honeypot_etl_maxmind_build_timestamp_seconds{{database="{kind}"}} {EPOCH}\n' in text
        )
    assert "maxmind_build" not in render_metrics(RunSummary(), True, 1.0, None)


# Random addresses anywhere, and addresses inside the test databases' networks.
_NETWORKS = st.sampled_from(
    ["1.0.0.0/24", "2.125.160.216/29", "81.2.69.0/24", "89.160.0.0/17", "12.81.96.0/19",
     "67.43.156.0/24", "175.16.199.0/24", "216.160.64.0/18", "2001:480::/43", "2600:7000::/24",
     "2a02:1800::/24", "2a02:d500::/29", "::ffff:81.2.69.0/120"]
)  # fmt: skip
_INSIDE = st.builds(
    lambda cidr, offset: str(
        ipaddress.ip_network(cidr)[offset % ipaddress.ip_network(cidr).num_addresses]
    ),
    _NETWORKS,
    st.integers(min_value=0, max_value=2**64),
)
_ADDRESSES = st.lists(
    st.one_of(_INSIDE, st.ip_addresses().map(str)), min_size=1, max_size=60, unique=True
)


def _expected(databases: MaxMindDatabases, address: str) -> dict[str, Any]:
    """What per-address maxminddb lookups say, computed independently of the join."""
    assert databases.asn is not None
    assert databases.city is not None
    asn, asn_prefix = databases.asn.reader.get_with_prefix_len(address)
    city, city_prefix = databases.city.reader.get_with_prefix_len(address)
    country = (city or {}).get("country") or {}
    location = (city or {}).get("location") or {}
    fields = {
        "asn": (asn or {}).get("autonomous_system_number"),
        "asn_org": (asn or {}).get("autonomous_system_organization"),
        "country": country.get("iso_code"),
        "country_name": (country.get("names") or {}).get("en"),
        "city": (((city or {}).get("city") or {}).get("names") or {}).get("en"),
        "latitude": location.get("latitude"),
        "longitude": location.get("longitude"),
        "accuracy_radius": location.get("accuracy_radius"),
        "status": "ok" if asn or city else "not_found",
    }
    prefix = asn_prefix if fields["asn"] is not None else city_prefix
    located = fields["asn"] is not None or fields["country"] or fields["latitude"] is not None
    network = ipaddress.ip_network(f"{address}/{prefix}", strict=False)
    return {**fields, "network": str(network) if located else None}


@settings(max_examples=60, deadline=None)
@given(_ADDRESSES)
def test_vectorized_lookup_equals_per_address_lookups(
    databases: MaxMindDatabases, addresses: list[str]
) -> None:
    frame = with_validation(
        pl.DataFrame({"ip": addresses}).with_columns(pl.lit(True).alias("stale_maxmind"))
    )
    bogons = set(frame.filter("is_bogon")["ip"])
    result = lookup(databases, addresses)
    for address in addresses:
        block = result[address]
        if address in bogons:
            assert block is None
            continue
        assert block is not None
        got = {key: block[key] for key in (*_expected(databases, address), "db_build_epoch")}
        assert got == {**_expected(databases, address), "db_build_epoch": EPOCH}, address


def test_one_database_missing_makes_blocks_that_say_what_they_lack(
    tmp_path: Path, mmdb: dict[str, Path]
) -> None:
    """Only the ASN file in the folder: a block has its ASN but no geolocation, so it is no
    complete answer: status error, ``error`` naming the file (never fresh: the first run with
    both files looks it up again); a warning line; build time 0 and the missing metric."""
    (tmp_path / "GeoLite2-ASN.mmdb").write_bytes(mmdb["asn"].read_bytes())
    dbs = open_maxmind(directory=tmp_path, now=BUILT)
    try:
        assert (dbs.missing, dbs.lacking) == (["city"], "no City database")
        assert dbs.build_epochs == {"asn": EPOCH, "city": 0} and dbs.build_epoch == EPOCH
        assert len(dbs.notes) == 1
        assert dbs.notes[0].startswith(f"warning: MaxMind City database not found in {tmp_path}")
        blocks = lookup(dbs, ["89.160.20.115", "8.8.8.8"])
    finally:
        dbs.close()
    known, unknown = blocks["89.160.20.115"], blocks["8.8.8.8"]
    assert known is not None and unknown is not None
    assert (known["asn"], known["country"], known["status"]) == (29518, None, "error")
    assert known["error"] == unknown["error"] == "no City database"
    assert unknown["status"] == "error"  # no ASN, and no telling where it is
    summary = RunSummary(maxmind_build_epochs=dbs.build_epochs)
    text = render_metrics(summary, True, 1.0, None)
    assert 'honeypot_etl_maxmind_database_missing{database="city"} 1\n' in text
    assert 'honeypot_etl_maxmind_database_missing{database="asn"} 0\n' in text
    whole = open_maxmind(asn=mmdb["asn"], city=mmdb["city"], now=BUILT)
    try:
        complete = lookup(whole, ["89.160.20.115"])["89.160.20.115"]
    finally:
        whole.close()
    assert whole.missing == [] and whole.lacking is None
    assert complete == {
        **known, "country": "SE", "country_name": "Sweden", "city": "Linköping",
        "latitude": 58.4167, "longitude": 15.6167, "accuracy_radius": 76, "error": None,
        "status": "ok",
    }  # fmt: skip
    named = open_maxmind(asn=mmdb["asn"])  # the library's own choice: nothing missing
    named.close()
    assert named.missing == [] and named.build_epochs == {"asn": EPOCH}
    none = open_maxmind(directory=tmp_path / "absent")
    assert none.missing == ["asn", "city"] and not none.available
    assert none.notes[0].startswith(
        f"warning: MaxMind ASN database not found in {tmp_path}/absent (no such folder), nor a"
    )
