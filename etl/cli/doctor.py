"""``honeypot-etl doctor``: check what a cron run needs, without a refresh. The settings are
declared once in `etl.refresh.config.RefreshConfig`, as for a refresh; the checks are
`etl.refresh.doctor`."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from etl.cli import options as cli
from etl.cli.refresh import SETTINGS, ConfigOption
from etl.db.url import redact
from etl.refresh.config import RefreshConfig, load_config, locate_config

HELP = """\
Check everything a cron run needs, without a refresh: the settings (options, environment,
etl.toml, read as a refresh reads them), the database (cowrieprocessor's, writable by this
user, its run lock), the MaxMind files (there, whole, their age), Team Cymru (one bulk session
of one address) and GreyNoise (its ping endpoint, with the key). One line per check: ok, or
what to fix. Nothing is written and no Search is spent.

The first failure ends the checks (the others are shown as skipped). A skipped source and a
missing GreyNoise key are no failure (a refresh skips GreyNoise without one); an old MaxMind
build, a key about to expire and a run lock held by a running refresh are warnings.

Exit codes: 0 every check ok or a warning; 1 a check failed; 2 bad usage (a setting that
cannot be read, a value out of range)."""
EXAMPLES = """\
Examples:

\b
  honeypot-etl doctor
  GREYNOISE_API_KEY=... honeypot-etl doctor --config /etc/honeypot-etl/etl.toml
  honeypot-etl doctor --db postgresql://etl@db:5432/cowrie --skip greynoise"""
# The settings the checks read, declared with the refresh's (the key: env or etl.toml).
OPTIONS = (
    "db_url",
    "maxmind_dir",
    "maxmind_asn",
    "maxmind_city",
    "lists_dir",
    "lists_cloud_providers",
    "skip",
    "cymru",
    "greynoise_url",
)


@cli.one_line_errors(SETTINGS)
def doctor_command(
    boundary: cli.Boundary, /, config_file: Path | None = None, version: bool = False, **values: Any
) -> int:
    """Check everything a cron run needs, without a refresh (see ``--help``)."""
    path, found = locate_config(config_file)
    config = load_config(file=path, values_origin="option", **values)
    secrets = boundary.hide(config.secrets())
    from etl.refresh.doctor import doctor  # DuckDB, the clients: only when it runs

    failed = warned = 0
    for check in doctor(config, path, found, lambda name: cli.flag_of(SETTINGS, name)):
        print(redact(check.line, secrets), flush=True)
        failed += check.verdict == "fail"
        warned += check.verdict == "warn"
    if failed:
        print("doctor: a check failed: a cron run would not do all its work; fix it, run again")
        return 1
    print(f"doctor: every check ok{f' ({warned} warning(s))' if warned else ''}")
    return 0


def command() -> Any:
    """`doctor_command` with its Typer options: the settings the checks read, ``--config``."""
    keyword = inspect.Parameter.KEYWORD_ONLY
    extra = [
        inspect.Parameter("config_file", keyword, default=None, annotation=ConfigOption),
        inspect.Parameter("version", keyword, default=False, annotation=cli.VersionOption),
    ]
    return cli.with_signature(doctor_command, [*cli.options_of(RefreshConfig, OPTIONS), *extra])
