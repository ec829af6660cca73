"""What both simulators share: the request log, the start-up line, and fault selection."""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

HOST = "127.0.0.1"


class RequestLog:
    """JSON lines, one per request or session, flushed as written (tests read it live)."""

    def __init__(self, path: Path | None) -> None:
        self._file: TextIO | None = path.open("a", encoding="utf-8") if path else None
        self._lock = threading.Lock()

    def record(self, **entry: Any) -> None:
        """Append one entry with a timestamp."""
        if self._file is None:
            return
        line = json.dumps({"time": round(time.time(), 6), **entry}, ensure_ascii=False)
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()

    def close(self) -> None:
        """Close the file."""
        if self._file is not None:
            self._file.close()
            self._file = None


class FaultPlan:
    """Whether a session or request gets the configured fault (seeded, so runs repeat)."""

    def __init__(self, kind: str | None, rate: float, seed: int) -> None:
        self.kind = kind
        self.rate = rate
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def draw(self) -> str | None:
        """The fault for the next session or request, or None."""
        if self.kind is None:
            return None
        with self._lock:
            return self.kind if self._rng.random() < self.rate else None


def announce(port: int, out: TextIO = sys.stdout) -> None:
    """The first stdout line every simulator prints."""
    out.write(f"listening on {HOST}:{port}\n")
    out.flush()


def simulator_parser(
    prog: str, description: str, port: int, faults: tuple[str, ...], unit: str
) -> argparse.ArgumentParser:
    """The options every simulator has; ``unit`` is what a fault applies to (session, request)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--port", type=int, default=port, help="TCP port (0: any free port)")
    parser.add_argument("--seed", type=int, default=1, help="world seed (same as etl.sample)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay of every answer")
    parser.add_argument("--fault", choices=faults, help="fault to inject")
    parser.add_argument("--fault-rate", type=float, default=1.0, help=f"share of faulty {unit}s")
    parser.add_argument("--log", type=Path, help=f"JSON lines file: one entry per {unit}")
    return parser


def parse_faults(kind: str | None, known: tuple[str, ...]) -> str | None:
    """Check a ``--fault`` value against the simulator's fault kinds."""
    if kind is not None and kind not in known:
        raise SystemExit(f"error: unknown --fault {kind!r}; choose one of {', '.join(known)}")
    return kind
