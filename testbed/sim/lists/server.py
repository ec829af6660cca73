"""The lists simulator: the sample world's lists (`testbed.sample.lists.world_lists`: they
cover its attackers; with ``--small``, a few random entries per list) served as their sources
serve them, on 127.0.0.1.

    /torbulkexitlist                         the Tor bulk exit list
    /cloud/<folder>/<folder>_ips_v4.txt      a provider's ranges (and _v6.txt); the folder as
                                             the cloud-range repository names it (googlecloud)
    /ip-ranges.json                          AWS
    /cloud.json                              Google Cloud
    /datacenters.csv                         the community datacenter list

Every answer has an ETag (its sha256) and a Last-Modified; a request whose If-None-Match
names the ETag gets 304. Faults, on every list or on the one ``--fault-list`` names:
``404``; ``slow`` (the answer waits ``--slow-seconds``); ``truncated`` (half the body, then
the connection closes, its Content-Length the whole); ``changed`` (each answer is a new
version: one more entry); ``html`` (a 200 with an HTML error page).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import threading
import time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from etl.sources.classification.fetch import CLOUD_FOLDERS
from etl.sources.classification.lists import DEFAULT_PROVIDERS
from testbed.sample.lists import SMALL, world_lists, write_lists
from testbed.sample.world import World
from testbed.sim.common import LoopbackHTTPServer, RequestLog, serve

FAULTS = ("404", "slow", "truncated", "changed", "html")


def routes(providers: tuple[str, ...] = DEFAULT_PROVIDERS) -> dict[str, str]:
    """URL path -> the list file it serves."""
    paths = {
        "/torbulkexitlist": "tor.txt",
        "/ip-ranges.json": "aws-ranges.json",
        "/cloud.json": "gcp-ranges.json",
        "/datacenters.csv": "datacenters.csv",
    }
    for provider in providers:
        folder = CLOUD_FOLDERS.get(provider, provider)
        for family in ("v4", "v6"):
            paths[f"/cloud/{folder}/{folder}_ips_{family}.txt"] = f"cloud-{provider}-{family}.txt"
    return paths


def url_options(base: str) -> list[str]:
    """The options of `honeypot-etl lists update` that point every list at the simulator at
    ``base`` (``http://127.0.0.1:PORT``)."""
    return ["--tor-url", f"{base}/torbulkexitlist", "--cloud-url", f"{base}/cloud",
            "--aws-url", f"{base}/ip-ranges.json", "--gcp-url", f"{base}/cloud.json",
            "--datacenters-url", f"{base}/datacenters.csv"]  # fmt: skip


class ListsSimulator:
    """The lists, their versions, the faults and the request log."""

    def __init__(
        self, folder: Path, fault: str | None, fault_list: str | None, slow_seconds: float,
        log: RequestLog,
    ) -> None:  # fmt: skip
        self.folder, self.fault, self.fault_list = folder, fault, fault_list
        self.slow_seconds, self.log = slow_seconds, log
        self.routes = routes()
        self.started = formatdate(time.time(), usegmt=True)
        self.served: dict[str, int] = {}  # answers per file (the changed fault's versions)
        self.lock = threading.Lock()

    def faulty(self, name: str) -> str | None:
        """The fault of list file ``name``'s request, if any."""
        if self.fault_list is None or name.startswith(self.fault_list):
            return self.fault
        return None

    def body(self, name: str, fault: str | None) -> bytes:
        """What list file ``name`` holds now (a new version per answer when it changes)."""
        data = (self.folder / name).read_bytes()
        if fault != "changed":
            return data
        with self.lock:
            version = self.served[name] = self.served.get(name, 0) + 1
        return changed(name, data, version)


def changed(name: str, data: bytes, version: int) -> bytes:
    """``data`` with one more entry, different for each ``version``."""
    if name.endswith(".json"):
        document = json.loads(data)
        key, field = ("prefixes", "ip_prefix") if "aws" in name else ("prefixes", "ipv4Prefix")
        document[key].append({field: f"198.18.{version % 256}.0/24", "region": "new",
                              "service": "new", "scope": "new"})  # fmt: skip
        return json.dumps(document).encode()
    if name.endswith(".csv"):
        return data + f'"198.18.{version % 256}.0/24","","","NewVendor"\n'.encode()
    line = f"198.18.{version % 256}.1" if name == "tor.txt" else f"198.18.{version % 256}.0/24"
    return data + f"{line}\n".encode()


class Handler(BaseHTTPRequestHandler):
    """GET of a list; 304 for a known ETag; the faults."""

    server: ListsServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log (the JSON log records requests)."""

    def do_GET(self) -> None:
        sim = self.server.simulator
        name = sim.routes.get(self.path.split("?", 1)[0])
        fault = sim.faulty(name) if name else None
        status = self._answer(sim, name, fault)
        sim.log.record(path=self.path, status=status, fault=fault,
                       conditional=self.headers.get("If-None-Match") is not None)  # fmt: skip

    def _answer(self, sim: ListsSimulator, name: str | None, fault: str | None) -> int:
        if name is None or fault == "404":
            return self._send(404, b"Not Found\n", "text/plain")
        if fault == "slow":
            time.sleep(sim.slow_seconds)
        if fault == "html":
            return self._send(200, b"<html><body>rate limited, try later</body></html>\n",
                              "text/html")  # fmt: skip
        data = sim.body(name, fault)
        etag = f'"{hashlib.sha256(data).hexdigest()[:32]}"'
        if self.headers.get("If-None-Match") == etag and fault != "truncated":
            return self._send(304, b"", None, {"ETag": etag, "Last-Modified": sim.started})
        if fault == "truncated":
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return 200
        return self._send(200, data, "text/plain", {"ETag": etag, "Last-Modified": sim.started})

    def _send(
        self, status: int, body: bytes, kind: str | None, headers: dict[str, str] | None = None
    ) -> int:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if kind:
            self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if status != 304:
            self.wfile.write(body)
        return status


class ListsServer(LoopbackHTTPServer):
    """The loopback HTTP server of the lists simulator."""

    simulator: ListsSimulator


def run(
    port: int,
    seed: int = 1,
    small: bool = False,
    fault: str | None = None,
    fault_list: str | None = None,
    slow_seconds: float = 5.0,
    log: Path | None = None,
) -> None:
    """Serve the lists on 127.0.0.1:``port`` until SIGTERM or SIGINT."""
    with tempfile.TemporaryDirectory(prefix="lists-sim-") as scratch:
        if small:
            write_lists(Path(scratch), seed, SMALL)
        else:
            world_lists(World(seed), Path(scratch))
        simulator = ListsSimulator(Path(scratch), fault, fault_list, slow_seconds, RequestLog(log))
        serve(ListsServer(port, Handler, simulator), simulator.log)
