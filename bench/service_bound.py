"""Is the refresh bound by the services? GreyNoise at R requests/s, Cymru at L ms per line.

A SQLite database whose N IPv4 addresses have sessions and no inventory row (so every source
must be asked) is refreshed by the whole ``python -m etl.refresh`` process against both
simulators. Printed: the whole process against the services' bound of SPEC 7,
max(N / R, Cymru lines x L / sessions), with GreyNoise alone and with both services at once
(the Cymru latency is chosen so that Cymru's bound is about 3/4 of GreyNoise's).
Usage: python bench/service_bound.py [N] [R]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from etl.db.database import Database  # noqa: E402
from etl.db.url import parse_database_url  # noqa: E402
from testbed.sample.mmdb_files import write_maxmind_files  # noqa: E402
from testbed.sample.scratch import new_sqlite_file  # noqa: E402
from testbed.sample.world import World  # noqa: E402
from testbed.sim.process import running  # noqa: E402

KEY = "bench-key"
SESSIONS = 2  # Cymru sessions at once (the refresh's default)
TARGET = 1.05  # wall time within 5% of the services' bound


def build(folder: Path, count: int) -> str:
    """A SQLite database of ``count`` IPv4 sources with sessions and no inventory row."""
    world = World(1)
    write_maxmind_files(world, folder, "realistic")  # GeoLite2-sized trees (SPEC 7)
    ips = [ip for ip in world.attacking_ips(count * 2, np.random.default_rng(5)) if ":" not in ip]
    ips = ips[:count]
    now = datetime.now(UTC)
    seen = [now - timedelta(hours=n % 500) for n in range(count)]
    sessions = pl.DataFrame(
        {
            "session_id": [f"b{n:011d}" for n in range(count)],
            "source_ip": ips,
            "first_event_at": seen,
            "last_event_at": seen,
        }
    )
    path = folder / "bound.sqlite"
    new_sqlite_file(path)  # WAL, as operators' files are
    url = f"sqlite:///{path}"
    with Database(parse_database_url(url)) as db:
        db.ensure_schema()
        db.append("session_summaries", sessions)
    return url


class Bench:
    """Runs ``python -m etl.refresh`` on fresh copies of one database."""

    def __init__(self, folder: Path, count: int, rate: float) -> None:
        self.folder, self.rate = folder, rate
        self.url = build(folder, count)
        self.pristine = (folder / "bound.sqlite").read_bytes()

    def run(self, cymru_ms: float | None, greynoise: bool) -> dict[str, Any]:
        """One refresh from the pristine copy; Cymru at ``cymru_ms`` per line (None: skipped)."""
        (self.folder / "bound.sqlite").write_bytes(self.pristine)
        summary = self.folder / "summary.json"
        gn_args = ("--key", KEY, "--rate", str(self.rate))
        cy_args = ("--latency-ms", f"{cymru_ms or 0:.3f}")
        with (
            running("greynoise", self.folder / "gn.jsonl", *gn_args) as gn,
            running("cymru", self.folder / "cy.jsonl", *cy_args) as cy,
        ):
            command = [sys.executable, "-m", "etl.refresh", "--db", self.url, "--maxmind-dir",
                       str(self.folder), "--greynoise-url", gn.url, "--greynoise-rate",
                       str(self.rate), "--cymru", cy.address, "--summary-json", str(summary),
                       "--quiet"]  # fmt: skip
            if cymru_ms is None:
                command += ["--skip", "cymru"]
            if not greynoise:
                command += ["--skip", "greynoise"]
            started = time.perf_counter()
            env = {**os.environ, "GREYNOISE_API_KEY": KEY, "ETL_CONFIG": os.devnull}
            subprocess.run(command, check=True, env=env, cwd=ROOT)
            elapsed = time.perf_counter() - started
        result: dict[str, Any] = json.loads(summary.read_text())
        result["process_seconds"] = elapsed
        return result


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    rate = float(sys.argv[2]) if len(sys.argv) > 2 else 50.0
    gn_bound = count / rate
    with tempfile.TemporaryDirectory() as name:
        bench = Bench(Path(name), count, rate)
        alone = bench.run(cymru_ms=None, greynoise=True)
        trial = bench.run(cymru_ms=20.0, greynoise=False)["phase_seconds"]["cymru"]
        latency = 20.0 * 0.75 * gn_bound / trial  # Cymru alone: about 3/4 of GreyNoise's bound
        both = bench.run(cymru_ms=latency, greynoise=True)
    lines = both["sources"]["cymru"]["queried"] + both["asn_details"]
    cymru_bound = lines * latency / 1000 / SESSIONS
    bound = max(gn_bound, cymru_bound)
    print(f"{count} IPv4 IPs never enriched; GreyNoise community at {rate:g} requests/s; "
          f"Cymru {latency:.1f} ms per line, {both['sources']['cymru']['queried']} IPs and "
          f"{both['asn_details']} ASNs in {SESSIONS} sessions")  # fmt: skip
    print(f"{'whole process':<30} {'seconds':>8} {'bound':>7} {'ratio':>6}  target")
    for label, seconds, limit in (
        ("GreyNoise alone", alone["process_seconds"], gn_bound),
        ("GreyNoise and Cymru at once", both["process_seconds"], bound),
    ):
        ratio = seconds / limit
        verdict = "ok" if ratio <= TARGET else "MISSED"
        print(f"{label:<30} {seconds:>8.2f} {limit:>7.2f} {ratio:>6.3f}  <= {TARGET:.2f} {verdict}")


if __name__ == "__main__":
    main()
