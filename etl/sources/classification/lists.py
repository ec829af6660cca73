"""The lists behind the infrastructure labels, as `honeypot-etl lists update` keeps them in the
lists folder (SPEC 3.4), read into frames the classification step joins against.

Each list is the file it was downloaded as, beside a record of where it came from
(``<name>.record.json``: url, etag, last_modified, fetched_at, size, sha256):

    tor.txt                   Tor bulk exit list: one address per line
    cloud-<provider>-v4.txt   a provider's ranges (cowrieprocessor's source): one CIDR per line,
    cloud-<provider>-v6.txt   ``#`` comments and blank lines skipped
    aws-ranges.json           AWS ip-ranges.json: prefixes with region and service
    gcp-ranges.json           Google Cloud cloud.json: prefixes with scope (region) and service
    datacenters.csv           the community datacenter list: cidr,hostmin,hostmax,vendor

A list's version is the sha256 of its file (the record names it too). Every range
becomes one row of `ClassificationLists.ranges`: its list, the label it gives, its family and
prefix length, and its network as integer keys (`network_keys`), so that an address is
matched by one equality join per prefix length.
"""

from __future__ import annotations

import csv
import hashlib
import io
import ipaddress
import json
from collections.abc import Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import polars as pl

# cowrieprocessor's cloud providers, in the order its classifier tries them (the first that
# covers an address names it), then the two more of SPEC 3.4.
DEFAULT_PROVIDERS: Final = ("aws", "azure", "gcp", "cloudflare", "oracle", "digitalocean")

RANGE_SCHEMA: Final = {
    "list": pl.String,
    "type": pl.String,  # the ip_type it gives: cloud or datacenter
    "provider": pl.String,
    "region": pl.String,
    "service": pl.String,
    "network": pl.String,
    "family": pl.Int8,
    "prefix": pl.Int16,
    "key_hi": pl.UInt64,  # IPv4: the network's top ``prefix`` bits; IPv6: of its first 64 bits
    "key_lo": pl.UInt64,  # IPv6 longer than /64: the top bits of its last 64 bits; else 0
    "order": pl.Int64,  # the entry's place in its list (a datacenter duplicate: the last wins)
}


@dataclass(frozen=True)
class ListFile:
    """One list as the lists folder names it: ``name`` (also its record's stem) and the
    file's ``suffix``."""

    name: str
    suffix: str
    kind: str  # tor, cloud, aws, gcp, datacenters
    provider: str | None = None

    def path(self, folder: Path) -> Path:
        """The list's file in ``folder``."""
        return folder / f"{self.name}{self.suffix}"

    def record_path(self, folder: Path) -> Path:
        """The record of where the file came from, beside it."""
        return folder / f"{self.name}.record.json"


def list_files(providers: Sequence[str] = DEFAULT_PROVIDERS) -> list[ListFile]:
    """Every list a lists folder holds, in the order the labels are reported."""
    cloud = [
        ListFile(f"cloud-{provider}-v{family}", ".txt", "cloud", provider)
        for provider in providers
        for family in (4, 6)
    ]
    return [
        ListFile("tor", ".txt", "tor", "tor"),
        *cloud,
        ListFile("aws-ranges", ".json", "aws", "aws"),
        ListFile("gcp-ranges", ".json", "gcp", "gcp"),
        ListFile("datacenters", ".csv", "datacenters"),
    ]


@dataclass(frozen=True)
class ClassificationLists:
    """The lists found in a folder, read: the Tor exits, every range, each list's version and
    fetch time, and the lists that were not there."""

    tor: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema={"ip": pl.String}))
    ranges: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=RANGE_SCHEMA))
    versions: dict[str, str] = field(default_factory=dict)  # list name -> sha256
    fetched: dict[str, datetime] = field(default_factory=dict)  # list name -> when
    missing: list[str] = field(default_factory=list)
    providers: tuple[str, ...] = DEFAULT_PROVIDERS
    # the lists `honeypot-etl lists update` fetched (their record describes the file); the
    # others were put there by hand, or by another tool, and it never replaces them
    recorded: list[str] = field(default_factory=list)
    origins: dict[str, str] = field(default_factory=dict)  # list name -> its record's URL

    @property
    def available(self) -> bool:
        """Whether any list is there (no block is written from no lists at all)."""
        return bool(self.versions)


def read_lists(folder: Path, providers: Sequence[str] = DEFAULT_PROVIDERS) -> ClassificationLists:
    """Read every list of ``folder`` (a missing one is named in ``missing``)."""
    tor = pl.DataFrame(schema={"ip": pl.String})
    parts: list[pl.DataFrame] = []
    versions: dict[str, str] = {}
    fetched: dict[str, datetime] = {}
    missing: list[str] = []
    recorded: list[str] = []
    origins: dict[str, str] = {}
    for item in list_files(providers):
        path = item.path(folder)
        try:
            data = path.read_bytes() if path.is_file() else None
        except OSError:  # unreadable (its permissions): as good as not there
            data = None
        if data is None:
            missing.append(item.name)
            continue
        versions[item.name] = hashlib.sha256(data).hexdigest()
        record = record_of(folder, item, data)
        fetched[item.name] = current_at(record, path)
        if record:
            recorded.append(item.name)
            origins[item.name] = str(record.get("url") or "")
        text = data.decode("utf-8", errors="replace")
        if item.kind == "tor":
            tor = tor_addresses(text)
        else:
            parts.append(_ranges(item, text))
    ranges = pl.concat(parts) if parts else pl.DataFrame(schema=RANGE_SCHEMA)
    return ClassificationLists(
        tor, ranges, versions, fetched, missing, tuple(providers), recorded, origins
    )


def record_of(folder: Path, item: ListFile, data: bytes | None = None) -> dict[str, Any]:
    """A list's record: where its file came from, its validators, when it was fetched (empty
    when there is none, or when it does not describe the file there: a file copied in by hand,
    a record left behind by an update that stopped between the two)."""
    try:
        record = json.loads(item.record_path(folder).read_text(encoding="utf-8"))
        data = item.path(folder).read_bytes() if data is None else data
    except (OSError, ValueError):
        return {}
    if not isinstance(record, dict) or record.get("sha256") != hashlib.sha256(data).hexdigest():
        return {}
    return record


def entries(item: ListFile, data: bytes) -> int:
    """How many entries ``data`` holds, read as ``item``'s file (addresses or ranges)."""
    text = data.decode("utf-8", errors="replace")
    return tor_addresses(text).height if item.kind == "tor" else _ranges(item, text).height


def current_at(record: dict[str, Any], path: Path) -> datetime:
    """When the list was last known current: its source last confirmed it (``checked_at``: a
    304 or the same bytes count), else it was fetched, else the file's modification time."""
    for key in ("checked_at", "fetched_at"):
        with suppress(KeyError, TypeError, ValueError):
            moment = datetime.fromisoformat(str(record[key]))
            return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return datetime.fromtimestamp(path.stat().st_mtime, UTC)


def kind_problem(item: ListFile, data: bytes) -> str | None:
    """Why ``data`` is no list of ``item``'s kind (an HTML page, a JSON document of another
    shape or cut short, a text line that is no address or network), or None. A list may be
    empty (a provider with no IPv6 ranges)."""
    text = data.decode("utf-8", errors="replace")
    if text.lstrip().startswith("<"):
        return "an HTML page, not a list"
    if item.kind in ("aws", "gcp"):
        try:
            document = json.loads(text)
        except ValueError:
            return "not JSON (cut short?)"
        if not isinstance(document, dict) or not isinstance(document.get("prefixes"), list):
            return "JSON without a list of prefixes"
        return None
    if item.kind == "datacenters":
        header = next(csv.reader(io.StringIO(text)), [])
        return None if {"cidr", "vendor"} <= set(header) else "no cidr,vendor header"
    parse = ipaddress.ip_address if item.kind == "tor" else _network
    for number, line in enumerate(_cidr_lines(text), start=1):
        try:
            parse(line)
        except ValueError:
            kind = "an address" if item.kind == "tor" else "a network"
            return f"entry {number} is not {kind}: {line[:40]!r}"
    return None


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text, strict=False)


def _text(value: object) -> str | None:
    """A region or service as a list gives it: text, else none."""
    return value if isinstance(value, str) else None


def tor_addresses(text: str) -> pl.DataFrame:
    """The Tor exits: every line that is an address, in its canonical text (as the frame's
    addresses are written)."""
    found = []
    for line in text.splitlines():
        try:
            found.append(str(ipaddress.ip_address(line.strip())))
        except ValueError:
            continue
    return pl.DataFrame({"ip": found}, schema={"ip": pl.String}).unique(maintain_order=True)


def _ranges(item: ListFile, text: str) -> pl.DataFrame:
    """The ranges of one list file."""
    if item.kind == "cloud":
        entries = ((line, item.provider, None, None) for line in _cidr_lines(text))
        return range_frame(item.name, "cloud", entries)
    if item.kind == "aws":
        return range_frame(item.name, "cloud", _aws_entries(text))
    if item.kind == "gcp":
        return range_frame(item.name, "cloud", _gcp_entries(text))
    return range_frame(item.name, "datacenter", _datacenter_entries(text))


def _cidr_lines(text: str) -> Iterable[str]:
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            yield line


def _json_list(text: str, key: str) -> list[Any]:
    """The list at ``key`` of a JSON object (empty for anything else: a list stays readable
    whatever lands in the folder)."""
    try:
        document = json.loads(text)
    except ValueError:
        return []
    found = document.get(key) if isinstance(document, dict) else None
    return found if isinstance(found, list) else []


def _aws_entries(text: str) -> Iterable[tuple[str, str | None, str | None, str | None]]:
    for key, field_name in (("prefixes", "ip_prefix"), ("ipv6_prefixes", "ipv6_prefix")):
        for entry in _json_list(text, key):
            if isinstance(entry, dict) and isinstance(entry.get(field_name), str):
                yield (entry[field_name], "aws", _text(entry.get("region")),
                       _text(entry.get("service")))  # fmt: skip


def _gcp_entries(text: str) -> Iterable[tuple[str, str | None, str | None, str | None]]:
    for entry in _json_list(text, "prefixes"):
        if not isinstance(entry, dict):
            continue
        cidr = entry.get("ipv4Prefix") or entry.get("ipv6Prefix")
        if isinstance(cidr, str):
            yield cidr, "gcp", _text(entry.get("scope")), _text(entry.get("service"))


def _datacenter_entries(text: str) -> Iterable[tuple[str, str | None, str | None, str | None]]:
    with suppress(csv.Error):  # a field past csv's limit: the rows before it are read
        for row in csv.DictReader(io.StringIO(text)):
            cidr, vendor = _text(row.get("cidr")) or "", _text(row.get("vendor")) or ""
            if cidr.strip() and vendor.strip():
                yield cidr.strip(), vendor.strip().lower(), None, None


def range_frame(
    name: str, kind: str, entries: Iterable[tuple[str, str | None, str | None, str | None]]
) -> pl.DataFrame:
    """One list's ranges: each (cidr, provider, region, service) that is a network (host bits
    set are masked, as cowrieprocessor's tries do; a line that is no network is skipped)."""
    rows = []
    for order, (cidr, provider, region, service) in enumerate(entries):
        try:
            network = ipaddress.ip_network(cidr.strip(), strict=False)
        except ValueError:
            continue
        hi, lo = network_keys(network)
        rows.append(
            (name, kind, provider, region, service, str(network), network.version,
             network.prefixlen, hi, lo, order)
        )  # fmt: skip
    return pl.DataFrame(rows, schema=RANGE_SCHEMA, orient="row")


def network_keys(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> tuple[int, int]:
    """The integer keys an address of ``network`` shares with it (see `RANGE_SCHEMA`)."""
    value, prefix = int(network.network_address), network.prefixlen
    if network.version == 4:
        return value >> (32 - prefix), 0
    hi, lo = value >> 64, value & ((1 << 64) - 1)
    if prefix <= 64:
        return hi >> (64 - prefix), 0
    return hi, lo >> (128 - prefix)
