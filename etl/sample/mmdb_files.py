"""GeoLite2-shaped ASN and City databases of a `World`, written with mmdb-writer."""

from __future__ import annotations

import os
from pathlib import Path

import maxminddb
from mmdb_writer import MmdbF64, MmdbU16, MmdbU32, MMDBWriter
from netaddr import IPSet

from etl.sample.world import COUNTRY_NAMES, World

ASN_FILE = "GeoLite2-ASN.mmdb"
CITY_FILE = "GeoLite2-City.mmdb"
_CONTINENTS = {
    "CN": "AS", "JP": "AS", "KR": "AS", "IN": "AS", "VN": "AS", "ID": "AS", "SG": "AS",
    "HK": "AS", "TW": "AS", "IR": "AS", "TR": "AS", "US": "NA", "CA": "NA", "MX": "NA",
    "BR": "SA", "AR": "SA", "CL": "SA", "CO": "SA", "ZA": "AF", "NG": "AF", "EG": "AF",
    "KE": "AF", "AU": "OC",
}  # fmt: skip


def _writer(database_type: str) -> MMDBWriter:
    return MMDBWriter(
        ip_version=6,
        ipv4_compatible=True,
        database_type=database_type,
        languages=["en"],
        description=f"Synthetic {database_type} of the honeypot-etl sample world",
    )


def _geoname(text: str) -> MmdbU32:
    return MmdbU32(sum(ord(c) * 31**i for i, c in enumerate(text)) % 10_000_000 + 1)


def write_maxmind_files(world: World, folder: Path) -> tuple[Path, Path]:
    """Write the world's GeoLite2-ASN and GeoLite2-City files into ``folder``; return them."""
    folder.mkdir(parents=True, exist_ok=True)
    asn, city = _writer("GeoLite2-ASN"), _writer("GeoLite2-City")
    for prefix in world.prefixes:
        network = IPSet([str(prefix.network)])
        if prefix.in_maxmind_asn:
            owner = world.systems[prefix.origins[0]]
            asn.insert_network(
                network,
                {
                    "autonomous_system_number": MmdbU32(owner.number),
                    "autonomous_system_organization": owner.organization,
                },
            )
        if prefix.city is not None:
            name, country, latitude, longitude = prefix.city
            city.insert_network(
                network,
                {
                    "city": {"geoname_id": _geoname(name), "names": {"en": name}},
                    "continent": {"code": _CONTINENTS.get(country, "EU")},
                    "country": {
                        "geoname_id": _geoname(country),
                        "iso_code": country,
                        "names": {"en": COUNTRY_NAMES.get(country, country)},
                    },
                    "location": {
                        "accuracy_radius": MmdbU16(prefix.accuracy_radius),
                        "latitude": MmdbF64(latitude),
                        "longitude": MmdbF64(longitude),
                    },
                },
            )
    paths = (folder / ASN_FILE, folder / CITY_FILE)
    for writer, path in zip((asn, city), paths, strict=True):
        partial = path.with_suffix(".mmdb.tmp")
        writer.to_db_file(str(partial))
        os.replace(partial, path)
    return paths


def build_epoch(path: Path) -> int:
    """The build epoch recorded in an mmdb file's metadata."""
    with maxminddb.open_database(str(path)) as reader:
        return int(reader.metadata().build_epoch)
