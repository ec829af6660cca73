"""The labels in a refresh (SPEC 3.4, issue 27 item 3): every selected IP gets its
``ip_classification`` block from the lists on disk; a rerun selects nothing; after a list
changes, every labelled row is relabelled, only its labels block is written, and no service is
asked. Team Cymru and GreyNoise run in memory (`refresh(transports=...)`), so a question sent
to them is counted."""

from __future__ import annotations

import ipaddress
import json
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

from etl.refresh.config import RefreshConfig
from etl.refresh.pipeline import refresh
from etl.refresh.sources import Transports
from etl.report.summary import RunSummary
from etl.sources.classification.lists import read_lists
from testbed.sample.build import build_sample
from testbed.sample.lists import SMALL, write_lists
from tests.conftest import Run
from tests.test_cymru_policy import FakeCymru
from tests.test_greynoise_policy import URL, ScriptedTransport
from tests.test_in_memory_refresh import NETWORKS, cymru_script, greynoise_script
from tests.world import load_sqlite, plan_world


def rows(db: Path) -> dict[str, tuple[dict[str, Any], str | None]]:
    con = sqlite3.connect(db)
    found = con.execute("SELECT ip_address, enrichment, enrichment_updated_at FROM ip_inventory")
    result = {ip: (json.loads(text), updated) for ip, text, updated in found if text}
    con.close()
    return result


def snapshots(db: Path) -> dict[str, tuple[str | None, str | None]]:
    """Each session: (source_ip, snapshot_ip_type)."""
    con = sqlite3.connect(db)
    found = con.execute("SELECT session_id, source_ip, snapshot_ip_type FROM session_summaries")
    result = {session: (ip, kind) for session, ip, kind in found}
    con.close()
    return result


def test_labels_follow_the_lists_and_ask_no_service(
    compat_sqlite: Path, mmdb: dict[str, Path], tmp_path: Path
) -> None:
    world = plan_world(200, networks=NETWORKS)
    load_sqlite(str(compat_sqlite), world)
    lists = tmp_path / "lists"
    write_lists(lists, seed=4, sizes=SMALL)
    cymru, greynoise = FakeCymru(cymru_script), ScriptedTransport(greynoise_script)
    config = RefreshConfig(
        db_url=f"sqlite:///{compat_sqlite}", maxmind_asn=mmdb["asn"], maxmind_city=mmdb["city"],
        greynoise_api_key="k", greynoise_url=URL, greynoise_rate=1000.0, quiet=True,
        lists_dir=lists,
    )  # fmt: skip

    def run(max_ips: int | None = None) -> RunSummary:
        chosen = replace(config, max_ips=max_ips)
        return refresh(chosen, transports=Transports(cymru=cymru.connect, greynoise=greynoise))

    con = sqlite3.connect(compat_sqlite)  # a type the loader copied: never replaced
    con.execute("UPDATE session_summaries SET snapshot_ip_type = 'MOBILE' WHERE rowid % 7 = 0")
    con.commit()
    con.close()
    loaded = snapshots(compat_sqlite)
    first = run()
    assert first.exit_code == 0
    labelled = {ip: blocks for ip, (blocks, _) in rows(compat_sqlite).items()
                if "ip_classification" in blocks}  # fmt: skip
    assert first.sources["classification"].ok == len(labelled) > 0
    block = next(iter(labelled.values()))["ip_classification"]
    assert block["status"] == "ok" and set(block["lists"]) == set(read_lists(lists).versions)
    # for the metrics: each list's age (fetched just now), none old, none missing
    assert set(first.list_ages) == set(block["lists"]) and max(first.list_ages.values()) < 600

    asked = (len(cymru.sessions), len(greynoise.sent))
    # The rows whose AS organization came from Team Cymru during the run (MaxMind had none)
    # were labelled with it before they were written: the next run finds nothing stale.
    from_cymru = {ip: blocks for ip, blocks in labelled.items()
                  if blocks.get("cymru", {}).get("asn_org") and not blocks["maxmind"].get("asn_org")}  # fmt: skip
    assert from_cymru and all(
        b["ip_classification"]["as_org"] == b["cymru"]["asn_org"] for b in from_cymru.values()
    )
    assert run().selected == 0
    assert (len(cymru.sessions), len(greynoise.sent)) == asked

    before, labelled_once = rows(compat_sqlite), snapshots(compat_sqlite)
    with (lists / "tor.txt").open("a") as handle:
        handle.write(f"{next(iter(labelled))}\n")  # a labelled IP becomes a Tor exit
    third = run(max_ips=5)  # --ips counts what a source must look up, not relabelling
    after = rows(compat_sqlite)
    assert (len(cymru.sessions), len(greynoise.sent)) == asked  # no service asked
    assert third.selected == len(labelled) and third.sources["classification"].ok == len(labelled)
    tor_ip = next(iter(labelled))
    assert after[tor_ip][0]["ip_classification"]["ip_type"] == "tor"

    # Every session of a labelled IP got its type where it had none, but "unknown"; a type
    # there before (the loader's, or the first labels') is never replaced by a relabel.
    def type_of(rows_now: dict[str, tuple[dict[str, Any], str | None]], ip: str) -> str | None:
        kind = rows_now[ip][0].get("ip_classification", {}).get("ip_type")
        return None if kind == "unknown" else kind

    filled = 0
    for session, (ip, kind) in snapshots(compat_sqlite).items():
        if loaded[session][1] is not None:
            assert kind == loaded[session][1], session  # the loader's
        elif ip in labelled:
            once = labelled_once[session][1]
            assert once == type_of(before, ip), (session, ip)
            assert kind == (once if once is not None else type_of(after, ip)), (session, ip)
            filled += kind is not None
    assert filled > 0
    for ip, (blocks, updated) in after.items():
        old_blocks, old_updated = before[ip]
        # only the labels changed; enrichment_updated_at is the other sources' clock
        assert {k: v for k, v in blocks.items() if k != "ip_classification"} == {
            k: v for k, v in old_blocks.items() if k != "ip_classification"
        }
        assert updated == old_updated


def test_on_postgresql_a_rerun_selects_nothing_and_a_changed_list_relabels(
    pg_url: str, tmp_path: Path, run: Run
) -> None:
    # PostgreSQL keeps the block as jsonb, its keys in its own order: the lists still compare.
    build_sample(pg_url, 120, 3, tmp_path / "mm")
    lists = tmp_path / "lists"
    write_lists(lists, seed=4)  # the real lists' sizes: some of the 120 IPs are covered
    args = ("--db", pg_url, "--maxmind-dir", str(tmp_path / "mm"), "--lists-dir", str(lists),
            "--skip", "cymru", "--skip", "greynoise", "--summary-json", str(tmp_path / "s.json"))  # fmt: skip

    def labelled() -> int:
        code, out = run(*args)
        assert code == 0, out
        return int(json.loads((tmp_path / "s.json").read_text())["sources"]["classification"]["ok"])

    first = labelled()
    assert first > 100
    import psycopg

    with psycopg.connect(pg_url) as con:
        found = con.execute(
            "SELECT enrichment::jsonb -> 'ip_classification', ip_types FROM ip_inventory"
        ).fetchall()
    # ip_types: the distinct types of the row's labels and its type, but unknown (SPEC 3.4)
    typed = 0
    for block, types in found:
        if block is None:
            assert types == []
            continue
        expected = {label["type"] for label in block["labels"]} | {block["ip_type"]}
        assert types == sorted(expected - {"unknown"}), block
        typed += bool(types)
    assert typed > 0
    assert labelled() == 0
    (lists / "datacenters.csv").write_text(
        (lists / "datacenters.csv").read_text() + '"203.0.113.0/24","","","NewVendor"\n'
    )
    assert labelled() == first


def test_the_sample_worlds_lists_label_its_own_attackers(tmp_path: Path) -> None:
    """The lists of the sample world (what the lists simulator serves and `make demo` fetches)
    cover its attackers: every type, Tor exits inside a cloud range, a range of one provider
    inside another's, AWS regions, and the residential heuristic on the world's AS names; and
    each IP gets the type its AS's kind stands for."""
    from etl.core.vocabulary import Source
    from testbed.sample.lists import world_lists
    from testbed.sample.world import World

    db = tmp_path / "h.sqlite"
    build_sample(f"sqlite:///{db}", 3000, seed=1, maxmind_dir=tmp_path / "mm")
    world = World(1)
    written = world_lists(world, tmp_path / "lists")
    config = RefreshConfig(
        db_url=f"sqlite:///{db}", maxmind_dir=tmp_path / "mm", lists_dir=tmp_path / "lists",
        skip=frozenset({Source.CYMRU, Source.GREYNOISE}), quiet=True,
    )  # fmt: skip
    assert refresh(config).exit_code == 0
    blocks = {ip: b["ip_classification"] for ip, (b, _) in rows(db).items()
              if "ip_classification" in b}  # fmt: skip
    types = [block["ip_type"] for block in blocks.values()]
    counts = {kind: types.count(kind) for kind in set(types)}
    assert set(counts) == {"tor", "cloud", "datacenter", "residential", "unknown"}, counts
    assert min(counts.values()) >= 10, counts
    providers = {block["provider"] for block in blocks.values() if block["ip_type"] == "cloud"}
    assert len(providers) >= 5, providers

    def lists_of(block: dict[str, Any]) -> list[str]:
        return [label["list"] for label in block["labels"]]

    tor_in_cloud = [b for b in blocks.values()
                    if b["ip_type"] == "tor" and any(n.startswith("cloud-") for n in lists_of(b))]  # fmt: skip
    two_providers = [b for b in blocks.values()
                     if len({n.split("-")[1] for n in lists_of(b) if n.startswith("cloud-")}) > 1]  # fmt: skip
    assert tor_in_cloud and two_providers
    assert any(b.get("region") for b in blocks.values() if b.get("provider") == "aws")
    tor = set(written["tor"])
    known_clouds = {13335, 15169}  # Cloudflare's and Google's prefixes: in the cloud lists
    for ip, block in blocks.items():
        prefix = world.route(ipaddress.ip_address(ip))
        assert prefix is not None
        owner = world.systems[prefix.origins[0]] if prefix.origins else None
        kind = owner.kind if owner else ""
        # The AS organization the heuristic read (MaxMind's, else a stored Team Cymru one)
        named = bool(block.get("as_org"))
        assert named or not prefix.in_maxmind_asn, (ip, block)
        if ip in tor:
            expected: tuple[str, ...] = ("tor",)
        elif kind == "CLOUD" or (owner and owner.number in known_clouds):
            expected = ("cloud",)  # before the datacenter rows that repeat cloud ranges
        elif kind in ("HOSTING", "DC"):  # a tenth not in the list: its name excludes it
            expected = ("datacenter", "unknown") if prefix.network.version == 4 else ("unknown",)
        elif kind in ("ISP", "NET"):
            expected = ("residential",) if named else ("unknown",)
        elif kind in ("AS", "BACKBONE"):
            expected = ("unknown",)
        else:  # unrouted, or the awkward names of the protocol references
            expected = ("unknown", "residential")
        assert block["ip_type"] in expected, (ip, kind, block)
