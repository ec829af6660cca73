"""``python -m etl.refresh``: options, environment and etl.toml into a `RefreshConfig`, run it,
show progress and the summary, turn errors into exit codes.

Precedence: options > environment (ETL_DB_URL, MAXMIND_DIR, GREYNOISE_API_KEY) > etl.toml.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

from etl import config as cfg
from etl.cli import CliParser
from etl.config import RefreshConfig, Source
from etl.db.url import redact
from etl.errors import EtlError
from etl.metrics import write_metrics
from etl.pipeline import refresh
from etl.progress import FanOut, StatusFile
from etl.report import LineReporter, Reporter, RunSummary

PROG = "python -m etl.refresh"
DESCRIPTION = """\
Refresh the IP enrichment (MaxMind, Team Cymru, GreyNoise) of a Cowrie honeypot database.

The GreyNoise key comes from GREYNOISE_API_KEY or etl.toml, never from an option.
Exit codes: 0 run completed, 1 run aborted (committed chunks stay; answers not committed
are kept beside the database and applied by the next run), 2 bad usage."""
EXAMPLES = """\
Examples:
  python -m etl.refresh --ips 10000
  python -m etl.refresh --db postgresql://etl@db:5432/cowrie --skip greynoise
  python -m etl.refresh --ip 198.51.100.9 --dry-run
  GREYNOISE_API_KEY=... python -m etl.refresh --config /etc/honeypot-etl/etl.toml \\
      --status-file /run/etl-status.json --quiet"""


def parser() -> CliParser:
    """The option table of ``python -m etl.refresh`` (SPEC 5)."""
    p = CliParser(PROG, DESCRIPTION, EXAMPLES)
    add = p.add_argument
    add("--db", metavar="URL", help="sqlite:///path.db or postgresql://user:pass@host:port/db "
        "[env ETL_DB_URL; default sqlite:///data/honeypot.sqlite]")  # fmt: skip
    add("--ips", type=int, metavar="N",
        help="refresh at most N IPs (never-enriched first, then most recently seen)")  # fmt: skip
    add("--ip", action="append", metavar="ADDRESS",
        help="refresh this address now, stale or not (repeatable)")  # fmt: skip
    add("--maxmind-dir", type=Path, metavar="DIR", help="folder with GeoLite2-ASN.mmdb and "
        "GeoLite2-City.mmdb [env MAXMIND_DIR; default data/maxmind]")  # fmt: skip
    add("--maxmind-asn", type=Path, metavar="FILE", help="GeoLite2-ASN .mmdb file")
    add("--maxmind-city", type=Path, metavar="FILE",
        help="GeoLite2-City or GeoIP2-City .mmdb file")  # fmt: skip
    add("--skip", action="append", choices=[str(s) for s in Source], metavar="SOURCE",
        help="do not ask this source: maxmind, cymru or greynoise (repeatable); "
        "its blocks stay as they are")  # fmt: skip
    add("--commit-every", type=int, metavar="N", help="rows per committed chunk [default 5000]")
    add("--lock-timeout", type=float, metavar="SECONDS",
        help="how long a write waits for another writer's lock on the database, or for a "
        "lost PostgreSQL server to come back [default 300]")  # fmt: skip
    add("--create", action="store_true", default=None,
        help="create the SQLite file when it does not exist (else that is an error)")  # fmt: skip
    add("--dry-run", action="store_true", default=None,
        help="select and report; contact no service, write nothing")  # fmt: skip
    add("--summary-json", type=Path, metavar="FILE", help="write the run summary as JSON here")
    add("-q", "--quiet", action="store_true", default=None, help="only notes and errors")
    add("-v", "--verbose", action="store_true", default=None, help="progress of every chunk")
    add("--cymru", metavar="HOST:PORT",
        help="Team Cymru bulk whois [default whois.cymru.com:43]")  # fmt: skip
    add("--batch-size", type=int, metavar="N", help="IPs per Team Cymru session [default 500]")
    add("--greynoise-url", metavar="URL",
        help="GreyNoise API base URL [default https://api.greynoise.io]")  # fmt: skip
    add("--greynoise-mode", metavar="MODE", help="community (GET per IPv4, the default) or "
        "enterprise (POST, 10,000 per request)")  # fmt: skip
    add("--greynoise-rate", type=float, metavar="R",
        help="GreyNoise requests per second [default 10]")  # fmt: skip
    add("--greynoise-budget", type=int, metavar="N",
        help="at most N GreyNoise requests in this run")  # fmt: skip
    add("--status-file", type=Path, metavar="FILE",
        help="JSON progress file for monitors, rewritten atomically every 0.5 s")  # fmt: skip
    add("--metrics-file", type=Path, metavar="FILE",
        help="Prometheus textfile (node_exporter textfile collector), at the end")  # fmt: skip
    add("--config", type=Path, metavar="FILE",
        help="etl.toml with the same settings [env ETL_CONFIG]")  # fmt: skip
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``python -m etl.refresh`` with ``argv``; return the exit status."""
    secrets: tuple[str, ...] = ()
    # systemd, `timeout` and a shutdown stop a run with SIGTERM: handled exactly like Ctrl-C.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        options = vars(parser().parse_args(argv))
        config = _configure(options, options.pop("config"))
        secrets = config.secrets()
        summary = _run(config)
    except EtlError as exc:
        print(f"error: {redact(str(exc), secrets)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted: committed chunks are kept; run again to finish", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    if config.verbosity >= 0:
        print(redact(summary.table(), secrets))
    return 0


def _interrupt(signum: int, _frame: object) -> None:
    """SIGTERM handler: stop the run where it is, as Ctrl-C does."""
    raise KeyboardInterrupt(f"signal {signum}")


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
    with _reporters(config) as (reporter, status):
        try:
            refresh(config, reporter, summary)
            summary.outcome = "finished"
        except KeyboardInterrupt:
            summary.outcome = "interrupted"
            raise
        finally:
            # Also for a failed or interrupted run: monitors read what happened.
            if status is not None:
                status.close(summary.outcome)
            if config.metrics_file is not None:
                write_metrics(config.metrics_file, summary, summary.outcome == "finished")
            if config.summary_json:
                summary.write_json(config.summary_json, config.secrets())
    return summary


@contextmanager
def _reporters(config: RefreshConfig) -> Iterator[tuple[Reporter, StatusFile | None]]:
    """Progress bars on a terminal, plain lines otherwise, plus the status file if asked."""
    secrets = config.secrets()
    bars = None
    if config.verbosity == 0 and sys.stderr.isatty():
        from etl.terminal import RichProgress  # rich is loaded only for a terminal

        bars = RichProgress(secrets=secrets)
    shown: Reporter = bars or LineReporter(verbosity=config.verbosity, secrets=secrets)
    status = StatusFile(config.status_file, secrets) if config.status_file else None
    try:
        yield (FanOut([shown, status]) if status else shown), status
    finally:
        if bars is not None:
            bars.close()


def run() -> NoReturn:
    """Entry point of ``python -m etl.refresh``: `main`, then exit at once.

    By then every connection and file is closed; exit handlers still run (they save coverage
    data, for one), but the interpreter does not unload polars, DuckDB and NumPy, which costs
    every run about 0.2 s.
    """
    code = main()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
