"""GreyNoise API simulator (``python -m testbed.sim.greynoise``).

Endpoints and literal bodies of shared/protocols/greynoise.md:
- ``GET /v3/community/{ip}``: 200 / 404 / 400 (IPv6, non-routable, malformed);
- ``POST /v3/ip[?quick=true]`` with ``{"ips": [...]}`` (at most 10,000) and
  ``GET /v3/ip/{ip}``: enterprise items, ``request_metadata.ips_not_found``;
- ``GET /ping``: ``{"message": "pong", "expiration": ..., "offering": ...}`` (401 for a wrong
  key; not billed, not paced, no fault);
- ``key`` header checked when ``--key`` is set (401), a token bucket of ``--rate`` requests/s
  (throttling 429 with Retry-After in seconds, as an HTTP-date, or absent), a daily limit of
  Searches (``--daily-limit``, the daily-limit 429 body; billing in `testbed.sim.greynoise.quota`);
- the JSON-lines log: per request its method, path, ``quick``, IPs, status and the
  ``searches`` it was billed;
- faults on a ``--fault-rate`` share of requests: ``5xx``, ``slow``, ``reset``, ``malformed``,
  ``429``; ``stall-after``: the first `STALL_AFTER` requests are answered, then each one hangs
  (for an hour: a service that answers some requests, then stalls; the client's timeout and
  breaker end it).
"""

from __future__ import annotations

import bisect
import contextlib
import ipaddress
import json
import math
import socket
import struct
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from testbed.sample.world import World
from testbed.sim.common import (
    GREYNOISE_FAULTS,
    FaultPlan,
    LoopbackHTTPServer,
    RequestLog,
    parse_faults,
    serve,
)
from testbed.sim.greynoise.bodies import (
    INVALID_IPV4,
    INVALID_PARAMETER,
    NOT_OBSERVED,
    SERVER_ERROR,
    THROTTLED,
    UNAUTHORIZED,
    community_body,
    daily_limit_body,
    enterprise_item,
)
from testbed.sim.greynoise.quota import BILLED_STATUSES, DailyLimit, TokenBucket, searches_billed

FAULTS = GREYNOISE_FAULTS
STALL_AFTER = 20  # requests the stall-after fault answers before it hangs
HANG_SECONDS = 3600.0  # how long a request hangs in the stall-after fault
MAX_MULTI = 10_000


Response = tuple[int, dict[str, Any] | bytes, dict[str, str]]  # status, body, headers


def _requested(path: str, body: bytes, multi: bool, ips: list[str]) -> Response | None:
    """Put the request's IPs into ``ips``; a 400 when a multi-IP body is not valid."""
    if not multi:
        ips.append(path.rsplit("/", 1)[1])
        return None
    try:
        requested = json.loads(body)["ips"]
        if not isinstance(requested, list) or len(requested) > MAX_MULTI:
            raise ValueError
    except (ValueError, KeyError, TypeError):
        return 400, INVALID_PARAMETER, {}
    ips.extend(str(ip) for ip in requested)
    return None


class GreyNoiseSimulator:
    """The state shared by all request handlers."""

    def __init__(
        self,
        world: World,
        *,
        key: str | None = None,
        rate: float | None = None,
        daily_limit: int | None = None,
        latency_ms: float = 0.0,
        faults: FaultPlan | None = None,
        retry_after: str = "seconds",
        slow_seconds: float = 5.0,
        log: RequestLog | None = None,
    ) -> None:
        self.world = world
        self.key = key
        self.bucket = TokenBucket(rate)
        self.daily_limit = daily_limit
        self.today = DailyLimit(daily_limit)
        self.latency = latency_ms / 1000
        self.faults = faults or FaultPlan(None, 0.0, 0)
        self.retry_after = retry_after
        self.slow_seconds = slow_seconds
        self.log = log or RequestLog(None)
        self.requests = 0
        self._counting = threading.Lock()

    def counted(self) -> int:
        """Count a request that passed the key and the limits; its number."""
        with self._counting:
            self.requests += 1
            return self.requests

    def retry_after_header(self, wait: float) -> dict[str, str]:
        """The Retry-After header for a throttling 429, in the configured style."""
        seconds = max(1, math.ceil(wait))
        if self.retry_after == "date":
            return {"Retry-After": formatdate(time.time() + seconds + 1, usegmt=True)}
        if self.retry_after == "none":
            return {}
        return {"Retry-After": str(seconds)}


# IPv4 space that is not globally routable (Python 3.11's ``is_global`` is False there); the
# service answers 400 for these. As sorted integer ranges: a lookup is one bisect, not an
# `ipaddress` object (10,000 IPs per request).
_NOT_GLOBAL_V4 = sorted(
    (int(net.network_address), int(net.broadcast_address))
    for net in map(
        ipaddress.IPv4Network,
        (
            "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
            "172.16.0.0/12", "192.0.0.0/29", "192.0.0.170/31", "192.0.2.0/24",
            "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24",
            "240.0.0.0/4",
        ),
    )
)  # fmt: skip
_NOT_GLOBAL_STARTS = [start for start, _ in _NOT_GLOBAL_V4]


def _routable_ipv4(text: str) -> bool:
    """A globally routable IPv4 address written in its canonical form."""
    try:
        packed = socket.inet_pton(socket.AF_INET, text)
    except (OSError, ValueError):
        return False
    if socket.inet_ntop(socket.AF_INET, packed) != text:
        return False
    value = int.from_bytes(packed, "big")
    index = bisect.bisect_right(_NOT_GLOBAL_STARTS, value) - 1
    return index < 0 or value > _NOT_GLOBAL_V4[index][1]


class Handler(BaseHTTPRequestHandler):
    """One keep-alive HTTP connection to the simulator."""

    protocol_version = "HTTP/1.1"
    # Buffered: headers and body leave in one write (flushed after each request). Unbuffered,
    # they go as two segments and Nagle plus the client's delayed ACK add ~40 ms per request.
    wbufsize = 1 << 16
    server: GreyNoiseServer

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log (the JSON log records requests)."""

    # -- responses ---------------------------------------------------------------------------
    def _send(
        self, status: int, body: dict[str, Any] | bytes, headers: dict[str, str] | None = None
    ) -> None:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def _reset(self) -> None:
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        self.close_connection = True

    # -- request flow ------------------------------------------------------------------------
    def do_GET(self) -> None:
        """Community lookups and the single-IP enterprise lookup."""
        self._serve("GET")

    def do_POST(self) -> None:
        """Enterprise multi lookups."""
        self._serve("POST")

    def _serve(self, method: str) -> None:
        sim = self.server.simulator
        parts = urlsplit(self.path)
        quick = parse_qs(parts.query).get("quick", [""])[-1].lower() == "true"
        ips: list[str] = []
        body: bytes = b""
        if method == "POST":
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
        bill = Bill()
        status, response, headers = self._route(sim, method, parts.path, quick, body, ips, bill)
        searches = bill.settle(sim.today, status)
        sim.log.record(
            method=method,
            path=parts.path,
            quick=quick,
            ips=ips,
            status=status,
            searches=searches,
            authenticated=self.headers.get("key") is not None,
        )
        if status == 0:
            self._reset()
            return
        self._send(status, response, headers)

    def _route(
        self,
        sim: GreyNoiseSimulator,
        method: str,
        path: str,
        quick: bool,
        body: bytes,
        ips: list[str],
        bill: Bill,
    ) -> Response:
        if method == "GET" and path == "/ping":
            return self._ping(sim)
        community = method == "GET" and path.startswith("/v3/community/")
        single = method == "GET" and path.startswith("/v3/ip/")
        multi = method == "POST" and path == "/v3/ip"
        if not (community or single or multi):
            return 404, {"message": "Not Found"}, {}
        refused = _requested(path, body, multi, ips)
        if refused is not None:
            return refused
        bill.searches = searches_billed(len(ips), quick, enterprise=not community)
        refused, fault = self._gate(sim, bill)
        if refused is not None:
            return refused
        if community:
            if not _routable_ipv4(ips[0]):
                return 400, INVALID_IPV4, {}
            status, answer = community_body(ips[0], sim.world.greynoise(ips[0]))
        else:
            answer = self._enterprise(sim, ips, quick)
            status = 200
            if single:
                found = answer["data"]
                answer = found[0] if found else {"ip": ips[0], "message": NOT_OBSERVED}
                status = 200 if found else 404
        if fault == "malformed":
            return status, json.dumps(answer).encode()[: max(5, len(json.dumps(answer)) // 2)], {}
        return status, answer, {}

    def _ping(self, sim: GreyNoiseSimulator) -> Response:
        """GreyNoise's ``/ping``: the key's plan and expiry (a year from today), or 401."""
        if sim.key is not None and self.headers.get("key") != sim.key:
            return 401, UNAUTHORIZED, {}
        expiration = (datetime.now(UTC) + timedelta(days=365)).date().isoformat()
        return 200, {"message": "pong", "expiration": expiration, "offering": "enterprise"}, {}

    def _gate(self, sim: GreyNoiseSimulator, bill: Bill) -> tuple[Response | None, str | None]:
        """Key, rate limit, daily limit (the request's Searches) and faults: a refusal, or
        None; and the fault drawn."""
        key = self.headers.get("key")
        if sim.key is not None and key != sim.key:
            return (401, UNAUTHORIZED, {}), None
        wait = sim.bucket.take()
        fault = sim.faults.draw()
        if wait or fault == "429":
            return (429, THROTTLED, sim.retry_after_header(wait or 1.0)), fault
        bill.taken = sim.today.take(bill.searches)
        if not bill.taken:
            plan = "unauthenticated" if key is None else "community"
            return (429, daily_limit_body(sim.daily_limit or 0, plan), {}), fault
        if sim.latency:
            time.sleep(sim.latency)
        if fault == "stall-after" and sim.counted() > STALL_AFTER:
            time.sleep(HANG_SECONDS)
        if fault == "slow":
            time.sleep(sim.slow_seconds)
        elif fault == "reset":
            return (0, b"", {}), fault
        elif fault == "5xx":
            return (500, SERVER_ERROR, {}), fault
        return None, fault

    @staticmethod
    def _enterprise(sim: GreyNoiseSimulator, ips: list[str], quick: bool) -> dict[str, Any]:
        data, not_found = [], []
        for address in dict.fromkeys(ips):
            record = sim.world.greynoise(address) if _routable_ipv4(address) else None
            if record is None:
                not_found.append(address)
            else:
                data.append(enterprise_item(address, record, quick))
        return {
            "data": data,
            "request_metadata": {
                "restricted_fields": [],
                "message": "ok",
                "ips_not_found": not_found,
            },
        }


@dataclass
class Bill:
    """The Searches of one request, and whether the daily limit took them."""

    searches: int = 0
    taken: bool = False

    def settle(self, today: DailyLimit, status: int) -> int:
        """The Searches billed for an answer of ``status``; those of a refused or faulted
        request go back to the day."""
        if not self.taken:
            return 0
        if status in BILLED_STATUSES:
            return self.searches
        today.give_back(self.searches)
        return 0


class GreyNoiseServer(LoopbackHTTPServer):
    """The loopback HTTP server of the GreyNoise simulator."""

    simulator: GreyNoiseSimulator


def run(
    port: int,
    seed: int = 1,
    latency_ms: float = 0.0,
    fault: str | None = None,
    fault_rate: float = 1.0,
    log: Path | None = None,
    key: str | None = None,
    rate: float | None = None,
    daily_limit: int | None = None,
    retry_after: str = "seconds",
    slow_seconds: float = 5.0,
) -> None:
    """Serve the GreyNoise simulator on 127.0.0.1:``port`` until SIGTERM or SIGINT."""
    simulator = GreyNoiseSimulator(
        World(seed),
        key=key,
        rate=rate,
        daily_limit=daily_limit,
        latency_ms=latency_ms,
        faults=FaultPlan(parse_faults(fault, FAULTS), fault_rate, seed),
        retry_after=retry_after,
        slow_seconds=slow_seconds,
        log=RequestLog(log),
    )
    serve(GreyNoiseServer(port, Handler, simulator), simulator.log)
