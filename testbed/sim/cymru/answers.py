"""The Team Cymru simulator's answers: option keywords, padded rows, ``NA`` and error lines, in
the literal format of shared/protocols/cymru-whois.md."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from testbed.sample.world import World

COLUMNS = ("prefix", "countrycode", "registry", "allocdate")
_FLAGS = {
    "-p": ("prefix", True),
    "-q": ("prefix", False),
    "-c": ("countrycode", True),
    "-d": ("countrycode", False),
    "-r": ("registry", True),
    "-s": ("registry", False),
    "-a": ("allocdate", True),
    "-b": ("allocdate", False),
    "-n": ("asname", True),
    "-o": ("asname", False),
}
_KEYWORDS = {
    "prefix": ("prefix", True),
    "noprefix": ("prefix", False),
    "countrycode": ("countrycode", True),
    "nocountrycode": ("countrycode", False),
    "registry": ("registry", True),
    "noregistry": ("registry", False),
    "allocdate": ("allocdate", True),
    "noallocdate": ("allocdate", False),
    "asname": ("asname", True),
    "noasname": ("asname", False),
}
_IGNORED = {
    "truncate",
    "notruncate",
    "trunc",
    "notrunc",
    "asnumber",
    "noasnumber",
    "-t",
    "-u",
    "-f",
    "-w",
}
_AS_QUERY = re.compile(r"^as(\d{1,10})$", re.IGNORECASE)
GARBAGE_LINES = (
    "%%% garbage \x7f line from a confused proxy",
    "12345 | 1.2.3",
    "64999   | 203.0.113.99     | 203.0.113.0/24      | ZZ | arin     | 2000-01-01 | BOGUS-ROW, ZZ",
    "Error: no ASN or IP match on line 99999.",
    "| | | | | | | | |",
    "NA | banana | NA",
)


@dataclass
class Options:
    """The columns a session asked for."""

    enabled: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(COLUMNS, False))
    asname: bool = True

    def set(self, name: str, value: bool) -> None:
        """Turn one column on or off."""
        if name == "asname":
            self.asname = value
        else:
            self.enabled[name] = value

    def apply(self, word: str) -> bool:
        """Apply a flag or keyword; False when ``word`` is neither."""
        lowered = word.lower()
        if lowered in ("-v", "verbose"):
            for name in COLUMNS:
                self.enabled[name] = True
            return True
        setting = _FLAGS.get(lowered) or _KEYWORDS.get(lowered)
        if setting:
            self.set(*setting)
            return True
        return lowered in _IGNORED


def _pad(value: str, width: int) -> str:
    return value.ljust(width)


def ip_rows(
    world: World, address: ipaddress.IPv4Address | ipaddress.IPv6Address, options: Options
) -> list[str]:
    """The answer rows for one IP query (several when the prefix has several origins)."""
    prefix = world.route(address)
    echoed = _pad(str(address), 16 if address.version == 4 else 40)
    if prefix is None:  # private, reserved or unallocated
        values = [("NA", "", "other", "", "NA")]
        network = "NA"
    elif not prefix.origins:  # allocated, not announced
        values = [("NA", prefix.country, prefix.registry, prefix.allocated, "NA")]
        network = "NA"
    else:
        values = [
            (str(asn), prefix.country, prefix.registry, prefix.allocated, world.systems[asn].name)
            for asn in prefix.origins
        ]
        network = str(prefix.network)
    rows = []
    for asn, country, registry, allocated, name in values:
        fields = [_pad(asn, 8), echoed]
        if options.enabled["prefix"]:
            fields.append(_pad(network, 19))
        if options.enabled["countrycode"]:
            fields.append(_pad(country, 2))
        if options.enabled["registry"]:
            fields.append(_pad(registry, 8))
        if options.enabled["allocdate"]:
            fields.append(_pad(allocated, 10))
        if options.asname:
            fields.append(name)
        rows.append(_join(fields))
    return rows


def as_row(world: World, number: int, options: Options) -> str:
    """The answer row for one ``AS<n>`` query."""
    system = world.systems.get(number)
    if system is None:
        fields = [_pad("NA", 8), "  ", _pad("other", 8), _pad("", 10), "NA"]
    else:
        fields = [
            _pad(str(number), 8),
            _pad(system.country, 2),
            _pad(system.registry, 8),
            _pad(system.allocated, 10),
            system.name,
        ]
    chosen = [fields[0]]
    if options.enabled["countrycode"]:
        chosen.append(fields[1])
    if options.enabled["registry"]:
        chosen.append(fields[2])
    if options.enabled["allocdate"]:
        chosen.append(fields[3])
    if options.asname:
        chosen.append(fields[4])
    return _join(chosen)


def _join(fields: list[str]) -> str:
    # The AS column is followed by "| " directly (it is padded to 8); the rest by " | ".
    return fields[0] + "| " + " | ".join(fields[1:])


def header(options: Options) -> str:
    """The header line printed before a single query's answer."""
    fields = [_pad("AS", 8), _pad("IP", 16)]
    for name, title, width in (
        ("prefix", "BGP Prefix", 19),
        ("countrycode", "CC", 2),
        ("registry", "Registry", 8),
        ("allocdate", "Allocated", 10),
    ):
        if options.enabled[name]:
            fields.append(_pad(title, width))
    if options.asname:
        fields.append("AS Name")
    return _join(fields)


def answer(world: World, query: str, line_number: int, options: Options) -> list[str]:
    """The lines that answer one query line."""
    matched = _AS_QUERY.match(query)
    if matched:
        return [as_row(world, int(matched.group(1)), options)]
    try:
        address = ipaddress.ip_address(query)
    except ValueError:
        return [f"Error: no ASN or IP match on line {line_number}."]
    return ip_rows(world, address, options)
