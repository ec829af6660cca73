"""Infrastructure lists in their real formats (SPEC 3.4): Tor exits, per-provider cloud ranges
(v4 and v6), AWS ip-ranges.json, Google Cloud cloud.json and the community datacenter CSV, with
the overlaps real lists have (AWS's EC2 ranges inside its AMAZON ones, a provider's range inside
another's, datacenter rows that repeat a cloud range, nested datacenter rows).

Two kinds: `world_lists`, the lists of the sample world (`testbed.sample.world`), which cover
its own attackers (what the lists simulator serves, so `make demo` labels its sessions); and
`write_lists`, random lists of a chosen size, for the classification step's tests and benchmark.

Written as `honeypot-etl lists update` leaves the lists folder (`etl.sources.classification.lists`),
without the records (a list's version is then the sha256 of its file; `record_lists` adds them).
"""

from __future__ import annotations

import csv
import hashlib
import io
import ipaddress
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import numpy as np

from etl.sources.classification.lists import DEFAULT_PROVIDERS, list_files
from testbed.sample.world import HOSTING_KINDS, World, digest


@dataclass(frozen=True)
class ListSizes:
    """How many entries each list gets (the defaults: the real lists' order of size)."""

    tor: int = 2_000
    cloud_v4: int = 4_000  # per provider
    cloud_v6: int = 600
    aws: int = 10_000
    gcp: int = 1_000
    datacenters: int = 50_000


SMALL = ListSizes(tor=20, cloud_v4=30, cloud_v6=10, aws=40, gcp=20, datacenters=60)


def _v4_networks(rng: np.random.Generator, count: int, low: int, high: int) -> list[str]:
    prefixes = rng.integers(low, high + 1, count)
    starts = rng.integers(1 << 24, 223 << 24, count, dtype=np.int64)
    return [
        str(ipaddress.IPv4Network((int(start) >> (32 - int(p)) << (32 - int(p)), int(p))))
        for start, p in zip(starts, prefixes, strict=True)
    ]


def _v6_networks(rng: np.random.Generator, count: int, low: int, high: int) -> list[str]:
    prefixes = rng.integers(low, high + 1, count)
    tops = rng.integers(0x2400_0000, 0x2C00_0000, count, dtype=np.int64)
    lower = rng.integers(0, 1 << 62, count, dtype=np.int64)
    result = []
    for top, rest, p in zip(tops, lower, prefixes, strict=True):
        value = (int(top) << 96) | (int(rest) << 34)
        result.append(
            str(ipaddress.IPv6Network((value >> (128 - int(p)) << (128 - int(p)), int(p))))
        )
    return result


AWS_REGIONS = ("us-east-1", "eu-west-1", "ap-south-1", "GLOBAL")
GCP_SCOPES = ("us-central1", "europe-west1", "asia-east1")
VENDORS = ("AWS", "Azure", "GCP", "CloudFlare")


def _write_tor(folder: Path, exits: list[str]) -> None:
    (folder / "tor.txt").write_text("\n".join(exits) + "\n")


def _write_cloud(folder: Path, provider: str, v4: list[str], v6: list[str]) -> None:
    header = f"# {provider} ranges\n"
    (folder / f"cloud-{provider}-v4.txt").write_text(header + "".join(f"{n}\n" for n in v4))
    (folder / f"cloud-{provider}-v6.txt").write_text(header + "".join(f"{n}\n" for n in v6))


def _write_aws(folder: Path, v4: list[str], v6: list[str]) -> None:
    """AWS ip-ranges.json: each range as AMAZON, and the first half of each EC2 too (EC2
    inside AMAZON, as AWS lists them), a region each."""
    prefixes: list[dict[str, Any]] = []
    for i, cidr in enumerate(v4):
        region = AWS_REGIONS[i % len(AWS_REGIONS)]
        prefixes.append({"ip_prefix": cidr, "region": region, "service": "AMAZON"})
        network = ipaddress.IPv4Network(cidr)
        if network.prefixlen < 32:
            ec2 = next(network.subnets(new_prefix=network.prefixlen + 1))
            prefixes.append({"ip_prefix": str(ec2), "region": region, "service": "EC2"})
    ipv6 = [
        {"ipv6_prefix": cidr, "region": AWS_REGIONS[i % 3], "service": "AMAZON"}
        for i, cidr in enumerate(v6)
    ]
    document = {"syncToken": "1", "createDate": "2026-12-01-00-00-00", "prefixes": prefixes,
                "ipv6_prefixes": ipv6}  # fmt: skip
    (folder / "aws-ranges.json").write_text(json.dumps(document))


def _write_gcp(folder: Path, v4: list[str], v6: list[str]) -> None:
    """Google Cloud cloud.json: a scope (region) each."""
    entries = [
        {"ipv4Prefix": cidr, "service": "Google Cloud", "scope": GCP_SCOPES[i % 3]}
        for i, cidr in enumerate(v4)
    ] + [
        {"ipv6Prefix": cidr, "service": "Google Cloud", "scope": GCP_SCOPES[i % 3]}
        for i, cidr in enumerate(v6)
    ]
    (folder / "gcp-ranges.json").write_text(json.dumps({"syncToken": "1", "prefixes": entries}))


def _write_datacenters(folder: Path, rows: list[tuple[str, str]], nest_every: int = 50) -> None:
    """The datacenter CSV of (cidr, vendor) rows, every ``nest_every``-th with a nested row of
    the next vendor (the most specific row wins)."""
    text = io.StringIO()
    out = csv.writer(text, quoting=csv.QUOTE_ALL)
    out.writerow(["cidr", "hostmin", "hostmax", "vendor"])
    for i, (cidr, vendor) in enumerate(rows):
        network = ipaddress.IPv4Network(cidr)
        out.writerow([cidr, network[0], network[-1], vendor])
        if i % nest_every == 0 and network.prefixlen < 30:
            nested = next(network.subnets(new_prefix=network.prefixlen + 2))
            other = VENDORS[(i + 1) % len(VENDORS)]
            out.writerow([nested, nested[0], nested[-1], other])
    (folder / "datacenters.csv").write_text(text.getvalue())


def _nested_in(outer: str) -> str:
    """The first quarter of ``outer`` (or ``outer`` itself, a single address)."""
    network = ipaddress.ip_network(outer)
    if network.prefixlen + 2 > network.max_prefixlen:
        return outer
    return str(next(network.subnets(new_prefix=network.prefixlen + 2)))


def write_lists(
    folder: Path,
    seed: int = 7,
    sizes: ListSizes = ListSizes(),
    providers: tuple[str, ...] = DEFAULT_PROVIDERS,
) -> dict[str, list[str]]:
    """Write random lists of ``sizes`` into ``folder``; return their networks, by list name."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, list[str]] = {}
    tor = [str(ipaddress.IPv4Address(int(v))) for v in rng.integers(1 << 24, 223 << 24, sizes.tor)]
    written["tor"] = tor
    for provider in providers:
        written[f"cloud-{provider}-v4"] = _v4_networks(rng, sizes.cloud_v4, 16, 24)
        written[f"cloud-{provider}-v6"] = _v6_networks(rng, sizes.cloud_v6, 28, 64)
    # A range of the second provider inside one of the first (GitHub Actions inside Azure).
    first, second = (f"cloud-{p}-v4" for p in providers[:2])
    written[second].append(_nested_in(written[first][0]))
    networks = _v4_networks(rng, sizes.datacenters, 14, 28)
    networks += written[first][:5]  # datacenter rows that repeat cloud ranges
    written["datacenters"] = networks
    aws = (written.get("cloud-aws-v4", [])[: sizes.aws // 2], written.get("cloud-aws-v6", []))
    gcp = (written.get("cloud-gcp-v4", [])[: sizes.gcp], written.get("cloud-gcp-v6", []))
    rows = [(cidr, VENDORS[i % len(VENDORS)]) for i, cidr in enumerate(networks)]
    _write_all(folder, written, providers, aws, gcp, rows)
    return written


def _write_all(
    folder: Path,
    written: dict[str, list[str]],
    providers: tuple[str, ...],
    aws: tuple[list[str], list[str]],
    gcp: tuple[list[str], list[str]],
    datacenters: list[tuple[str, str]],
) -> None:
    _write_tor(folder, written["tor"])
    for provider in providers:
        _write_cloud(folder, provider, written[f"cloud-{provider}-v4"],
                     written[f"cloud-{provider}-v6"])  # fmt: skip
    _write_aws(folder, *aws)
    _write_gcp(folder, *gcp)
    _write_datacenters(folder, datacenters)


# Prefixes of the world's known ASes that real lists name (Cloudflare's 1.2.3.0/24, Google's).
_KNOWN_CLOUD: Final = {13335: "cloudflare", 15169: "gcp"}


def world_lists(
    world: World, folder: Path, providers: tuple[str, ...] = DEFAULT_PROVIDERS
) -> dict[str, list[str]]:
    """Write the lists of ``world`` into ``folder``; return their entries, by list name.

    - cloud: the prefixes of its CLOUD ASes, each of one provider (the seed decides), and the
      known Cloudflare and Google prefixes; a quarter of every tenth AWS range is also another
      provider's (a range inside another's), and AWS and Google Cloud give region and service;
    - datacenters: the prefixes of its HOSTING and DC ASes, a tenth of them left out (their
      names match residential and exclusion patterns alike: unknown), and a few cloud ranges;
    - Tor: every second address of about one /24 prefix in eight, one of them a cloud range;
    - residential: the names of its ISP and NET ASes (`testbed.sample.world`), no list.
    """
    folder.mkdir(parents=True, exist_ok=True)
    seed = world.seed
    written: dict[str, list[str]] = {f"cloud-{p}-{f}": [] for p in providers for f in ("v4", "v6")}
    hosting: list[tuple[str, str]] = []
    tor_prefixes: list[str] = []
    tor_in_cloud = False
    for prefix in world.prefixes:
        cidr = str(prefix.network)
        owner = world.systems[prefix.origins[0]] if prefix.origins else None
        family = f"v{prefix.network.version}"
        provider = _KNOWN_CLOUD.get(owner.number) if owner else None
        if owner and owner.kind == "CLOUD":
            provider = providers[digest(seed, "cloud:" + cidr) % len(providers)]
        if provider in providers:
            written[f"cloud-{provider}-{family}"].append(cidr)
        elif (
            owner
            and owner.kind in HOSTING_KINDS
            and family == "v4"
            and digest(seed, "datacenter:" + cidr) % 10
        ):
            hosting.append((cidr, owner.organization.split(" ")[1]))  # its word, as vendor
        if family == "v4" and prefix.network.prefixlen == 24:
            in_cloud = provider in providers
            if digest(seed, "tor:" + cidr) % 8 == 0 or (in_cloud and not tor_in_cloud):
                tor_prefixes.append(cidr)
                tor_in_cloud |= in_cloud
    exits = [
        str(address)
        for cidr in tor_prefixes
        for address in ipaddress.IPv4Network(cidr)
        if int(address) % 2 == 1
    ]
    written["tor"] = exits
    if len(providers) > 1:
        first, second = (f"cloud-{p}-v4" for p in providers[:2])
        written[second] += [_nested_in(cidr) for cidr in written[first][::10]]
    clouds = [cidr for p in providers for cidr in written[f"cloud-{p}-v4"][:2]]
    datacenters = hosting + [(cidr, VENDORS[i % len(VENDORS)]) for i, cidr in enumerate(clouds)]
    written["datacenters"] = [cidr for cidr, _ in datacenters]
    aws = (written.get("cloud-aws-v4", []), written.get("cloud-aws-v6", []))
    gcp = (written.get("cloud-gcp-v4", []), written.get("cloud-gcp-v6", []))
    _write_all(folder, written, providers, aws, gcp, datacenters)
    return written


def record_lists(
    folder: Path, fetched: datetime, providers: tuple[str, ...] = DEFAULT_PROVIDERS
) -> None:
    """A record beside each list file of ``folder``, as `honeypot-etl lists update` leaves it
    after fetching the list at ``fetched`` (it then keeps the list, and its age counts)."""
    for item in list_files(providers):
        path = item.path(folder)
        if path.is_file():
            data = path.read_bytes()
            record = {"url": f"http://127.0.0.1/{path.name}", "fetched_at": fetched.isoformat(),
                      "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}  # fmt: skip
            item.record_path(folder).write_text(json.dumps(record))
