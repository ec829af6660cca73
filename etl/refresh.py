"""``python -m etl.refresh``: options into a `RefreshConfig`, run it, errors to exit codes."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from etl import config as cfg
from etl.config import RefreshConfig, Source
from etl.db.url import redact
from etl.errors import EtlError, UsageError
from etl.pipeline import refresh
from etl.report import LineReporter

app = typer.Typer(add_completion=False, rich_markup_mode=None)

EXAMPLES = (
    "Examples:\n\n"
    "  python -m etl.refresh --ips 10000\n\n"
    "  python -m etl.refresh --db postgresql://etl@db:5432/cowrie --skip greynoise\n\n"
    "  python -m etl.refresh --ip 198.51.100.9 --dry-run"
)

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="sqlite:///path.db or postgresql://user:pass@host:port/db "
        "[env ETL_DB_URL; default sqlite:///data/honeypot.sqlite]",
    ),
]
PathOption = Annotated[Path | None, typer.Option(dir_okay=False)]

# Options of parts that are not in this version: accepted, then refused with exit code 2.
_NOT_YET = {
    "--status-file": "the status file",
    "--metrics-file": "the metrics file",
    "--config": "configuration files",
}


@app.command(epilog=EXAMPLES)
def main(
    db: DbOption = None,
    ips: Annotated[
        int | None,
        typer.Option(
            "--ips", help="Refresh at most N IPs (never-enriched first, then most recently seen)."
        ),
    ] = None,
    ip: Annotated[
        list[str] | None,
        typer.Option("--ip", help="Refresh this address now, stale or not (repeatable)."),
    ] = None,
    maxmind_dir: Annotated[
        Path | None,
        typer.Option(
            help="Folder with GeoLite2-ASN.mmdb and "
            "GeoLite2-City.mmdb [env MAXMIND_DIR; default data/maxmind]."
        ),
    ] = None,
    maxmind_asn: Annotated[Path | None, typer.Option(help="GeoLite2-ASN .mmdb file.")] = None,
    maxmind_city: Annotated[
        Path | None, typer.Option(help="GeoLite2-City or GeoIP2-City .mmdb file.")
    ] = None,
    skip: Annotated[
        list[Source] | None,
        typer.Option(
            "--skip", help="Do not ask this source (repeatable); its blocks stay as they are."
        ),
    ] = None,
    commit_every: Annotated[int, typer.Option(help="Rows per committed chunk.")] = 5000,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Select and report; contact no service, write nothing."),
    ] = False,
    summary_json: Annotated[
        Path | None, typer.Option(help="Write the run summary as JSON here.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only notes and errors.")] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Progress of every chunk.")
    ] = False,
    cymru: Annotated[
        str | None,
        typer.Option(help="Team Cymru bulk whois HOST:PORT [default whois.cymru.com:43]."),
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="IPs per Team Cymru session [default 500].")
    ] = None,
    greynoise_url: Annotated[
        str | None, typer.Option(help="GreyNoise API base URL [default https://api.greynoise.io].")
    ] = None,
    greynoise_mode: Annotated[
        str | None,
        typer.Option(help="community (GET per IPv4) or enterprise (POST, 10,000 per request)."),
    ] = None,
    greynoise_rate: Annotated[
        float | None, typer.Option(help="GreyNoise requests per second [default 10].")
    ] = None,
    greynoise_budget: Annotated[
        int | None, typer.Option(help="At most N GreyNoise requests in this run.")
    ] = None,
    status_file: Annotated[Path | None, typer.Option(help="JSON progress file.")] = None,
    metrics_file: Annotated[Path | None, typer.Option(help="Prometheus textfile.")] = None,
    config_file: Annotated[Path | None, typer.Option("--config", help="etl.toml file.")] = None,
) -> None:
    """Refresh the IP enrichment (MaxMind, Team Cymru, GreyNoise) of a Cowrie honeypot database.

    Exit codes: 0 run completed, 1 run aborted (committed chunks stay), 2 bad usage.
    """
    given = {
        "--status-file": status_file,
        "--metrics-file": metrics_file,
        "--config": config_file,
    }
    secrets: tuple[str, ...] = ()
    try:
        for option, value in given.items():
            if value is not None:
                raise UsageError(f"{option}: {_NOT_YET[option]} is not available in this version")
        env = cfg.from_environment()
        settings = {
            "db_url": db or env.get("db_url") or cfg.DEFAULT_DB_URL,
            "maxmind_dir": maxmind_dir or env.get("maxmind_dir") or cfg.DEFAULT_MAXMIND_DIR,
            "greynoise_api_key": env.get("greynoise_api_key"),
        }
        config = RefreshConfig(
            db_url=str(settings["db_url"]),
            max_ips=ips,
            only_ips=tuple(ip or ()),
            maxmind_dir=Path(str(settings["maxmind_dir"])),
            maxmind_asn=maxmind_asn,
            maxmind_city=maxmind_city,
            skip=frozenset(skip or ()),
            commit_every=commit_every,
            dry_run=dry_run,
            summary_json=summary_json,
            verbosity=-1 if quiet else (1 if verbose else 0),
            greynoise_api_key=settings["greynoise_api_key"],  # type: ignore[arg-type]
            cymru=cymru or cfg.DEFAULT_CYMRU,
            batch_size=cfg.DEFAULT_BATCH_SIZE if batch_size is None else batch_size,
            greynoise_url=greynoise_url or cfg.DEFAULT_GREYNOISE_URL,
            greynoise_mode=greynoise_mode or "community",
            greynoise_rate=10.0 if greynoise_rate is None else greynoise_rate,
            greynoise_budget=greynoise_budget,
        )
        secrets = config.secrets()
        reporter = LineReporter(verbosity=config.verbosity, secrets=secrets)
        summary = refresh(config, reporter)
    except EtlError as exc:
        print(f"error: {redact(str(exc), secrets)}", file=sys.stderr)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        print("interrupted: committed chunks are kept; run again to finish", file=sys.stderr)
        raise typer.Exit(1) from None
    if config.summary_json:
        summary.write_json(config.summary_json, secrets)
    if config.verbosity >= 0:
        print(summary.table())


if __name__ == "__main__":
    app()
