"""The loop this project replaces, for side-by-side benchmarks (SPEC 7).

One IP at a time: geoip2 lookups (ASN and City), one whois session per IP MaxMind has no ASN
for (a single ``-v <ip>`` query), one HTTP request per IP to GreyNoise (``GET /v3/ip/{ip}``),
and a commit every 100 rows, written with plain per-row SQL through the database driver.
It picks the same stale IPs as the refresh (so both do the same work) and writes the same
blocks, in the simplest form such a loop would have.

Usage: python bench/baseline_per_ip.py --db URL --maxmind-dir DIR --cymru HOST:PORT
                                       --greynoise-url URL   (key in GREYNOISE_API_KEY)
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sqlite3
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import geoip2.database
import geoip2.errors
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from etl.core.vocabulary import SOURCES, Source  # noqa: E402
from etl.db.database import Database  # noqa: E402
from etl.db.select import SelectionRules, select_stale  # noqa: E402
from etl.db.url import parse_database_url  # noqa: E402
from etl.refresh.config import RefreshConfig  # noqa: E402
from etl.sources.maxmind.source import MaxMindSource  # noqa: E402
from etl.sources.maxmind.steps import open_maxmind  # noqa: E402


def whois(host: str, port: int, ip: str) -> dict[str, Any]:
    """One session, one query: what the old client did for every IP MaxMind lacked."""
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(f" -v {ip}\n".encode())
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    rows = [line.split("|") for line in data.decode().splitlines()[1:] if "|" in line]
    if not rows or rows[0][0].strip() == "NA":
        return {"status": "not_found"}
    fields = [f.strip() for f in rows[-1]]  # the old client let the last row win
    return {"asn": int(fields[0]), "asn_org": fields[6], "country": fields[3],
            "registry": fields[4], "prefix": fields[2], "status": "ok"}  # fmt: skip


def stale_ips(db_url: str, maxmind_dir: Path, key: str) -> list[str]:
    """The same selection as the refresh, so that both do the same work."""
    config = RefreshConfig(db_url=db_url, maxmind_dir=maxmind_dir, greynoise_api_key=key)
    maxmind = MaxMindSource(open_maxmind(directory=maxmind_dir))
    version = maxmind.version
    maxmind.close()
    with Database(parse_database_url(db_url)) as db:
        rules = SelectionRules(
            datetime.now(UTC), config.freshness, frozenset(SOURCES), {Source.MAXMIND: version}
        )
        return list(select_stale(db, rules)["ip"].to_list())


class Loop:
    """The per-IP enrichment of the old job."""

    def __init__(self, maxmind_dir: Path, cymru: str, greynoise_url: str, key: str) -> None:
        self.asn = geoip2.database.Reader(str(maxmind_dir / "GeoLite2-ASN.mmdb"))
        self.city = geoip2.database.Reader(str(maxmind_dir / "GeoLite2-City.mmdb"))
        host, port = cymru.rsplit(":", 1)
        self.cymru = (host, int(port))
        self.greynoise_url, self.key = greynoise_url, key
        self.http = requests.Session()

    def enrich(self, ip: str) -> tuple[dict[str, Any], int | None]:
        stamp = datetime.now(UTC).isoformat()
        blocks: dict[str, Any] = {}
        asn = None
        try:
            found = self.asn.asn(ip)
            asn = found.autonomous_system_number
            city = self.city.city(ip)
            blocks["maxmind"] = {"asn": asn, "asn_org": found.autonomous_system_organization,
                                 "country": city.country.iso_code, "city": city.city.name,
                                 "status": "ok", "cached_at": stamp}  # fmt: skip
        except (geoip2.errors.AddressNotFoundError, ValueError):
            blocks["maxmind"] = {"status": "not_found", "cached_at": stamp}
        if asn is None:
            try:
                blocks["cymru"] = {**whois(*self.cymru, ip), "cached_at": stamp}
                asn = blocks["cymru"].get("asn")
            except OSError:
                blocks["cymru"] = {"status": "error", "cached_at": stamp}
        if ":" not in ip:
            answer = self.http.get(
                f"{self.greynoise_url}/v3/ip/{ip}", headers={"key": self.key}, timeout=30
            )
            status = "ok" if answer.status_code == 200 else "not_found"
            blocks["greynoise"] = {"status": status, "cached_at": stamp}
        return blocks, asn


def main() -> None:
    parser = argparse.ArgumentParser(description="per-IP baseline refresh")
    parser.add_argument("--db", required=True)
    parser.add_argument("--maxmind-dir", type=Path, required=True)
    parser.add_argument("--cymru", required=True)
    parser.add_argument("--greynoise-url", required=True)
    args = parser.parse_args()
    key = os.environ.get("GREYNOISE_API_KEY", "")
    url = parse_database_url(args.db)
    ips = stale_ips(args.db, args.maxmind_dir, key)
    loop = Loop(args.maxmind_dir, args.cymru, args.greynoise_url, key)
    if url.dialect == "sqlite":
        assert url.sqlite_path is not None
        con: Any = sqlite3.connect(url.sqlite_path)
        mark = "?"
    else:
        import psycopg

        con = psycopg.connect(url.libpq_url)
        mark = "%s"
    for count, ip in enumerate(ips, start=1):
        blocks, asn = loop.enrich(ip)
        stamp = datetime.now(UTC).isoformat()
        if asn is not None:
            con.execute(
                f"INSERT INTO asn_inventory (asn_number, first_seen, last_seen, enrichment, "
                f"created_at, updated_at) VALUES ({mark}, {mark}, {mark}, '{{}}', {mark}, {mark}) "
                "ON CONFLICT (asn_number) DO NOTHING",
                (asn, stamp, stamp, stamp, stamp),
            )
        con.execute(
            f"UPDATE ip_inventory SET enrichment = {mark}, current_asn = {mark}, "
            f"enrichment_updated_at = {mark} WHERE ip_address = {mark}",
            (json.dumps(blocks), asn, stamp, ip),
        )
        if count % 100 == 0:
            con.commit()
    con.commit()
    con.close()
    print(f"baseline: {len(ips)} IPs, one at a time")


if __name__ == "__main__":
    main()
