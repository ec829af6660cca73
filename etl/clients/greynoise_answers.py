"""GreyNoise's answers, read: the community and v3 bodies onto our block, Retry-After, the
daily-limit 429 (shared/protocols/greynoise.md). Pure functions; `GreyNoiseClient` uses them."""

from __future__ import annotations

import email.utils
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

VIZ: Final = "https://viz.greynoise.io"


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

    @classmethod
    def not_observed(cls, ip: str) -> GreyNoiseAnswer:
        """GreyNoise has neither seen the IP scanning nor lists it in RIOT."""
        return cls(ip, "not_found", False, False, "unknown")


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


def community_answer(ip: str, status_code: int, body: Any) -> GreyNoiseAnswer:
    """Map a community response (200 or 404) onto the block."""
    if status_code == 404:
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


def enterprise_answer(item: dict[str, Any]) -> GreyNoiseAnswer:
    """Map one v3 ``data[]`` item (full or quick) onto the block."""
    ip = str(item["ip"])
    scanner = item.get("internet_scanner_intelligence") or {}
    business = item.get("business_service_intelligence") or {}
    noise = bool(scanner.get("found"))
    riot = bool(business.get("found"))
    if noise:
        classification = _text(scanner.get("classification")) or "unknown"
    else:
        classification = "benign" if riot else "unknown"
    name = (_text(business.get("name")) if riot else None) or _text(scanner.get("actor"))
    last_seen = _midnight(scanner.get("last_seen")) if noise else None
    if last_seen is None and riot:
        last_seen = _midnight(business.get("last_updated"))
    link = f"{VIZ}/ip/{ip}" if noise else (f"{VIZ}/riot/{ip}" if riot else None)
    return GreyNoiseAnswer(ip, "ok", noise, riot, classification, name, last_seen, link)
