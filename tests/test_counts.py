"""One source of truth for counts: log lines, bars, status, summary and metrics agree, for a
completed run and for an interrupted one."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from etl.core.vocabulary import Source
from etl.refresh.config import RefreshConfig
from etl.refresh.pipeline import refresh
from etl.report.summary import RunSummary
from tests.sims import running
from tests.test_refresh_greynoise import KEY, build_sample


class Recorder:
    """A reporter that keeps every event, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, Any]] = []

    def attach(self, summary: RunSummary) -> None:
        self.summary = summary

    def phase_started(self, phase: str, total: int) -> None:
        self.events.append(("started", phase, total))

    def advanced(self, phase: str, done: int) -> None:
        self.events.append(("advanced", phase, done))

    def phase_finished(self, phase: str, seconds: float) -> None:
        self.events.append(("finished", phase, seconds))

    def info(self, message: str) -> None:
        self.events.append(("info", "", message))

    def note(self, message: str) -> None:
        self.events.append(("note", "", message))

    def lines(self) -> list[str]:
        return [str(text) for kind, _, text in self.events if kind in ("info", "note")]

    def of(self, phase: str) -> list[tuple[str, Any]]:
        return [(kind, n) for kind, p, n in self.events if p == phase]


def test_lines_bars_and_summary_agree_on_a_full_run(tmp_path: Path) -> None:
    db_url = build_sample(tmp_path, 1500)
    with (
        running("greynoise", tmp_path / "g.jsonl", "--key", KEY, "--rate", "400") as gn,
        running("cymru", tmp_path / "c.jsonl") as cy,
    ):
        config = RefreshConfig(
            db_url=db_url, maxmind_dir=tmp_path, cymru=cy.address, batch_size=40,
            greynoise_url=gn.url, greynoise_api_key=KEY, greynoise_rate=400.0, commit_every=50,
        )  # fmt: skip
        recorder = Recorder()
        summary = refresh(config, recorder)
        sent = [ip for e in gn.entries() for ip in e["ips"]]
    lines = recorder.lines()
    # Cymru: "i/n" counts the planned chunks sent, n, the chunks planned, never changes; the
    # chunks of AS numbers named in the answers count on their own ("j (AS numbers named...)");
    # together they are the summary's batch count.
    batches = [m.groups() for m in map(BATCH.match, lines) if m]
    numbered = [int(i) for i, n in batches if n]
    late = [int(i) for i, n in batches if not n]
    assert numbered == list(range(1, len(numbered) + 1)) and late == list(range(1, len(late) + 1))
    assert len(numbered) + len(late) == summary.cymru_batches
    [planned] = {n for _, n in batches if n}
    assert summary.cymru_batches > 2 and int(planned) <= summary.cymru_batches
    [todo] = [line for line in lines if line.startswith("cymru: ") and " IPs and " in line]
    assert todo.startswith(f"cymru: {summary.sources['cymru'].queried} IPs and ")
    # GreyNoise: queried is what was sent; the IPv6 addresses are skipped, never sent.
    greynoise = summary.sources["greynoise"]
    assert greynoise.queried == len(sent) == greynoise.ok + greynoise.not_found + greynoise.error
    assert greynoise.skipped > 0 and not any(":" in ip for ip in sent)
    [asked] = [line for line in lines if line.startswith("greynoise: ") and "to ask" in line]
    assert asked.startswith(f"greynoise: {len(sent)} IPs to ask, {greynoise.skipped} IPv6")
    # The write bar, in ip_inventory rows: every selected IP's row counted once, when it is
    # first committed; done after the last commit (answers included).
    write = recorder.of("write")
    total = write[0][1]
    assert write[0][0] == "started" and write[-1][0] == "finished"
    assert sum(n for kind, n in write if kind == "advanced") == total == summary.selected
    # Distinct rows: the summary's ASN rows are rows of asn_inventory, each counted once.
    con = sqlite3.connect(db_url.removeprefix("sqlite:///"))
    asns = con.execute("SELECT count(*) FROM asn_inventory").fetchone()[0]
    ips = con.execute("SELECT count(*) FROM ip_inventory").fetchone()[0]
    con.close()
    assert 0 < summary.asn_upserted <= asns
    assert summary.upserted == summary.selected <= ips
    assert f"wrote {summary.upserted} ip_inventory rows, {summary.asn_upserted} asn_inventory" in (
        summary.table()
    )


BATCH = re.compile(r"^Cymru batch (\d+)(?:/(\d+)| \(AS numbers named in the answers\)): \d+ IPs")


def test_an_interrupted_run_reports_what_it_did(tmp_path: Path) -> None:
    db_url = build_sample(tmp_path, 600)
    status, summary, metrics = tmp_path / "st.json", tmp_path / "s.json", tmp_path / "m.prom"
    with running("greynoise", tmp_path / "a.jsonl", "--key", KEY, "--rate", "40") as gn:
        command = [sys.executable, "-m", "etl.refresh", "--db", db_url, "--maxmind-dir",
                   str(tmp_path), "--skip", "cymru", "--greynoise-url", gn.url,
                   "--greynoise-rate", "40", "--status-file", str(status), "--summary-json",
                   str(summary), "--metrics-file", str(metrics)]  # fmt: skip
        process = subprocess.Popen(
            command, env={**os.environ, "GREYNOISE_API_KEY": KEY},
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while len(gn.entries()) < 100 and time.monotonic() < deadline:
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
        answered = len([e for e in gn.entries() if e["status"] != 429])
    assert process.returncode == 1, stderr
    data = json.loads(summary.read_text())
    assert data["outcome"] == "interrupted" and data["exit_code"] == 1
    assert data["greynoise_requests"] >= 100 and data["greynoise_requests"] <= answered + 64
    text = metrics.read_text()
    assert f"honeypot_etl_greynoise_requests {data['greynoise_requests']}" in text
    assert "honeypot_etl_last_run_exit_code 1" in text
    assert "honeypot_etl_last_run_success 0" in text
    state = json.loads(status.read_text())
    assert state["state"] == "interrupted"
    assert any(note.startswith("interrupted") for note in state["notes"])


def test_a_failed_run_says_why_in_its_status_file_and_summary(tmp_path: Path) -> None:
    db_url = build_sample(tmp_path, 50)
    con = sqlite3.connect(db_url.removeprefix("sqlite:///"))
    # A database that refuses the run's writes once it is under way (a schema of another
    # shape is refused before the run, with no file written).
    con.execute(
        "CREATE TRIGGER refuse BEFORE UPDATE ON ip_inventory BEGIN "
        "SELECT RAISE(ABORT, 'updates refused here'); END"
    )
    con.commit()
    con.close()
    status, summary = tmp_path / "st.json", tmp_path / "s.json"
    config = RefreshConfig(
        db_url=db_url, maxmind_dir=tmp_path, skip=frozenset({Source.CYMRU}),
        status_file=status, summary_json=summary,
    )  # fmt: skip
    from etl.core.errors import EtlError
    from etl.refresh.monitored import monitored_refresh

    try:
        monitored_refresh(config)
    except EtlError as exc:
        error = str(exc)
    else:
        raise AssertionError("the run should fail on the refused write")
    state, data = json.loads(status.read_text()), json.loads(summary.read_text())
    assert state["state"] == "failed" and state["notes"][-1] == f"run failed: {error}"
    assert data["error"] == f"run failed: {error}" and data["exit_code"] == 1
    assert "updates refused here" in error
