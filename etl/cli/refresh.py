"""``honeypot-etl refresh`` (also ``python -m etl.refresh``): settings from the options, the
environment and etl.toml into a `RefreshConfig`, run it, show progress and the summary, turn
errors into exit codes.

Precedence: options > environment (each setting's variable, `etl.refresh.config.RefreshConfig`) >
etl.toml. The run itself, with its progress and end files, is `etl.refresh.monitored`.
"""

from __future__ import annotations

import atexit
import inspect
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from etl.cli import options as cli
from etl.core.settings import declared, secret_file_warning
from etl.refresh.config import (
    CONFIG_ENV,
    LIST_URL_SETTINGS,
    RefreshConfig,
    config_note,
    load_config,
    locate_config,
)

PROG = "python -m etl.refresh"
HELP = """\
Refresh the IP enrichment (MaxMind, Team Cymru, GreyNoise) of a Cowrie honeypot database.

The GreyNoise key comes from GREYNOISE_API_KEY or etl.toml, never from an option.

Exit codes: 0 run completed (a daily limit or budget reached included); 1 run aborted
(committed chunks stay; answers not committed are kept beside the database and applied by
the next run); 2 bad usage or configuration (one line, nothing done); 3 run completed, but a
source was stopped for the whole run by its key or reachability (key refused, service
unreachable or stalled): alert on it."""
EXAMPLES = """\
Examples:

\b
  honeypot-etl refresh --ips 10000
  honeypot-etl refresh --db postgresql://etl@db:5432/cowrie --skip greynoise
  honeypot-etl refresh --ip 198.51.100.9 --dry-run
  GREYNOISE_API_KEY=... honeypot-etl refresh --config /etc/honeypot-etl/etl.toml \\
      --status-file /run/etl-status.json --quiet

python -m etl.refresh takes the same options."""
SETTINGS = declared(RefreshConfig)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help=f"etl.toml with the same settings [env {CONFIG_ENV}; default: the first of "
        "./etl.toml, ~/.config/honeypot-etl/etl.toml, /etc/honeypot-etl/etl.toml]",
        metavar="FILE",
        show_default=False,
    ),
]


INTERRUPTED = "interrupted: committed chunks are kept; run again to finish"


@cli.one_line_errors(SETTINGS, interrupted=INTERRUPTED)
def refresh_command(
    boundary: cli.Boundary, /, config_file: Path | None = None, version: bool = False, **values: Any
) -> int:
    """Refresh the IP enrichment of a Cowrie honeypot database (see ``--help``)."""
    # systemd, `timeout` and a shutdown stop a run with SIGTERM: handled exactly like Ctrl-C.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        config, path, found, notes = _configure(config_file, values)
        boundary.hide(config.secrets())
        if found:  # first, before any check: an error is then read with that file in mind
            print(found, file=sys.stderr, flush=True)
        from etl.refresh.monitored import monitored_refresh  # polars, DuckDB: only for a refresh

        summary = monitored_refresh(
            config,
            notes=notes,
            config_file=path,
            flag=lambda name: cli.flag_of(SETTINGS, name),
        )
    finally:
        signal.signal(signal.SIGTERM, previous)
    if config.verbosity >= 0:
        print(summary.table())  # counts and labels only: nothing to redact
    return summary.exit_code


def command() -> Any:
    """`refresh_command` with the Typer options of every setting (but the lists' URLs, which
    only `lists update` reads), plus ``--config``."""
    keyword = inspect.Parameter.KEYWORD_ONLY
    extra = [
        inspect.Parameter("config_file", keyword, default=None, annotation=ConfigOption),
        inspect.Parameter("version", keyword, default=False, annotation=cli.VersionOption),
    ]
    names = [name for name in SETTINGS if name not in LIST_URL_SETTINGS]
    return cli.with_signature(refresh_command, [*cli.options_of(RefreshConfig, names), *extra])


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``python -m etl.refresh`` with ``argv``; return the exit status."""
    return cli.run_single(command(), argv, PROG, EXAMPLES, SETTINGS, help=HELP)


def _interrupt(signum: int, _frame: object) -> None:
    """SIGTERM handler: stop the run where it is, as Ctrl-C does."""
    raise KeyboardInterrupt(f"signal {signum}")


def _configure(
    config_file: Path | None, values: dict[str, Any]
) -> tuple[RefreshConfig, Path | None, str | None, list[str]]:
    """Merge etl.toml, the environment and the options (in rising precedence); with them the
    etl.toml read (named, or found: `etl.refresh.config.locate_config`), the line that says
    which one it read when none was named (``config: PATH``; none when quiet), and the run's
    first notes (shown once the run starts: an error stays one line): the warning about a key
    file others can read."""
    path, found = locate_config(config_file)
    config = load_config(file=path, values_origin="option", **values)
    said = config_note(path, found) if config.verbosity >= 0 else None
    warning = secret_file_warning(SETTINGS, path) if path is not None else None
    return config, path, said, [warning] if warning else []


def run() -> NoReturn:
    """Entry point of ``python -m etl.refresh``."""
    exit_fast(main())


def exit_fast(code: int) -> NoReturn:
    """Exit with ``code`` at once, once a refresh has finished.

    By then every connection and file is closed; exit handlers still run (they save coverage
    data, for one), but the interpreter does not unload polars, DuckDB and NumPy, which costs
    every run about 0.2 s.
    """
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
