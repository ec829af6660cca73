"""Time the Team Cymru phase for N IPs (default 10,000) against the simulator.

The phase as the pipeline runs it: bulk sessions of 500 (2 concurrent), streaming parse, and
the cymru block built for every IP. Printed for the simulator answering at once and with a
delay per answered line, next to the bound the service sets (chunks x 500 x L / sessions).
Usage: python bench/cymru_phase.py [N] [LATENCY_MS ...]
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from etl.sources.cymru.client import CymruClient, CymruSettings  # noqa: E402
from etl.sources.cymru.steps import cymru_results  # noqa: E402
from testbed.sample.world import World  # noqa: E402
from testbed.sim.process import running  # noqa: E402


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    latencies = [float(x) for x in sys.argv[2:]] or [0.0, 5.0]
    ips = World(1).attacking_ips(count, np.random.default_rng(11))
    settings = CymruSettings(host="127.0.0.1", port=0)
    print(f"Team Cymru phase, {count} IPs, batches of {settings.batch_size}, "
          f"{settings.sessions} sessions")  # fmt: skip
    print(
        f"{'ms/line':>8} {'seconds':>8} {'bound':>8} {'ratio':>6} {'sessions':>9} {'answered':>9}"
    )
    with tempfile.TemporaryDirectory() as folder:
        for latency in latencies:
            log = Path(folder) / f"cymru-{latency}.jsonl"
            with running("cymru", log, "--latency-ms", str(latency)) as sim:
                client = CymruClient(CymruSettings(host="127.0.0.1", port=sim.port))
                started = time.perf_counter()
                answered = 0
                for batch in client.lookup(ips):
                    answered += cymru_results(batch, datetime.now(UTC)).height - len(batch.failed)
                seconds = time.perf_counter() - started
            chunks = math.ceil(count / settings.batch_size)
            bound = chunks * settings.batch_size * latency / 1000 / settings.sessions
            ratio = f"{seconds / bound:.3f}" if bound else "-"
            print(f"{latency:>8.1f} {seconds:>8.2f} {bound:>8.2f} {ratio:>6} "
                  f"{client.sessions:>9} {answered:>9}")  # fmt: skip


if __name__ == "__main__":
    main()
