"""Command line of ``python -m etl.sample``."""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer

from etl.config import DEFAULT_DB_URL, DEFAULT_MAXMIND_DIR
from etl.db.database import Database
from etl.db.url import DatabaseUrl, parse_database_url
from etl.errors import EtlError, UsageError
from etl.sample.honeypot import build_honeypot
from etl.sample.mmdb_files import build_epoch, write_maxmind_files
from etl.sample.world import World

app = typer.Typer(add_completion=False, rich_markup_mode=None)


def _clear(url: DatabaseUrl, replace: bool) -> None:
    """Start from an empty database: refuse to mix the sample into existing rows."""
    if url.dialect == "sqlite":
        assert url.sqlite_path is not None
        if url.sqlite_path.exists():
            if not replace:
                raise UsageError(f"{url} already exists; pass --replace to rebuild it")
            url.sqlite_path.unlink()
        return
    with Database(url) as db:
        if db.columns("ip_inventory") and db.query_native("SELECT 1 FROM ip_inventory LIMIT 1"):
            if not replace:
                raise UsageError(f"{url} already holds ip_inventory rows; pass --replace")
            db.execute_native(
                [
                    "DELETE FROM session_summaries",
                    "DELETE FROM ip_inventory",
                    "DELETE FROM asn_inventory",
                ]
            )


@app.command()
def main(
    db: Annotated[str, typer.Option("--db", help="Target database URL.")] = DEFAULT_DB_URL,
    ips: Annotated[int, typer.Option("--ips", help="Number of source IPs.")] = 10_000,
    seed: Annotated[
        int, typer.Option("--seed", help="World seed (use the same for the simulators).")
    ] = 1,
    maxmind_dir: Annotated[
        Path, typer.Option("--maxmind-dir", help="Where to write the GeoLite2 files.")
    ] = DEFAULT_MAXMIND_DIR,
    replace: Annotated[
        bool, typer.Option("--replace", help="Rebuild a database that already holds rows.")
    ] = False,
) -> None:
    """Build a realistic sample honeypot database and MaxMind files from a seeded world."""
    started = time.monotonic()
    try:
        if ips <= 0:
            raise UsageError(f"--ips must be a positive number, got {ips}")
        url = parse_database_url(db)
        _clear(url, replace)
        world = World(seed)
        asn_path, _ = write_maxmind_files(world, maxmind_dir)
        epoch = build_epoch(asn_path)
        with Database(url) as database:
            database.ensure_schema()
            sample = build_honeypot(database, world, ips, epoch, seed)
    except EtlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(exc.exit_code) from None
    states = ", ".join(
        f"{state} {n}" for state, n in sorted(Counter(sample.states.values()).items())
    )
    print(
        f"sample world {seed}: {len(sample.states)} IPs ({states}), {sample.sessions} sessions, "
        f"{sample.asns} ASNs -> {url}"
    )
    print(
        f"MaxMind files in {maxmind_dir} (build epoch {epoch}); {time.monotonic() - started:.1f} s"
    )


def run() -> None:
    """Entry point of ``python -m etl.sample``."""
    app()
