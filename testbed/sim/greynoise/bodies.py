"""The GreyNoise simulator's response bodies, literal as in shared/protocols/greynoise.md."""

from __future__ import annotations

from typing import Any

from testbed.sample.world import GreyNoiseRecord

NOT_OBSERVED = "IP not observed scanning the internet or contained in RIOT data set."
INVALID_IPV4 = {"message": "Request is not a valid routable IPv4 address"}
UNAUTHORIZED = {"message": "Unauthorized"}
SERVER_ERROR = {"message": "Encountered error while performing request"}
THROTTLED = {"message": "You've hit the rate limit for this endpoint."}
INVALID_PARAMETER = {"message": "Invalid parameter"}


def daily_limit_body(limit: int, plan: str) -> dict[str, str]:
    """The daily-limit 429 body (literal for the unauthenticated plan's 100 lookups)."""
    return {
        "plan": plan,
        "rate-limit": f"{limit}-lookups/day",
        "plan_url": "https://greynoise.io/pricing",
        "message": f"You have hit your daily rate limit of {limit} requests per day. "
        "Please create a free account or upgrade your plan at https://greynoise.io/pricing.\n",
    }


def community_body(address: str, record: GreyNoiseRecord | None) -> tuple[int, dict[str, Any]]:
    """Status and body of ``GET /v3/community/{ip}`` for a routable IPv4 address."""
    if record is None:
        return 404, {"ip": address, "noise": False, "riot": False, "message": NOT_OBSERVED}
    kind = "ip" if record.noise else "riot"
    return 200, {
        "ip": address,
        "noise": record.noise,
        "riot": record.riot,
        "classification": record.classification,
        "name": record.name,
        "link": f"https://viz.greynoise.io/{kind}/{address}",
        "last_seen": record.last_seen,
        "message": "Success",
    }


def tag_object(name: str) -> dict[str, Any]:
    """A v3 tag (schema ``IPResponseV3Tags``) for the tag ``name``."""
    slug = name.lower().replace(" ", "-")
    return {
        "id": f"00000000-0000-4000-8000-{sum(map(ord, slug)):012d}",
        "slug": slug,
        "name": name,
        "category": "activity",
        "intention": "malicious",
        "description": f"This IP address was observed as a {name}.",
        "references": [],
        "recommend_block": False,
        "cves": [],
        "created_at": "2020-04-07",
        "updated_at": "2026-11-01",
    }


def enterprise_item(address: str, record: GreyNoiseRecord, quick: bool) -> dict[str, Any]:
    """One ``data[]`` item of the v3 IP lookup."""
    if quick:
        return {
            "ip": address,
            "business_service_intelligence": {
                "found": record.riot,
                "trust_level": "1" if record.riot else "",
            },
            "internet_scanner_intelligence": {
                "found": record.noise,
                "classification": record.classification if record.noise else "",
            },
        }
    riot: dict[str, Any] = {"found": record.riot, "trust_level": ""}
    if record.riot:
        riot.update(
            category="public_dns" if "DNS" in record.name else "cdn",
            name=record.name,
            description=f"{record.name} service",
            explanation="",
            last_updated=f"{record.last_seen}T12:30:45Z",
            reference="",
            trust_level="1",
        )
    return {
        "ip": address,
        "business_service_intelligence": riot,
        "internet_scanner_intelligence": _scanner(address, record),
    }


def _scanner(address: str, record: GreyNoiseRecord) -> dict[str, Any]:
    """``internet_scanner_intelligence`` of the full record."""
    scanner: dict[str, Any] = {"found": record.noise, "classification": ""}
    if record.noise:
        scanner.update(
            ip=address,
            seen=True,
            classification=record.classification,
            last_seen=record.last_seen,
            last_seen_timestamp=f"{record.last_seen}T08:00:00Z",
            first_seen=record.first_seen,
            actor=record.name,
            spoofable=record.spoofable,
            cves=list(record.cves),
            tor=record.tor,
            vpn=record.vpn,
            vpn_service=record.vpn_service,
            metadata={"asn": "", "source_country_code": "", "organization": "", "rdns": ""},
            tags=[tag_object(name) for name in record.tags],
        )
    return scanner
