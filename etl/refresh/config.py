"""One typed configuration object for a refresh run, each setting declared once.

The CLI, `make refresh` and the notebook all build a `RefreshConfig` (`load_config` merges an
etl.toml, the environment and explicit values) and hand it to
`etl.refresh.pipeline.refresh`; nothing else in the package reads options or the environment.
"""

from __future__ import annotations

import os
import pwd
import re
from collections.abc import Collection, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from etl.core import settings
from etl.core.addresses import is_ip_address
from etl.core.clock import Clock, utc_now
from etl.core.errors import SettingError
from etl.core.freshness import Freshness  # re-exported: `from etl.refresh.config import Freshness`
from etl.core.limits import Range
from etl.core.settings import setting
from etl.core.vocabulary import Source
from etl.db.recognise import DEFAULT_LOCK_TIMEOUT
from etl.db.url import DatabaseUrl, parse_database_url
from etl.report.summary import HEARTBEAT_SECONDS
from etl.sources.classification.fetch import ListUrls
from etl.sources.cymru.client import CymruSettings
from etl.sources.failures import RETRY_BACKOFF
from etl.sources.greynoise.client import GreyNoiseSettings
from etl.sources.greynoise.settings import BUDGET, RATE

# The clients' settings made with no argument: the defaults of the settings that reach a client
# are declared there, once, and read here (a test checks that nothing else declares them).
CYMRU_DEFAULTS = CymruSettings()
GREYNOISE_DEFAULTS = GreyNoiseSettings()

DEFAULT_DB_URL = "sqlite:///data/honeypot.sqlite"
DEFAULT_MAXMIND_DIR = Path("data/maxmind")
DEFAULT_LISTS_DIR = Path("data/lists")
PROVIDER_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
LIST_URLS = ListUrls()  # where each list comes from by default: declared with the fetcher
# The settings only `honeypot-etl lists update` reads (a refresh does not take them as options).
LIST_URL_SETTINGS = (
    "lists_tor_url",
    "lists_cloud_url",
    "lists_aws_url",
    "lists_gcp_url",
    "lists_datacenters_url",
)
# The settings of `honeypot-etl lists` (the folder and the providers' order a refresh reads too).
LISTS_SETTINGS = ("lists_dir", "lists_cloud_providers", *LIST_URL_SETTINGS)
# IPs per Team Cymru session: Team Cymru says about 10,000 IPs come back in under a minute (our
# read timeout is 30 s per line, a failed session is asked again whole); fewer than 10 per
# session is close to the single-IP querying they null-route for.
BATCH_SIZES = (10, 10_000)


# The ranges of the numeric settings (their help states them).
RANGES = {
    "max_ips": Range(1, 1_000_000_000, "IPs"),
    "commit_every": Range(1, 1_000_000, "rows"),
    "lock_timeout": Range(0, 86_400, "seconds (a day)"),
    "progress_every": Range(0, 86_400, "seconds", above=True),
    "batch_size": Range(*BATCH_SIZES, "IPs per Team Cymru session"),
    "greynoise_rate": RATE,  # declared with the client's settings, which check them too
    "greynoise_budget": BUDGET,
    "greynoise_daily_budget": Range(0, 1_000_000_000, "Searches per UTC day"),
}
CONFIG_ENV = "ETL_CONFIG"  # the etl.toml to read when none is named
CONFIG_NAME = "etl.toml"
# Where an etl.toml is looked for when none is named (`config_candidates`): the working folder,
# the user's (~/.config, or $XDG_CONFIG_HOME), then the system's.
CONFIG_FOLDER = "honeypot-etl"
SYSTEM_CONFIG_DIR = Path("/etc") / CONFIG_FOLDER


@dataclass(frozen=True)
class RefreshConfig:
    """Every setting of a refresh run; built once, read everywhere, never mutated.

    Each user-facing setting is declared here once (`etl.core.settings.setting`): the Typer CLI,
    etl.toml, the environment and the notebook all come from these declarations. Build one
    from keywords (``RefreshConfig(max_ips=100)``) or with `load_config` (file, env, values).
    """

    db_url: str = setting(
        DEFAULT_DB_URL,
        "sqlite:///path.db or postgresql://user:pass@host:port/db",
        flag="--db", env="ETL_DB_URL", key="db", metavar="URL",
    )  # fmt: skip
    max_ips: int | None = setting(
        None,
        "refresh at most N IPs (never-enriched first, then most recently seen), "
        + RANGES["max_ips"].text(),
        flag="--ips", key="ips", metavar="N",
    )  # fmt: skip
    only_ips: tuple[str, ...] = setting(
        (), "refresh this address now, stale or not (repeatable)",
        flag="--ip", key="ip", metavar="ADDRESS",
    )  # fmt: skip
    maxmind_dir: Path = setting(
        DEFAULT_MAXMIND_DIR, "folder with GeoLite2-ASN.mmdb and GeoLite2-City.mmdb",
        flag="--maxmind-dir", env="MAXMIND_DIR", metavar="DIR",
    )  # fmt: skip
    maxmind_asn: Path | None = setting(
        None, "GeoLite2-ASN .mmdb file", flag="--maxmind-asn", metavar="FILE"
    )
    maxmind_city: Path | None = setting(
        None, "GeoLite2-City or GeoIP2-City .mmdb file", flag="--maxmind-city", metavar="FILE"
    )
    skip: frozenset[Source] = setting(
        frozenset(),
        "do not ask this source (repeatable); its blocks stay as they are",
        flag="--skip", metavar="SOURCE",
    )  # fmt: skip
    commit_every: int = setting(
        5000, "rows per committed chunk, " + RANGES["commit_every"].text(),
        flag="--commit-every", metavar="N",
    )  # fmt: skip
    lock_timeout: float = setting(
        DEFAULT_LOCK_TIMEOUT,
        "how long a run waits, in all, for another writer's lock on the database or for a "
        "lost PostgreSQL server to come back, " + RANGES["lock_timeout"].text(),
        flag="--lock-timeout", metavar="SECONDS",
    )  # fmt: skip
    create: bool = setting(
        False,
        "create the SQLite file when it does not exist, or initialise an empty file or "
        "PostgreSQL database (else that is an error)",
        flag="--create",
    )  # fmt: skip
    pending_dir: Path | None = setting(
        None,
        "PostgreSQL: where answers a stopped run could not commit are kept "
        "[default ~/.local/state/honeypot-etl/pending]",
        env="ETL_PENDING_DIR", metavar="DIR",
    )  # fmt: skip
    dry_run: bool = setting(
        False, "select and report; contact no service, write nothing", flag="--dry-run"
    )
    summary_json: Path | None = setting(
        None, "write the run summary as JSON here", flag="--summary-json", metavar="FILE"
    )
    status_file: Path | None = setting(
        None, "JSON progress file for monitors, rewritten atomically every 0.5 s",
        flag="--status-file", metavar="FILE",
    )  # fmt: skip
    metrics_file: Path | None = setting(
        None, "Prometheus textfile (node_exporter textfile collector), at the end",
        flag="--metrics-file", metavar="FILE",
    )  # fmt: skip
    quiet: bool = setting(False, "only notes and errors", flag="--quiet", short="-q")
    verbose: bool = setting(
        False, "a progress line per running phase every 5 s (no progress bars)",
        flag="--verbose", short="-v",
    )  # fmt: skip
    progress_every: float = setting(
        HEARTBEAT_SECONDS,
        "when the output is no terminal, a progress line per running phase this often, "
        + RANGES["progress_every"].bounds(),
        flag="--progress-every", metavar="SECONDS",
    )  # fmt: skip
    cymru: str = setting(
        CYMRU_DEFAULTS.address, "Team Cymru bulk whois", flag="--cymru", metavar="HOST:PORT"
    )
    batch_size: int = setting(
        CYMRU_DEFAULTS.batch_size, "IPs per Team Cymru session, " + RANGES["batch_size"].bounds(),
        flag="--batch-size", metavar="N",
    )  # fmt: skip
    greynoise_url: str = setting(
        GREYNOISE_DEFAULTS.url, "GreyNoise API base URL", flag="--greynoise-url", metavar="URL"
    )
    greynoise_mode: str = setting(
        GREYNOISE_DEFAULTS.mode,
        "community (GET per IPv4) or enterprise (a quick check of up to 10,000 IPs per "
        "request, then full context only for the IPs found)",
        flag="--greynoise-mode", metavar="MODE",
    )  # fmt: skip
    greynoise_rate: float = setting(
        GREYNOISE_DEFAULTS.rate,
        "GreyNoise requests per second, " + RANGES["greynoise_rate"].bounds(),
        flag="--greynoise-rate", metavar="R",
    )  # fmt: skip
    greynoise_budget: int | None = setting(
        GREYNOISE_DEFAULTS.budget,
        "at most N GreyNoise requests in this run, " + RANGES["greynoise_budget"].bounds(),
        flag="--greynoise-budget", metavar="N",
    )  # fmt: skip
    greynoise_daily_budget: int | None = setting(
        None,
        "at most N GreyNoise Searches per UTC day on this database, across runs (counted in "
        "its run log), " + RANGES["greynoise_daily_budget"].bounds(),
        flag="--greynoise-daily-budget", env="GREYNOISE_DAILY_BUDGET", metavar="N",
    )  # fmt: skip
    greynoise_api_key: str | None = setting(
        None, "GreyNoise API key (never an option: it would show in the process list)",
        env="GREYNOISE_API_KEY", secret=True,
    )  # fmt: skip
    # The infrastructure lists (SPEC 3.4): `honeypot-etl lists update` fetches them.
    lists_dir: Path = setting(
        DEFAULT_LISTS_DIR, "folder of the infrastructure lists (Tor, cloud, datacenters)",
        flag="--lists-dir", env="ETL_LISTS_DIR", metavar="DIR",
    )  # fmt: skip
    lists_tor_url: str = setting(
        LIST_URLS.tor, "the Tor bulk exit list ('' switches it off)",
        flag="--tor-url", metavar="URL",
    )  # fmt: skip
    lists_cloud_url: str = setting(
        LIST_URLS.cloud,
        "base URL of the per-provider cloud ranges, <provider>/<provider>_ips_v4.txt and "
        "_v6.txt ('' switches them off)",
        flag="--cloud-url", metavar="URL",
    )  # fmt: skip
    lists_cloud_providers: tuple[str, ...] = setting(
        LIST_URLS.providers,
        "a cloud provider whose ranges are read and fetched (repeatable; replaces the "
        "default list: name every provider wanted; the first that covers an address names "
        "its type)",
        flag="--cloud-provider", metavar="NAME",
    )  # fmt: skip
    lists_aws_url: str = setting(
        LIST_URLS.aws, "AWS ip-ranges.json, for region and service ('' switches it off)",
        flag="--aws-url", metavar="URL",
    )  # fmt: skip
    lists_gcp_url: str = setting(
        LIST_URLS.gcp, "Google Cloud cloud.json, for region and service ('' switches it off)",
        flag="--gcp-url", metavar="URL",
    )  # fmt: skip
    lists_datacenters_url: str = setting(
        LIST_URLS.datacenters, "the community datacenter CSV ('' switches it off)",
        flag="--datacenters-url", metavar="URL",
    )  # fmt: skip
    # Library-only settings (tests and benchmarks tune them).
    cymru_sessions: int = CYMRU_DEFAULTS.sessions
    cymru_timeout: float = CYMRU_DEFAULTS.read_timeout
    greynoise_timeout: float = GREYNOISE_DEFAULTS.timeout  # one request's (s)
    retry_backoff: float = RETRY_BACKOFF  # first wait before retrying a failed chunk or request (s)
    freshness: Freshness = field(default_factory=Freshness)
    # What time it is (aware, UTC), for the whole run: which blocks are stale, each block's
    # cached_at and each row's update time, the run log's start and end, the UTC day of the
    # daily budget and of each Search spent. Tests move it (a run that straddles midnight, a
    # week of runs).
    clock: Clock = field(default=utc_now, compare=False)

    def __post_init__(self) -> None:
        settings.converted(self)
        for name, allowed in RANGES.items():
            allowed.check(name, getattr(self, name))
        if self.quiet and self.verbose:
            raise SettingError("quiet", "cannot be used together with", also="verbose")
        for address in self.only_ips:
            if not is_ip_address(address):
                shown = repr(address[:60])
                raise SettingError("only_ips", f"{shown} is not an IP address (exactly as given)")
        if self.greynoise_api_key is not None:
            object.__setattr__(self, "greynoise_api_key", _api_key(self.greynoise_api_key))
        _ = self.database  # parsed once, here (refused when malformed); its folder: at the run
        for name in ("maxmind_asn", "maxmind_city"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise SettingError(name, f"{path}: file not found")
        for provider in self.lists_cloud_providers:  # it names a file and part of a URL
            if not PROVIDER_NAME.fullmatch(provider):
                raise SettingError(
                    "lists_cloud_providers",
                    f"{provider[:60]!r} is no provider name (lowercase letters, digits, - and _)",
                )
        for name in LIST_URL_SETTINGS:  # '' switches a list off
            url = getattr(self, name)
            if url and not url.lower().startswith(("http://", "https://")):
                raise SettingError(name, f"{url[:80]!r} is no http:// or https:// URL")
        CymruSettings.parse_address(self.cymru)  # the clients' settings check their own
        self.greynoise_settings()

    @property
    def verbosity(self) -> int:
        """-1 quiet, 0 normal, 1 verbose."""
        return -1 if self.quiet else (1 if self.verbose else 0)

    @cached_property
    def database(self) -> DatabaseUrl:
        """The database URL, parsed once (`etl.db.url`); its folder is not checked here:
        `DatabaseUrl.check_folder` when the run opens it."""
        return parse_database_url(self.db_url, check_folder=False)

    def greynoise_settings(self, search_budget: int | None = None) -> GreyNoiseSettings:
        """How to reach GreyNoise in this run (checks the values); ``search_budget``: the
        Searches it may spend (what the daily budget leaves today, `etl.refresh.runlog`)."""
        return GreyNoiseSettings(
            url=self.greynoise_url,
            mode=self.greynoise_mode,
            rate=self.greynoise_rate,
            budget=self.greynoise_budget,
            search_budget=search_budget,
            backoff=self.retry_backoff,
            timeout=self.greynoise_timeout,
        )

    def list_urls(self) -> ListUrls:
        """Where `honeypot-etl lists update` fetches each list."""
        return ListUrls(
            tor=self.lists_tor_url,
            cloud=self.lists_cloud_url,
            providers=self.lists_cloud_providers,
            aws=self.lists_aws_url,
            gcp=self.lists_gcp_url,
            datacenters=self.lists_datacenters_url,
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
            min_split=max(1, min(CYMRU_DEFAULTS.min_split, self.batch_size // 4)),
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
        key = (self.greynoise_api_key,) if self.greynoise_api_key else ()
        return key + self.database.secrets()


def _api_key(key: str) -> str | None:
    """The GreyNoise key without the whitespace around it (the newline of a key file or of a
    systemd EnvironmentFile, a space pasted with it); None when nothing is left. Whitespace, a
    control character or a non-ASCII character inside it is a `SettingError` (it could only
    fail at every request, as "connection failed"): the message says which and where, never
    the key."""
    trimmed = key.strip()
    for position, char in enumerate(trimmed, start=1):
        if char.isspace():
            what, hint = "whitespace (a space, tab or line break)", "only the ends are trimmed"
        elif not char.isprintable():
            what, hint = "a control character", "GreyNoise keys have none"
        elif not char.isascii():
            what, hint = "a character that is not ASCII", "a typographic quote or dash pasted?"
        else:
            continue
        raise SettingError(
            "greynoise_api_key", f"has {what} at character {position} of the key ({hint})"
        )
    return trimmed or None


def load_config(
    file: Path | None = None,
    env: Mapping[str, str] | None = None,
    values_origin: str = "argument",
    **values: Any,
) -> RefreshConfig:
    """A `RefreshConfig` from an etl.toml, the environment (default `os.environ`) and
    keyword values, in rising precedence (see `etl.core.settings.load`).

    What a user gave there is also checked against the disk (`check_given`): a MaxMind folder
    that does not exist is a typo, not a run without MaxMind."""
    return settings.load(
        RefreshConfig,
        file=file,
        env=env,
        values=values,
        values_origin=values_origin,
        check=check_given,
    )


def check_given(config: RefreshConfig, given: Collection[str]) -> None:
    """Raise `SettingError` when a setting the user gave (``given``: by field name; defaults
    are not checked) names what is not there: a ``lists_dir`` that is a file; a
    ``maxmind_dir`` that is no folder, when the run reads it (MaxMind not skipped, not both
    files named). A run without it would send every IP to Team Cymru instead, many times the
    usual traffic, and exit 0."""
    lists = config.lists_dir  # a folder that does not exist yet: `lists update` makes it
    if "lists_dir" in given and lists.exists() and not lists.is_dir():
        raise SettingError("lists_dir", f"{lists} is a file, not a folder")
    folder = config.maxmind_dir
    reads_folder = config.maxmind_asn is None or config.maxmind_city is None
    if "maxmind_dir" not in given or not reads_folder or not config.enabled(Source.MAXMIND):
        return
    if folder.is_dir():
        return
    problem = " is a file, not a folder" if folder.exists() else ": no such folder"
    raise SettingError(
        "maxmind_dir",
        f"{folder}{problem} (a typo? It should hold GeoLite2-ASN.mmdb and GeoLite2-City.mmdb; "
        "to run without MaxMind: --skip maxmind)",
    )


def config_candidates(
    env: Mapping[str, str] | None = None, cwd: Path | None = None, system: Path | None = None
) -> tuple[Path, ...]:
    """Where an etl.toml is looked for when none is named, first first: ``./etl.toml`` (in
    ``cwd``, default the working folder), ``~/.config/honeypot-etl/etl.toml`` (``$HOME`` of
    ``env``, default `os.environ`; ``$XDG_CONFIG_HOME`` instead of ``~/.config`` when set),
    ``/etc/honeypot-etl/etl.toml`` (``system`` instead of ``/etc/honeypot-etl``)."""
    env = os.environ if env is None else env
    found: list[Path] = []
    with suppress(OSError):  # a working folder that was deleted: no ./etl.toml
        found.append((cwd or Path.cwd()) / CONFIG_NAME)
    user = _user_config_dir(env)
    if user is not None:
        found.append(user / CONFIG_FOLDER / CONFIG_NAME)
    found.append((system or SYSTEM_CONFIG_DIR) / CONFIG_NAME)
    return tuple(found)


def _user_config_dir(env: Mapping[str, str]) -> Path | None:
    """``$XDG_CONFIG_HOME`` (when absolute, as the XDG spec says), else ``$HOME/.config``,
    else the home of the user in the password database; None when there is none."""
    xdg = env.get("XDG_CONFIG_HOME", "")
    if xdg and Path(xdg).is_absolute():
        return Path(xdg)
    if env.get("HOME"):
        return Path(env["HOME"]) / ".config"
    try:
        return Path(pwd.getpwuid(os.getuid()).pw_dir) / ".config"
    except (KeyError, OSError):  # a uid with no entry (a container)
        return None


def locate_config(
    option: Path | None,
    env: Mapping[str, str] | None = None,
    candidates: Sequence[Path] | None = None,
) -> tuple[Path | None, bool]:
    """The etl.toml to read, and whether it was found by looking rather than named: the one
    named (``--config``), else ``ETL_CONFIG``, else the first of ``candidates`` (default
    `config_candidates`) that exists, else none.

    A candidate that cannot even be looked at (a folder others may not enter) is taken: the
    read then fails with one line, where skipping it would run without the operator's
    settings."""
    env = os.environ if env is None else env
    if option is not None:
        return option, False
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV]), False
    for path in config_candidates(env) if candidates is None else candidates:
        try:
            if path.exists():
                return path, True
        except OSError:  # permission denied on its folder
            return path, True
    return None, False


def config_file_path(
    option: Path | None,
    env: Mapping[str, str] | None = None,
    candidates: Sequence[Path] | None = None,
) -> Path | None:
    """The etl.toml to read (`locate_config`), or None."""
    return locate_config(option, env, candidates)[0]


def config_note(path: Path | None, found: bool) -> str | None:
    """The line that says which etl.toml a command read when it found one by looking."""
    return f"config: {path}" if found and path is not None else None
