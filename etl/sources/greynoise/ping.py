"""GreyNoise's ``GET /ping``: is the service there, and does it take the key? (`honeypot-etl
doctor`, `etl.refresh.doctor`).

GreyNoise answers 200 with ``{"message": "pong", "expiration": "YYYY-MM-DD", "offering":
"community"}`` for a key it knows, and 401 for one it does not; a ping costs no Search, so it
goes outside the run's pacing, budgets and circuit breaker. One attempt, with the client's
timeout. What can go wrong, as the project's errors:

    no HTTP answer (refused, name not found, timeout)   TransportError (``failure``: the words)
    401 / 403                                            UnauthorizedError
    any other answer that is no pong (a 404 of a wrong   ServiceError (reason ``bad_response``)
    URL, a 5xx, a body that is not GreyNoise's)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from etl import __version__
from etl.core.errors import ServiceError, UnauthorizedError
from etl.sources.greynoise.settings import GreyNoiseSettings

if TYPE_CHECKING:
    from etl.sources.greynoise.transport import Transport

PING_PATH: Final = "/ping"


@dataclass(frozen=True)
class Pong:
    """What GreyNoise said of the key: its plan (``offering``) and the day it expires
    (``expiration``, ``YYYY-MM-DD`` as GreyNoise writes it), each None when not said."""

    offering: str | None
    expiration: str | None


def ping(settings: GreyNoiseSettings, api_key: str, transport: Transport | None = None) -> Pong:
    """``GET /ping`` at ``settings.url`` with ``api_key`` in the ``key`` header, once; the
    `Pong`, or an error of the module docstring. ``transport``: how the request is sent (by
    default one HTTP connection, closed after)."""
    if transport is None:
        from etl.sources.greynoise.http import HttpSession  # loads requests

        transport = HttpSession(
            1, {"Accept": "application/json", "User-Agent": f"honeypot-etl/{__version__}"}
        )
    url = settings.url.rstrip("/") + PING_PATH
    try:
        response = transport.request(
            "GET", url, headers={"key": api_key}, body=None, timeout=settings.timeout
        )
    finally:
        transport.close()
    status = response.status_code
    if status in (401, 403):
        raise UnauthorizedError(f"GreyNoise at {settings.url} refused the API key (HTTP {status})")
    body = _json(response.content)
    if status != 200 or not isinstance(body, dict) or body.get("message") != "pong":
        what = f"HTTP {status}" if status != 200 else "an answer that is not GreyNoise's pong"
        raise ServiceError(f"{url} answered {what}", reason="bad_response")
    return Pong(_text(body.get("offering")), _text(body.get("expiration")))


def _json(content: bytes) -> Any:
    try:
        return json.loads(content)
    except ValueError:
        return None


def _text(value: Any) -> str | None:
    """A short text value of the answer (what is no text, or too long to show, is None)."""
    return value if isinstance(value, str) and 0 < len(value) <= 40 else None
