"""A refresh disturbed as operators' databases disturb it (SPEC 2.3), beside an undisturbed one.

- SQLite (WAL, as cowrieprocessor leaves it): another process holds the write lock for
  HOLD seconds (default 30) once the run is well under way, as the loader does on a big log.
- PostgreSQL: every backend of the run (DuckDB's and the run lock's) is terminated mid-run.

Both runs start from copies of one sample database against the same simulators (GreyNoise at
150 requests/s, so the run lasts long enough to be disturbed). Prints wall time, rows written,
GreyNoise requests and Cymru sessions of each, whether an IP was asked twice, and whether the
disturbed run ended in the same state as the undisturbed one.
Usage: python bench/disturbed.py [IPS] [HOLD]    (defaults 3000 and 30)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from etl.db.database import Database  # noqa: E402
from etl.db.url import parse_database_url  # noqa: E402
from testbed.sample.scratch import scratch_database  # noqa: E402
from testbed.sim.process import Simulator, running  # noqa: E402

KEY = "bench-disturbed-key"
ENV = {**os.environ, "GREYNOISE_API_KEY": KEY, "ETL_CONFIG": os.devnull}  # no ./etl.toml
RATE = "150"


def sample(db_url: str, folder: Path, ips: int) -> None:
    subprocess.run(
        [sys.executable, "-m", "testbed.sample", "--db", db_url, "--ips", str(ips),
         "--maxmind-dir", str(folder), "--maxmind-size", "realistic"],
        check=True, capture_output=True,
    )  # fmt: skip


def state(db_url: str) -> dict[str, Any]:
    """Per IP: ASN, sessions and the blocks without their timestamps."""
    with Database(parse_database_url(db_url)) as db:
        rows = db.query_native("SELECT ip_address, current_asn, enrichment FROM ip_inventory")
    result = {}
    for ip, asn, enrichment in rows:
        blocks = json.loads(enrichment) if isinstance(enrichment, str) else enrichment
        for block in blocks.values():
            if isinstance(block, dict):
                block.pop("cached_at", None)
        result[ip] = (asn, json.dumps(blocks, sort_keys=True))
    return result


def run(
    db_url: str, folder: Path, cymru: Simulator, gn: Simulator, disturb: Callable[[], None]
) -> dict[str, Any]:
    """One refresh; ``disturb`` runs once the run has had 300 GreyNoise answers."""
    status, summary = folder / "status.json", folder / "summary.json"
    status.unlink(missing_ok=True)
    asked_before, sessions_before = len(gn.entries()), len(cymru.entries())
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "etl.refresh", "--db", db_url, "--maxmind-dir", str(folder),
         "--cymru", cymru.address, "--greynoise-url", gn.url, "--greynoise-rate", RATE,
         "--commit-every", "500", "--status-file", str(status), "--summary-json", str(summary)],
        env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    while process.poll() is None:
        try:
            done = json.loads(status.read_text())["phases"]["greynoise"]["done"]
        except (OSError, ValueError, KeyError):
            done = 0
        if done >= 300:
            disturb()
            break
        time.sleep(0.1)
    _, stderr = process.communicate()
    wall = time.monotonic() - started
    asked = Counter(ip for e in gn.entries()[asked_before:] for ip in e["ips"])
    result = json.loads(summary.read_text())
    waits = [line for line in stderr.splitlines() if "waiting for the database" in line]
    return {
        "exit": process.returncode,
        "wall": wall,
        "rows": result["upserted"],
        "requests": sum(asked.values()),
        "sessions": len(cymru.entries()) - sessions_before,
        "twice": sum(1 for n in asked.values() if n > 1),
        "notes": waits[:1] + [line for line in stderr.splitlines() if "taken again" in line],
    }


def hold_lock(path: Path, seconds: float) -> Callable[[], None]:
    def disturb() -> None:
        script = textwrap.dedent(f"""
            import sqlite3, time
            con = sqlite3.connect({str(path)!r}, isolation_level=None, timeout=60)
            con.execute("BEGIN IMMEDIATE")
            con.execute("CREATE TABLE IF NOT EXISTS loader_probe (at REAL)")
            con.execute("INSERT INTO loader_probe VALUES (?)", (time.time(),))
            time.sleep({seconds})
            con.execute("COMMIT")
        """)
        subprocess.Popen([sys.executable, "-c", script])

    return disturb


def terminate_backends(db_url: str) -> Callable[[], None]:
    def disturb() -> None:
        import psycopg

        with psycopg.connect(db_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )

    return disturb


def report(label: str, calm: dict[str, Any], busy: dict[str, Any], same: bool) -> None:
    for name, r in (("undisturbed", calm), (label, busy)):
        print(
            f"{name:<34} exit {r['exit']}  {r['wall']:6.1f} s  {r['rows']:>6} rows  "
            f"{r['requests']:>6} GreyNoise requests  {r['sessions']:>3} Cymru sessions  "
            f"{r['twice']} asked twice"
        )
    print(f"{'':<34} same final state: {same}; {' | '.join(busy['notes'])}")


def main() -> None:
    ips = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    hold = float(sys.argv[2]) if len(sys.argv) > 2 else 30.0
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        with (
            running("cymru", folder / "c.jsonl", "--latency-ms", "2") as cymru,
            running("greynoise", folder / "g.jsonl", "--key", KEY) as gn,
        ):
            pristine = folder / "pristine.sqlite"
            sample(f"sqlite:///{pristine}", folder, ips)
            calm, busy = folder / "calm.sqlite", folder / "busy.sqlite"
            shutil.copy(pristine, calm)
            shutil.copy(pristine, busy)
            first = run(f"sqlite:///{calm}", folder, cymru, gn, lambda: None)
            second = run(f"sqlite:///{busy}", folder, cymru, gn, hold_lock(busy, hold))
            same = state(f"sqlite:///{calm}") == state(f"sqlite:///{busy}")
            print(f"SQLite (WAL), {ips} IPs, GreyNoise {RATE}/s")
            report(f"write lock held {hold:g} s mid-run", first, second, same)
            with scratch_database("etl_calm") as calm_url:
                sample(calm_url, folder, ips)
                # A copy: a second sample would bring newer MaxMind files (a new build epoch).
                with scratch_database("etl_busy", copy_of=calm_url) as busy_url:
                    first = run(calm_url, folder, cymru, gn, lambda: None)
                    second = run(busy_url, folder, cymru, gn, terminate_backends(busy_url))
                    same = state(calm_url) == state(busy_url)
            print(f"PostgreSQL, {ips} IPs, GreyNoise {RATE}/s")
            report("every backend terminated mid-run", first, second, same)


if __name__ == "__main__":
    main()
