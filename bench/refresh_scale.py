"""Time a MaxMind-only refresh of N IPs (default 100,000) on SQLite and on PostgreSQL.

Whole process timed (``python -m etl.refresh`` start-up included). Needs the MaxMind test
databases in ../shared/maxmind-test-data and PostgreSQL on 127.0.0.1:5432 (trust auth).
Usage: python bench/refresh_scale.py [N]
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.world import load_postgres, load_sqlite, plan_world  # noqa: E402

SHARED = ROOT.parent / "shared"
MMDB = SHARED / "maxmind-test-data"
NETWORKS = ["89.160.0.0/17", "81.2.69.0/24", "216.160.64.0/18", "175.16.199.0/24", "1.128.0.0/11"]
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def timed_refresh(db_url: str) -> tuple[float, str]:
    command = [
        sys.executable,
        "-m",
        "etl.refresh",
        "--db",
        db_url,
        "--skip",
        "cymru",
        "--skip",
        "greynoise",
        "--maxmind-asn",
        str(MMDB / "GeoLite2-ASN-Test.mmdb"),
        "--maxmind-city",
        str(MMDB / "GeoLite2-City-Test.mmdb"),
    ]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT)
    return time.perf_counter() - started, result.stdout.splitlines()[0]


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.sqlite"
        con = sqlite3.connect(path)
        con.executescript((SHARED / "compat" / "cowrieprocessor-sqlite.sql").read_text())
        con.close()
        load_sqlite(str(path), plan_world(count, networks=NETWORKS))
        rows.append(("sqlite", *timed_refresh(f"sqlite:///{path}")))
    import psycopg

    name = f"etl_bench_{int(time.time())}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as con:
        con.execute(f"CREATE DATABASE {name}")
    url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    try:
        with psycopg.connect(url, autocommit=True) as con:
            con.execute((SHARED / "compat" / "cowrieprocessor-postgres.sql").read_text())  # type: ignore[arg-type]
        load_postgres(url, plan_world(count, networks=NETWORKS, allow_missing=False))
        rows.append(("postgres", *timed_refresh(url)))
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as con:
            con.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    print(f"MaxMind-only refresh, {count} inventory IPs in every state (whole process)")
    print(f"{'database':<10} {'seconds':>8}  what it did")
    for database, seconds, line in rows:
        print(f"{database:<10} {seconds:>8.2f}  {line}")


if __name__ == "__main__":
    main()
