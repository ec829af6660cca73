"""A whole refresh with Team Cymru and GreyNoise in memory: `refresh(transports=...)` takes
how the sources reach their services from its caller, so a policy test needs no simulator
process. The wire text is the services' own (the fakes of test_cymru_policy.py and
test_greynoise_policy.py); the database is a real SQLite file shaped as the loader leaves it.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

from etl.refresh.config import RefreshConfig
from etl.refresh.pipeline import refresh
from etl.refresh.sources import Transports
from etl.sources.greynoise.transport import HttpResponse
from tests.test_cymru_policy import BANNER, FakeCymru, Reply, as_row
from tests.test_greynoise_policy import NOISE, URL, ScriptedTransport, response
from tests.world import load_sqlite, plan_world

NETWORKS = ["89.160.0.0/17", "81.2.69.0/24", "216.160.64.0/18", "2.125.160.216/29"]


def asn_of(ip: str) -> int:
    """A stable AS number for ``ip`` (the fake service's routing table)."""
    return 64_512 + int(hashlib.sha256(ip.encode()).hexdigest()[:4], 16) % 100


def cymru_script(queries: list[str]) -> Reply:
    """Team Cymru's verbose bulk answer: each IP announced, each AS number registered."""
    rows = []
    for query in queries:
        if query.startswith("AS"):
            rows.append(as_row(query))
        else:
            asn = asn_of(query)
            prefix = f"{query}/{128 if ':' in query else 32}"
            rows.append(f"{asn:<7} | {query} | {prefix} | NL | ripencc | 2001-05-17 | AS-{asn}, NL")
    return Reply("\n".join([BANNER, *rows]) + "\n")


def greynoise_script(method: str, path: str, body: Any) -> HttpResponse:
    """GreyNoise community: every IPv4 address observed, classified malicious."""
    assert method == "GET" and path.startswith("/v3/community/")
    return response(200, {**NOISE, "ip": path.rsplit("/", 1)[1]})


def blocks(db: Path) -> dict[str, dict[str, Any]]:
    con = sqlite3.connect(db)
    rows = con.execute("SELECT ip_address, enrichment FROM ip_inventory").fetchall()
    con.close()
    return {ip: json.loads(text) for ip, text in rows if text and text.startswith("{")}


def test_a_whole_refresh_against_both_services_in_memory(
    compat_sqlite: Path, mmdb: dict[str, Path]
) -> None:
    world = plan_world(300, networks=NETWORKS)
    load_sqlite(str(compat_sqlite), world)
    cymru, greynoise = FakeCymru(cymru_script), ScriptedTransport(greynoise_script)
    config = RefreshConfig(
        db_url=f"sqlite:///{compat_sqlite}", maxmind_asn=mmdb["asn"], maxmind_city=mmdb["city"],
        greynoise_api_key="k", greynoise_url=URL, greynoise_rate=1000.0, quiet=True,
    )  # fmt: skip
    transports = Transports(cymru=cymru.connect, greynoise=greynoise)
    summary = refresh(config, transports=transports)
    assert summary.outcome == "finished" and summary.exit_code == 0
    rows = blocks(compat_sqlite)
    asked = {q for session in cymru.sessions for q in session if not q.startswith("AS")}
    looked_up = {p.rsplit("/", 1)[1] for _, p, _ in greynoise.sent}
    # Every address sent got its answer's block, with the fake's AS number and class.
    assert asked and looked_up
    for ip in asked:
        assert rows[ip]["cymru"]["asn"] == asn_of(ip) and rows[ip]["cymru"]["status"] == "ok"
    for ip in looked_up:
        assert rows[ip]["greynoise"]["classification"] == "malicious"
    assert not any(":" in ip for ip in looked_up)  # community: IPv4 only
    # The counts are the fakes' own.
    assert summary.cymru_sessions == len(cymru.sessions)
    assert summary.greynoise_requests == len(greynoise.sent) == summary.sources["greynoise"].ok
    assert summary.sources["cymru"].ok == len(asked)
    assert greynoise.closed  # the run closed what it was given, as it closes its own
    # A second run finds every IP fresh and asks neither service anything.
    again = refresh(config, transports=transports)
    assert again.selected == 0 and len(greynoise.sent) == summary.greynoise_requests
