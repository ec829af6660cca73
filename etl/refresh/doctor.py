"""``honeypot-etl doctor``: is everything a cron run needs in place? Checked without a refresh:
nothing is written, no IP's block is asked for, no Search is spent.

One `Check` per line, in this order (the cheap, local ones first):

    config     which etl.toml was read; a warning when it holds the key and others can read it
    database   a cowrieprocessor database (`etl.db.recognise`) this user may write
               (`Database.check_writable`: the file and its folder, or PostgreSQL privileges)
    run lock   free, or held by a refresh running now (a warning: that run is no fault)
    maxmind    both files there and whole (`etl.sources.maxmind.steps.open_maxmind`), a
               warning when a build is older than GeoLite2's 30-day licence window (the
               refresh's own note)
    lists      the infrastructure lists of the labels (`etl.sources.classification`): a
               warning for none at all, a missing one, or one past its age (Tor 2 days, the
               others 30), as the refresh's own notes say
    cymru      one bulk session of one address (`PROBE_ADDRESS`) through the run's own client,
               with its timeouts: answered, or why not ("connection refused", ...)
    greynoise  ``GET /ping`` with the key (`etl.sources.greynoise.ping`); without a key it is
               skipped, as the refresh skips GreyNoise

The first failure ends the checks: those after it are shown as skipped. A skipped source
(``--skip``) and a missing key are no failure; nor is a warning.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Final

from etl.core.errors import EtlError, ServiceError, SettingError, TransportError, UnauthorizedError
from etl.core.settings import declared, secret_file_warning
from etl.core.vocabulary import Source
from etl.db.database import Database
from etl.db.lock import lock_holder
from etl.refresh.config import RefreshConfig
from etl.refresh.sources import lists_source
from etl.sources.classification.source import age_words
from etl.sources.cymru.client import CymruClient, IpAnswer
from etl.sources.greynoise.ping import Pong, ping
from etl.sources.maxmind.steps import ASN_FILES, CITY_FILES, LICENCE_WINDOW, open_maxmind

PROBE_ADDRESS: Final = "8.8.8.8"  # what the Team Cymru check asks (Google's resolver, AS15169)
DATABASE_WAIT: Final = 30.0  # s: how long reading the database may wait for a writer's lock
KEY_EXPIRY_WARNING: Final = 14  # days: a key that expires sooner is a warning
LABELS: Final = {"ok": "ok", "warn": "warn", "fail": "FAIL", "skip": "skip"}
KEY_SOURCES: Final = "GREYNOISE_API_KEY or greynoise_api_key in etl.toml"
_KINDS: Final = {"asn": ("ASN", ASN_FILES), "city": ("City", CITY_FILES)}


@dataclass(frozen=True)
class Check:
    """One check's outcome: ``verdict`` ok, warn, fail or skip, and what was found or what to
    fix (``detail``)."""

    name: str
    verdict: str
    detail: str

    @property
    def line(self) -> str:
        """``ok    database   sqlite:///...: ...``: the check's one line."""
        return f"{LABELS[self.verdict]:<5} {self.name:<10} {self.detail}"


def doctor(
    config: RefreshConfig,
    config_file: Path | None,
    found: bool,
    flag: Callable[[str], str] = str,
) -> Iterator[Check]:
    """Every check, in order, as each ends; after the first failure the rest are ``skip``.
    ``config_file``: the etl.toml read (``found``: by looking, not named); ``flag``: how a
    setting is named to the user (the CLI: its option)."""
    checks: list[tuple[str, Callable[[], Check]]] = [
        ("config", lambda: config_check(config_file, found)),
        ("database", lambda: database_check(config)),
        ("run lock", lambda: lock_check(config)),
        ("maxmind", lambda: maxmind_check(config)),
        ("lists", lambda: lists_check(config)),
        ("cymru", lambda: cymru_check(config)),
        ("greynoise", lambda: greynoise_check(config)),
    ]
    failed = False
    for name, check in checks:
        if failed:
            yield Check(name, "skip", "not checked: fix the failure above first")
            continue
        try:
            result = check()
        except SettingError as exc:  # a value that only fails against the disk: --db's folder
            result = Check(name, "fail", exc.named(flag))
        except EtlError as exc:  # what a check did not foresee is still one line
            result = Check(name, "fail", str(exc))
        failed = result.verdict == "fail"
        yield result


def config_check(path: Path | None, found: bool) -> Check:
    """Which etl.toml the settings came from; a warning for a key file others can read."""
    if path is None:
        return Check("config", "ok", "no etl.toml found: defaults, the environment, the options")
    warning = secret_file_warning(declared(RefreshConfig), path)
    if warning:
        return Check("config", "warn", warning.removeprefix("warning: "))
    return Check("config", "ok", f"{path} ({'found' if found else 'named'})")


def database_check(config: RefreshConfig) -> Check:
    """A cowrieprocessor database, readable, and writable by this user (nothing is written)."""
    url = config.database.check_folder()
    if url.sqlite_path is not None and not url.sqlite_path.is_file():
        return Check(
            "database",
            "fail",
            f"{url}: no such file; check --db (a refresh creates a new one only with --create)",
        )
    with Database(url, read_only=True, lock_timeout=DATABASE_WAIT) as db:
        db.check_writable()
    return Check("database", "ok", f"{url}: cowrieprocessor's tables, writable by this user")


def lock_check(config: RefreshConfig) -> Check:
    """Whether a refresh holds the run lock now (read-only: taken and let go at once)."""
    holder = lock_holder(config.database)
    if holder is None:
        return Check("run lock", "ok", "free: no refresh is running")
    return Check(
        "run lock",
        "warn",
        f"held by a refresh running now ({holder}): a run started meanwhile stops at once, "
        "asking nothing",
    )


def maxmind_check(config: RefreshConfig) -> Check:
    """Both MaxMind files there and whole; a warning for a build past the licence window."""
    if not config.enabled(Source.MAXMIND):
        return Check("maxmind", "skip", "skipped (--skip maxmind): a refresh does not ask it")
    now = config.clock()
    databases = open_maxmind(
        asn=config.maxmind_asn,
        city=config.maxmind_city,
        directory=config.maxmind_dir,
        now=now,
    )
    try:
        if databases.missing:
            missing = [_KINDS[kind] for kind in databases.missing]
            looked = ", ".join(name for _, files in missing for name in files)
            return Check(
                "maxmind",
                "fail",
                f"no {' nor '.join(kind for kind, _ in missing)} database in "
                f"{config.maxmind_dir} (looked for {looked}): a refresh would write incomplete "
                "MaxMind blocks (status error); let geoipupdate fetch it there, or name it "
                "(--maxmind-asn, --maxmind-city)",
            )
        opened = [("ASN", databases.asn), ("City", databases.city)]
        parts, old = [], []
        for kind, database in opened:
            assert database is not None
            built = datetime.fromtimestamp(database.build_epoch, UTC)
            parts.append(
                f"{kind} {database.path} built {built:%Y-%m-%d} ({(now - built).days} days ago)"
            )
            if now - built > LICENCE_WINDOW:
                old.append(kind)
    finally:
        databases.close()
    if old:
        return Check(
            "maxmind",
            "warn",
            f"{'; '.join(parts)}: {' and '.join(old)} older than GeoLite2's "
            f"{LICENCE_WINDOW.days} days; update (geoipupdate)",
        )
    return Check("maxmind", "ok", "; ".join(parts))


def lists_check(config: RefreshConfig) -> Check:
    """The lists in the lists folder: a warning when there are none (no labels), when one is
    missing (the labels it gives are not assigned) or past its age (the labels are the
    operator's choice); a failure only for a folder a refresh refuses (a file: exit 2)."""
    if not config.enabled(Source.CLASSIFICATION):
        return Check("lists", "skip", "skipped (--skip classification): a refresh writes no labels")
    folder = config.lists_dir
    if folder.exists() and not folder.is_dir():
        return Check("lists", "fail", f"{folder} is a file, not a folder; check --lists-dir")
    labels = lists_source(config)
    if not labels.available:
        return Check(
            "lists", "warn",
            f"no lists in {folder}: a refresh writes no labels; fetch them with "
            "`honeypot-etl lists update` (a daily cron line), or --skip classification",
        )  # fmt: skip
    ages = labels.ages
    oldest = max(ages, key=lambda name: ages[name])
    found = f"{len(ages)} lists in {folder}, the oldest {oldest} ({age_words(ages[oldest])})"
    problems = []
    if labels.missing:
        problems.append(f"missing: {', '.join(labels.missing)} (their labels are not assigned)")
    if labels.old:
        problems.append(
            f"old: {', '.join(f'{name} ({age_words(ages[name])})' for name in labels.old)}"
        )
    if problems:
        return Check(
            "lists", "warn", f"{found}; {'; '.join(problems)}: run `honeypot-etl lists update`"
        )
    return Check("lists", "ok", found)


def cymru_check(config: RefreshConfig) -> Check:
    """One bulk session of `PROBE_ADDRESS`, through the run's client and its timeouts; a
    failed session is not asked again."""
    if not config.enabled(Source.CYMRU):
        return Check("cymru", "skip", "skipped (--skip cymru): a refresh does not ask it")
    settings = replace(config.cymru_settings(), sessions=1, retries=0, min_split=1, blocked_after=1)
    client = CymruClient(settings)
    started = time.monotonic()
    batches = list(client.lookup([PROBE_ADDRESS]))
    took = time.monotonic() - started
    where = f"Team Cymru at {settings.host}:{settings.port}"
    answer = next((b.answers[PROBE_ADDRESS] for b in batches if PROBE_ADDRESS in b.answers), None)
    if answer is None:
        reasons = [b.reasons[PROBE_ADDRESS] for b in batches if PROBE_ADDRESS in b.reasons]
        tripped = client.breaker.tripped
        why = reasons[0] if reasons else tripped.words if tripped else "no answer"
        return Check(
            "cymru",
            "fail",
            f"{where}: {why} (one bulk session of {PROBE_ADDRESS}); check --cymru, and that "
            "this host may connect to it",
        )
    said = f"AS{answer.asns[0]}" if isinstance(answer, IpAnswer) and answer.found else "not routed"
    return Check(
        "cymru", "ok", f"{where} answered a bulk session ({PROBE_ADDRESS}: {said}) in {took:.2f} s"
    )


def greynoise_check(config: RefreshConfig) -> Check:
    """``GET /ping`` with the key; skipped without one (a refresh skips GreyNoise then)."""
    if Source.GREYNOISE in config.skip:
        return Check("greynoise", "skip", "skipped (--skip greynoise): a refresh does not ask it")
    key = config.greynoise_api_key
    if not key:
        return Check(
            "greynoise", "skip", f"skipped: no key ({KEY_SOURCES}); a refresh skips GreyNoise too"
        )
    where = f"GreyNoise at {config.greynoise_url}"
    try:
        pong = ping(config.greynoise_settings(), key)
    except UnauthorizedError as exc:
        return Check("greynoise", "fail", f"{exc}; check {KEY_SOURCES}")
    except TransportError as exc:
        return Check("greynoise", "fail", f"{where}: {exc.failure}; check --greynoise-url")
    except ServiceError as exc:
        return Check(
            "greynoise",
            "fail",
            f"{exc}: check --greynoise-url (the server's address, without /v3)",
        )
    return pong_check(where, pong, config.clock().date())


def pong_check(where: str, pong: Pong, today: date) -> Check:
    """The key's plan and expiry: a failure once expired, a warning within
    `KEY_EXPIRY_WARNING` days."""
    plan = f"{pong.offering} plan" if pong.offering else "plan not said"
    try:
        expires = date.fromisoformat(pong.expiration) if pong.expiration else None
    except ValueError:
        expires = None
    if expires is None:
        return Check("greynoise", "ok", f"{where} accepted the key ({plan})")
    days = (expires - today).days
    if days < 0:
        return Check(
            "greynoise", "fail", f"{where}: the key expired on {expires} ({plan}); renew it"
        )
    detail = f"{where} accepted the key ({plan}, expires {expires}, in {days} days)"
    if days < KEY_EXPIRY_WARNING:
        return Check("greynoise", "warn", f"{detail}: renew it soon")
    return Check("greynoise", "ok", detail)
