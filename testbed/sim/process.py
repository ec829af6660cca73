"""Run a simulator as a child process on a free loopback port (for the demo, tests, benches)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Simulator:
    """A running simulator: its process, port and request log."""

    process: subprocess.Popen[str]
    port: int
    log: Path

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT`` (the form ``--cymru`` takes)."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (the form ``--greynoise-url`` takes)."""
        return f"http://127.0.0.1:{self.port}"

    def entries(self) -> list[dict[str, Any]]:
        """Every request or session recorded so far."""
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line]


@contextmanager
def running(module: str, log: Path, *args: str) -> Iterator[Simulator]:
    """Run ``python -m testbed.sim.<module> --port 0 ...`` for the block, then stop it with
    SIGTERM."""
    process = subprocess.Popen(
        [sys.executable, "-m", f"testbed.sim.{module}", "--port", "0", "--log", str(log), *args],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline().strip()
        if not first.startswith("listening on 127.0.0.1:"):
            raise RuntimeError(f"the {module} simulator did not start (said {first!r})")
        yield Simulator(process, int(first.rsplit(":", 1)[1]), log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
