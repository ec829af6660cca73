"""``make bench``: every SPEC 7 benchmark in turn; their tables go to the terminal and, with the
machine, the versions and the date, to bench/results.md (copy it into the README's table).

Usage: python bench/run.py [NAME ...]   (names: overhead service_bound write_path scale
                                          cymru_phase maxmind_step; default: all)
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

BENCH = Path(__file__).resolve().parent
BENCHES = ("overhead", "service_bound", "write_path", "scale", "cymru_phase", "maxmind_step")
PACKAGES = ("duckdb", "polars", "maxminddb", "requests")


def machine() -> str:
    """Cores, memory, Python and the versions that matter."""
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    versions = ", ".join(f"{name} {version(name)}" for name in PACKAGES)
    try:
        postgres = subprocess.run(
            ["psql", "-h", "127.0.0.1", "-U", "postgres", "-tAc", "SHOW server_version"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        postgres = ""
    return (
        f"{os.cpu_count()} cores, {memory_gib:.0f} GiB, {platform.system()} "
        f"{platform.release()}; Python {platform.python_version()}, {versions}; "
        f"PostgreSQL {postgres or 'unknown'}"
    )


def main() -> None:
    names = sys.argv[1:] or list(BENCHES)
    sections = []
    for name in names:
        print(f"== {name}", flush=True)
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, str(BENCH / f"{name}.py")], capture_output=True, text=True, check=False
        )
        output = result.stdout.strip()
        print(output, flush=True)
        if result.returncode:
            print(result.stderr, file=sys.stderr)
            output += f"\n(failed with exit status {result.returncode})"
        minutes = (time.monotonic() - started) / 60
        sections.append(f"## {name} ({minutes:.1f} min)\n\n```\n{output}\n```\n")
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    header = f"# Benchmark results\n\n{stamp}: `python bench/run.py {' '.join(names)}`\n\n"
    (BENCH / "results.md").write_text(header + f"Machine: {machine()}\n\n" + "\n".join(sections))
    print(f"wrote {BENCH / 'results.md'}")


if __name__ == "__main__":
    main()
