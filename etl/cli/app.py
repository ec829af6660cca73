"""``honeypot-etl``: the one installed command, with a subcommand per job.

    honeypot-etl refresh    re-enrich what is stale (the same as python -m etl.refresh)
    honeypot-etl status     where the data stands, read-only (python -m etl.status)
    honeypot-etl pending    answers a stopped run kept: list, --apply, --discard
    honeypot-etl doctor     check what a cron run needs, without a refresh
    honeypot-etl lists      the infrastructure lists; `lists update` fetches them

The sample world, the simulators and the demo are the repository's test bed (``testbed/``,
not shipped): ``python -m testbed.sample``, ``python -m testbed.sim.cymru``, ``make demo``.

Each subcommand imports its work only when it runs, so ``--help`` and completion stay quick.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import NoReturn

import typer

from etl.cli import doctor, lists, pending, refresh, status
from etl.cli import options as cli

HELP = "Keep the IP enrichment of Cowrie honeypot databases fresh (MaxMind, Team Cymru, GreyNoise)."
EXAMPLES = """\
Examples:

\b
  honeypot-etl refresh --ips 10000
  honeypot-etl refresh --help
  honeypot-etl status
  honeypot-etl pending
  honeypot-etl doctor
  honeypot-etl lists update
  honeypot-etl --install-completion
"""


def _root(
    version: cli.VersionOption = False,
) -> None:
    """Keep the IP enrichment of Cowrie honeypot databases fresh."""


def app() -> typer.Typer:
    """The ``honeypot-etl`` command and its subcommands."""
    root = cli.new_app(HELP, EXAMPLES, completion=True)
    root.callback(epilog=EXAMPLES)(_root)
    root.command("refresh", help=refresh.HELP, epilog=refresh.EXAMPLES)(refresh.command())
    root.command("status", help=status.HELP, epilog=status.EXAMPLES)(status.command())
    root.command("pending", help=pending.HELP, epilog=pending.EXAMPLES)(pending.command())
    root.command("doctor", help=doctor.HELP, epilog=doctor.EXAMPLES)(doctor.command())
    root.add_typer(lists.app(), name="lists", help=lists.HELP)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``honeypot-etl`` with ``argv``; return the exit status."""
    return cli.invoke(app(), argv, "honeypot-etl", refresh.SETTINGS)


def run() -> NoReturn:
    """Entry point of the installed ``honeypot-etl`` command."""
    if sys.argv[1:2] in (["refresh"], ["status"], ["pending"], ["doctor"]):
        refresh.exit_fast(main())
    sys.exit(main())
