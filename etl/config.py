"""One typed configuration object for a refresh run.

The CLI, `make refresh` and the notebook all build a `RefreshConfig` and hand it to
`etl.pipeline.refresh`; nothing else in the package reads options or the environment.
"""

from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from etl.clients.cymru import CymruSettings
from etl.clients.greynoise import GreyNoiseSettings
from etl.errors import UsageError
from etl.freshness import Freshness  # re-exported: `from etl.config import Freshness`

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
    lock_timeout: float = 300.0  # how long a write waits for another writer or the server (s)
    create: bool = False  # a SQLite file that does not exist is created (else a usage error)
    pending_dir: Path | None = None  # PostgreSQL: where unwritten answers are kept (etl.db.pending)
    dry_run: bool = False
    summary_json: Path | None = None
    status_file: Path | None = None
    metrics_file: Path | None = None
    verbosity: int = 0
    cymru: str = DEFAULT_CYMRU
    batch_size: int = DEFAULT_BATCH_SIZE
    cymru_sessions: int = 2
    cymru_timeout: float = 30.0
    retry_backoff: float = 1.0  # first wait before retrying a failed chunk or request (s)
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
        if not 0 <= self.lock_timeout < float("inf"):
            raise UsageError(
                f"--lock-timeout must be a number of seconds >= 0, got {self.lock_timeout}"
            )
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
            backoff=self.retry_backoff,
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
            backoff=self.retry_backoff,
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
        """Values that must never appear in any output: the API key, the database password."""
        found = [self.greynoise_api_key, _password(self.db_url)]
        return tuple(value for value in found if value)


def _password(db_url: str) -> str | None:
    from etl.db.url import parse_database_url

    try:
        return parse_database_url(db_url).password
    except UsageError:
        return None


# The settings of etl.toml: the command-line options, named with underscores, plus the key.
SETTINGS: dict[str, tuple[type, ...]] = {
    "db": (str,),
    "ips": (int,),
    "ip": (list,),
    "maxmind_dir": (str,),
    "maxmind_asn": (str,),
    "maxmind_city": (str,),
    "cymru": (str,),
    "batch_size": (int,),
    "greynoise_url": (str,),
    "greynoise_mode": (str,),
    "greynoise_rate": (int, float),
    "greynoise_budget": (int,),
    "greynoise_api_key": (str,),
    "skip": (list,),
    "commit_every": (int,),
    "lock_timeout": (int, float),
    "create": (bool,),
    "pending_dir": (str,),
    "dry_run": (bool,),
    "status_file": (str,),
    "summary_json": (str,),
    "metrics_file": (str,),
    "quiet": (bool,),
    "verbose": (bool,),
}


@dataclass(frozen=True)
class ConfigFile:
    """Settings read from an etl.toml, and warnings about the file itself."""

    settings: dict[str, object]
    warnings: tuple[str, ...] = ()


def read_config_file(path: Path) -> ConfigFile:
    """Read and check an etl.toml (a flat table of `SETTINGS`)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read config file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config file {path} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - set(SETTINGS))
    if unknown:
        raise UsageError(
            f"config file {path}: unknown setting(s) {', '.join(unknown)}; "
            f"known: {', '.join(SETTINGS)}"
        )
    for name, value in data.items():
        allowed = SETTINGS[name]
        if (isinstance(value, bool) and bool not in allowed) or not isinstance(value, allowed):
            kinds = " or ".join(t.__name__ for t in allowed)
            raise UsageError(f"config file {path}: {name} must be {kinds}, got {value!r}")
    warnings = []
    if "greynoise_api_key" in data and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        warnings.append(
            f"warning: {path} holds the GreyNoise API key and other users can read it; "
            f"run: chmod 600 {path}"
        )
    return ConfigFile(dict(data), tuple(warnings))


def from_environment(env: Mapping[str, str] | None = None) -> dict[str, object]:
    """Settings taken from the environment (between the config file and the options)."""
    env = os.environ if env is None else env
    names = {
        "ETL_DB_URL": "db",
        "MAXMIND_DIR": "maxmind_dir",
        "GREYNOISE_API_KEY": "greynoise_api_key",
        "ETL_PENDING_DIR": "pending_dir",
    }
    return {setting: env[variable] for variable, setting in names.items() if env.get(variable)}


def config_path(option: Path | None, env: Mapping[str, str] | None = None) -> Path | None:
    """The etl.toml to read: ``--config``, else ``ETL_CONFIG``, else none."""
    env = os.environ if env is None else env
    if option is not None:
        return option
    return Path(env["ETL_CONFIG"]) if env.get("ETL_CONFIG") else None


def build_config(settings: Mapping[str, object]) -> RefreshConfig:
    """A `RefreshConfig` from merged settings (names as in `SETTINGS`)."""

    def path(name: str) -> Path | None:
        value = settings.get(name)
        return Path(str(value)) if value is not None else None

    skip = []
    for name in settings.get("skip") or []:  # type: ignore[attr-defined]
        try:
            skip.append(Source(str(name)))
        except ValueError:
            raise UsageError(
                f"--skip must be one of maxmind, cymru, greynoise, got {name!r}"
            ) from None
    ips = settings.get("ips")
    budget = settings.get("greynoise_budget")
    quiet, verbose = bool(settings.get("quiet")), bool(settings.get("verbose"))
    if quiet and verbose:
        raise UsageError("--quiet and --verbose cannot be used together")
    return RefreshConfig(
        db_url=str(settings.get("db") or DEFAULT_DB_URL),
        max_ips=None if ips is None else int(str(ips)),
        only_ips=tuple(str(ip) for ip in settings.get("ip") or []),  # type: ignore[attr-defined]
        maxmind_dir=path("maxmind_dir") or DEFAULT_MAXMIND_DIR,
        maxmind_asn=path("maxmind_asn"),
        maxmind_city=path("maxmind_city"),
        skip=frozenset(skip),
        commit_every=int(str(settings.get("commit_every", 5000))),
        lock_timeout=float(str(settings.get("lock_timeout", 300.0))),
        create=bool(settings.get("create")),
        pending_dir=path("pending_dir"),
        dry_run=bool(settings.get("dry_run")),
        summary_json=path("summary_json"),
        status_file=path("status_file"),
        metrics_file=path("metrics_file"),
        verbosity=-1 if quiet else (1 if verbose else 0),
        cymru=str(settings.get("cymru") or DEFAULT_CYMRU),
        batch_size=int(str(settings.get("batch_size", DEFAULT_BATCH_SIZE))),
        greynoise_url=str(settings.get("greynoise_url") or DEFAULT_GREYNOISE_URL),
        greynoise_mode=str(settings.get("greynoise_mode") or "community"),
        greynoise_rate=float(str(settings.get("greynoise_rate", 10.0))),
        greynoise_budget=None if budget is None else int(str(budget)),
        greynoise_api_key=str(settings["greynoise_api_key"])
        if settings.get("greynoise_api_key")
        else None,
    )
