"""A synthetic internet, fully determined by a seed.

The sample database, the MaxMind files and both simulators are built from the same `World`,
so a refresh against the simulators has one right answer per IP that tests can compute:
which AS routes it (several for multi-origin prefixes), whether MaxMind knows that AS,
where it is, and what GreyNoise says about it.
"""

from __future__ import annotations

import bisect
import hashlib
import ipaddress
import random
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cached_property
from typing import Any, Final

import numpy as np

from etl.refresh.validation import IPV4_BOGONS

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Registration country -> regional internet registry.
REGISTRY: Final = {
    **dict.fromkeys(("US", "CA"), "arin"),
    **dict.fromkeys(("BR", "AR", "MX", "CL", "CO"), "lacnic"),
    **dict.fromkeys(("CN", "JP", "KR", "IN", "VN", "ID", "SG", "AU", "HK", "TW"), "apnic"),
    **dict.fromkeys(("ZA", "NG", "EG", "KE"), "afrinic"),
    **dict.fromkeys(
        ("RU", "DE", "FR", "NL", "GB", "UA", "RO", "IT", "PL", "SE", "TR", "IR", "BG"), "ripencc"
    ),
}
# (city, country, latitude, longitude) for geolocation records; weighted like honeypot traffic.
CITIES: Final = (
    ("Beijing", "CN", 39.9042, 116.4074),
    ("Shanghai", "CN", 31.2304, 121.4737),
    ("Shenzhen", "CN", 22.5431, 114.0579),
    ("Ashburn", "US", 39.0438, -77.4874),
    ("Santa Clara", "US", 37.3541, -121.9552),
    ("New York", "US", 40.7128, -74.006),
    ("Moscow", "RU", 55.7558, 37.6173),
    ("Frankfurt am Main", "DE", 50.1109, 8.6821),
    ("Amsterdam", "NL", 52.3676, 4.9041),
    ("São Paulo", "BR", -23.5505, -46.6333),
    ("Seoul", "KR", 37.5665, 126.978),
    ("Mumbai", "IN", 19.076, 72.8777),
    ("Hanoi", "VN", 21.0278, 105.8342),
    ("Singapore", "SG", 1.3521, 103.8198),
    ("Tokyo", "JP", 35.6762, 139.6503),
    ("Bucharest", "RO", 44.4268, 26.1025),
    ("Kyiv", "UA", 50.4501, 30.5234),
    ("Paris", "FR", 48.8566, 2.3522),
    ("London", "GB", 51.5072, -0.1276),
    ("Tehran", "IR", 35.6892, 51.389),
    ("Jakarta", "ID", -6.2088, 106.8456),
    ("Istanbul", "TR", 41.0082, 28.9784),
    ("Johannesburg", "ZA", -26.2041, 28.0473),
    ("Sofia", "BG", 42.6977, 23.3219),
)
COUNTRY_NAMES: Final = {
    "CN": "China",
    "US": "United States",
    "RU": "Russia",
    "DE": "Germany",
    "NL": "Netherlands",
    "BR": "Brazil",
    "KR": "South Korea",
    "IN": "India",
    "VN": "Vietnam",
    "SG": "Singapore",
    "JP": "Japan",
    "RO": "Romania",
    "UA": "Ukraine",
    "FR": "France",
    "GB": "United Kingdom",
    "IR": "Iran",
    "ID": "Indonesia",
    "TR": "Türkiye",
    "ZA": "South Africa",
    "BG": "Bulgaria",
}
_WORDS: Final = (
    "CHINANET",
    "DIGITALOCEAN",
    "OVH",
    "HETZNER",
    "CONTABO",
    "LINODE",
    "VULTR",
    "TENCENT",
    "ALIBABA",
    "KORNET",
    "VNPT",
    "TELEKOM",
    "ROSTELECOM",
    "SELECTEL",
    "M247",
    "LEASEWEB",
    "CHOOPA",
    "HOSTINGER",
    "FRANTECH",
    "BACKBONE",
)
_KINDS: Final = ("AS", "NET", "HOSTING", "CLOUD", "BACKBONE", "ISP", "DC")
# How an AS of each kind names itself after its word: what the residential heuristic of the
# labels (SPEC 3.4) reads. Two strong patterns, one strong, one weak, none, and a hosting name
# that matches a residential pattern and an exclusion (not residential).
_NAME_TAILS: Final = {
    "AS": "Networks Ltd",
    "NET": "Internet Service Provider",
    "HOSTING": "Telecom Hosting Ltd",
    "CLOUD": "Cloud Networks Ltd",
    "BACKBONE": "Networks Ltd",
    "ISP": "Broadband Telecom",
    "DC": "Data Center Ltd",
}
HOSTING_KINDS: Final = ("HOSTING", "DC")  # their prefixes are in the datacenter list
# AS names that break naive code: commas, quotes, non-ASCII, length, SQL.
AWKWARD_NAMES: Final = (
    'O\'REILLY-NET "Fast" Hosting, Inc., US',
    "SOCIÉTÉ-TÉLÉCOM Réseau Français, FR",
    "東京データセンター株式会社, JP",
    "x'); DROP TABLE ip_inventory;--, US",
    "COMMA,SEPARATED,,NAME,, DE",
    'BACKSLASH\\AND"QUOTE {"json": [1]}, NL',
    "L" + "ONG-NAME-" * 23 + ", RU",
    "TAB\tAND\x07BELL | PIPE %s\\n NAME, SE",
)


@dataclass(frozen=True)
class AutonomousSystem:
    """An AS as Team Cymru's AS lookup describes it (registration data, not geolocation)."""

    number: int
    name: str
    country: str
    registry: str
    allocated: str
    kind: str = ""  # one of _KINDS (a generated AS), or "" (an AS of the protocol references)

    @property
    def organization(self) -> str:
        """The name without Cymru's trailing ``, CC`` (what MaxMind's ASN database carries)."""
        head, _, tail = self.name.rpartition(", ")
        return head if head and len(tail) == 2 else self.name


@dataclass(frozen=True)
class Prefix:
    """An allocated prefix: routed by ``origins`` (none = allocated but unrouted)."""

    network: IPNetwork
    origins: tuple[int, ...]
    country: str
    registry: str
    allocated: str
    in_maxmind_asn: bool
    city: tuple[str, str, float, float] | None
    accuracy_radius: int


@dataclass(frozen=True)
class GreyNoiseRecord:
    """What GreyNoise knows about an IP it has observed (noise) or lists (RIOT); the scanner
    context (tags to spoofable) is what its full v3 record holds for an IP seen scanning."""

    noise: bool
    riot: bool
    classification: str
    name: str
    last_seen: str
    tags: tuple[str, ...] = ()
    cves: tuple[str, ...] = ()
    vpn: bool = False
    vpn_service: str = ""
    tor: bool = False
    first_seen: str = ""
    spoofable: bool = False


# Entries of the protocol references, so the simulators reproduce their literal lines.
_GOOGLE = AutonomousSystem(15169, "GOOGLE, US", "US", "arin", "2000-03-30")
_KNOWN_SYSTEMS: Final = (
    _GOOGLE,
    AutonomousSystem(12389, "ROSTELECOM-AS, RU", "RU", "ripencc", "2005-07-01"),
    AutonomousSystem(14061, "DIGITALOCEAN-ASN - DigitalOcean, LLC, US", "US", "arin", "2012-09-25"),
    AutonomousSystem(26496, "AS-26496-GO-DADDY-COM-LLC - GoDaddy.com, LLC, US", "US", "arin", ""),
    AutonomousSystem(22990, "ALBANYEDU - University at Albany, US", "US", "arin", "2002-03-13"),
    AutonomousSystem(22991, "NYSERNET-ALBANY, US", "US", "arin", "2002-03-13"),
    AutonomousSystem(13335, "CLOUDFLARENET, US", "US", "arin", "2010-07-14"),
)
_NY: Final = ("New York", "US", 40.7128, -74.006)
_ALBANY: Final = ("Albany", "US", 42.6526, -73.7562)
_SCOTTSDALE: Final = ("Scottsdale", "US", 33.4942, -111.9261)
_KNOWN_PREFIXES: Final = tuple(
    Prefix(ipaddress.ip_network(net), origins, cc, rir, day, in_asn, city, radius)
    for net, origins, cc, rir, day, in_asn, city, radius in (
        ("74.125.225.0/24", (15169,), "US", "arin", "2007-03-13", True, _NY, 100),
        ("2001:4860::/32", (15169,), "US", "arin", "2005-03-14", True, _NY, 100),
        ("193.32.71.0/24", (), "UA", "ripencc", "2018-04-26", False, None, 0),
        ("89.38.234.0/24", (), "RO", "ripencc", "2005-11-29", False, None, 0),
        ("169.226.0.0/16", (22990, 22991), "US", "arin", "1992-03-04", True, _ALBANY, 20),
        ("107.180.0.0/18", (26496,), "US", "arin", "2013-01-10", True, _SCOTTSDALE, 20),
        ("1.2.3.0/24", (13335,), "AU", "apnic", "2011-08-11", True, None, 0),
        ("8.8.8.0/24", (15169,), "US", "arin", "2014-03-14", True, _NY, 1000),
    )
)
# GreyNoise answers of the protocol reference (its literal 200 body is for 1.2.3.4).
_KNOWN_GREYNOISE: Final = {
    "1.2.3.4": GreyNoiseRecord(False, True, "benign", "Cloudflare", "2020-01-01"),
    "8.8.8.8": GreyNoiseRecord(False, True, "benign", "Google Public DNS", "2026-11-20"),
    # A hostile actor name: quotes, "|", SQL, JSON metacharacters, control characters, non-ASCII.
    "45.33.32.156": GreyNoiseRecord(
        True,
        False,
        "malicious",
        'x\'); DROP TABLE ip_inventory;-- "}, {"noise": false | \t\x01 Ünïcødé ✓',
        "2026-11-25",
    ),
}
_ACTORS: Final = ("Shodan.io", "Censys", "BinaryEdge", "Stretchoid", "Palo Alto Networks")
_SERVICES: Final = ("Cloudflare", "Google Public DNS", "Microsoft Azure", "Akamai", "Fastly")
_TAGS: Final = ("SSH Bruteforcer", "Mirai", "Telnet Worm", "Web Crawler", "ZMap Client",
                "Generic IoT Default Password Attempt")  # fmt: skip
_CVES: Final = ("CVE-2021-44228", "CVE-2023-46604", "CVE-2024-3400", "CVE-2022-26134")
_VPNS: Final = ("IPVANISH_VPN", "NORD_VPN", "MULLVAD_VPN")


def digest(seed: int, text: str) -> int:
    """A number drawn from ``seed`` and ``text`` alone (the same in every process)."""
    return int.from_bytes(hashlib.blake2b(f"{seed}:{text}".encode(), digest_size=8).digest())


class World:
    """The synthetic internet of one seed: ASes, prefixes, geolocation and GreyNoise data."""

    def __init__(self, seed: int = 1, prefixes: int = 2000) -> None:
        self.seed = seed
        rng = random.Random(seed)
        self.systems: dict[int, AutonomousSystem] = {s.number: s for s in _KNOWN_SYSTEMS}
        numbers = self._system_numbers(rng, max(40, prefixes // 5))
        for index, number in enumerate(numbers):
            self.systems[number] = self._system(rng, number, index)
        self.prefixes: list[Prefix] = list(_KNOWN_PREFIXES)
        self._generate_prefixes(rng, prefixes, numbers)
        self._v4 = sorted(
            (p for p in self.prefixes if p.network.version == 4),
            key=lambda p: int(p.network.network_address),
        )
        self._v6 = sorted(
            (p for p in self.prefixes if p.network.version == 6),
            key=lambda p: int(p.network.network_address),
        )
        self._v4_starts = [int(p.network.network_address) for p in self._v4]
        self._v6_starts = [int(p.network.network_address) for p in self._v6]

    @staticmethod
    def _system_numbers(rng: random.Random, count: int) -> list[int]:
        known = {s.number for s in _KNOWN_SYSTEMS}
        numbers: set[int] = set()
        while len(numbers) < count:
            number = (
                rng.randrange(1000, 64000) if rng.random() < 0.8 else rng.randrange(131072, 400000)
            )
            if number not in known:
                numbers.add(number)
        return sorted(numbers)

    @staticmethod
    def _system(rng: random.Random, number: int, index: int) -> AutonomousSystem:
        country = rng.choice(list(REGISTRY))
        kind = ""
        if index < len(AWKWARD_NAMES):
            name = AWKWARD_NAMES[index]
            country = name.rpartition(", ")[2]
        else:
            word, kind = rng.choice(_WORDS), rng.choice(_KINDS)
            name = f"{word}-{kind}{index} {word.title()} {_NAME_TAILS[kind]}, {country}"
        allocated = date(1995, 1, 1) + timedelta(days=rng.randrange(11000))
        return AutonomousSystem(
            number, name, country, REGISTRY[country], allocated.isoformat(), kind
        )

    def _generate_prefixes(self, rng: random.Random, count: int, numbers: list[int]) -> None:
        taken = {
            int(p.network.network_address) >> 16 for p in self.prefixes if p.network.version == 4
        }
        v6_count = max(4, count // 40)
        while len(self.prefixes) < len(_KNOWN_PREFIXES) + count - v6_count:
            block = rng.randrange(1 << 8, 224 << 8)  # a /16 somewhere in 1.0.0.0 - 223.255.0.0
            network = ipaddress.IPv4Network((block << 16, 16))
            if block in taken or any(network.overlaps(bogon) for bogon in _BOGONS):
                continue
            taken.add(block)
            length = rng.choice((16, 17, 18, 19, 20, 21, 22, 24))
            self.prefixes.append(
                self._prefix(rng, ipaddress.IPv4Network((block << 16, length)), numbers)
            )
        for _ in range(v6_count):
            top = 0x2400 + rng.randrange(0x0A00)  # inside 2400::/6 .. 2dff::, RIR space
            address = (top << 112) | (rng.getrandbits(16) << 96)
            self.prefixes.append(self._prefix(rng, ipaddress.IPv6Network((address, 32)), numbers))

    def _prefix(self, rng: random.Random, network: IPNetwork, numbers: list[int]) -> Prefix:
        draw = rng.random()
        if draw < 0.03:  # allocated to an RIR member, not announced in BGP
            origins: tuple[int, ...] = ()
        elif draw < 0.07:  # announced by several origin ASes
            origins = tuple(rng.sample(numbers, rng.choice((2, 2, 3))))
        else:
            origins = (rng.choice(numbers),)
        owner = self.systems[origins[0]] if origins else None
        country = owner.country if owner and rng.random() < 0.9 else rng.choice(list(REGISTRY))
        city = rng.choice(CITIES) if rng.random() < 0.93 else None
        allocated = date(1995, 1, 1) + timedelta(days=rng.randrange(11000))
        return Prefix(
            network=network,
            origins=origins,
            country=country,
            registry=REGISTRY[country],
            allocated=allocated.isoformat(),
            in_maxmind_asn=bool(origins) and rng.random() >= 0.075,
            city=city,
            accuracy_radius=rng.choice((5, 10, 20, 50, 100, 200, 500, 1000)),
        )

    # -- lookups (used by the simulators and by tests computing expected answers) ------------

    def route(self, address: IPAddress) -> Prefix | None:
        """The allocated prefix holding ``address``, or None (bogon or unallocated)."""
        prefixes, starts = (
            (self._v4, self._v4_starts) if address.version == 4 else (self._v6, self._v6_starts)
        )
        index = bisect.bisect_right(starts, int(address)) - 1
        if index >= 0 and address in prefixes[index].network:
            return prefixes[index]
        return None

    def greynoise(self, address: str) -> GreyNoiseRecord | None:
        """GreyNoise's view of an IPv4 address; None when it was never observed."""
        if address in _KNOWN_GREYNOISE:
            return _KNOWN_GREYNOISE[address]
        value = digest(self.seed, "greynoise:" + address)
        draw = (value % 10_000) / 10_000
        seen = (date(2026, 11, 27) - timedelta(days=(value >> 20) % 60)).isoformat()
        if draw < 0.40:
            classification = ("malicious", "malicious", "unknown", "benign")[(value >> 14) % 4]
            actor = (
                _ACTORS[(value >> 16) % len(_ACTORS)] if classification == "benign" else "unknown"
            )
            return GreyNoiseRecord(
                True, False, classification, actor, seen, **self._scanner_context(address, seen)
            )
        if draw < 0.45:
            return GreyNoiseRecord(False, True, "benign", _SERVICES[(value >> 16) % 5], seen)
        return None

    def _scanner_context(self, address: str, last_seen: str) -> dict[str, Any]:
        """Tags, CVEs, VPN/Tor, first_seen and spoofable of an IP seen scanning."""
        value = digest(self.seed, "greynoise-context:" + address)
        tags = tuple(tag for bit, tag in enumerate(_TAGS) if value >> bit & 7 == 0)
        cves = tuple(cve for bit, cve in enumerate(_CVES) if value >> (8 + bit) & 15 == 0)
        vpn = value >> 16 & 31 == 0
        first = date.fromisoformat(last_seen) - timedelta(days=value >> 24 & 511)
        return {
            "tags": tags,
            "cves": cves,
            "vpn": vpn,
            "vpn_service": _VPNS[(value >> 40) % len(_VPNS)] if vpn else "",
            "tor": value >> 34 & 31 == 1,
            "first_seen": first.isoformat(),
            "spoofable": value >> 44 & 7 == 0,
        }

    # -- sampling ---------------------------------------------------------------------------

    @cached_property
    def _v4_table(self) -> tuple[np.ndarray, np.ndarray]:
        starts = np.array(self._v4_starts, dtype=np.int64)
        sizes = np.array([p.network.num_addresses for p in self._v4], dtype=np.int64)
        return starts, sizes

    def attacking_ips(self, count: int, rng: np.random.Generator) -> list[str]:
        """``count`` distinct global addresses inside the world's prefixes (about 2% IPv6)."""
        v6_count = count // 50
        starts, sizes = self._v4_table
        chosen: dict[int, None] = {}
        while len(chosen) < count - v6_count:
            need = count - v6_count - len(chosen)
            index = rng.integers(0, len(starts), size=need + need // 10 + 8)
            offsets = (rng.random(index.size) * (sizes[index] - 2)).astype(np.int64) + 1
            chosen.update(dict.fromkeys((starts[index] + offsets).tolist()))
        v4 = list(chosen)[: count - v6_count]
        v4_text = [str(ipaddress.IPv4Address(value)) for value in v4]
        v6: set[str] = set()
        while len(v6) < v6_count:
            prefix = self._v6[int(rng.integers(0, len(self._v6)))]
            host = int(rng.integers(1, 1 << 62))
            v6.add(str(prefix.network.network_address + host))
        return v4_text + sorted(v6)


_BOGONS: Final = tuple(ipaddress.IPv4Network(cidr) for cidr, _ in IPV4_BOGONS)
