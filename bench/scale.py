"""Scale (SPEC 7): full refreshes of 100,000 and 1,000,000 IPs, on SQLite and on PostgreSQL.

Each database is built by ``testbed.sample`` (not timed; every state, ~6.6 sessions per IP), then
``python -m etl.refresh`` runs as a whole process against both simulators answering at once,
GreyNoise in enterprise mode. Measured: wall time and the process's peak memory (its maximum
resident set, from the kernel's rusage of that child).
Targets: time(1M) <= 12 x time(100K); peak memory under 2 GB.
Usage: python bench/scale.py [SMALL LARGE] [sqlite|postgres ...]   (default 100000 1000000)
PostgreSQL on 127.0.0.1:5432 with trust auth; each run gets its own database, dropped after.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from testbed.sample.scratch import scratch_database  # noqa: E402
from testbed.sim.process import running  # noqa: E402

KEY = "bench-key"
MAX_GROWTH = 1.2  # time may grow at most 1.2x as fast as the size (12x for 10x the IPs)
MAX_PEAK_MB = 2048


def measured(command: list[str], log: Path) -> tuple[float, float]:
    """Run ``command``; return (wall seconds, peak resident memory in MB) of that process."""
    env = {**os.environ, "GREYNOISE_API_KEY": KEY}
    with log.open("w") as out:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=out)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"{' '.join(command[:4])} failed:\n{log.read_text()[-2000:]}")
    return seconds, usage.ru_maxrss / 1024  # ru_maxrss is in KiB on Linux


@contextmanager
def database(dialect: str, folder: Path, ips: int) -> Iterator[str]:
    """A fresh database URL for one size (a new PostgreSQL database, dropped afterwards)."""
    if dialect == "sqlite":
        yield f"sqlite:///{folder / f'scale-{ips}.sqlite'}"
        return
    with scratch_database(f"etl_scale_{ips}") as url:
        yield url


def refresh_once(dialect: str, ips: int, folder: Path) -> tuple[float, float, str]:
    """Build a sample of ``ips`` IPs, refresh it; return (seconds, peak MB, summary line)."""
    maxmind = folder / f"maxmind-{ips}"
    with database(dialect, folder, ips) as url:
        sample = [sys.executable, "-m", "testbed.sample", "--db", url, "--ips", str(ips),
                  "--maxmind-dir", str(maxmind), "--maxmind-size", "realistic",
                  "--replace"]  # fmt: skip
        subprocess.run(sample, check=True, capture_output=True, cwd=ROOT)
        os.sync()  # the sample's writes are not the refresh's: flush them before timing
        log = folder / f"refresh-{dialect}-{ips}.log"
        with (
            running("cymru", folder / "c.jsonl") as cymru,
            running("greynoise", folder / "g.jsonl", "--key", KEY) as greynoise,
        ):
            command = [sys.executable, "-m", "etl.refresh", "--db", url, "--maxmind-dir",
                       str(maxmind), "--cymru", cymru.address, "--greynoise-url", greynoise.url,
                       "--greynoise-mode", "enterprise", "--config", os.devnull]  # fmt: skip
            seconds, peak = measured(command, log)
    selected = next(line for line in log.read_text().splitlines() if line.startswith("selected"))
    return seconds, peak, selected


def main() -> None:
    args = sys.argv[1:]
    sizes = [int(a) for a in args if a.isdigit()] or [100_000, 1_000_000]
    dialects = [a for a in args if not a.isdigit()] or ["sqlite", "postgres"]
    print("scale: full refresh (all sources, simulators at once), whole process")
    print(f"{'database':<9} {'IPs':>9} {'seconds':>8} {'peak MB':>8}  selected")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for dialect in dialects:
            times = []
            for ips in sizes:
                seconds, peak, selected = refresh_once(dialect, ips, folder)
                times.append(seconds)
                memory = "ok" if peak < MAX_PEAK_MB else "MISSED"
                print(f"{dialect:<9} {ips:>9,} {seconds:>8.1f} {peak:>8.0f}  {selected} "
                      f"(memory < {MAX_PEAK_MB} MB {memory})", flush=True)  # fmt: skip
            if len(times) == 2:
                ratio, limit = times[1] / times[0], MAX_GROWTH * sizes[1] / sizes[0]
                verdict = "ok" if ratio <= limit else "MISSED"
                print(f"{dialect:<9} time({sizes[1]:,}) / time({sizes[0]:,}) = {ratio:.1f} "
                      f"(target <= {limit:.0f}) {verdict}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
