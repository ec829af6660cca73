"""How a `GreyNoiseClient` asks GreyNoise: where, in which mode, how fast, within which caps
(checked when made: a bad value is a `SettingError` naming the setting).

Each default and each range is declared here once: `etl.refresh.config.RefreshConfig` takes the
defaults of its ``greynoise_*`` and ``retry_backoff`` settings from ``GreyNoiseSettings()`` and
states `RATE` and `BUDGET` in its help; its checks of the URL and the mode are these.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from etl.core.errors import SettingError
from etl.core.limits import Range
from etl.sources.failures import RETRY_BACKOFF

MODES: Final = ("community", "enterprise")
MAX_MULTI: Final = 10_000
RATE: Final = Range(0, 1_000, "requests per second", above=True)  # greynoise_rate
BUDGET: Final = Range(0, 1_000_000_000, "requests")  # greynoise_budget


@dataclass(frozen=True)
class GreyNoiseSettings:
    """Where and how fast to ask GreyNoise."""

    url: str = "https://api.greynoise.io"
    mode: str = "community"
    rate: float = 10.0
    budget: int | None = None  # requests in this run
    search_budget: int | None = None  # Searches in this run (what the daily budget leaves)
    timeout: float = 15.0
    retries: int = 3
    backoff: float = RETRY_BACKOFF
    max_retry_after: float = 300.0
    batch_size: int = MAX_MULTI
    failures_to_stop: int = 10  # attempts in a row without a usable answer: the breaker trips

    def __post_init__(self) -> None:
        check_url(self.url)
        if self.mode not in MODES:
            mode = repr(self.mode) if isinstance(self.mode, str) else "a value that is not text"
            raise SettingError("greynoise_mode", f"must be community or enterprise, got {mode}")
        RATE.check("greynoise_rate", self.rate)
        BUDGET.check("greynoise_budget", self.budget)
        if self.search_budget is not None and self.search_budget < 0:
            raise SettingError(
                "greynoise_search_budget", f"must be 0 or more, got {self.search_budget}"
            )

    @property
    def stall_window(self) -> float:
        """Seconds without a usable answer after which a failing GreyNoise is ``stalled``:
        three request timeouts and three pacing intervals (a slow rate is not a stall)."""
        return 3 * self.timeout + 3 / self.rate

    @property
    def workers(self) -> int:
        """Requests in flight: enough for the rate at up to a second of latency, at most 64."""
        return max(2, min(64, math.ceil(self.rate) + 2))


def check_url(url: str) -> None:
    """Raise `SettingError` unless ``url`` is an http(s) URL with a host (and a port that is a
    number other than 0, no whitespace or control character): a typo is exit 2 at once, not
    a failed request per IP later. The one check of the greynoise_url setting."""
    try:
        parts = urlsplit(url)
        good = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a port that is no number, a stray [
        good = False
    if not good or re.search(r"[\s\x00-\x1f\x7f]", url):
        raise SettingError("greynoise_url", f"must be an http(s) URL, got {url[:80]!r}")
