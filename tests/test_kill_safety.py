"""Kill safety: SIGKILL a refresh at seeded random moments; the database stays whole, and a
rerun ends in the same state as a run that was never interrupted (timestamps aside)."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.sims import Simulator, run_module, running

KEY = "kill-safety-key"
TRIALS = 6  # per journal mode (the kill moments: 3 random, 3 while it writes)
TIMESTAMPS = ("cached_at",)
# The refreshes run without coverage measurement: they are timed against kills, and the code
# they run is measured by the other tests.
ENV = {k: v for k, v in os.environ.items() if k != "COVERAGE_PROCESS_CONFIG"}
ENV["GREYNOISE_API_KEY"] = KEY


def normalized(path: Path) -> dict[str, Any]:
    """The database's content without the times a run stamps."""
    con = sqlite3.connect(path)
    con.row_factory = sqlite3.Row
    ips = {}
    for row in con.execute("SELECT * FROM ip_inventory"):
        enrichment = json.loads(row["enrichment"])
        for block in enrichment.values():
            if isinstance(block, dict):
                for key in TIMESTAMPS:
                    block.pop(key, None)
        ips[row["ip_address"]] = (
            row["current_asn"], row["first_seen"], row["last_seen"], row["session_count"],
            enrichment, row["enrichment_updated_at"] is None,
        )  # fmt: skip
    asns = {
        row["asn_number"]: (
            row["organization_name"],
            row["organization_country"],
            row["rir_registry"],
            row["unique_ip_count"],
            row["total_session_count"],
        )
        for row in con.execute("SELECT * FROM asn_inventory")
    }
    con.close()
    return {"ips": ips, "asns": asns}


def check_whole(path: Path, pristine_violations: set[tuple[Any, ...]]) -> None:
    """Integrity, foreign keys, parseable JSON, complete blocks."""
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    violations = set(con.execute("PRAGMA foreign_key_check").fetchall())
    assert violations <= pristine_violations  # only sessions of IPs not inventoried yet
    for ip, text in con.execute("SELECT ip_address, enrichment FROM ip_inventory"):
        enrichment = json.loads(text)
        assert isinstance(enrichment, dict), ip
        for name in ("validation", "maxmind", "cymru", "greynoise"):
            block = enrichment.get(name)
            if block is None:
                continue
            if name == "validation":
                assert set(block) == {"is_bogon", "reason"}, ip
            else:
                assert block["status"] in ("ok", "not_found", "error", "skipped"), ip
                assert "cached_at" in block, ip
    con.close()


@pytest.fixture(scope="module", params=["wal", "delete"])
def world(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[tuple[Path, Simulator, Simulator]]:
    """A sample file in each journal mode (WAL: as cowrieprocessor leaves it), simulators."""
    folder = tmp_path_factory.mktemp(f"kill-{request.param}")
    built = run_module(
        "testbed.sample", "--db", f"sqlite:///{folder / 'pristine.sqlite'}", "--ips", "250",
        "--maxmind-dir", str(folder), "--journal-mode", request.param,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    with (
        running("cymru", folder / "c.jsonl", "--latency-ms", "1") as cymru,
        running("greynoise", folder / "g.jsonl", "--key", KEY) as greynoise,
    ):
        yield folder, cymru, greynoise


def command(db: Path, folder: Path, cymru: Simulator, greynoise: Simulator) -> list[str]:
    return [sys.executable, "-m", "etl.refresh", "--db", f"sqlite:///{db}", "--maxmind-dir",
            str(folder), "--cymru", cymru.address, "--batch-size", "40", "--greynoise-url",
            greynoise.url, "--greynoise-rate", "60", "--commit-every", "20", "--quiet"]  # fmt: skip


def run_to_end(db: Path, folder: Path, cymru: Simulator, greynoise: Simulator) -> float:
    started = time.monotonic()
    subprocess.run(
        command(db, folder, cymru, greynoise), env=ENV,
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return time.monotonic() - started


def wait_for_writes(status: Path, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """Until the run's status file shows its first committed rows (or the run ended)."""
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        try:
            write = json.loads(status.read_text())["phases"].get("write", {})
        except (OSError, ValueError):
            write = {}
        if write.get("done", 0) > 0:
            return
        time.sleep(0.02)


def test_sigkill_at_random_moments(world: tuple[Path, Simulator, Simulator]) -> None:
    folder, cymru, greynoise = world
    pristine = folder / "pristine.sqlite"
    con = sqlite3.connect(pristine)
    pristine_violations = set(con.execute("PRAGMA foreign_key_check").fetchall())
    con.close()
    reference = folder / "reference.sqlite"
    shutil.copy(pristine, reference)
    duration = run_to_end(reference, folder, cymru, greynoise)
    expected = normalized(reference)
    rng = random.Random(20261128)
    killed_mid_run = 0
    before = normalized(pristine)["ips"]
    refreshed = {ip for ip, row in expected["ips"].items() if before.get(ip) != row}
    for trial in range(TRIALS):
        db = folder / f"trial-{trial}.sqlite"
        shutil.copy(pristine, db)
        status = folder / f"trial-{trial}.status.json"
        process = subprocess.Popen(
            [*command(db, folder, cymru, greynoise), "--status-file", str(status)], env=ENV,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        if trial % 2:  # at a random moment of the run
            time.sleep(rng.uniform(0.3, duration))
        else:  # while it writes, whatever the machine's load makes of its start-up
            wait_for_writes(status, process)
            time.sleep(rng.uniform(0.0, 0.2))
        process.send_signal(signal.SIGKILL)
        process.wait()
        check_whole(db, pristine_violations)
        # A kill landed mid-run when it left some, not all, of the refreshed rows final.
        final = {ip for ip, row in normalized(db)["ips"].items() if expected["ips"].get(ip) == row}
        killed_mid_run += 0 < len(final & refreshed) < len(refreshed)
        run_to_end(db, folder, cymru, greynoise)
        check_whole(db, pristine_violations)
        got = normalized(db)
        for part in ("ips", "asns"):
            keys = set(got[part]) | set(expected[part])
            diff = {k: (got[part].get(k), expected[part].get(k)) for k in keys}
            wrong = [(k, pair) for k, pair in diff.items() if pair[0] != pair[1]]
            assert not wrong, f"trial {trial}, {part}: {wrong[:3]}"
        db.unlink()
    assert killed_mid_run >= TRIALS // 3  # the kills did land while the run was writing
