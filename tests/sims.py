"""Processes for tests: the simulators (as the demo runs them) and our own entry points."""

import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from testbed.sim.process import Simulator, running

__all__ = ["Simulator", "run_module", "running", "write_lock_held"]


def run_module(
    module: str, *args: str, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m <module> ...`` to completion, capturing its output."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )


@contextmanager
def write_lock_held(path: Path) -> Iterator[None]:
    """Another process (the operator's loader) holds the SQLite write lock until the block
    ends, then lets it go without changing anything."""
    script = textwrap.dedent(f"""
        import sqlite3, sys
        con = sqlite3.connect({str(path)!r}, isolation_level=None, timeout=30)
        con.execute("BEGIN IMMEDIATE")
        print("locked", flush=True)
        sys.stdin.read()
        con.execute("ROLLBACK")
    """)
    holder = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdin is not None and holder.stdout is not None
    assert holder.stdout.readline().strip() == "locked"
    try:
        yield
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


# The count a stopped source's line ends with: the IPs it never sent (`Arrivals._not_asked`).
NOT_ASKED = re.compile(r" \(([\d,]+) of the ([\d,]+) to ask\)$")


def without_count(line: str) -> str:
    """A stop line without its count of the IPs not asked (which depends on timing)."""
    return NOT_ASKED.sub("", line)
