"""``honeypot-etl status`` (also ``python -m etl.status``): the options of the report, each
declared once in `etl.refresh.config.RefreshConfig` as for a refresh; the work is
`etl.status.collect.status_report`."""

from __future__ import annotations

import inspect
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from etl.cli import options as cli
from etl.cli.refresh import SETTINGS, ConfigOption, exit_fast
from etl.core.errors import UsageError
from etl.db.url import redact
from etl.refresh.config import RefreshConfig, config_note, load_config, locate_config

PROG = "python -m etl.status"
HELP = """\
Where the data of a honeypot database stands: per source how many IPs are fresh, stale, in
error or never asked, how many go stale on each of the next 7 days, the GreyNoise Searches of
today and what the daily budget leaves, the MaxMind build ages and the last runs.

Read-only: it asks no service and writes nothing (not even the run log table), but the
metrics file --metrics-file names: the IPs due per source and the version, for node_exporter's
textfile collector, written atomically instead of printing the report (a cron job that asks
no service). Exit codes: 0 the report (or the file); 1 the database cannot be read, or the
file cannot be written; 2 bad usage (a SQLite file that does not exist, a value out of range,
a metrics file on the database, the config or a file that is not ours)."""
EXAMPLES = """\
Examples:

\b
  honeypot-etl status
  honeypot-etl status --db postgresql://etl@db:5432/cowrie --json
  honeypot-etl status --config /etc/honeypot-etl/etl.toml --runs 24
  honeypot-etl status --metrics-file /var/lib/node_exporter/textfile/honeypot_etl_state.prom

python -m etl.status takes the same options."""
# The settings the report reads, declared with the refresh's.
OPTIONS = ("db_url", "maxmind_dir", "maxmind_asn", "maxmind_city", "greynoise_daily_budget",
           "lists_dir", "lists_cloud_providers")  # fmt: skip
MAX_RUNS = 1_000

JsonOption = Annotated[
    bool, typer.Option("--json", help="the report as one JSON object", show_default=False)
]
RunsOption = Annotated[
    int,
    typer.Option(
        "--runs", metavar="N", help=f"the last N runs to list, 0 to {MAX_RUNS:,} [default 10]",
        show_default=False,
    ),
]  # fmt: skip

MetricsOption = Annotated[
    Path | None,
    typer.Option(
        "--metrics-file", metavar="FILE", show_default=False,
        help="write the state metrics here (IPs due per source, version; Prometheus textfile "
        "format, atomically) instead of printing the report: for cron, beside the refresh's "
        "own metrics file, never the same file",
    ),
]  # fmt: skip


@cli.one_line_errors(SETTINGS)
def status_command(
    boundary: cli.Boundary,
    /,
    config_file: Path | None = None,
    as_json: bool = False,
    runs: int = 10,
    metrics_file: Path | None = None,
    version: bool = False,
    **values: Any,
) -> int:
    """Show where the data of a honeypot database stands (see ``--help``)."""
    if not 0 <= runs <= MAX_RUNS:
        raise UsageError(f"--runs must be between 0 and {MAX_RUNS:,}, got {runs}")
    path, found = locate_config(config_file)
    config = load_config(file=path, values_origin="option", **values)
    secrets = boundary.hide(config.secrets())
    if metrics_file is not None:
        from etl.refresh.outputs import check_state_metrics

        check_state_metrics(config, path, metrics_file)  # before any work
    elif note := config_note(path, found):  # stderr: the report and its JSON stay clean
        print(note, file=sys.stderr)
    from etl.report.summary import atomic_write
    from etl.status.collect import state_metrics_text, status_report  # polars, DuckDB
    from etl.status.text import render

    report = status_report(config, runs)
    if metrics_file is not None:
        try:
            atomic_write(metrics_file, state_metrics_text(report))
        except OSError as exc:
            why = exc.strerror or str(exc)
            return cli.fail(f"--metrics-file {metrics_file} could not be written: {why}", 1)
        if not as_json:
            return 0
    text = json.dumps(report.to_dict(), indent=2) if as_json else render(report)
    print(redact(text, secrets))
    return 0


def command() -> Any:
    """`status_command` with its Typer options: the report's settings, ``--config``, ``--json``,
    ``--runs``, ``--metrics-file``."""
    keyword = inspect.Parameter.KEYWORD_ONLY
    extra = [
        inspect.Parameter("config_file", keyword, default=None, annotation=ConfigOption),
        inspect.Parameter("as_json", keyword, default=False, annotation=JsonOption),
        inspect.Parameter("runs", keyword, default=10, annotation=RunsOption),
        inspect.Parameter("metrics_file", keyword, default=None, annotation=MetricsOption),
        inspect.Parameter("version", keyword, default=False, annotation=cli.VersionOption),
    ]
    return cli.with_signature(status_command, [*cli.options_of(RefreshConfig, OPTIONS), *extra])


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``python -m etl.status`` with ``argv``; return the exit status."""
    return cli.run_single(command(), argv, PROG, EXAMPLES, SETTINGS, help=HELP)


def run() -> NoReturn:
    """Entry point of ``python -m etl.status``."""
    exit_fast(main())
