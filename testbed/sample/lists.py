"""Infrastructure lists in their real formats (SPEC 3.4), for the classification step's tests
and benchmark: Tor exits, per-provider cloud ranges (v4 and v6), AWS ip-ranges.json, Google
Cloud cloud.json and the community datacenter CSV, with the overlaps real lists have (AWS's
EC2 ranges inside its AMAZON ones, a provider's range inside another's, datacenter rows that
repeat a cloud range, nested datacenter rows).

Written as `honeypot-etl lists update` leaves the lists folder (`etl.sources.classification.lists`),
without the records: a list's version is then the sha256 of its file.
"""

from __future__ import annotations

import csv
import io
import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from etl.sources.classification.lists import DEFAULT_PROVIDERS


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


def write_lists(
    folder: Path,
    seed: int = 7,
    sizes: ListSizes = ListSizes(),
    providers: tuple[str, ...] = DEFAULT_PROVIDERS,
) -> dict[str, list[str]]:
    """Write every list into ``folder``; return a few networks of each kind, by list name."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, list[str]] = {}
    tor = [str(ipaddress.IPv4Address(int(v))) for v in rng.integers(1 << 24, 223 << 24, sizes.tor)]
    (folder / "tor.txt").write_text("\n".join(tor) + "\n")
    written["tor"] = tor
    for provider in providers:
        v4 = _v4_networks(rng, sizes.cloud_v4, 16, 24)
        v6 = _v6_networks(rng, sizes.cloud_v6, 28, 64)
        header = f"# {provider} ranges\n"
        (folder / f"cloud-{provider}-v4.txt").write_text(header + "\n".join(v4) + "\n")
        (folder / f"cloud-{provider}-v6.txt").write_text(header + "\n".join(v6) + "\n")
        written[f"cloud-{provider}-v4"], written[f"cloud-{provider}-v6"] = v4, v6
    # A range of the second provider inside one of the first (GitHub Actions inside Azure).
    first, second = (f"cloud-{p}-v4" for p in providers[:2])
    outer = ipaddress.IPv4Network(written[first][0])
    inner = str(next(outer.subnets(new_prefix=min(outer.prefixlen + 4, 32))))
    with (folder / f"{second}.txt").open("a") as handle:
        handle.write(inner + "\n")
    written[second].append(inner)
    aws = written["cloud-aws-v4"][: sizes.aws // 2] if "aws" in providers else []
    regions = ["us-east-1", "eu-west-1", "ap-south-1", "GLOBAL"]
    prefixes = []
    for i, cidr in enumerate(aws):
        region = regions[i % len(regions)]
        prefixes.append({"ip_prefix": cidr, "region": region, "service": "AMAZON"})
        network = ipaddress.IPv4Network(cidr)
        if network.prefixlen < 32:  # EC2 inside AMAZON
            ec2 = next(network.subnets(new_prefix=network.prefixlen + 1))
            prefixes.append({"ip_prefix": str(ec2), "region": region, "service": "EC2"})
    ipv6 = [
        {"ipv6_prefix": cidr, "region": regions[i % 3], "service": "AMAZON"}
        for i, cidr in enumerate(written.get("cloud-aws-v6", []))
    ]
    document = {"syncToken": "1", "createDate": "2026-12-01-00-00-00", "prefixes": prefixes,
                "ipv6_prefixes": ipv6}  # fmt: skip
    (folder / "aws-ranges.json").write_text(json.dumps(document))
    gcp = written.get("cloud-gcp-v4", [])[: sizes.gcp]
    scopes = ["us-central1", "europe-west1", "asia-east1"]
    entries = [
        {"ipv4Prefix": cidr, "service": "Google Cloud", "scope": scopes[i % 3]}
        for i, cidr in enumerate(gcp)
    ] + [
        {"ipv6Prefix": cidr, "service": "Google Cloud", "scope": scopes[i % 3]}
        for i, cidr in enumerate(written.get("cloud-gcp-v6", []))
    ]
    (folder / "gcp-ranges.json").write_text(json.dumps({"syncToken": "1", "prefixes": entries}))
    vendors = ["AWS", "Azure", "GCP", "CloudFlare"]
    rows = io.StringIO()
    out = csv.writer(rows, quoting=csv.QUOTE_ALL)
    out.writerow(["cidr", "hostmin", "hostmax", "vendor"])
    networks = _v4_networks(rng, sizes.datacenters, 14, 28)
    networks += written[first][:5]  # datacenter rows that repeat cloud ranges
    for i, cidr in enumerate(networks):
        network = ipaddress.IPv4Network(cidr)
        out.writerow([cidr, network[0], network[-1], vendors[i % len(vendors)]])
        if i % 50 == 0 and network.prefixlen < 30:  # a nested row of another vendor
            nested = next(network.subnets(new_prefix=network.prefixlen + 2))
            out.writerow([nested, nested[0], nested[-1], vendors[(i + 1) % len(vendors)]])
    (folder / "datacenters.csv").write_text(rows.getvalue())
    written["datacenters"] = networks
    return written
