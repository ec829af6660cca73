"""Command line of ``python -m etl.sample``."""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from etl.cli import CliParser
from etl.config import DEFAULT_DB_URL, DEFAULT_MAXMIND_DIR
from etl.db.database import Database
from etl.db.url import DatabaseUrl, parse_database_url
from etl.errors import EtlError, UsageError
from etl.sample.honeypot import build_honeypot
from etl.sample.mmdb_files import TREE_NODES, build_epoch, write_maxmind_files
from etl.sample.scratch import JOURNAL_MODES, new_sqlite_file
from etl.sample.world import World


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


def parser() -> CliParser:
    """The options of ``python -m etl.sample``."""
    p = CliParser(
        "python -m etl.sample",
        "Build a realistic sample honeypot database and MaxMind files from a seeded world.",
    )
    p.add_argument("--db", default=DEFAULT_DB_URL, metavar="URL", help="target database URL")
    p.add_argument("--ips", type=int, default=10_000, metavar="N", help="number of source IPs")
    p.add_argument(
        "--seed", type=int, default=1, help="world seed (use the same for the simulators)"
    )
    p.add_argument("--maxmind-dir", type=Path, default=DEFAULT_MAXMIND_DIR, metavar="DIR",
                   help="where to write the GeoLite2 files")  # fmt: skip
    p.add_argument("--maxmind-size", choices=sorted(TREE_NODES), default="small",
                   help="small: the world's networks only; realistic: search trees of "
                   "GeoLite2 size (~2M / ~4M nodes, a few seconds more)")  # fmt: skip
    p.add_argument("--replace", action="store_true",
                   help="rebuild a database that already holds rows")  # fmt: skip
    p.add_argument("--journal-mode", choices=JOURNAL_MODES, default="wal",
                   help="SQLite journal mode of the new file: wal (the default, as "
                   "cowrieprocessor leaves its files) or delete (rollback journal)")  # fmt: skip
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Build a realistic sample honeypot database and MaxMind files from a seeded world."""
    started = time.monotonic()
    try:
        args = parser().parse_args(argv)
        db, ips, seed, maxmind_dir = args.db, args.ips, args.seed, args.maxmind_dir
        if ips <= 0:
            raise UsageError(f"--ips must be a positive number, got {ips}")
        url = parse_database_url(db)
        _clear(url, args.replace)
        world = World(seed)
        asn_path, _ = write_maxmind_files(world, maxmind_dir, args.maxmind_size)
        epoch = build_epoch(asn_path)
        if url.dialect == "sqlite":
            assert url.sqlite_path is not None
            new_sqlite_file(url.sqlite_path, args.journal_mode)
        with Database(url, create=True) as database:
            database.ensure_schema()
            sample = build_honeypot(database, world, ips, epoch, seed)
    except EtlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
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
    return 0


def run() -> None:
    """Entry point of ``python -m etl.sample``."""
    sys.exit(main())
