"""``python -m etl.refresh``: options, environment and etl.toml into a `RefreshConfig`, run it,
show progress and the summary, turn errors into exit codes.

Precedence: options > environment (ETL_DB_URL, MAXMIND_DIR, GREYNOISE_API_KEY) > etl.toml.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from etl import config as cfg
from etl.config import RefreshConfig, Source
from etl.db.url import redact
from etl.errors import EtlError
from etl.metrics import write_metrics
from etl.pipeline import refresh
from etl.progress import FanOut, RichProgress, StatusFile
from etl.report import LineReporter, Reporter, RunSummary

app = typer.Typer(add_completion=False, rich_markup_mode=None)

EXAMPLES = (
    "Examples:\n\n"
    "  python -m etl.refresh --ips 10000\n\n"
    "  python -m etl.refresh --db postgresql://etl@db:5432/cowrie --skip greynoise\n\n"
    "  python -m etl.refresh --ip 198.51.100.9 --dry-run\n\n"
    "  GREYNOISE_API_KEY=... python -m etl.refresh --config /etc/honeypot-etl/etl.toml "
    "--status-file /run/etl-status.json --quiet"
)

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="sqlite:///path.db or postgresql://user:pass@host:port/db "
        "[env ETL_DB_URL; default sqlite:///data/honeypot.sqlite]",
    ),
]


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
    commit_every: Annotated[
        int | None, typer.Option(help="Rows per committed chunk [default 5000].")
    ] = None,
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
    status_file: Annotated[
        Path | None,
        typer.Option(help="JSON progress file for monitors, rewritten atomically every 0.5 s."),
    ] = None,
    metrics_file: Annotated[
        Path | None,
        typer.Option(help="Prometheus textfile (node_exporter textfile collector), at the end."),
    ] = None,
    config_file: Annotated[
        Path | None,
        typer.Option("--config", help="etl.toml with the same settings [env ETL_CONFIG]."),
    ] = None,
) -> None:
    """Refresh the IP enrichment (MaxMind, Team Cymru, GreyNoise) of a Cowrie honeypot database.

    The GreyNoise key comes from GREYNOISE_API_KEY or etl.toml, never from an option.
    Exit codes: 0 run completed, 1 run aborted (committed chunks stay), 2 bad usage.
    """
    options: dict[str, Any] = {
        "db": db,
        "ips": ips,
        "ip": ip,
        "maxmind_dir": maxmind_dir,
        "maxmind_asn": maxmind_asn,
        "maxmind_city": maxmind_city,
        "skip": [str(source) for source in skip] if skip else None,
        "commit_every": commit_every,
        "dry_run": dry_run or None,
        "summary_json": summary_json,
        "quiet": quiet or None,
        "verbose": verbose or None,
        "cymru": cymru,
        "batch_size": batch_size,
        "greynoise_url": greynoise_url,
        "greynoise_mode": greynoise_mode,
        "greynoise_rate": greynoise_rate,
        "greynoise_budget": greynoise_budget,
        "status_file": status_file,
        "metrics_file": metrics_file,
    }
    secrets: tuple[str, ...] = ()
    try:
        config = _configure(options, config_file)
        secrets = config.secrets()
        summary = _run(config)
    except EtlError as exc:
        print(f"error: {redact(str(exc), secrets)}", file=sys.stderr)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        print("interrupted: committed chunks are kept; run again to finish", file=sys.stderr)
        raise typer.Exit(1) from None
    if config.verbosity >= 0:
        print(redact(summary.table(), secrets))


def _configure(options: dict[str, Any], config_file: Path | None) -> RefreshConfig:
    """Merge etl.toml, the environment and the options (in rising precedence)."""
    settings: dict[str, object] = {}
    path = cfg.config_path(config_file)
    if path is not None:
        loaded = cfg.read_config_file(path)
        for warning in loaded.warnings:
            print(warning, file=sys.stderr)
        settings.update(loaded.settings)
    settings.update(cfg.from_environment())
    settings.update({name: value for name, value in options.items() if value is not None})
    return cfg.build_config(settings)


def _run(config: RefreshConfig) -> RunSummary:
    """Run the refresh with the reporters the configuration asks for; write the end files."""
    summary = RunSummary()
    success = False
    with _reporters(config) as (reporter, status):
        try:
            refresh(config, reporter, summary)
            success = True
        finally:
            if status is not None:
                status.close("finished" if success else "failed")
            if config.metrics_file is not None:
                write_metrics(config.metrics_file, summary, success)
    if config.summary_json:
        summary.write_json(config.summary_json, config.secrets())
    return summary


@contextmanager
def _reporters(config: RefreshConfig) -> Iterator[tuple[Reporter, StatusFile | None]]:
    """Progress bars on a terminal, plain lines otherwise, plus the status file if asked."""
    secrets = config.secrets()
    bars = RichProgress(secrets=secrets) if config.verbosity == 0 and sys.stderr.isatty() else None
    shown: Reporter = bars or LineReporter(verbosity=config.verbosity, secrets=secrets)
    status = StatusFile(config.status_file, secrets) if config.status_file else None
    try:
        yield (FanOut([shown, status]) if status else shown), status
    finally:
        if bars is not None:
            bars.close()


if __name__ == "__main__":
    app()
