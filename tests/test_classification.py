"""The classification step (SPEC 3.4, issue 27): every covering range of every list, and
cowrieprocessor's type, provider and confidence, for IPv4 and IPv6.

The reference is cowrieprocessor's classifier as its code behaves
(`cowrieprocessor/enrichment/ip_classification/`): Tor by exact address, the first cloud
provider of aws, azure, gcp, cloudflare that covers the address, the most specific datacenter
row (the last of equal ones), then the residential heuristic on the AS name. `cowrieprocessor`
below re-states it one address at a time, with the standard library's networks.
"""

from __future__ import annotations

import ipaddress
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from etl.refresh.validation import with_validation
from etl.sources.classification.lists import ClassificationLists, range_frame, read_lists
from etl.sources.classification.steps import (
    EXCLUSIONS,
    STRONG,
    WEAK,
    classification_blocks,
    classify,
    covering_ranges,
    residential_confidence,
)
from testbed.sample.lists import SMALL, record_lists, write_lists

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
CP_PROVIDERS = ("aws", "azure", "gcp", "cloudflare")  # cowrieprocessor's cloud lists, in order


def lists_in(folder: Path, files: dict[str, str]) -> ClassificationLists:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return read_lists(folder)


def labelled(
    lists: ClassificationLists, ips: list[str], orgs: list[str | None] | None = None
) -> list[dict]:
    frame = with_validation(pl.DataFrame({"ip": ips, "org": orgs or [None] * len(ips)},
                                         schema={"ip": pl.String, "org": pl.String}))  # fmt: skip
    classified = classify(frame, lists, pl.col("org"))
    blocks = classification_blocks(classified, lists, frame["org"], NOW)
    return [json.loads(block) for block in blocks]


def test_a_tor_exit_inside_a_cloud_range_is_tor_and_keeps_both_labels(tmp_path: Path) -> None:
    lists = lists_in(tmp_path, {"tor.txt": "20.1.2.3\n", "cloud-azure-v4.txt": "20.0.0.0/8\n"})
    (block,) = labelled(lists, ["20.1.2.3"])
    assert (block["ip_type"], block["provider"], block["confidence"]) == ("tor", "tor", 0.95)
    assert block["source"] == "tor_bulk_list"
    assert [(label["list"], label["network"]) for label in block["labels"]] == [
        ("tor", "20.1.2.3/32"),  # the exit's own label, then every range around it
        ("cloud-azure-v4", "20.0.0.0/8"),
    ]
    assert block["status"] == "ok" and set(block["lists"]) == {"tor", "cloud-azure-v4"}


def test_nested_cloud_ranges_all_labelled_the_provider_as_cowrieprocessor_orders_them(
    tmp_path: Path,
) -> None:
    # A GitHub-Actions-like range of one provider inside another's: both are labels; the type's
    # provider is the first of cowrieprocessor's order (aws before azure), not the narrowest.
    lists = lists_in(tmp_path, {"cloud-azure-v4.txt": "20.1.0.0/24\n",
                                "cloud-aws-v4.txt": "20.0.0.0/8\n"})  # fmt: skip
    (block,) = labelled(lists, ["20.1.0.9"])
    assert (block["ip_type"], block["provider"], block["source"]) == (
        "cloud",
        "aws",
        "cloud_ranges_aws",
    )
    assert [(label["provider"], label["network"]) for label in block["labels"]] == [
        ("azure", "20.1.0.0/24"),  # most specific first
        ("aws", "20.0.0.0/8"),
    ]


def test_ipv6_is_labelled_from_the_v6_lists(tmp_path: Path) -> None:
    aws = {"prefixes": [], "ipv6_prefixes": [
        {"ipv6_prefix": "2600:1f00::/24", "region": "us-west-2", "service": "AMAZON"},
        {"ipv6_prefix": "2600:1f14::/35", "region": "us-west-2", "service": "EC2"}]}  # fmt: skip
    lists = lists_in(tmp_path, {"cloud-aws-v6.txt": "2600:1f00::/24\n",
                                "aws-ranges.json": json.dumps(aws),
                                "tor.txt": "2a0b:f4c0:16c:2::1\n"})  # fmt: skip
    cloud, tor, other = labelled(lists, ["2600:1f14::1", "2A0B:F4C0:16C:2::1", "2600:1e00::1"])
    assert (cloud["ip_type"], cloud["provider"]) == ("cloud", "aws")
    assert (cloud["region"], cloud["service"]) == ("us-west-2", "EC2")  # the most specific
    assert len(cloud["labels"]) == 3
    assert tor["ip_type"] == "tor"  # the stored text need not be canonical
    assert other["ip_type"] == "unknown" and other["labels"] == []


def test_an_as_name_matching_residential_and_an_exclusion_is_not_residential(
    tmp_path: Path,
) -> None:
    lists = lists_in(tmp_path, {"tor.txt": "192.0.2.1\n"})
    orgs = ["COMCAST Hosting LLC", "COMCAST-7922, US", "Verizon Wireless", "Some ISP", "", None,
            "Telecom_Italia"]  # fmt: skip
    blocks = labelled(lists, ["8.8.8.8"] * len(orgs), orgs)
    got = [(b["ip_type"], b["provider"], b["confidence"]) for b in blocks]
    assert got == [
        ("unknown", None, 0.0),  # hosting excludes it, whatever else it says
        ("residential", "COMCAST-7922, US", 0.7),
        ("residential", "Verizon Wireless", 0.8),
        ("residential", "Some ISP", 0.5),
        ("unknown", None, 0.0),
        ("unknown", None, 0.0),
        ("unknown", None, 0.0),  # "_" is a word character: no telecom word here
    ]
    assert blocks[1]["source"] == "asn_name_heuristic" and blocks[1]["as_org"] == orgs[1]


def test_datacenters_most_specific_row_wins_and_the_last_of_equal_ones(tmp_path: Path) -> None:
    csv = ('"cidr","hostmin","hostmax","vendor"\n"8.8.0.0/16","","","GCP"\n'
           '"8.8.8.0/24","","","CloudFlare"\n"8.8.8.0/24","","","Azure"\n')  # fmt: skip
    lists = lists_in(tmp_path, {"datacenters.csv": csv})
    inner, outer = labelled(lists, ["8.8.8.8", "8.8.4.4"])
    assert (inner["ip_type"], inner["provider"], inner["confidence"]) == (
        "datacenter",
        "azure",
        0.75,
    )
    assert inner["source"] == "datacenter_community_lists" and len(inner["labels"]) == 3
    assert (outer["provider"], len(outer["labels"])) == ("gcp", 1)


def test_list_files_are_read_as_cowrieprocessor_reads_them(tmp_path: Path) -> None:
    lists = lists_in(tmp_path, {
        "cloud-aws-v4.txt": "# comment\n\n 3.5.140.7/22 \nnot a network\n1.2.3\n",
        "tor.txt": "1.2.3.4\n\n# no\n5.6.7.8 \n",
    })  # fmt: skip
    assert lists.ranges["network"].to_list() == ["3.5.140.0/22"]  # host bits masked
    assert lists.tor["ip"].to_list() == ["1.2.3.4", "5.6.7.8"]
    assert "datacenters" in lists.missing and "tor" not in lists.missing
    assert len(lists.versions["tor"]) == 64  # its sha256 (no record beside it)


def test_an_empty_folder_has_no_lists(tmp_path: Path) -> None:
    lists = read_lists(tmp_path)
    assert not lists.available and lists.ranges.is_empty()


def test_old_lists_get_one_warning_line_and_their_ages_go_to_the_metrics(tmp_path: Path) -> None:
    """SPEC 3.4: Tor older than 2 days, another list older than 30 days; a missing list is
    reported once (a switched-off one is not missing)."""
    from datetime import timedelta

    from etl.report.metrics import render_metrics
    from etl.report.summary import RunSummary
    from etl.sources.classification.source import ClassificationSource

    write_lists(tmp_path, seed=2, sizes=SMALL)
    (tmp_path / "datacenters.csv").unlink()
    (tmp_path / "cloud-oracle-v6.txt").unlink()
    fetched = datetime(2026, 11, 1, tzinfo=UTC)
    record_lists(tmp_path, fetched)  # fetched by `lists update`: it keeps them
    for days, old in ((1, []), (3, ["tor"]), (31, None)):
        source = ClassificationSource.open(
            tmp_path, now=fetched + timedelta(days=days), switched_off=["cloud-oracle-v6"]
        )
        expected = old if old is not None else list(source.lists.fetched)
        assert source.old == expected
        warnings = [note for note in source.notes if note.startswith("warning: old list")]
        assert len(warnings) == (1 if expected else 0)
        assert all(f"{name} ({days:.1f} days)" in warnings[0] for name in expected)
        assert source.missing == ["datacenters"]
        summary = RunSummary()
        assert summary.keep(source.report()) == []
        assert summary.list_ages["tor"] == pytest.approx(days * 86_400)
        text = render_metrics(summary, True, 1.0, None)
        assert f'honeypot_etl_list_age_seconds{{list="tor"}} {days * 86_400}' in text
        assert f'honeypot_etl_list_old{{list="tor"}} {int("tor" in expected)}' in text
        assert 'honeypot_etl_list_missing{list="datacenters"} 1' in text
        assert 'honeypot_etl_list_missing{list="tor"} 0' in text
        assert 'list="cloud-oracle-v6"' not in text
    assert "list_age_seconds" not in render_metrics(RunSummary(), True, 1.0, None)
    # A list put there by hand (no record) is never replaced by `lists update`: not old.
    (tmp_path / "tor.record.json").unlink()
    assert ClassificationSource.open(tmp_path, now=fetched + timedelta(days=31)).old == [
        name for name in read_lists(tmp_path).versions if name != "tor"
    ]
    # No list at all: the labels are not asked (one line, not a note per list), and every
    # list is a missing one in the metrics (a monitor sees the labels stop).
    empty = ClassificationSource.open(tmp_path / "none")
    assert (empty.available, empty.notes, empty.missing) == (False, [], [])
    summary = RunSummary()
    summary.keep(empty.report())
    assert len(summary.lists_missing) == 16
    assert 'honeypot_etl_list_missing{list="tor"} 1' in render_metrics(summary, True, 1.0, None)


# -- the join against an oracle ---------------------------------------------------------------

v4_networks = st.builds(
    lambda value, prefix: ipaddress.IPv4Network((value >> (32 - prefix) << (32 - prefix), prefix)),
    st.integers(0, 2**32 - 1), st.integers(0, 32),
)  # fmt: skip
v6_networks = st.builds(
    lambda value, prefix: ipaddress.IPv6Network((value >> (128 - prefix) << (128 - prefix), prefix)),
    st.integers(0, 2**128 - 1), st.integers(0, 128),
)  # fmt: skip


def inside(network: ipaddress.IPv4Network | ipaddress.IPv6Network, offset: int) -> str:
    return str(network[offset % network.num_addresses])


@given(
    networks=st.lists(st.one_of(v4_networks, v6_networks), min_size=1, max_size=12),
    picks=st.lists(st.tuples(st.integers(0, 11), st.integers(0, 2**128)), max_size=12),
    strays=st.lists(st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)).map(str), max_size=6),
)
def test_every_covering_range_is_found(
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network],
    picks: list[tuple[int, int]],
    strays: list[str],
) -> None:
    ranges = range_frame("cloud-x", "cloud", ((str(n), "x", None, None) for n in networks))
    lists = ClassificationLists(ranges=ranges, versions={"cloud-x": "v"}, providers=("x",))
    ips = [inside(networks[i % len(networks)], offset) for i, offset in picks] + strays
    frame = with_validation(pl.DataFrame({"ip": ips}, schema={"ip": pl.String}))
    found = covering_ranges(frame, lists)
    got = {(row, network) for row, network in found.select("_row", "network").iter_rows()}
    expected = {
        (row, str(network))
        for row, ip in enumerate(ips)
        for network in networks
        if network.version == ipaddress.ip_address(ip).version
        and ipaddress.ip_address(ip) in network
    }
    assert got == expected


# -- the residential heuristic against Python's re (cowrieprocessor's engine) -----------------

WORDS = ["verizon", "AT&T", "att", "Comcast", "telecom", "telecommunication", "cable", "fiber",
         "mobile", "5G", "ISP", "internet service", "residential", "hosting", "data center",
         "cloud", "colo", "cdn", "edge", "corporate", "business network", "Telekom", "_", "-",
         ", US", "AS", "7922", "ü"]  # fmt: skip


def heuristic(name: str | None) -> float | None:
    """cowrieprocessor's residential heuristic, as its module does it."""
    if not name:
        return None
    if any(re.search(p, name, re.IGNORECASE) for p in EXCLUSIONS):
        return None
    strong = sum(1 for p in STRONG if re.search(p, name, re.IGNORECASE))
    if strong:
        return 0.8 if strong >= 2 else 0.7
    return 0.5 if any(re.search(p, name, re.IGNORECASE) for p in WEAK) else None


@given(st.lists(st.lists(st.sampled_from(WORDS), max_size=5).map(" ".join), max_size=20))
def test_the_heuristic_agrees_with_cowrieprocessors_engine(names: list[str]) -> None:
    got = pl.select(residential_confidence(pl.Series(names, dtype=pl.String)))
    assert got.to_series().to_list() == [heuristic(name) for name in names]


# -- IP by IP against cowrieprocessor's classifier (IPv4, the same lists) ---------------------


def cowrieprocessor(ip: str, as_name: str | None, folder: Path) -> tuple[str, str | None]:
    """cowrieprocessor's classify(ip, asn, as_name): (ip_type, provider)."""
    tor = {line.strip() for line in (folder / "tor.txt").read_text().splitlines() if line.strip()}
    if ip in tor:
        return "tor", "tor"
    address = ipaddress.ip_address(ip)
    for provider in CP_PROVIDERS:
        path = folder / f"cloud-{provider}-v4.txt"
        lines = [ln.strip() for ln in path.read_text().splitlines()] if path.exists() else []
        if any(address in ipaddress.ip_network(ln, strict=False)
               for ln in lines if ln and not ln.startswith("#")):  # fmt: skip
            return "cloud", provider
    best: tuple[int, str] | None = None
    text = (folder / "datacenters.csv").read_text().splitlines()[1:]
    for row in text:
        cidr, _, _, vendor = (cell.strip('"') for cell in row.split(","))
        network = ipaddress.ip_network(cidr, strict=False)
        if address in network and (best is None or network.prefixlen >= best[0]):
            best = (network.prefixlen, vendor.strip().lower())
    if best is not None:
        return "datacenter", best[1]
    return ("residential", as_name) if heuristic(as_name) is not None else ("unknown", None)


@pytest.fixture(scope="module")
def small_lists(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[str]]]:
    folder = tmp_path_factory.mktemp("lists")
    written = write_lists(folder, seed=5, sizes=SMALL, providers=CP_PROVIDERS)
    (folder / "aws-ranges.json").unlink()  # lists cowrieprocessor does not read
    (folder / "gcp-ranges.json").unlink()
    return folder, written


@given(st.data())
def test_ipv4_agrees_with_cowrieprocessor_ip_by_ip(
    small_lists: tuple[Path, dict[str, list[str]]], data: st.DataObject
) -> None:
    folder, written = small_lists
    networks = [
        n for name, found in written.items() if name != "tor" for n in found if ":" not in n
    ]
    near = st.builds(inside, st.sampled_from([ipaddress.ip_network(n) for n in networks]),
                     st.integers(0, 2**32))  # fmt: skip
    ips = data.draw(st.lists(st.one_of(near, st.sampled_from(written["tor"]),
                                       st.ip_addresses(v=4).map(str)), min_size=1, max_size=25))  # fmt: skip
    orgs = data.draw(st.lists(st.sampled_from([None, "COMCAST-7922, US", "Hosting Telecom",
                                               "Verizon Wireless", "ACME ISP"]),
                              min_size=len(ips), max_size=len(ips)))  # fmt: skip
    blocks = labelled(read_lists(folder, CP_PROVIDERS), ips, orgs)
    got = [(b["ip_type"], b["provider"]) for b in blocks]
    assert got == [cowrieprocessor(ip, org, folder) for ip, org in zip(ips, orgs, strict=True)]
