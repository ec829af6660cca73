"""Circuit breakers, as cron sees them: a dead service is stopped within seconds with one
line naming it and why, the IPs not asked keep their old blocks, and the exit code is 3."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

from tests.sims import run_module, running, without_count
from tests.test_refresh_greynoise import KEY, build_sample


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def blocks(db_url: str, source: str) -> dict[str, Any]:
    con = sqlite3.connect(db_url.removeprefix("sqlite:///"))
    rows = con.execute("SELECT ip_address, enrichment FROM ip_inventory").fetchall()
    con.close()
    return {ip: json.loads(e).get(source) for ip, e in rows}


def refresh(tmp_path: Path, db_url: str, *args: str) -> tuple[Any, float, dict[str, Any], str]:
    """Run the CLI; return its result, wall seconds, summary JSON and metrics text."""
    summary, metrics, status = tmp_path / "s.json", tmp_path / "m.prom", tmp_path / "st.json"
    env = {k: v for k, v in os.environ.items() if k != "ETL_CONFIG"} | {"GREYNOISE_API_KEY": KEY}
    started = time.monotonic()
    result = run_module(
        "etl.refresh", "--db", db_url, "--maxmind-dir", str(tmp_path), "--summary-json",
        str(summary), "--metrics-file", str(metrics), "--status-file", str(status), "--quiet",
        *args, env=env,
    )  # fmt: skip
    seconds = time.monotonic() - started
    return result, seconds, json.loads(summary.read_text()), metrics.read_text()


def test_greynoise_on_a_closed_port_is_stopped_in_seconds_with_exit_3(tmp_path: Path) -> None:
    db_url = build_sample(tmp_path, 2000)
    before = blocks(db_url, "greynoise")
    url = f"http://127.0.0.1:{closed_port()}"
    result, seconds, summary, metrics = refresh(
        tmp_path, db_url, "--skip", "cymru", "--greynoise-url", url
    )
    assert result.returncode == 3, result.stderr
    assert seconds < 20  # it churned for an hour before the breaker (well under a minute)
    lines = [without_count(line) for line in result.stderr.splitlines()]
    assert lines == [
        f"GreyNoise at {url}: 10 requests in a row got no answer (connection refused): "
        "GreyNoise stopped for this run; the IPs not asked keep their old blocks"
    ]
    after = blocks(db_url, "greynoise")
    changed = {ip for ip in after if after[ip] != before.get(ip)}
    assert all(after[ip]["status"] in ("skipped", "error") for ip in changed)
    assert len([ip for ip in changed if after[ip]["status"] == "error"]) <= 2
    greynoise = summary["sources"]["greynoise"]
    assert greynoise["queried"] == greynoise["error"] <= 2  # sent: only those, never skipped
    assert summary["stopped"]["greynoise"]["reason"] == "unreachable"
    assert summary["exit_code"] == 3 and summary["outcome"] == "finished"
    assert summary["greynoise_requests"] <= 10 + 12
    assert 'honeypot_etl_source_stopped{source="greynoise",reason="unreachable"} 1' in metrics
    assert 'honeypot_etl_source_stopped{source="cymru",reason=""} 0' in metrics
    assert "honeypot_etl_last_run_exit_code 3" in metrics
    assert "honeypot_etl_last_run_success 1" in metrics  # completed: last_success moves
    # The bars and the status file end where the work ended, not filled up to the plan.
    phases = json.loads((tmp_path / "st.json").read_text())["phases"]
    assert phases["greynoise"]["state"] == "done"
    # Its bar stops short; every IP it had to ask is queried or skipped (never sent).
    assert phases["greynoise"]["done"] < phases["greynoise"]["total"]
    assert phases["greynoise"]["total"] == greynoise["queried"] + greynoise["skipped"]
    written = phases["write"]  # in ip_inventory rows: each selected IP's, without the answers
    assert written["done"] == summary["upserted"] == written["total"]  # GreyNoise never gave


def test_a_refused_key_is_exit_3_and_a_daily_limit_exit_0(tmp_path: Path) -> None:
    db_url = build_sample(tmp_path, 300)
    with running("greynoise", tmp_path / "a.jsonl", "--key", "another-key") as gn:
        refused, _, summary, metrics = refresh(
            tmp_path, db_url, "--skip", "cymru", "--greynoise-url", gn.url
        )
    assert refused.returncode == 3, refused.stderr
    assert "GreyNoise refused the API key (HTTP 401)" in refused.stderr
    assert summary["stopped"]["greynoise"]["reason"] == "key_refused"
    assert 'honeypot_etl_source_stopped{source="greynoise",reason="key_refused"} 1' in metrics
    with running("greynoise", tmp_path / "b.jsonl", "--key", KEY, "--daily-limit", "50") as gn:
        limited, _, summary, metrics = refresh(
            tmp_path, db_url, "--skip", "cymru", "--greynoise-url", gn.url
        )
    assert limited.returncode == 0, limited.stderr  # normal operation
    assert "GreyNoise daily limit reached" in limited.stderr
    assert summary["stopped"]["greynoise"]["reason"] == "daily_limit"
    assert "honeypot_etl_last_run_exit_code 0" in metrics


def test_a_cymru_that_accepts_and_never_answers_ends_in_under_90_seconds(tmp_path: Path) -> None:
    db_url = build_sample(tmp_path, 2000)
    before = blocks(db_url, "cymru")
    with running("cymru", tmp_path / "c.jsonl", "--fault", "silent") as cy:
        result, seconds, summary, metrics = refresh(
            tmp_path, db_url, "--skip", "greynoise", "--cymru", cy.address
        )
        sessions = cy.entries()
    assert result.returncode == 3, result.stderr
    assert seconds < 90
    assert [without_count(x) for x in result.stderr.splitlines() if "Cymru" in x] == [
        f"Team Cymru at {cy.address}: 4 sessions in a row got no answer (no answer within "
        "30 s): stopped asking it for this run; the IPs not asked keep their old blocks"
    ]
    assert len(sessions) <= 5
    after = blocks(db_url, "cymru")
    sent = {q for entry in sessions for q in entry["queries"] if not q.startswith("AS")}
    changed = {ip for ip in after if after[ip] != before.get(ip)}
    assert changed <= sent  # the IPs never sent keep their old blocks
    assert summary["sources"]["cymru"]["queried"] == len(sent & set(after))
    assert summary["stopped"]["cymru"]["reason"] == "stalled"
    assert 'honeypot_etl_source_stopped{source="cymru",reason="stalled"} 1' in metrics


def test_the_http_transport_names_a_refusal_and_a_silent_server() -> None:
    from etl.core.errors import TransportError
    from etl.sources.greynoise.http import HttpSession

    session = HttpSession(2, {})
    failures = []
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # connections complete in the backlog; nothing ever answers
        for port, timeout in ((closed_port(), 2.0), (silent.getsockname()[1], 0.3)):
            try:
                session.request("GET", f"http://127.0.0.1:{port}/x", {}, None, timeout)
            except TransportError as exc:
                failures.append((exc.failure, exc.stalled))
    session.close()
    assert failures == [("connection refused", False), ("no answer within 0.3 s", True)]


def test_the_summary_table_names_the_sources_stopped() -> None:
    from etl.report.summary import RunSummary, SourceStop

    summary = RunSummary(stopped={"greynoise": SourceStop("unreachable", "...", 3)})
    assert summary.table().splitlines()[-1] == "stopped for this run: greynoise (unreachable)"
    assert summary.completed_exit_code() == 3
    assert (
        RunSummary(stopped={"greynoise": SourceStop("daily_limit", "...")}).completed_exit_code()
        == 0
    )
