"""Time the MaxMind step (open both databases + with_maxmind) on GeoLite2-sized files.

The files are testbed.sample's ``realistic`` ones (~2M ASN / ~4M City search-tree nodes, like the
real GeoLite2 files). Compared: the step today (maxminddb's C reader, each distinct address
once, one join) and the search-tree reader of our own it replaced, run from git history
(commit 9f70dd6: etl/mmdb.py decoded the whole tree into a series and walked it per column).
Each number is the best of 3 runs in this process.
Usage: python bench/maxmind_step.py [N ...]   (default: 3000 100000)
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import maxminddb
import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from etl.refresh.config import RefreshConfig  # noqa: E402
from etl.refresh.validation import with_validation  # noqa: E402
from etl.sources.maxmind.steps import open_maxmind, with_maxmind  # noqa: E402
from testbed.sample.mmdb_files import write_maxmind_files  # noqa: E402
from testbed.sample.world import World  # noqa: E402

OLD_COMMIT = "9f70dd6"
NOW = datetime.now(UTC)


def old_step_module() -> types.ModuleType:
    """etl/maxmind.py of OLD_COMMIT, importing etl/mmdb.py of OLD_COMMIT (both from git; the
    package's layout then)."""
    modules = {}
    for name in ("mmdb", "maxmind"):
        source = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{OLD_COMMIT}:etl/{name}.py"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        module = types.ModuleType(f"etl.{name}")
        sys.modules[f"etl.{name}"] = module  # the old maxmind.py imports etl.mmdb
        exec(compile(source, f"{OLD_COMMIT}:etl/{name}.py", "exec"), module.__dict__)
        modules[name] = module
    del sys.modules["etl.mmdb"], sys.modules["etl.maxmind"]
    return modules["maxmind"]


def best_of(runs: int, step: Callable[[], pl.DataFrame]) -> tuple[float, pl.DataFrame]:
    times, out = [], pl.DataFrame()
    for _ in range(runs):
        started = time.perf_counter()
        out = step()
        times.append(time.perf_counter() - started)
    return min(times), out


def main() -> None:
    counts = [int(x) for x in sys.argv[1:]] or [3000, 100_000]
    world = World(1)
    old = old_step_module()
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        asn_path, city_path = write_maxmind_files(world, Path(folder), "realistic")
        built = time.perf_counter() - started
        nodes = []
        for path in (asn_path, city_path):
            with maxminddb.open_database(str(path)) as reader:
                nodes.append(reader.metadata().node_count)
        print(f"MaxMind step (open + with_maxmind), realistic files: ASN {nodes[0]:,} nodes, "
              f"City {nodes[1]:,} nodes (written in {built:.1f} s); best of 3")  # fmt: skip
        print(f"{'IPs':>8} {'tree reader s':>14} {'maxminddb s':>12} {'ratio':>6}  same blocks")
        for count in counts:
            ips = world.attacking_ips(count, np.random.default_rng(count))
            frame = with_validation(pl.DataFrame({"ip": ips, "stale_maxmind": True}))

            def new_step(frame: pl.DataFrame = frame) -> pl.DataFrame:
                databases = open_maxmind(asn=asn_path, city=city_path)
                try:
                    return with_maxmind(frame, databases, NOW)
                finally:
                    databases.close()

            def old_step(frame: pl.DataFrame = frame) -> pl.DataFrame:
                config: Any = RefreshConfig(maxmind_asn=asn_path, maxmind_city=city_path)
                databases = old.open_maxmind(config)
                try:
                    return old.with_maxmind(frame, databases, NOW)  # type: ignore[no-any-return]
                finally:
                    databases.close()

            old_seconds, old_out = best_of(3, old_step)
            new_seconds, new_out = best_of(3, new_step)
            same = old_out["maxmind"].equals(new_out["maxmind"])
            print(f"{count:>8,} {old_seconds:>14.3f} {new_seconds:>12.3f} "
                  f"{old_seconds / new_seconds:>5.1f}x  {same}")  # fmt: skip


if __name__ == "__main__":
    main()
