"""Every simulator fault, end to end: the run completes, the affected IPs are `error` (never
fresh), nothing else is harmed, and a run without the fault completes them."""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from etl.refresh.config import RefreshConfig
from etl.refresh.pipeline import refresh
from etl.report.summary import LineReporter
from tests.sims import run_module, running

KEY = "faults-key"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("faults")
    db = folder / "pristine.sqlite"
    built = run_module("testbed.sample", "--db", f"sqlite:///{db}", "--ips", "200",
                       "--maxmind-dir", str(folder))  # fmt: skip
    assert built.returncode == 0, built.stderr
    return db


def blocks(db: Path, source: str) -> dict[str, dict[str, Any]]:
    con = sqlite3.connect(db)
    rows = con.execute("SELECT ip_address, enrichment FROM ip_inventory").fetchall()
    con.close()
    found = {}
    for ip, text in rows:
        block = json.loads(text).get(source)
        if block:
            found[ip] = block
    return found


def statuses(db: Path, source: str) -> dict[str, str]:
    return {ip: block["status"] for ip, block in blocks(db, source).items()}


@pytest.fixture
def db(pristine: Path, tmp_path: Path) -> Iterator[Path]:
    copy = tmp_path / "h.sqlite"
    shutil.copy(pristine, copy)
    yield copy


# Faults in every session or request. Those that leave no answer at all (refused, reset,
# 5xx), or sessions that end in a timeout however many lines they answered first (stall),
# trip the source's circuit breaker: it is stopped with exit code 3, and the IPs not
# asked keep their old blocks; the others leave per-IP errors. Either way the next run
# completes them.
FAULTS = [
    ("cymru", ("--fault", "drop"), {}),
    ("cymru", ("--fault", "stall"), {"cymru_timeout": 0.5}),
    ("cymru", ("--fault", "refuse"), {}),
    ("greynoise", ("--fault", "5xx"), {}),
    ("greynoise", ("--fault", "reset"), {}),
    ("greynoise", ("--fault", "malformed"), {}),
]
STOPS = {"refuse", "5xx", "reset", "stall"}
# What the error blocks of each fault say (the block's ``error`` key): the last attempt's words.
REASONS = {"drop": "connection reset without an answer", "stall": "no answer within 0.5 s",
           "refuse": "connection reset without an answer", "5xx": "HTTP 500",
           "reset": "connection reset without an answer", "malformed": "malformed JSON"}  # fmt: skip


@pytest.mark.parametrize(("source", "fault", "extra"), FAULTS, ids=str)
def test_a_fault_leaves_errors_that_the_next_run_completes(
    db: Path, pristine: Path, tmp_path: Path, source: str, fault: tuple[str, ...],
    extra: dict[str, Any],
) -> None:  # fmt: skip
    other = "greynoise" if source == "cymru" else "cymru"
    args = {source: fault, other: ()}
    with ExitStack() as stack:
        cy = stack.enter_context(running("cymru", tmp_path / "c1.jsonl", *args["cymru"]))
        gn = stack.enter_context(
            running("greynoise", tmp_path / "g1.jsonl", "--key", KEY, *args["greynoise"])
        )
        config_dir = pristine.parent
        first = refresh(
            RefreshConfig(
                db_url=f"sqlite:///{db}", maxmind_dir=config_dir, cymru=cy.address,
                greynoise_url=gn.url, greynoise_api_key=KEY, greynoise_rate=300.0,
                batch_size=40, retry_backoff=0.05, **extra,
            ),
            LineReporter(verbosity=-1),
        )  # fmt: skip
    assert first.sources[other].error == 0  # the other source is not harmed
    errors = {ip for ip, status in statuses(db, source).items() if status == "error"}
    if fault[1] in STOPS:
        assert first.stopped[source].exit_code == 3 and other not in first.stopped
        # Only what the breaker's failures had sent: 4 Cymru sessions (of 40 queries at most,
        # once split), or the IPs whose 3 attempts were all among GreyNoise's 10.
        # A stalled session's answers before its stall are kept (all but its last line).
        assert first.sources[source].ok == 0 or fault[1] == "stall"
        assert len(errors) <= (160 if source == "cymru" else 3)
        before, after = statuses(pristine, source), statuses(db, source)
        changed = {ip for ip in after if after[ip] != before.get(ip)}
        answered = ("ok", "not_found") if fault[1] == "stall" else ()  # before the stalls
        assert all(after[ip] in ("error", "skipped", *answered) for ip in changed)  # the rest: kept
    else:
        assert first.sources[source].error > 0 and errors and not first.stopped
    stored, kept = blocks(db, source), blocks(pristine, source)  # this run's errors say why
    reasons = {stored[ip]["error"] for ip in errors if stored[ip] != kept.get(ip)}
    assert reasons <= {REASONS[fault[1]]}
    with ExitStack() as stack:
        cy = stack.enter_context(running("cymru", tmp_path / "c2.jsonl"))
        gn = stack.enter_context(running("greynoise", tmp_path / "g2.jsonl", "--key", KEY))
        second = refresh(
            RefreshConfig(
                db_url=f"sqlite:///{db}", maxmind_dir=config_dir, cymru=cy.address,
                greynoise_url=gn.url, greynoise_api_key=KEY, greynoise_rate=300.0,
            ),
            LineReporter(verbosity=-1),
        )  # fmt: skip
        asked = {ip for e in (cy if source == "cymru" else gn).entries()
                 for ip in (e.get("queries") or e.get("ips") or [])}  # fmt: skip
    assert errors <= asked
    assert second.sources[source].error == 0
    done = statuses(db, source)
    assert all(done[ip] in ("ok", "not_found") for ip in errors)


def test_throttling_429s_are_waited_out_not_errors(
    db: Path, pristine: Path, tmp_path: Path
) -> None:
    with ExitStack() as stack:
        cy = stack.enter_context(running("cymru", tmp_path / "c.jsonl"))
        gn = stack.enter_context(running(
            "greynoise", tmp_path / "g.jsonl", "--key", KEY, "--fault", "429",
            "--fault-rate", "0.2",
        ))  # fmt: skip
        summary = refresh(
            RefreshConfig(
                db_url=f"sqlite:///{db}", maxmind_dir=pristine.parent, cymru=cy.address,
                greynoise_url=gn.url, greynoise_api_key=KEY, greynoise_rate=300.0,
            ),
            LineReporter(verbosity=-1),
        )  # fmt: skip
        throttled = sum(e["status"] == 429 for e in gn.entries())
    assert throttled > 0
    assert summary.sources["greynoise"].error == 0
    assert summary.sources["greynoise"].ok + summary.sources["greynoise"].not_found > 100
