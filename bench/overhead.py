"""Overhead against the per-IP loop it replaces (SPEC 7), measured side by side in one run.

Identical copies of a sample database; the same simulators; whole processes timed (start-up
included); GreyNoise in enterprise mode for the refresh. Each side runs ROUNDS times, in
turns, each time on a fresh copy; the medians are compared (this machine's speed drifts).
Scenarios, each on a database as cowrieprocessor's loader leaves it (sessions of new IPs
unlinked, their addresses in raw_events); B also on a second shape, as cowrieprocessor's v16
migration left older databases (source_ip on every session):
  A:     10,000 IPs, simulators answering at once               (target: >= 10x faster)
  B:     2,000 IPs, GreyNoise 20 ms per request, Cymru 1 ms/line (target: >= 30x faster)
  B-v16: B on the migrated_v16 shape
Usage: python bench/overhead.py [A|B|B-v16 ...]
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from testbed.sim.process import running  # noqa: E402

KEY = "bench-key"
ROUNDS = 3
# name: (IPs, GreyNoise ms per request, Cymru ms per line, target ratio, the sample's --shape)
SCENARIOS = {
    "A": (10_000, 0.0, 0.0, 10.0, "loader"),
    "B": (2_000, 20.0, 1.0, 30.0, "loader"),
    "B-V16": (2_000, 20.0, 1.0, 30.0, "migrated_v16"),
}


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    env = {**os.environ, "GREYNOISE_API_KEY": KEY, "ETL_CONFIG": os.devnull}  # no ./etl.toml
    subprocess.run(command, check=True, cwd=ROOT, capture_output=True, env=env)
    return time.perf_counter() - started


def scenario(name: str, folder: Path) -> tuple[str, int, float, float, float]:
    ips, gn_ms, cymru_ms, target, shape = SCENARIOS[name]
    pristine = folder / f"{name}.sqlite"
    sample = [sys.executable, "-m", "testbed.sample", "--db", f"sqlite:///{pristine}", "--ips",
              str(ips), "--maxmind-dir", str(folder), "--maxmind-size", "realistic",
              "--shape", shape]  # fmt: skip
    subprocess.run(sample, check=True, capture_output=True)
    ours, theirs = folder / f"{name}-ours.sqlite", folder / f"{name}-baseline.sqlite"
    refreshes, baselines = [], []
    with (
        running("cymru", folder / "c.jsonl", "--latency-ms", str(cymru_ms)) as cy,
        running("greynoise", folder / "g.jsonl", "--key", KEY, "--latency-ms", str(gn_ms)) as gn,
    ):
        for _ in range(ROUNDS):
            shutil.copy(pristine, ours)
            shutil.copy(pristine, theirs)
            os.sync()  # the copies' writes are not the runs': flush them before timing
            refreshes.append(timed([sys.executable, "-m", "etl.refresh", "--db",
                                    f"sqlite:///{ours}", "--maxmind-dir", str(folder), "--cymru",
                                    cy.address, "--greynoise-url", gn.url, "--greynoise-mode",
                                    "enterprise", "--quiet"]))  # fmt: skip
            baselines.append(timed([sys.executable, str(ROOT / "bench" / "baseline_per_ip.py"),
                                    "--db", f"sqlite:///{theirs}", "--maxmind-dir", str(folder),
                                    "--cymru", cy.address, "--greynoise-url", gn.url]))  # fmt: skip
    baseline, refresh = statistics.median(baselines), statistics.median(refreshes)
    return name, ips, baseline, refresh, target


def main() -> None:
    names = [n.upper() for n in sys.argv[1:]] or list(SCENARIOS)
    print(f"{'scenario':<9} {'IPs':>6} {'baseline s':>11} {'refresh s':>10} {'ratio':>7}  target")
    with tempfile.TemporaryDirectory() as folder:
        for name in names:
            label, ips, baseline, refresh, target = scenario(name, Path(folder))
            label = {"B-V16": "B (v16)"}.get(label, label)
            ratio = baseline / refresh
            verdict = "ok" if ratio >= target else "MISSED"
            print(f"{label:<9} {ips:>6} {baseline:>11.2f} {refresh:>10.2f} {ratio:>6.1f}x  "
                  f">= {target:.0f}x {verdict}")  # fmt: skip


if __name__ == "__main__":
    main()
