"""Time relabelling after a list changed (SPEC 3.4, issue 27): a sample database whose every IP
is labelled, then one line more in the Tor list, then a refresh that relabels every row (no
service asked: Team Cymru and GreyNoise skipped, MaxMind fresh).

Printed per dialect: the rows, the first labelling run, the relabelling run and its phases.
The lists are `testbed.sample.lists`' at the real lists' sizes.
Usage: python bench/relabel.py [N] [sqlite|postgres ...]   (default: 100000 sqlite postgres)
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from etl.refresh.config import RefreshConfig  # noqa: E402
from etl.refresh.pipeline import refresh  # noqa: E402
from etl.report.summary import RunSummary  # noqa: E402
from testbed.sample.build import build_sample  # noqa: E402
from testbed.sample.lists import write_lists  # noqa: E402
from testbed.sample.scratch import scratch_database  # noqa: E402


def timed_run(url: str, folder: Path) -> tuple[float, RunSummary]:
    config = RefreshConfig(
        db_url=url, maxmind_dir=folder / "mm", lists_dir=folder / "lists",
        skip=frozenset({"cymru", "greynoise"}), quiet=True,
    )  # fmt: skip
    began = time.perf_counter()
    summary = refresh(config)
    return time.perf_counter() - began, summary


def measure(url: str, folder: Path, count: int, dialect: str) -> None:
    built = time.perf_counter()
    build_sample(url, count, 1, folder / "mm")
    write_lists(folder / "lists")
    print(f"{dialect}: sample of {count:,} IPs built in {time.perf_counter() - built:.1f} s")
    first, summary = timed_run(url, folder)
    print(f"  first run (MaxMind and labels): {first:.1f} s, {summary.upserted:,} rows written")
    with (folder / "lists" / "tor.txt").open("a") as handle:
        handle.write("198.18.0.1\n")  # a new version of one list
    again, summary = timed_run(url, folder)
    labels = summary.sources["classification"]
    phases = ", ".join(f"{name} {seconds:.2f}s" for name, seconds in summary.phase_seconds.items())
    print(
        f"  relabel after a list changed: {again:.1f} s for {labels.ok:,} rows relabelled "
        f"(MaxMind asked about {summary.sources['maxmind'].queried:,}); {phases}"
    )


def main(count: int, dialects: list[str]) -> None:
    for dialect in dialects:
        with tempfile.TemporaryDirectory() as scratch:
            folder = Path(scratch)
            if dialect == "sqlite":
                measure(f"sqlite:///{folder / 'h.sqlite'}", folder, count, dialect)
            else:
                with scratch_database("etl_bench_relabel") as url:
                    measure(url, folder, count, dialect)


if __name__ == "__main__":
    args = sys.argv[1:]
    size = int(args[0]) if args and args[0].isdigit() else 100_000
    chosen = [a for a in args if a in ("sqlite", "postgres")] or ["sqlite", "postgres"]
    main(size, chosen)
