"""`--lock-timeout` bounds the whole wait of a run (issue 25, item 11), not each write's.

Another process holds the SQLite write lock for the whole run: the run's start row, its
chunk and its end row all meet it. With `--lock-timeout 5` the run gives up about 5 s after it
began to wait (before: the start row, the chunk and the end row each waited, 17 s in all).
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.sims import run_module, write_lock_held

LOCK_TIMEOUT = 5.0
# Starting Python (about 2 s on a busy CI machine), one SQLite busy slice (1 s) for the end
# row, which tries once when the budget is spent; before: about 17-20 s.
MARGIN = 4.5


def test_lock_timeout_bounds_the_whole_wait_of_a_run(tmp_path: Path) -> None:
    db = tmp_path / "h.sqlite"
    built = run_module("testbed.sample", "--db", f"sqlite:///{db}", "--ips", "50",
                       "--maxmind-dir", str(tmp_path))  # fmt: skip
    assert built.returncode == 0, built.stderr
    with write_lock_held(db):
        began = time.monotonic()
        result = run_module("etl.refresh", "--db", f"sqlite:///{db}",
                            "--maxmind-dir", str(tmp_path), "--skip", "cymru",
                            "--skip", "greynoise", "--lock-timeout", str(LOCK_TIMEOUT),
                            timeout=120)  # fmt: skip
        took = time.monotonic() - began
    assert result.returncode == 1, result.stderr
    assert "gave up after waiting" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert took < LOCK_TIMEOUT + MARGIN, (took, result.stderr[-3000:])
    # the answers are kept as ever (nothing asked here: the rows of MaxMind)
    assert "the run log in" in result.stderr  # its rows could not be written: one note each
