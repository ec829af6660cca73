"""One copy of SQLite touches the operator's file in the refresh's process (issue 23, item 0).

POSIX record locks belong to the process: a second SQLite library in our process (DuckDB's
scanner) that closes the file drops the locks our ``sqlite3`` connection holds. Another process
closing its last connection then believes it is the last user, checkpoints, and deletes the
``-wal`` file under us: committed rows are lost or the file is corrupted. Here a neighbour
process writes and closes its connection again and again while a refresh reads and writes. The
refresh runs in this process; the test holds no connection of its own while it runs.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from etl.core.vocabulary import Source
from etl.refresh.config import RefreshConfig
from etl.refresh.pipeline import refresh
from etl.report.summary import RunSummary
from testbed.sample.build import build_sample

NEIGHBOUR = r"""
import sqlite3, sys, time
path, stop_file = sys.argv[1], sys.argv[2]
done = 0
import os
while not os.path.exists(stop_file):
    con = sqlite3.connect(path, timeout=30, isolation_level=None)
    con.execute("PRAGMA busy_timeout = 30000")
    con.execute("BEGIN IMMEDIATE")
    con.execute("INSERT INTO neighbour_rows (n) VALUES (?)", (done,))
    con.execute("COMMIT")
    con.close()
    done += 1
    time.sleep(0.002)
print(done)
"""


class Window:
    """A reporter that records when the refresh has the database open (the select phase
    starts after the open) and when its last phase ends (before it closes)."""

    def __init__(self) -> None:
        self.opened: float | None = None
        self.last_phase_end: float | None = None

    def attach(self, summary: RunSummary) -> None:
        pass

    def phase_started(self, phase: str, total: int) -> None:
        if phase == "select" and self.opened is None:
            self.opened = time.monotonic()

    def advanced(self, phase: str, done: int) -> None:
        pass

    def phase_finished(self, phase: str, seconds: float) -> None:
        self.last_phase_end = time.monotonic()

    def info(self, message: str) -> None:
        pass

    def note(self, message: str) -> None:
        pass


def _wal_identity(wal: Path) -> tuple[int, int] | None:
    try:
        stat = os.stat(wal)
    except FileNotFoundError:
        return None
    return stat.st_dev, stat.st_ino


def test_a_neighbour_closing_its_connection_never_deletes_the_wal_under_the_refresh(
    tmp_path: Path,
) -> None:
    built = build_sample(f"sqlite:///{tmp_path / 'h.sqlite'}", 4000, 11, tmp_path / "mm")
    path = built.url.sqlite_path
    assert path is not None
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE neighbour_rows (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)")
    con.commit()
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    before = con.execute("SELECT count(*) FROM ip_inventory").fetchone()[0]
    con.close()

    stop = tmp_path / "stop"
    neighbour = subprocess.Popen(
        [sys.executable, "-c", NEIGHBOUR, str(path), str(stop)], stdout=subprocess.PIPE, text=True
    )
    samples: list[tuple[float, tuple[int, int] | None]] = []
    watching = threading.Event()
    wal = path.with_name(path.name + "-wal")

    def watch() -> None:
        while not watching.is_set():
            samples.append((time.monotonic(), _wal_identity(wal)))
            time.sleep(0.0005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    window = Window()
    try:
        time.sleep(0.3)  # the neighbour is writing and closing
        config = RefreshConfig(
            db_url=str(built.url),
            maxmind_dir=tmp_path / "mm",
            skip=frozenset({Source.CYMRU, Source.GREYNOISE}),
            commit_every=200,
        )
        summary = refresh(config, window)
    finally:
        watching.set()
        watcher.join()
        stop.touch()
        out, _ = neighbour.communicate(timeout=60)
    assert neighbour.returncode == 0
    committed = int(out.strip())
    assert committed > 50, "the neighbour must write during the refresh"
    assert summary.exit_code == 0 and summary.upserted > 0

    # While the refresh had the file open, the -wal file stayed the same file.
    assert window.opened is not None and window.last_phase_end is not None
    during = [
        ident for moment, ident in samples if window.opened <= moment <= window.last_phase_end
    ]
    assert during, "the watcher saw the refresh's window"
    assert None not in during, "the -wal file was deleted while the refresh had it open"
    assert len(set(during)) == 1, "the -wal file was replaced while the refresh had it open"

    con = sqlite3.connect(path)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # Every row the neighbour committed is there, in order, and every row of the refresh.
    numbers = [n for (n,) in con.execute("SELECT n FROM neighbour_rows ORDER BY id")]
    assert numbers == list(range(committed))
    after = con.execute("SELECT count(*) FROM ip_inventory").fetchone()[0]
    assert after == before + summary.new_ips
    enriched = con.execute(
        "SELECT count(*) FROM ip_inventory WHERE json_extract(enrichment, '$.maxmind') IS NOT NULL"
    ).fetchone()[0]
    assert enriched >= summary.sources["maxmind"].ok + summary.sources["maxmind"].not_found
    con.close()
