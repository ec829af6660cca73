"""Plain output (cron, journald, a pipe) is never silent through a long phase: one progress line
per running phase every 30 s (done/total, rate, ETA), also while no progress arrives;
``--verbose`` at most one per 5 s per phase, however fast the progress comes."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from etl.refresh.config import RefreshConfig
from etl.report import summary as report
from etl.report.summary import LineReporter
from tests.sims import running
from tests.test_refresh_greynoise import KEY, build_sample

LINE = re.compile(r"^greynoise: (\d+)/(\d+) IPs \((\d+)%\), ([\d,.]+)/s, ETA (\S+)$")


def beats(text: str) -> list[re.Match[str]]:
    return [m for m in map(LINE.match, text.splitlines()) if m]


def test_the_intervals_are_30_s_plain_and_5_s_verbose() -> None:
    assert report.HEARTBEAT_SECONDS == 30 and report.VERBOSE_SECONDS == 5
    assert RefreshConfig().progress_every == 30
    assert LineReporter().every == 30
    assert LineReporter(verbosity=1).every == 5
    assert LineReporter(verbosity=1, heartbeat=2).every == 5  # at most one per 5 s


def test_a_stalled_phase_still_says_where_it_is() -> None:
    out = io.StringIO()
    lines = LineReporter(out, heartbeat=0.2)
    lines.phase_started("greynoise", 100)
    lines.advanced("greynoise", 25)
    time.sleep(1.3)  # no event at all: the service is silent
    lines.phase_finished("greynoise", 1.3)
    after = out.getvalue()
    time.sleep(0.5)
    lines.close()
    found = beats(after)
    assert 3 <= len(found) <= 8, after  # one per 0.2 s, with margin for a busy machine
    assert all(m.group(1, 2, 3) == ("25", "100", "25") for m in found)
    assert all(float(m[4]) > 0 and m[5] != "unknown" for m in found)  # rate, ETA
    assert out.getvalue() == after  # none once the phase is done
    assert after.splitlines()[-1].startswith("greynoise: done in 1.30s, 25/100 IPs")


def test_close_stops_the_lines_of_a_phase_still_running() -> None:
    out = io.StringIO()
    lines = LineReporter(out, heartbeat=0.1)
    lines.phase_started("greynoise", 100)
    time.sleep(0.35)
    lines.close()  # a run that stops mid-phase
    closed = out.getvalue()
    time.sleep(0.4)
    assert beats(closed) and out.getvalue() == closed
    assert lines._thread is not None and not lines._thread.is_alive()


def test_a_reader_gone_away_ends_the_lines_quietly() -> None:
    """``| head`` closed the pipe: the thread ends without a traceback of its own."""
    out = io.StringIO()
    lines = LineReporter(out, heartbeat=0.1)
    lines.phase_started("greynoise", 100)
    out.close()  # every later print raises ValueError, as a closed pipe raises OSError
    time.sleep(0.4)
    assert lines._thread is not None and not lines._thread.is_alive()
    lines.close()


def test_a_phase_of_unknown_size_says_how_long_it_has_run() -> None:
    out = io.StringIO()
    lines = LineReporter(out, heartbeat=0.2)
    lines.phase_started("select", 0)
    time.sleep(0.5)
    lines.phase_finished("select", 0.5)
    lines.close()
    said = out.getvalue().splitlines()
    assert said[0] == "select: started" and said[-1] == "select: done in 0.50s"
    assert said[1:-1] and all(re.fullmatch(r"select: running for \ds", line) for line in said[1:-1])


def test_quiet_prints_no_heartbeat() -> None:
    out = io.StringIO()
    lines = LineReporter(out, verbosity=-1, heartbeat=0.1)
    lines.phase_started("greynoise", 100)
    time.sleep(0.4)
    lines.close()
    assert out.getvalue() == ""


def test_verbose_prints_at_most_one_line_per_interval_per_phase() -> None:
    out = io.StringIO()
    lines = LineReporter(out, verbosity=1)  # 5 s
    lines.phase_started("greynoise", 1000)
    lines.phase_started("cymru", 1000)
    for _ in range(200):  # fast progress: no line for each of it
        lines.advanced("greynoise", 1)
        lines.advanced("cymru", 1)
        time.sleep(0.002)
    lines.close()
    assert out.getvalue().splitlines() == ["greynoise: 1000 IPs to do", "cymru: 1000 queries to do"]


def test_a_run_in_a_pipe_prints_heartbeats_during_its_greynoise_phase(tmp_path: Path) -> None:
    db_url = build_sample(tmp_path, 150)
    # ~110 IPs to ask at 20 requests a second: a GreyNoise phase of about 5 s.
    with running("greynoise", tmp_path / "g.jsonl", "--key", KEY) as gn:
        command = [sys.executable, "-m", "etl.refresh", "--db", db_url, "--maxmind-dir",
                   str(tmp_path), "--skip", "cymru", "--greynoise-url", gn.url,
                   "--greynoise-rate", "20", "--progress-every", "1"]  # fmt: skip
        done = subprocess.run(
            command, env={**os.environ, "GREYNOISE_API_KEY": KEY, "ETL_CONFIG": os.devnull},
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    start = next(
        i for i, line in enumerate(lines) if line.startswith("greynoise: ") and "to do" in line
    )
    end = next(i for i, line in enumerate(lines) if line.startswith("greynoise: done in "))
    during = beats("\n".join(lines[start:end]))
    assert len(during) >= 2, done.stderr
    total = int(lines[start].split()[1])
    assert all(int(m[2]) == total and int(m[1]) <= total for m in during)
    assert [int(m[1]) for m in during] == sorted(int(m[1]) for m in during)
