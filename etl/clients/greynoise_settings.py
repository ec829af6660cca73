"""How a `GreyNoiseClient` asks GreyNoise: where, in which mode, how fast, within which caps
(checked when made: a bad value is a `SettingError` naming the setting)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from etl.errors import SettingError

MODES: Final = ("community", "enterprise")
MAX_MULTI: Final = 10_000


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
    backoff: float = 1.0
    max_retry_after: float = 300.0
    batch_size: int = MAX_MULTI
    failures_to_stop: int = 10  # attempts in a row without a usable answer: the breaker trips

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            mode = repr(self.mode) if isinstance(self.mode, str) else "a value that is not text"
            raise SettingError("greynoise_mode", f"must be community or enterprise, got {mode}")
        if not (self.rate > 0 and math.isfinite(self.rate)):
            raise SettingError(
                "greynoise_rate", f"must be a positive, finite number, got {self.rate}"
            )
        if self.budget is not None and self.budget < 0:
            raise SettingError("greynoise_budget", f"must be 0 or more, got {self.budget}")
        if self.search_budget is not None and self.search_budget < 0:
            raise SettingError(
                "greynoise_search_budget", f"must be 0 or more, got {self.search_budget}"
            )
        if not self.url.startswith(("http://", "https://")):
            raise SettingError("greynoise_url", f"must be an http(s) URL, got {self.url!r}")

    @property
    def stall_window(self) -> float:
        """Seconds without a usable answer after which a failing GreyNoise is ``stalled``:
        three request timeouts and three pacing intervals (a slow rate is not a stall)."""
        return 3 * self.timeout + 3 / self.rate

    @property
    def workers(self) -> int:
        """Requests in flight: enough for the rate at up to a second of latency, at most 64."""
        return max(2, min(64, math.ceil(self.rate) + 2))
