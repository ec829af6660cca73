"""``honeypot-etl pending``: list, apply or discard the answers stopped runs kept. The
database's settings are declared once in `etl.refresh.config.RefreshConfig`, as for a
refresh; the work is `etl.refresh.kept`."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Any

import typer

from etl.cli import options as cli
from etl.cli.refresh import SETTINGS, ConfigOption
from etl.core.errors import UsageError
from etl.db.url import redact
from etl.refresh.config import RefreshConfig, config_file_path, load_config

HELP = """\
The answers a stopped run paid for but could not commit (the lock never came, the server stayed
away, Ctrl-C), kept beside the database: list them (the default), apply or discard them.

Each file names the database it was kept for (an id of ours in the table etl_identity). A
refresh applies only the files of its own database, and only to the IPs that database knows;
files of another database (a new file at the same path, a demo re-run with another seed) are
never applied there. Files that name no database (kept by an older version, or by a run that
could not write the id) are applied only by --apply.

Exit codes: 0 done; 1 the database cannot be read or written now, or a refresh is running;
2 bad usage (a SQLite file that does not exist, --apply with --discard) or a database the
refresh cannot use (not a database, none of cowrieprocessor's tables)."""
EXAMPLES = """\
Examples:

\b
  honeypot-etl pending
  honeypot-etl pending --apply
  honeypot-etl pending --discard --foreign
  honeypot-etl pending --db postgresql://etl@db:5432/cowrie --discard"""
# The settings the command reads, declared with the refresh's (pending_dir: env or etl.toml).
OPTIONS = ("db_url", "lock_timeout")

ApplyOption = Annotated[
    bool,
    typer.Option(
        "--apply",
        help="apply the files kept for this database and those that name none, to the IPs it "
        "knows (under the run lock, as a refresh); files of another database stay",
        show_default=False,
    ),
]
DiscardOption = Annotated[
    bool, typer.Option("--discard", help="remove every kept file", show_default=False)
]
ForeignOption = Annotated[
    bool,
    typer.Option(
        "--foreign",
        help="with --discard: remove only the files kept for another database",
        show_default=False,
    ),
]


@cli.one_line_errors(SETTINGS)
def pending_command(
    boundary: cli.Boundary,
    /,
    config_file: Path | None = None,
    apply: bool = False,
    discard: bool = False,
    foreign: bool = False,
    version: bool = False,
    **values: Any,
) -> int:
    """List, apply or discard the answers stopped runs kept (see ``--help``)."""
    if apply and discard:
        raise UsageError("--apply and --discard exclude each other: choose one")
    if foreign and not discard:
        raise UsageError("--foreign goes with --discard")
    config = load_config(file=config_file_path(config_file), values_origin="option", **values)
    secrets = boundary.hide(config.secrets())
    from etl.refresh import kept  # polars, DuckDB: only when it runs
    from etl.report.summary import LineReporter

    reporter = LineReporter(secrets=secrets)
    if apply:
        kept.apply_kept(config, reporter)
    elif discard:
        kept.discard_kept(config, reporter, foreign_only=foreign)
    else:
        print(redact(kept.render(kept.kept_answers(config)), secrets))
    return 0


def command() -> Any:
    """`pending_command` with its Typer options: the database's settings, ``--config``,
    ``--apply``, ``--discard``, ``--foreign``."""
    keyword = inspect.Parameter.KEYWORD_ONLY
    extra = [
        inspect.Parameter("config_file", keyword, default=None, annotation=ConfigOption),
        inspect.Parameter("apply", keyword, default=False, annotation=ApplyOption),
        inspect.Parameter("discard", keyword, default=False, annotation=DiscardOption),
        inspect.Parameter("foreign", keyword, default=False, annotation=ForeignOption),
        inspect.Parameter("version", keyword, default=False, annotation=cli.VersionOption),
    ]
    return cli.with_signature(pending_command, [*cli.options_of(RefreshConfig, OPTIONS), *extra])
