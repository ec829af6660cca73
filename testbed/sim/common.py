"""What both simulators share: the request log, the start-up line, and fault selection."""

from __future__ import annotations

import json
import random
import signal
import sys
import threading
import time
from enum import StrEnum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
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


class LoopbackHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server bound to 127.0.0.1 that carries its simulator's state."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, handler: type[BaseHTTPRequestHandler], simulator: Any) -> None:
        super().__init__((HOST, port), handler)
        self.simulator = simulator

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away (killed, timed out) is normal here; report anything else."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def serve(server: LoopbackHTTPServer, log: RequestLog) -> None:
    """Announce ``server``'s port and serve until SIGTERM or SIGINT; then close ``log``."""

    def stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    announce(server.server_address[1])
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()
        log.close()


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
