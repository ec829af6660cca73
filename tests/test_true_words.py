"""True words (issue 25, items 5 and 6): a run that leaves stale IPs says so and how many,
never that every IP is fresh; --ip touches only the IPs named and their own ASNs. Through the
real command line, against the simulators."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import Run
from tests.sims import run_module, running

KEY = "true-words-test-key"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 600-IP sample (stale IPs, and asn_inventory rows whose registration data is stale)."""
    folder = tmp_path_factory.mktemp("words")
    result = run_module(
        "testbed.sample", "--db", f"sqlite:///{folder / 'h.sqlite'}", "--ips", "600",
        "--maxmind-dir", str(folder),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return folder


@pytest.fixture
def folder(world: Path, tmp_path: Path) -> Path:
    """A copy of the sample for one test."""
    for name in ("h.sqlite", "GeoLite2-ASN.mmdb", "GeoLite2-City.mmdb"):
        shutil.copy(world / name, tmp_path / name)
    return tmp_path


def refresh(folder: Path, *args: str) -> tuple[int, str]:
    """Run ``python -m etl.refresh`` on the copy; its exit code and all it printed."""
    result = run_module(
        "etl.refresh", "--db", f"sqlite:///{folder / 'h.sqlite'}", "--maxmind-dir", str(folder),
        *args, env={**os.environ, "GREYNOISE_API_KEY": KEY},
    )  # fmt: skip
    return result.returncode, result.stdout + result.stderr


def asn_rows(folder: Path) -> list[tuple[object, ...]]:
    con = sqlite3.connect(folder / "h.sqlite")
    try:
        return con.execute("SELECT * FROM asn_inventory ORDER BY asn_number").fetchall()
    finally:
        con.close()


def asked(entries: list[dict[str, object]]) -> list[str]:
    """Every line the Cymru simulator was asked, over all sessions."""
    return [str(query) for entry in entries for query in entry["queries"]]  # type: ignore[attr-defined]


def test_ip_not_in_the_database_asks_and_writes_nothing(folder: Path, tmp_path: Path) -> None:
    before = asn_rows(folder)
    with running("cymru", tmp_path / "cy.jsonl") as cy:
        code, out = refresh(folder, "--cymru", cy.address, "--skip", "greynoise",
                            "--ip", "8.8.8.8")  # fmt: skip
        queries = asked(cy.entries())
    assert code == 0, out
    assert queries == []  # no AS lookup for an IP that is not there
    assert asn_rows(folder) == before
    assert "every IP is fresh" not in out
    assert "nothing to refresh" in out and "are not in sqlite:///" in out
    assert "8.8.8.8" in out


def test_ip_asks_only_about_its_own_asns(folder: Path, tmp_path: Path) -> None:
    con = sqlite3.connect(folder / "h.sqlite")
    ip = con.execute(
        "SELECT ip_address FROM ip_inventory WHERE current_asn IS NOT NULL "
        "ORDER BY ip_address LIMIT 1"
    ).fetchone()[0]
    con.close()
    with running("cymru", tmp_path / "cy.jsonl") as cy:
        code, out = refresh(folder, "--cymru", cy.address, "--skip", "greynoise", "--ip", ip)
        queries = asked(cy.entries())
    assert code == 0, out
    con = sqlite3.connect(folder / "h.sqlite")
    (enrichment,) = con.execute(
        "SELECT enrichment FROM ip_inventory WHERE ip_address = ?", (ip,)
    ).fetchone()
    con.close()
    blocks = json.loads(enrichment)
    own = {blocks["maxmind"].get("asn"), *blocks.get("cymru", {}).get("asns", [])} - {None}
    as_lines = {q for q in queries if q.startswith("AS")}
    assert as_lines <= {f"AS{n}" for n in own}, (ip, own, sorted(as_lines)[:10])
    assert "--ip: only the 1 IP(s) named are refreshed" in out


def test_a_spent_daily_budget_says_how_many_ips_are_due(folder: Path, tmp_path: Path) -> None:
    with (
        running("cymru", tmp_path / "cy.jsonl") as cy,
        running("greynoise", tmp_path / "gn.jsonl", "--key", KEY) as gn,
    ):
        args = ("--cymru", cy.address, "--greynoise-url", gn.url, "--greynoise-rate", "500",
                "--greynoise-daily-budget", "20")  # fmt: skip
        first = refresh(folder, *args)
        code, out = refresh(folder, *args)
    assert first[0] == 0 and code == 0, first[1] + out
    status = run_module(
        "etl.status", "--db", f"sqlite:///{folder / 'h.sqlite'}", "--maxmind-dir", str(folder),
        "--json",
    )  # fmt: skip
    due = json.loads(status.stdout)["sources"]["greynoise"]["due"]
    assert due > 100
    assert "every IP is fresh" not in out
    assert f"{due:,} IPs are due for GreyNoise, not asked: its daily budget is spent" in out, out


def test_ip_not_in_the_database_is_said_so_not_every_ip_fresh(folder: Path) -> None:
    code, out = refresh(folder, "--skip", "cymru", "--skip", "greynoise",
                        "--ip", "8.8.8.8", "--ip", "192.0.2.77")  # fmt: skip
    assert code == 0, out
    assert "every IP is fresh" not in out
    line = next(line for line in out.splitlines() if "named by --ip" in line)
    assert line.endswith(
        f"2 of the 2 IP(s) named by --ip are not in sqlite:///{folder / 'h.sqlite'} (neither in "
        "ip_inventory nor in session_summaries): 8.8.8.8, 192.0.2.77"
    ), line


def test_without_maxmind_files_the_ips_due_for_it_are_counted_with_why(
    run: Run, sample_world: tuple[Path, Path], tmp_path: Path
) -> None:
    db = tmp_path / "h.sqlite"
    shutil.copy(sample_world[0], db)
    empty = tmp_path / "no-maxmind"
    empty.mkdir()
    args = ("--db", f"sqlite:///{db}", "--maxmind-dir", str(empty),
            "--skip", "cymru", "--skip", "greynoise")  # fmt: skip
    first = run(*args)  # the new IPs of unlinked sessions get their rows
    code, out = run(*args)
    assert first[0] == 0 and code == 0, first[1] + out
    assert "every IP is fresh" not in out
    assert re.search(r"[\d,]+ IPs are due for MaxMind, not asked: no MaxMind database", out), out
