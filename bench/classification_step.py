"""Time the classification step (SPEC 3.4, issue 27): N addresses labelled against every list.

The lists are `testbed.sample.lists`'s, at the real lists' order of size (2,000 Tor exits;
4,000 v4 and 600 v6 ranges for each of six cloud providers; 10,000 AWS and 1,000 Google Cloud
prefixes with region and service; 50,000 datacenter rows). The addresses: 98% IPv4, 2% IPv6, a
quarter of them inside some range, each with an AS organization. Timed: reading the lists
(once per run), and the step (`classify` and the blocks), best of 3. Target: under 2 s for
1,000,000 addresses.
Usage: python bench/classification_step.py [N ...]   (default: 1000000)
"""

from __future__ import annotations

import ipaddress
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from etl.refresh.validation import with_validation  # noqa: E402
from etl.sources.classification.lists import read_lists  # noqa: E402
from etl.sources.classification.steps import classification_blocks, classify  # noqa: E402
from testbed.sample.lists import write_lists  # noqa: E402

TARGET_SECONDS = 2.0
ORGS = ["COMCAST-7922, US", "AMAZON-02, US", "Verizon Wireless", "Hetzner Online GmbH",
        "Deutsche Telekom AG", "CHINANET-BACKBONE", None]  # fmt: skip


def addresses(count: int, networks: list[str], seed: int = 11) -> pl.DataFrame:
    """``count`` addresses: a quarter inside ``networks``, 2% IPv6, the rest anywhere."""
    rng = np.random.default_rng(seed)
    v6 = count // 50
    inside = count // 4
    chosen = rng.choice(len(networks), inside)
    texts = [str(ipaddress.ip_network(networks[i])[1]) for i in chosen.tolist()]
    texts += [
        str(ipaddress.IPv4Address(int(v)))
        for v in rng.integers(1 << 24, 223 << 24, count - inside - v6)
    ]
    texts += [
        str(ipaddress.IPv6Address((0x2400 << 112) | int(v) << 40))
        for v in rng.integers(0, 1 << 62, v6)
    ]
    orgs = [ORGS[i] for i in rng.integers(0, len(ORGS), count).tolist()]
    return pl.DataFrame({"ip": texts, "org": orgs}, schema={"ip": pl.String, "org": pl.String})


def main(sizes: list[int]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        written = write_lists(Path(folder))
        began = time.perf_counter()
        lists = read_lists(Path(folder))
        read = time.perf_counter() - began
        print(f"lists: {lists.ranges.height:,} ranges, {lists.tor.height:,} Tor exits; "
              f"read in {read:.2f} s (once per run)")  # fmt: skip
        networks = [n for name, found in written.items() if name != "tor" for n in found
                    if ":" not in n]  # fmt: skip
        for count in sizes:
            frame = with_validation(addresses(count, networks))
            best, kinds = float("inf"), None
            for _ in range(3):
                began = time.perf_counter()
                classified = classify(frame, lists, pl.col("org"))
                classification_blocks(classified, lists, frame["org"], datetime.now(UTC))
                best = min(best, time.perf_counter() - began)
                kinds = classified["ip_type"].value_counts(sort=True)
            assert kinds is not None
            shown = ", ".join(f"{t} {n:,}" for t, n in kinds.iter_rows())
            verdict = "ok" if count < 1_000_000 or best < TARGET_SECONDS else "MISSED"
            print(f"{count:,} addresses: {best:.2f} s (best of 3; target < {TARGET_SECONDS} s "
                  f"for 1,000,000: {verdict}); {shown}")  # fmt: skip


if __name__ == "__main__":
    main([int(arg) for arg in sys.argv[1:]] or [1_000_000])
