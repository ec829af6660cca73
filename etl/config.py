"""One typed configuration object for a refresh run.

The CLI, `make refresh` and the notebook all build a `RefreshConfig` and hand it to
`etl.pipeline.refresh`; nothing else in the package reads options or the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from pathlib import Path

from etl.clients.cymru import CymruSettings
from etl.clients.greynoise import GreyNoiseSettings
from etl.errors import UsageError

DEFAULT_DB_URL = "sqlite:///data/honeypot.sqlite"
DEFAULT_MAXMIND_DIR = Path("data/maxmind")
DEFAULT_CYMRU = "whois.cymru.com:43"
DEFAULT_BATCH_SIZE = 500
DEFAULT_GREYNOISE_URL = "https://api.greynoise.io"


class Source(StrEnum):
    """The enrichment sources a run can ask."""

    MAXMIND = "maxmind"
    CYMRU = "cymru"
    GREYNOISE = "greynoise"


@dataclass(frozen=True)
class Freshness:
    """How long each source's block stays fresh (SPEC 2.2)."""

    maxmind: timedelta = timedelta(days=7)
    cymru_ok: timedelta = timedelta(days=90)
    cymru_not_found: timedelta = timedelta(days=7)
    greynoise: timedelta = timedelta(days=7)
    asn_details: timedelta = timedelta(days=90)


@dataclass(frozen=True)
class RefreshConfig:
    """Every setting of a refresh run; built once, read everywhere, never mutated."""

    db_url: str = DEFAULT_DB_URL
    max_ips: int | None = None
    only_ips: tuple[str, ...] = ()
    maxmind_dir: Path = DEFAULT_MAXMIND_DIR
    maxmind_asn: Path | None = None
    maxmind_city: Path | None = None
    skip: frozenset[Source] = frozenset()
    commit_every: int = 5000
    dry_run: bool = False
    summary_json: Path | None = None
    verbosity: int = 0
    cymru: str = DEFAULT_CYMRU
    batch_size: int = DEFAULT_BATCH_SIZE
    cymru_sessions: int = 2
    cymru_timeout: float = 30.0
    greynoise_url: str = DEFAULT_GREYNOISE_URL
    greynoise_mode: str = "community"
    greynoise_rate: float = 10.0
    greynoise_budget: int | None = None
    greynoise_api_key: str | None = field(default=None, repr=False)
    freshness: Freshness = field(default_factory=Freshness)

    def __post_init__(self) -> None:
        if self.max_ips is not None and self.max_ips <= 0:
            raise UsageError(f"--ips must be a positive number, got {self.max_ips}")
        if self.commit_every <= 0:
            raise UsageError(f"--commit-every must be a positive number, got {self.commit_every}")
        if self.batch_size <= 0:
            raise UsageError(f"--batch-size must be a positive number, got {self.batch_size}")
        CymruSettings.parse_address(self.cymru)
        self.greynoise_settings()

    def greynoise_settings(self) -> GreyNoiseSettings:
        """How to reach GreyNoise in this run (checks the values)."""
        return GreyNoiseSettings(
            url=self.greynoise_url,
            mode=self.greynoise_mode,
            rate=self.greynoise_rate,
            budget=self.greynoise_budget,
        )

    def cymru_settings(self) -> CymruSettings:
        """How to reach Team Cymru in this run."""
        host, port = CymruSettings.parse_address(self.cymru)
        return CymruSettings(
            host=host,
            port=port,
            batch_size=self.batch_size,
            sessions=self.cymru_sessions,
            read_timeout=self.cymru_timeout,
            min_split=max(1, min(50, self.batch_size // 4)),
        )

    def enabled(self, source: Source) -> bool:
        """Whether the run may ask this source (not skipped, and configured)."""
        if source in self.skip:
            return False
        if source is Source.GREYNOISE:
            return bool(self.greynoise_api_key)
        return True

    def secrets(self) -> tuple[str, ...]:
        """Values that must never appear in any output."""
        return (self.greynoise_api_key,) if self.greynoise_api_key else ()


def from_environment(env: Mapping[str, str] | None = None) -> dict[str, object]:
    """Settings taken from the environment (lower precedence than options)."""
    env = os.environ if env is None else env
    settings: dict[str, object] = {}
    if env.get("ETL_DB_URL"):
        settings["db_url"] = env["ETL_DB_URL"]
    if env.get("MAXMIND_DIR"):
        settings["maxmind_dir"] = Path(env["MAXMIND_DIR"])
    if env.get("GREYNOISE_API_KEY"):
        settings["greynoise_api_key"] = env["GREYNOISE_API_KEY"]
    return settings
