"""GreyNoise's answers, read: the community and v3 bodies onto our block, Retry-After, the
daily-limit 429 (shared/protocols/greynoise.md). Pure functions; `GreyNoiseClient` uses them.

A v3 body (full context or ``quick=true``) is read item by item (`multi_answers`): an item or a
field of the wrong shape is that IP's ``error`` (or a null field), never an exception.

An ``error`` answer says why in a few words (its ``error`` field, the block's ``error`` key): a
short, stable phrase to group by, never an IP, a URL or a secret (`GreyNoiseAnswer.failed`)."""

from __future__ import annotations

import email.utils
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final

VIZ: Final = "https://viz.greynoise.io"
MISSING: Final = "missing from the answer"  # a v3 body that neither lists nor names an IP


@dataclass(frozen=True)
class GreyNoiseAnswer:
    """The ``greynoise`` block fields for one IP."""

    ip: str
    status: str
    noise: bool | None = None
    riot: bool | None = None
    classification: str | None = None
    name: str | None = None
    last_seen: str | None = None
    link: str | None = None
    # From the full v3 record of an IP seen scanning (null elsewhere: community mode, a quick
    # check, a RIOT-only IP).
    actor: str | None = None
    tags: tuple[str, ...] | None = None
    cves: tuple[str, ...] | None = None
    vpn: bool | None = None
    vpn_service: str | None = None
    tor: bool | None = None
    first_seen: str | None = None
    spoofable: bool | None = None
    # Why there is no usable answer ("connection refused", "HTTP 503"); null unless ``error``.
    error: str | None = None

    @classmethod
    def failed(cls, ip: str, reason: str) -> GreyNoiseAnswer:
        """No usable answer for the IP, and why."""
        return cls(ip, "error", error=reason)

    @classmethod
    def not_observed(cls, ip: str) -> GreyNoiseAnswer:
        """GreyNoise has neither seen the IP scanning nor lists it in RIOT. No classification:
        GreyNoise's ``unknown`` is a class of IPs it did observe (blocks written by older
        versions hold ``"unknown"`` here; readers go by ``status``)."""
        return cls(ip, "not_found", False, False, None)


def retry_after_seconds(header: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP-date)."""
    if header is None or not header.strip():
        return None
    text = header.strip()
    if text.isascii() and text.isdigit():  # str.isdigit also accepts '²' and other digits
        return float(text)
    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    current = datetime.now(UTC).timestamp() if now is None else now
    return max(0.0, moment.timestamp() - current)


def is_daily_limit(body: Any) -> bool:
    """A 429 that means the quota is spent (our rule: plan / rate-limit keys, or "daily")."""
    if not isinstance(body, dict):
        return False
    message = str(body.get("message", ""))
    return "plan" in body or "rate-limit" in body or "daily" in message.lower()


def _midnight(day: Any) -> str | None:
    """A ``YYYY-MM-DD`` date (or a timestamp's date part) as midnight UTC, as upstream stores it."""
    if not isinstance(day, str) or len(day) < 10:
        return None
    try:
        parsed = datetime.strptime(day[:10], "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        return None
    return parsed.isoformat()


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def community_not_observed(ip: str, body: Any) -> bool:
    """Whether a community 404's body is GreyNoise's own "not observed" answer for ``ip``
    (the IP echoed, ``noise`` and ``riot`` false), not a web server's 404 for a wrong path."""
    return (
        isinstance(body, dict)
        and body.get("ip") == ip
        and body.get("noise") is False
        and body.get("riot") is False
    )


def multi_not_observed(body: Any, asked: list[str]) -> bool:
    """Whether a v3 404's body is GreyNoise's own answer: it lists asked IPs in
    ``request_metadata.ips_not_found`` (a wrong path's 404 says only ``Not Found``)."""
    metadata = body.get("request_metadata") if isinstance(body, dict) else None
    missing = metadata.get("ips_not_found") if isinstance(metadata, dict) else None
    return isinstance(missing, list) and any(ip in missing for ip in asked)


def community_answer(ip: str, status_code: int, body: Any) -> GreyNoiseAnswer:
    """Map a community response (200 or 404) onto the block. A 404 is ``not_found`` only when
    its body is GreyNoise's not-observed answer for the IP; any other raises ValueError."""
    if status_code == 404:
        if not community_not_observed(ip, body):
            raise ValueError("HTTP 404")
        return GreyNoiseAnswer.not_observed(ip)
    if not isinstance(body, dict) or not isinstance(body.get("noise"), bool):
        raise ValueError("not a community answer")
    return GreyNoiseAnswer(
        ip=ip,
        status="ok",
        noise=body["noise"],
        riot=bool(body.get("riot")),
        classification=_text(body.get("classification")) or "unknown",
        name=_text(body.get("name")),
        last_seen=_midnight(body.get("last_seen")),
        link=_text(body.get("link")),
    )


def _flag(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _texts(values: Any) -> tuple[str, ...] | None:
    """A list of strings (CVEs), or of tag objects (their ``name``, else ``slug``); one tag
    object alone counts as a list of one. None when the field is absent or of another shape."""
    if isinstance(values, dict):
        values = [values]
    if not isinstance(values, list):
        return None
    names = ((v.get("name") or v.get("slug")) if isinstance(v, dict) else v for v in values)
    return tuple(name for name in names if isinstance(name, str) and name)


def _part(item: dict[str, Any], key: str) -> dict[str, Any]:
    part = item.get(key)
    return part if isinstance(part, dict) else {}


def enterprise_answer(item: dict[str, Any]) -> GreyNoiseAnswer:
    """Map one v3 ``data[]`` item (full or quick) onto the block; found in neither dataset is
    ``not_found``."""
    ip = str(item["ip"])
    scanner = _part(item, "internet_scanner_intelligence")
    business = _part(item, "business_service_intelligence")
    noise = scanner.get("found") is True
    riot = business.get("found") is True
    if not (noise or riot):
        return GreyNoiseAnswer.not_observed(ip)
    classification = (_text(scanner.get("classification")) or "unknown") if noise else "benign"
    actor = _text(scanner.get("actor")) if noise else None
    name = (_text(business.get("name")) if riot else None) or actor
    last_seen = _midnight(scanner.get("last_seen")) if noise else None
    if last_seen is None and riot:
        last_seen = _midnight(business.get("last_updated"))
    link = f"{VIZ}/ip/{ip}" if noise else f"{VIZ}/riot/{ip}"
    answer = GreyNoiseAnswer(ip, "ok", noise, riot, classification, name, last_seen, link)
    return replace(answer, **_scanner_context(scanner)) if noise else answer


def _scanner_context(scanner: dict[str, Any]) -> dict[str, Any]:
    """The fields operators use from the full record of an IP seen scanning."""
    return {
        "actor": _text(scanner.get("actor")),
        "tags": _texts(scanner.get("tags")),
        "cves": _texts(scanner.get("cves")),
        "vpn": _flag(scanner.get("vpn")),
        "vpn_service": _text(scanner.get("vpn_service")),
        "tor": _flag(scanner.get("tor")),
        "first_seen": _midnight(scanner.get("first_seen")),
        "spoofable": _flag(scanner.get("spoofable")),
    }


def multi_answers(body: Any, asked: list[str]) -> dict[str, GreyNoiseAnswer]:
    """Each asked IP's answer in a v3 multi body: its ``data`` item, ``not_found`` when listed
    in ``request_metadata.ips_not_found``, else ``error`` (`MISSING`). Items of IPs not asked
    are ignored. Raises ValueError when the body is not a JSON object."""
    if not isinstance(body, dict):
        raise ValueError("not a v3 answer")
    wanted = set(asked)
    answers: dict[str, GreyNoiseAnswer] = {}
    data = body.get("data")
    for item in data if isinstance(data, list) else []:
        if isinstance(item, dict) and isinstance(item.get("ip"), str) and item["ip"] in wanted:
            answers[item["ip"]] = enterprise_answer(item)
    metadata = body.get("request_metadata")
    missing = metadata.get("ips_not_found") if isinstance(metadata, dict) else None
    for ip in missing if isinstance(missing, list) else []:
        if isinstance(ip, str) and ip in wanted and ip not in answers:
            answers[ip] = GreyNoiseAnswer.not_observed(ip)
    return {ip: answers.get(ip) or GreyNoiseAnswer.failed(ip, MISSING) for ip in asked}
