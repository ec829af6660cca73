"""``python -m testbed.sample``: a sample honeypot database and MaxMind files from a seeded
world.

Its defaults are under ``data/sample/``, never a refresh's (``data/honeypot.sqlite``,
``data/maxmind``). It replaces an existing database, or MaxMind files it did not write
(`testbed.sample.marks`), only with ``--replace``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from etl.cli import options as cli
from testbed.sample.scratch import JournalMode

# Never a refresh's defaults (etl.refresh.config: data/honeypot.sqlite, data/maxmind).
SAMPLE_DB_URL = "sqlite:///data/sample/honeypot.sqlite"
SAMPLE_MAXMIND_DIR = Path("data/sample/maxmind")

EXAMPLES = """\
Examples:

\b
  python -m testbed.sample --ips 10000 --replace
  python -m testbed.sample --db postgresql://etl@127.0.0.1:5432/scratch --ips 100000 --seed 3
  python -m testbed.sample --maxmind-dir data/sample/realistic --maxmind-size realistic
  python -m testbed.sample --db sqlite:///data/sample/v16.sqlite --shape migrated_v16"""


class MaxMindSize(StrEnum):
    """How big the sample's MaxMind files are."""

    small = "small"  # the world's networks only (about 17K nodes)
    realistic = "realistic"  # GeoLite2-sized search trees (~2M ASN, ~4M City nodes)


class SessionShape(StrEnum):
    """How the sample's sessions are linked to their IPs (`testbed.sample.honeypot`)."""

    loader = "loader"  # as cowrieprocessor's loader leaves them: source_ip NULL until a row
    migrated_v16 = "migrated_v16"  # source_ip on every session, snapshots NULL


def sample(
    db: Annotated[str, typer.Option(metavar="URL", help="target database URL")] = SAMPLE_DB_URL,
    ips: Annotated[int, typer.Option(metavar="N", min=1, help="number of source IPs")] = 10_000,
    seed: Annotated[int, typer.Option(help="world seed (use the same for the simulators)")] = 1,
    maxmind_dir: Annotated[
        Path, typer.Option(metavar="DIR", help="where to write the GeoLite2 files")
    ] = SAMPLE_MAXMIND_DIR,
    maxmind_size: Annotated[
        MaxMindSize,
        typer.Option(
            help="small: the world's networks only; realistic: search trees of GeoLite2 size "
            "(~2M / ~4M nodes, a few seconds more)"
        ),
    ] = MaxMindSize.small,
    replace: Annotated[
        bool,
        typer.Option(
            "--replace",
            help="replace a database that exists or holds rows (with its kept answers) and "
            "MaxMind files the sample did not write",
        ),
    ] = False,
    journal_mode: Annotated[
        JournalMode,
        typer.Option(
            help="SQLite journal mode of the new file: wal (as cowrieprocessor leaves its "
            "files) or delete (rollback journal)"
        ),
    ] = JournalMode.wal,
    shape: Annotated[
        SessionShape,
        typer.Option(
            help="loader: sessions as cowrieprocessor's loader leaves them (source_ip and "
            "snapshots NULL when the IP had no inventory row yet; the address only in "
            "raw_events); migrated_v16: source_ip on every session, as its v16 migration left "
            "older databases"
        ),
    ] = SessionShape.loader,
    events_per_session: Annotated[
        int,
        typer.Option(metavar="N", min=1, help="raw events per session (connect, logins, closed)"),
    ] = 3,
) -> None:
    """Build a realistic sample honeypot database and MaxMind files from a seeded world."""
    from testbed.sample.build import build_sample  # polars, DuckDB: when it runs

    started = time.monotonic()
    built = build_sample(
        db,
        ips,
        seed,
        maxmind_dir,
        replace,
        str(journal_mode),
        str(maxmind_size),
        shape.value,
        events_per_session,
    )
    states = ", ".join(f"{state} {n}" for state, n in sorted(built.states.items()))
    print(
        f"sample world {seed}: {built.states.total()} IPs ({states}), {built.sessions} sessions "
        f"({built.linked} linked, shape {built.shape}), {built.raw_events} raw events, "
        f"{built.asns} ASNs -> {built.url}"
    )
    print(
        f"MaxMind files in {maxmind_dir} (build epoch {built.build_epoch}); "
        f"{time.monotonic() - started:.1f} s"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``python -m testbed.sample`` with ``argv``; return the exit status."""
    from etl.core.settings import declared
    from etl.refresh.config import RefreshConfig

    # --db means what it means for a refresh: its errors are named the same way.
    return cli.run_single(
        sample, argv, "python -m testbed.sample", EXAMPLES, settings=declared(RefreshConfig)
    )


def run() -> None:
    """Entry point of ``python -m testbed.sample``."""
    sys.exit(main())
