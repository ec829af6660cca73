"""What both simulators share: the request log, the start-up line, and fault selection."""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from enum import StrEnum
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


class CymruFault(StrEnum):
    """Faults the Team Cymru simulator injects into a session."""

    drop = "drop"  # cut the connection mid-stream
    stall = "stall"  # stop answering halfway, for --stall-seconds
    silent = "silent"  # accept, read the queries, never send a byte
    garbage = "garbage"  # lines that are no answer
    garble = "garble"  # a garbled line in place of an answer
    refuse = "refuse"  # close at once
    first_then_stall = "first-then-stall"  # answer the first line of a session, then stall


class GreyNoiseFault(StrEnum):
    """Faults the GreyNoise simulator injects into a request."""

    server_error = "5xx"
    slow = "slow"
    reset = "reset"
    malformed = "malformed"
    throttled = "429"
    stall_after = "stall-after"  # answer the first STALL_AFTER requests, then hang


CYMRU_FAULTS = tuple(fault.value for fault in CymruFault)
GREYNOISE_FAULTS = tuple(fault.value for fault in GreyNoiseFault)


def parse_faults(kind: str | None, known: tuple[str, ...]) -> str | None:
    """Check a fault kind against the simulator's fault kinds."""
    if kind is not None and kind not in known:
        raise ValueError(f"unknown fault {kind!r}; choose one of {', '.join(known)}")
    return kind
