"""Command-line plumbing shared by ``python -m etl.refresh`` and ``python -m etl.sample``.

The parsers are plain `argparse` (it starts in a millisecond; a run's whole start-up counts).
A usage mistake is one line, ``error: ...``, and exit status 2.
"""

from __future__ import annotations

import argparse
from typing import NoReturn

from etl.errors import UsageError


class CliParser(argparse.ArgumentParser):
    """An `argparse.ArgumentParser` whose mistakes raise `UsageError` instead of exiting."""

    def __init__(self, prog: str, description: str, epilog: str | None = None) -> None:
        super().__init__(
            prog=prog,
            description=description,
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            allow_abbrev=False,
        )

    def error(self, message: str) -> NoReturn:
        """Raise a `UsageError` (one line, exit 2) with a pointer to ``--help``."""
        raise UsageError(f"{message} (see {self.prog} --help)")
