"""A clean stop on PostgreSQL (issue 25, item 8): Ctrl-C, SIGTERM or a failure drops the run's
own staging tables on its way out, so the next run does not take it for a killed one; the ASN
counts the stopped run left partial are still recomputed for every ASN by the next run, told
by the run lock's mark (`etl.db.lock`), not by tables left behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from etl.db.url import parse_database_url
from tests.sims import run_module, running

KEY = "clean-stop-key"


def stages(pg_url: str) -> list[str]:
    """The tables of ours a run stages into, left in the database."""
    with psycopg.connect(pg_url) as con:
        rows = con.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = 'public' AND table_name LIKE '\\_etl\\_%'"
        ).fetchall()
    return sorted(str(name) for (name,) in rows)


def wrong_counts(pg_url: str) -> int:
    """asn_inventory rows whose unique_ip_count is not the count of their IPs."""
    with psycopg.connect(pg_url) as con:
        row = con.execute(
            "SELECT count(*) FROM asn_inventory AS a WHERE a.unique_ip_count IS DISTINCT FROM "
            "(SELECT count(*) FROM ip_inventory AS i WHERE i.current_asn = a.asn_number)"
        ).fetchone()
    assert row is not None
    return int(row[0])


def greynoise_done(status: Path) -> int:
    try:
        data = json.loads(status.read_text())
    except (OSError, ValueError):
        return 0
    return int(data.get("phases", {}).get("greynoise", {}).get("done", 0))


@pytest.mark.postgres
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_a_stopped_run_drops_its_stages_and_the_next_recounts_every_asn(
    tmp_path: Path, pg_url: str, stop: signal.Signals
) -> None:
    built = run_module("testbed.sample", "--db", pg_url, "--ips", "400",
                       "--maxmind-dir", str(tmp_path))  # fmt: skip
    assert built.returncode == 0, built.stderr
    status = tmp_path / "status.json"
    with running("greynoise", tmp_path / "g.jsonl", "--key", KEY, "--rate", "40") as gn:
        run = subprocess.Popen(
            [sys.executable, "-m", "etl.refresh", "--db", pg_url, "--maxmind-dir", str(tmp_path),
             "--skip", "cymru", "--greynoise-url", gn.url, "--greynoise-rate", "40",
             "--commit-every", "20", "--status-file", str(status)],
            env={**os.environ, "GREYNOISE_API_KEY": KEY},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 90
        while greynoise_done(status) < 40:  # some chunks of answers are committed
            assert run.poll() is None and time.monotonic() < deadline, "the run ended first"
            time.sleep(0.1)
        during = stages(pg_url)
        run.send_signal(stop)
        _, stderr = run.communicate(timeout=60)
    assert run.returncode == 1, stderr
    assert during  # the run was staging when it was stopped
    assert stages(pg_url) == [], stderr[-2000:]  # ... and dropped its stages on its way out
    # A stop that lands in a DuckDB query is an interruption, not a crash.
    assert "interrupted" in stderr and "Traceback" not in stderr, stderr[-2000:]
    # Its chunks changed IPs' ASNs, whose counts only its last step would have redone.
    assert wrong_counts(pg_url) > 0
    # The next run selects nothing, so it touches no ASN; it still recomputes them all.
    after = run_module("etl.refresh", "--db", pg_url, "--maxmind-dir", str(tmp_path),
                       "--skip", "maxmind", "--skip", "cymru", "--skip", "greynoise")  # fmt: skip
    assert after.returncode == 0, after.stderr
    assert "left by a killed run" not in after.stderr
    assert wrong_counts(pg_url) == 0
    # ... and once it finished, the run after it need not recount again (no mark left).
    with psycopg.connect(pg_url) as con:
        assert con.execute("SELECT count(*) FROM etl_identity WHERE name = 'run'").fetchone() == (
            0,
        )


def test_dropping_the_stages_never_holds_a_stopping_run_up() -> None:
    from etl.db.postgres import drop_own_stages

    # 192.0.2.1 (TEST-NET-1) never answers: the connection attempt hangs or fails.
    url = parse_database_url("postgresql://etl@192.0.2.1:5432/honeypot")
    began = time.monotonic()
    drop_own_stages(url, 1.0)
    assert time.monotonic() - began < 1.5
