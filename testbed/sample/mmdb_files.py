"""GeoLite2-shaped ASN and City databases of a `World`.

``small`` files hold the world's networks only (a few thousand search-tree nodes);
``realistic`` ones add filler networks in address space the world does not use, until the
trees have about as many nodes as the real GeoLite2 files (ASN ~2M, City ~4M), so that
benchmarks pay what a real file costs. Filler never changes the answer for a world address.
Their metadata description marks them as the sample's (`testbed.sample.marks`).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import maxminddb
import numpy as np
from mmdb_writer import Encoder, MmdbF64, MmdbU16, MmdbU32

from etl.refresh.validation import IPV4_BOGONS, ipv4_network_bounds
from testbed.sample.marks import mmdb_description
from testbed.sample.mmdb_tree import Networks, write_mmdb
from testbed.sample.world import CITIES, COUNTRY_NAMES, World

ASN_FILE = "GeoLite2-ASN.mmdb"
CITY_FILE = "GeoLite2-City.mmdb"
# Search-tree nodes the files aim at (ASN, City); 0: the world's networks only.
TREE_NODES: dict[str, tuple[int, int]] = {"small": (0, 0), "realistic": (2_000_000, 4_000_000)}
_CONTINENTS = {
    "CN": "AS", "JP": "AS", "KR": "AS", "IN": "AS", "VN": "AS", "ID": "AS", "SG": "AS",
    "HK": "AS", "TW": "AS", "IR": "AS", "TR": "AS", "US": "NA", "CA": "NA", "MX": "NA",
    "BR": "SA", "AR": "SA", "CL": "SA", "CO": "SA", "ZA": "AF", "NG": "AF", "EG": "AF",
    "KE": "AF", "AU": "OC",
}  # fmt: skip


def _geoname(text: str) -> MmdbU32:
    return MmdbU32(sum(ord(c) * 31**i for i, c in enumerate(text)) % 10_000_000 + 1)


def _asn_record(number: int, organization: str) -> dict[str, Any]:
    return {
        "autonomous_system_number": MmdbU32(number),
        "autonomous_system_organization": organization,
    }


def _city_record(city: tuple[str, str, float, float], accuracy_radius: int) -> dict[str, Any]:
    name, country, latitude, longitude = city
    return {
        "city": {"geoname_id": _geoname(name), "names": {"en": name}},
        "continent": {"code": _CONTINENTS.get(country, "EU")},
        "country": {
            "geoname_id": _geoname(country),
            "iso_code": country,
            "names": {"en": COUNTRY_NAMES.get(country, country)},
        },
        "location": {
            "accuracy_radius": MmdbU16(accuracy_radius),
            "latitude": MmdbF64(latitude),
            "longitude": MmdbF64(longitude),
        },
    }


def _world_networks(world: World, encoders: tuple[Encoder, Encoder]) -> tuple[Networks, Networks]:
    """The world's ASN and City networks, their records encoded into ``encoders``."""
    columns: tuple[list[list[int]], list[list[int]]] = ([[], [], [], []], [[], [], [], []])
    for prefix in world.prefixes:
        address, length = int(prefix.network.network_address), prefix.network.prefixlen
        if prefix.network.version == 4:
            length += 96  # IPv4 sits at ::a.b.c.d in the IPv6 tree
        records: list[dict[str, Any] | None] = [None, None]
        if prefix.in_maxmind_asn:
            owner = world.systems[prefix.origins[0]]
            records[0] = _asn_record(owner.number, owner.organization)
        if prefix.city is not None:
            records[1] = _city_record(prefix.city, prefix.accuracy_radius)
        for record, encoder, table in zip(records, encoders, columns, strict=True):
            if record is not None:
                offset = encoder.encode(record, return_offset=True)
                for column, value in zip(table, (address >> 64, address % 2**64, length, offset),
                                         strict=True):  # fmt: skip
                    column.append(value)
    asn, city = (Networks(*(np.array(c, dtype=np.uint64) for c in table)) for table in columns)
    return asn, city


def _free_blocks(world: World) -> np.ndarray:
    """The /16 blocks of unicast IPv4 space that hold no world prefix and no bogon."""
    blocks = np.arange(1 << 8, 224 << 8, dtype=np.int64)
    used = np.zeros(blocks.size, dtype=bool)
    spans = [(int(p.network.network_address), int(p.network.broadcast_address))
             for p in world.prefixes if p.network.version == 4]  # fmt: skip
    spans += [ipv4_network_bounds(cidr) for cidr, _ in IPV4_BOGONS]
    for low, high in spans:
        used |= (blocks >= low >> 16) & (blocks <= high >> 16)
    return blocks[~used]


def _filler_count(target: int, extra_depth: float) -> int:
    """How many random /24-aligned networks give a tree of about ``target`` nodes."""
    count = max(target / 8, 1.0)
    for _ in range(20):  # a trie of N random 24-bit keys has about N (24 - log2 N) nodes
        count = target / max(24.0 - math.log2(count) + extra_depth, 1.0)
    return int(count)


def _filler(
    free: np.ndarray, target: int, lengths: tuple[int, ...], offsets: np.ndarray, seed: int
) -> Networks:
    """Networks of ``lengths`` (/24 or longer) in distinct free /24s, records from ``offsets``."""
    rng = np.random.default_rng(seed)
    count = _filler_count(target, float(np.mean(lengths)) - 24)
    cells = np.zeros(0, dtype=np.int64)
    while cells.size < count:
        drawn = free[rng.integers(0, free.size, count)] * 256 + rng.integers(0, 256, count)
        cells = np.unique(np.concatenate([cells, drawn]))
    cells = np.sort(rng.choice(cells, count, replace=False))
    length = rng.choice(np.array(lengths, dtype=np.uint64), count)
    data = offsets[rng.integers(0, offsets.size, count)].astype(np.uint64)
    low = cells.astype(np.uint64) << np.uint64(8)
    return Networks(np.zeros(count, dtype=np.uint64), low, length + np.uint64(96), data)


def _filler_offsets(encoders: tuple[Encoder, Encoder]) -> tuple[np.ndarray, np.ndarray]:
    """Encode the filler records once: 4,000 ASes and every city at every radius."""
    asn = [
        encoders[0].encode(_asn_record(400_001 + i, f"FILLER-NET-{i} Synthetic Networks Ltd"),
                           return_offset=True)
        for i in range(4000)
    ]  # fmt: skip
    city = [
        encoders[1].encode(_city_record(c, radius), return_offset=True)
        for c in CITIES
        for radius in (5, 10, 20, 50, 100, 200, 500, 1000)
    ]
    return np.array(asn, dtype=np.int64), np.array(city, dtype=np.int64)


def write_maxmind_files(
    world: World,
    folder: Path,
    size: str = "small",
    *,
    tree_nodes: tuple[int, int] | None = None,
    build_epoch: int | None = None,
) -> tuple[Path, Path]:
    """Write the world's GeoLite2-ASN and GeoLite2-City files into ``folder``; return them.

    ``size`` picks the search-tree sizes of `TREE_NODES` (``small`` or ``realistic``);
    ``tree_nodes`` (ASN, City) sets them directly. ``build_epoch`` defaults to now.
    """
    folder.mkdir(parents=True, exist_ok=True)
    # One build time for both files: the sample's blocks carry it, and a City file built a few
    # seconds after the ASN file would make every block look older than the local database.
    epoch = int(time.time()) if build_epoch is None else build_epoch
    targets = tree_nodes or TREE_NODES[size]
    encoders = (Encoder(cache=True), Encoder(cache=True))
    parts = _world_networks(world, encoders)
    offsets = _filler_offsets(encoders) if any(targets) else None
    paths = (folder / ASN_FILE, folder / CITY_FILE)
    kinds = (("GeoLite2-ASN", (24, 24, 24, 24, 25, 26)), ("GeoLite2-City", tuple(range(24, 31))))
    free = _free_blocks(world) if any(targets) else np.zeros(0, dtype=np.int64)
    for index, (database_type, lengths) in enumerate(kinds):
        networks = [parts[index]]
        if offsets is not None and targets[index]:
            seed = world.seed * 2 + index
            networks.append(_filler(free, targets[index], lengths, offsets[index], seed))
        meta = {
            "database_type": database_type,
            "languages": ["en"],
            "description": mmdb_description(database_type),  # the sample's mark
            "build_epoch": epoch,
        }
        write_mmdb(paths[index], Networks.concat(networks), encoders[index], meta)
    return paths


def build_epoch(path: Path) -> int:
    """The build epoch recorded in an mmdb file's metadata."""
    with maxminddb.open_database(str(path)) as reader:
        return int(reader.metadata().build_epoch)
