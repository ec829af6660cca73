"""A refresh with GreyNoise: alongside Cymru, within quota, committed as answers arrive."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from etl.core.vocabulary import Source
from etl.refresh.config import RefreshConfig
from etl.refresh.pipeline import refresh
from etl.report.summary import LineReporter
from tests.sims import Simulator, run_module, running

KEY = "refresh-test-key"


def build_sample(folder: Path, ips: int) -> str:
    db_url = f"sqlite:///{folder / 'h.sqlite'}"
    result = run_module(
        "testbed.sample", "--db", db_url, "--ips", str(ips), "--maxmind-dir", str(folder)
    )
    assert result.returncode == 0, result.stderr
    return db_url


def greynoise_blocks(db_url: str) -> dict[str, dict[str, Any]]:
    con = sqlite3.connect(db_url.removeprefix("sqlite:///"))
    rows = con.execute("SELECT ip_address, enrichment FROM ip_inventory").fetchall()
    con.close()
    return {ip: json.loads(e).get("greynoise") for ip, e in rows if json.loads(e).get("greynoise")}


def asked(sim: Simulator) -> list[str]:
    return [ip for entry in sim.entries() if entry["status"] != 429 for ip in entry["ips"]]


def config(db_url: str, folder: Path, gn: Simulator, **extra: Any) -> RefreshConfig:
    settings: dict[str, Any] = {
        "skip": frozenset({Source.CYMRU}),
        "greynoise_rate": 500.0,
        **extra,
    }
    return RefreshConfig(
        db_url=db_url,
        maxmind_dir=folder,
        greynoise_url=gn.url,
        greynoise_api_key=KEY,
        **settings,
    )


def fresh_since(blocks: dict[str, dict[str, Any]], moment: datetime) -> set[str]:
    return {
        ip for ip, b in blocks.items()
        if b["status"] != "skipped" and datetime.fromisoformat(b["cached_at"]) >= moment
    }  # fmt: skip


def test_daily_limit_then_the_next_run_asks_only_the_rest(tmp_path: Path) -> None:
    db_url = build_sample(tmp_path, 600)
    started = datetime.now(UTC)
    with running("greynoise", tmp_path / "a.jsonl", "--key", KEY, "--daily-limit", "150") as gn:
        lines: list[str] = []
        reporter = LineReporter(verbosity=-1)
        reporter.note = lines.append  # type: ignore[method-assign]
        first = refresh(config(db_url, tmp_path, gn), reporter)
        first_asked = asked(gn)
    assert any("daily limit" in line for line in lines)
    done = fresh_since(greynoise_blocks(db_url), started)
    assert len(done) == first.sources["greynoise"].ok + first.sources["greynoise"].not_found == 150
    with running("greynoise", tmp_path / "b.jsonl", "--key", KEY) as gn:
        second = refresh(config(db_url, tmp_path, gn), LineReporter(verbosity=-1))
        second_asked = asked(gn)
    assert set(second_asked).isdisjoint(done)
    assert len(second_asked) == len(set(second_asked))  # no IP asked twice
    assert second.sources["greynoise"].error == 0
    assert set(first_asked) - done <= set(second_asked)  # refused by the quota: asked again
    third = refresh(config(db_url, tmp_path, gn), LineReporter(verbosity=-1))
    assert third.selected == 0


def test_bad_key_leaves_greynoise_blocks_alone(tmp_path: Path) -> None:
    db_url = build_sample(tmp_path, 300)
    before = greynoise_blocks(db_url)
    with running("greynoise", tmp_path / "a.jsonl", "--key", "another-key") as gn:
        summary = refresh(config(db_url, tmp_path, gn), LineReporter(verbosity=-1))
        entries = gn.entries()
    after = greynoise_blocks(db_url)
    changed = {ip for ip in after if after[ip] != before.get(ip)}
    assert all(after[ip]["status"] == "skipped" for ip in changed)  # IPv6: never sent
    assert summary.sources["greynoise"].ok == 0
    assert len(entries) <= 64
    assert all(KEY not in json.dumps(e) for e in entries)


def test_cymru_and_greynoise_run_at_the_same_time(tmp_path: Path) -> None:
    db_url = build_sample(tmp_path, 800)
    with (
        running("greynoise", tmp_path / "g.jsonl", "--key", KEY, "--rate", "100") as gn,
        running("cymru", tmp_path / "c.jsonl", "--latency-ms", "4") as cy,
    ):
        cfg = config(db_url, tmp_path, gn, skip=frozenset(), cymru=cy.address, batch_size=40,
                     greynoise_rate=100.0)  # fmt: skip
        summary = refresh(cfg, LineReporter(verbosity=-1))
        gn_times = [e["time"] for e in gn.entries()]
        cy_times = [e["time"] for e in cy.entries()]
    assert summary.sources["cymru"].queried > 40 and summary.sources["greynoise"].queried > 300
    assert min(gn_times) < max(cy_times) and min(cy_times) < max(gn_times)


def test_results_are_committed_as_they_arrive_and_survive_a_kill(tmp_path: Path) -> None:
    db_url = build_sample(tmp_path, 600)
    with running("greynoise", tmp_path / "a.jsonl", "--key", KEY, "--rate", "40") as gn:
        command = [sys.executable, "-m", "etl.refresh", "--db", db_url, "--maxmind-dir",
                   str(tmp_path), "--skip", "cymru", "--greynoise-url", gn.url,
                   "--greynoise-rate", "40"]  # fmt: skip
        started = datetime.now(UTC)
        process = subprocess.Popen(
            command, env={**os.environ, "GREYNOISE_API_KEY": KEY},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        committed: set[str] = set()
        deadline = time.monotonic() + 60
        while len(committed) < 100 and time.monotonic() < deadline:
            time.sleep(0.5)
            committed = fresh_since(greynoise_blocks(db_url), started)
        process.send_signal(signal.SIGKILL)
        process.wait()
        first_asked = set(asked(gn))
    assert 100 <= len(committed) < len(first_asked) + 1
    con = sqlite3.connect(db_url.removeprefix("sqlite:///"))
    assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    con.close()
    kept = fresh_since(greynoise_blocks(db_url), started)
    with running("greynoise", tmp_path / "b.jsonl", "--key", KEY) as gn:
        refresh(config(db_url, tmp_path, gn), LineReporter(verbosity=-1))
        second_asked = set(asked(gn))
    assert second_asked.isdisjoint(kept)  # what was committed is not paid for twice
    assert first_asked - kept <= second_asked
