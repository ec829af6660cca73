"""One count, everywhere: on runs with every fault the simulators have, the plain progress
lines, the summary (table and JSON), the status file and the metrics file give each count the
same number under the same name; a dry run says "would ask"."""

from __future__ import annotations

import json
import re
import shutil
import time
from contextlib import ExitStack
from itertools import zip_longest
from pathlib import Path
from typing import Any

import pytest

from etl.refresh.config import RefreshConfig
from etl.refresh.monitored import monitored_refresh
from etl.report.summary import RunSummary
from testbed.sim.common import CYMRU_FAULTS, GREYNOISE_FAULTS
from tests.sims import Simulator, run_module, running

KEY = "one-count-key"
WRONG_KEY = "key-refused"  # the GreyNoise simulator refuses it: 401
# Every fault of each simulator, a Cymru one and a GreyNoise one in the same run (and a refused
# key), each on half the sessions or requests: stops and per-IP errors side by side.
RUNS = list(zip_longest(CYMRU_FAULTS, (*GREYNOISE_FAULTS, WRONG_KEY)))

# Faults after which the simulator has logged every session or request by the run's end.
HOLD_NOTHING = {None, "drop", "silent", "garbage", "garble", "refuse", "5xx", "slow", "reset",
                "malformed", "429", WRONG_KEY}  # fmt: skip
START = re.compile(r"^(\w+): (\d+) (.+) to do$")
DONE = re.compile(r"^(\w+): done in [\d.]+s(?:, (\d+)/(\d+) (.+))?$")
BEAT = re.compile(r"^(\w+): (\d+)/(\d+) (.+) \(\d+%\), [\d,.]+/s, ETA ")
BATCH = re.compile(r"^Cymru batch (\d+)(?:/(\d+)| \(AS numbers named in the answers\)): ")
TO_ASK = re.compile(r"^cymru: (\d+) IPs and (\d+) AS numbers to ask$")
MORE = re.compile(r"^cymru: (\d+) more AS numbers to ask, named in the answers$")
SAMPLE = re.compile(r"^honeypot_etl_(\w+)(\{[^}]*\})? (\S+)$", re.MULTILINE)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("one-count")
    db = folder / "pristine.sqlite"
    built = run_module("testbed.sample", "--db", f"sqlite:///{db}", "--ips", "120",
                       "--maxmind-dir", str(folder))  # fmt: skip
    assert built.returncode == 0, built.stderr
    return db


def _run(
    pristine: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], **settings: Any
) -> tuple[RunSummary, list[str], dict[str, Any], dict[str, Any], dict[tuple[str, str], float]]:
    """A refresh as the command line runs it, its output no terminal: its plain lines, its
    summary JSON, status file and metrics."""
    db = tmp_path / "h.sqlite"
    shutil.copy(pristine, db)
    files = {
        "summary_json": tmp_path / "summary.json",
        "status_file": tmp_path / "status.json",
        "metrics_file": tmp_path / "metrics.prom",
    }
    config = RefreshConfig(
        db_url=f"sqlite:///{db}", maxmind_dir=pristine.parent, greynoise_api_key=KEY,
        greynoise_rate=300.0, batch_size=40, retry_backoff=0.02, cymru_timeout=0.5,
        greynoise_timeout=2.0, progress_every=0.2, **files, **settings,
    )  # fmt: skip
    capsys.readouterr()
    summary = monitored_refresh(config)
    lines = capsys.readouterr().err.splitlines()
    metrics = {
        (name, labels or ""): float(value)
        for name, labels, value in SAMPLE.findall(files["metrics_file"].read_text())
    }
    status = json.loads(files["status_file"].read_text())
    return summary, lines, json.loads(files["summary_json"].read_text()), status, metrics


@pytest.mark.parametrize(("cymru_fault", "greynoise_fault"), RUNS, ids=str)
def test_every_count_agrees_everywhere(
    pristine: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    cymru_fault: str | None, greynoise_fault: str | None,
) -> None:  # fmt: skip
    cymru_args = ("--fault", cymru_fault, "--fault-rate", "0.5") if cymru_fault else ()
    key = WRONG_KEY if greynoise_fault == WRONG_KEY else KEY
    greynoise_args = ["--key", key, "--slow-seconds", "0.3"]
    if greynoise_fault and greynoise_fault != WRONG_KEY:
        rate = "0.05" if greynoise_fault == "429" else "0.5"  # each 429 pauses every request
        greynoise_args += ["--fault", greynoise_fault, "--fault-rate", rate]
    with ExitStack() as stack:
        cy = stack.enter_context(running("cymru", tmp_path / "c.jsonl", *cymru_args))
        gn = stack.enter_context(running("greynoise", tmp_path / "g.jsonl", *greynoise_args))
        summary, lines, data, status, metrics = _run(
            pristine, tmp_path, capsys, cymru=cy.address, greynoise_url=gn.url
        )
        # Sessions and requests as the simulators saw them (one held by a stall is logged when
        # the stall ends: after the run, so only faults that hold none are compared).
        _settle(cy, summary.cymru_sessions, exact=cymru_fault in HOLD_NOTHING)
        _settle(gn, summary.greynoise_requests, exact=greynoise_fault in HOLD_NOTHING)
    # The summary JSON is the summary (its wall time is taken just before the run's end).
    assert {**data, "wall_seconds": 0} == {**json.loads(summary.json_text()), "wall_seconds": 0}
    _phases_agree(lines, status, summary)
    _sources_agree(summary, status, metrics)
    _cymru_agrees(lines, summary, metrics, cy)
    _greynoise_agrees(summary, metrics, gn)


def _settle(simulator: Simulator, expected: int, exact: bool) -> None:
    """The simulator has logged ``expected`` sessions or requests (within a few seconds: the
    last are logged as they close), or, not ``exact``, at most that many."""
    deadline = time.monotonic() + 5
    while exact and len(simulator.entries()) < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(simulator.entries()) == expected if exact else len(simulator.entries()) <= expected


def _phases_agree(lines: list[str], status: dict[str, Any], summary: RunSummary) -> None:
    """Each phase: the same total and unit in its first line, its heartbeat lines, its last
    line and the status file; the same done in its last line and the status file."""
    phases = status["phases"]
    started = {m[1]: (int(m[2]), m[3]) for m in map(START.match, lines) if m}
    ended = {m[1]: m for m in map(DONE.match, lines) if m}
    assert set(ended) == set(phases) and "select: started" in lines
    assert phases["select"]["total"] == 0 and "select" not in started  # size not known
    for phase, (total, unit) in started.items():
        state = phases[phase]
        assert (state["total"], state["unit"]) == (total, unit), phase
        assert ended[phase].group(3, 4) == (str(total), unit), phase
        assert int(ended[phase][2]) == state["done"] <= total, phase
    for beat in filter(None, map(BEAT.match, lines)):
        assert (int(beat[3]), beat[4]) == started[beat[1]], beat[0]
        assert int(beat[2]) <= phases[beat[1]]["done"]
    # The write phase counts ip_inventory rows, as the summary does.
    assert started["write"] == (summary.selected, "ip_inventory rows")
    assert phases["write"]["done"] == summary.upserted
    assert f"wrote {summary.upserted} ip_inventory rows" in summary.table()


def _sources_agree(
    summary: RunSummary, status: dict[str, Any], metrics: dict[tuple[str, str], float]
) -> None:
    table = summary.table().splitlines()
    assert "queried" in table[1] and "would ask" not in table[1]
    for source, counts in summary.sources.items():
        assert status["sources"][source] == vars(counts)
        row = next(line.split() for line in table if line.startswith(f"{source} "))
        statuses = ("ok", "not_found", "error", "skipped")
        assert row[1:] == [str(counts.queried), *(str(getattr(counts, s)) for s in statuses)]
        for name in statuses:
            labels = f'{{source="{source}",status="{name}"}}'
            assert metrics[("source_ips", labels)] == getattr(counts, name)


def _cymru_agrees(
    lines: list[str], summary: RunSummary, metrics: dict[tuple[str, str], float], cy: Simulator
) -> None:
    """Planned batches numbered 1..k against one planned total known up front, those of the AS
    numbers the answers named 1..m on their own, k + m the summary's count; AS numbers to ask
    = asked, or counted as failed (unless Cymru was stopped); sessions as the simulator saw
    them."""
    batches = [m for m in map(BATCH.match, lines) if m]
    numbered = [int(m[1]) for m in batches if m[2]]
    late = [int(m[1]) for m in batches if not m[2]]
    assert numbered == list(range(1, len(numbered) + 1))
    assert late == list(range(1, len(late) + 1))
    assert len(numbered) + len(late) == summary.cymru_batches
    planned = {m[2] for m in batches if m[2]}
    assert len(planned) <= 1 and all(int(m[1]) <= int(m[2]) for m in batches if m[2])
    [(ips, asns)] = [(int(m[1]), int(m[2])) for m in map(TO_ASK.match, lines) if m]
    more = sum(int(m[1]) for m in map(MORE.match, lines) if m)
    stopped = "cymru" in summary.stopped
    if not stopped:
        # Every AS number to ask was sent, or counts as a lookup without an answer: a small
        # chunk of the AS numbers the answers named may have every session refused (a fault
        # rate of 0.5 refuses all its tries in 1 of 8 chunks), and is then never sent.
        failed = summary.cymru_as_lookups_failed
        assert summary.asn_asked <= asns + more <= summary.asn_asked + failed
        assert summary.sources["cymru"].queried == ips
    assert summary.asn_details <= summary.asn_asked <= asns + more
    assert summary.cymru_batches <= summary.cymru_sessions
    assert metrics[("asn_numbers", '{state="asked"}')] == summary.asn_asked
    assert metrics[("asn_numbers", '{state="answered"}')] == summary.asn_details
    assert metrics[("cymru_sessions", "")] == summary.cymru_sessions
    assert metrics[("cymru_batches", "")] == summary.cymru_batches
    assert (
        f"Cymru: {summary.cymru_sessions} sessions tried for {summary.cymru_batches} batches "
        f"sent, {summary.asn_asked} AS numbers asked, {summary.asn_details} answered"
    ) in summary.table()


def _greynoise_agrees(
    summary: RunSummary, metrics: dict[tuple[str, str], float], gn: Simulator
) -> None:
    """Requests sent as the simulator saw them, in the summary and the metrics; the IPs
    answered are those ok or not found."""
    counts = summary.sources["greynoise"]
    assert metrics[("greynoise_requests", "")] == summary.greynoise_requests
    assert (
        f"GreyNoise: {summary.greynoise_requests} requests sent, "
        f"{counts.ok + counts.not_found} IPs answered, {summary.greynoise_searches} Searches"
    ) in summary.table()
    if any(entry.get("status") == 401 for entry in gn.entries()):
        assert summary.stopped["greynoise"].reason == "key_refused"
        assert counts.ok + counts.not_found == 0 < summary.greynoise_requests


def test_a_dry_run_says_would_ask_not_queried(
    pristine: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "h.sqlite"
    shutil.copy(pristine, db)
    config = RefreshConfig(
        db_url=f"sqlite:///{db}", maxmind_dir=pristine.parent, greynoise_api_key=KEY,
        dry_run=True,
    )  # fmt: skip
    summary = monitored_refresh(config)
    table = summary.table()
    [header] = [line for line in table.splitlines() if line.startswith("source ")]
    assert "would ask" in header and "queried" not in table
    assert summary.sources["greynoise"].queried > 0  # what a real run would ask
    assert "nothing sent (dry run)" in table and "requests sent" not in table


def test_a_dry_run_would_ask_what_a_real_run_asks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Community GreyNoise skips IPv6: a dry run counts them as skipped, as the real run
    does (before: they were in its "would ask"), and names the AS numbers Tier 1 asks."""
    pristine = tmp_path / "world" / "pristine.sqlite"
    pristine.parent.mkdir()
    built = run_module("testbed.sample", "--db", f"sqlite:///{pristine}", "--ips", "800",
                       "--maxmind-dir", str(pristine.parent))  # fmt: skip
    assert built.returncode == 0, built.stderr
    with (
        running("cymru", tmp_path / "c.jsonl") as cy,
        running("greynoise", tmp_path / "g.jsonl", "--key", KEY) as gn,
    ):
        common: dict[str, Any] = {
            "cymru": cy.address, "greynoise_url": gn.url, "greynoise_mode": "community",
        }  # fmt: skip
        db = tmp_path / "dry.sqlite"
        shutil.copy(pristine, db)
        capsys.readouterr()
        config = RefreshConfig(db_url=f"sqlite:///{db}", maxmind_dir=pristine.parent,
                               greynoise_api_key=KEY, dry_run=True, **common)  # fmt: skip
        dry = monitored_refresh(config)
        said = capsys.readouterr().err.splitlines()
        real, *_ = _run(pristine, tmp_path, capsys, **common)
    assert real.sources["greynoise"].skipped > 0  # the sample has IPv6 addresses
    for source in ("cymru", "greynoise"):
        done, would = real.sources[source], dry.sources[source]
        assert (would.queried, would.skipped) == (done.queried, done.skipped), source
    [line] = [x for x in said if x.startswith("dry run: would ask")]
    v6 = real.sources["greynoise"].skipped
    assert line.endswith(
        f"GreyNoise about {real.sources['greynoise'].queried} IPs ({v6} IPv6 skipped: the "
        "community API is IPv4 only)"
    )
    assert re.search(r"Team Cymru about \d+ IPs and [1-9]\d* AS numbers", line), line
