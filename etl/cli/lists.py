"""``honeypot-etl lists`` (each list's age, entries and origin) and ``honeypot-etl lists
update`` (fetch them): the infrastructure lists of SPEC 3.4. Their settings are declared once
in `etl.refresh.config.RefreshConfig`; the work is `etl.sources.classification.fetch` and
`etl.sources.classification.lists`."""

from __future__ import annotations

import inspect
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer

from etl.cli import options as cli
from etl.cli.refresh import SETTINGS, ConfigOption
from etl.refresh.config import LISTS_SETTINGS, RefreshConfig, config_file_path, load_config

HELP = """\
The infrastructure lists the labels come from (Tor exits, cloud provider ranges, AWS and Google
Cloud ranges with region and service, the community datacenter list), kept in --lists-dir:
each list's entries, its age and where it came from. `lists update` fetches them."""
UPDATE_HELP = """\
Fetch every list into --lists-dir, each with a conditional request (ETag, Last-Modified),
replaced at once, and only by a download that reads as a list of its kind. A download that
fails keeps the old file, and says so in one line. An empty URL switches a list off.

Exit codes: 0 every list that is not switched off is there (fetched, unchanged, or kept
after a failed download); 1 one is missing afterwards; 2 bad usage."""
EXAMPLES = """\
Examples:

\b
  honeypot-etl lists
  honeypot-etl lists update
  honeypot-etl lists update --lists-dir /var/lib/honeypot-etl/lists

\b
Cron, once a day (the Tor list changes hourly; an hourly line is fine too):
  17 3 * * *  honeypot-etl lists update --config /etc/honeypot-etl/etl.toml"""


@cli.one_line_errors(SETTINGS)
def show_command(
    boundary: cli.Boundary,
    /,
    ctx: typer.Context,
    config_file: Path | None = None,
    version: bool = False,
    **values: Any,
) -> int:
    """Each list's entries, age and origin (see ``--help``)."""
    if ctx.invoked_subcommand is not None:
        return 0
    config = load_config(file=config_file_path(config_file), values_origin="option", **values)
    boundary.hide(config.secrets())
    print(render(config, datetime.now(UTC)))
    return 0


def render(config: RefreshConfig, now: datetime) -> str:
    """The table of `show_command`: each list as a refresh reads it (`lists_source`)."""
    from etl.refresh.sources import lists_source
    from etl.sources.classification.lists import list_files
    from etl.sources.classification.source import age_words

    folder = config.lists_dir
    urls = config.list_urls()
    labels = lists_source(config, now)
    ages, old, entries = labels.ages, set(labels.old), labels.entries
    origins = labels.lists.origins  # read with the lists: no file read twice
    lines = [f"lists in {folder}:", f"{'list':<24} {'entries':>9}  {'age':>9}  from"]
    for item in list_files(urls.providers):
        url = urls.of(item)
        if item.name not in ages:
            state = "off" if not url else "missing"
            lines.append(f"{item.name:<24} {state:>9}  {'':>9}  {url or '(no URL)'}")
            continue
        origin = origins.get(item.name) or "(no record: copied in by hand?)"
        flag = "  OLD" if item.name in old else ""
        age = age_words(ages[item.name])
        lines.append(f"{item.name:<24} {entries[item.name]:>9,}  {age:>9}  {origin}{flag}")
    return "\n".join(lines)


@cli.one_line_errors(SETTINGS)
def update_command(
    boundary: cli.Boundary, /, config_file: Path | None = None, **values: Any
) -> int:
    """Fetch every list into the lists folder (see ``--help``)."""
    config = load_config(file=config_file_path(config_file), values_origin="option", **values)
    boundary.hide(config.secrets())
    import requests

    from etl.sources.classification.fetch import update_lists

    with requests.Session() as session:
        fetched = update_lists(config.lists_dir, config.list_urls(), session)
    for item in fetched:
        print(item.line())
    missing = [item.name for item in fetched if item.missing]
    if missing:
        return cli.fail(
            f"{len(missing)} list(s) missing in {config.lists_dir}: {', '.join(missing)}", 1
        )
    return 0


def _options(names: tuple[str, ...]) -> list[inspect.Parameter]:
    keyword = inspect.Parameter.KEYWORD_ONLY
    return [
        *cli.options_of(RefreshConfig, names),
        inspect.Parameter("config_file", keyword, default=None, annotation=ConfigOption),
    ]


def app() -> typer.Typer:
    """``honeypot-etl lists`` and its ``update``."""
    group = cli.new_app(HELP, EXAMPLES)
    keyword = inspect.Parameter.KEYWORD_ONLY
    show = [
        inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context),
        *_options(LISTS_SETTINGS),
        inspect.Parameter("version", keyword, default=False, annotation=cli.VersionOption),
    ]
    group.callback(invoke_without_command=True, help=HELP, epilog=EXAMPLES)(
        cli.with_signature(show_command, show)
    )
    group.command("update", help=UPDATE_HELP, epilog=EXAMPLES)(
        cli.with_signature(update_command, _options(LISTS_SETTINGS))
    )
    return group
