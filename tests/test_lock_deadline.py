"""`--lock-timeout` bounds the whole wait of a run (issue 25, item 11), not each write's.

Another process holds the SQLite write lock for the whole run: the run's start row, its
chunk and its end row all meet it. With `--lock-timeout 5` the run gives up about 5 s after it
began to wait (before: the start row, the chunk and the end row each waited, 17 s in all).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.sims import run_module, write_lock_held

LOCK_TIMEOUT = 5.0
# From the run's first line (Python has started and imported: seconds on a busy machine, not
# counted) to its exit: one SQLite busy slice (1 s) for the end row, which tries once when the
# budget is spent, and the exit on a busy machine; before: about 17-20 s.
MARGIN = 4.5


def test_lock_timeout_bounds_the_whole_wait_of_a_run(tmp_path: Path) -> None:
    db = tmp_path / "h.sqlite"
    built = run_module("testbed.sample", "--db", f"sqlite:///{db}", "--ips", "50",
                       "--maxmind-dir", str(tmp_path))  # fmt: skip
    assert built.returncode == 0, built.stderr
    with write_lock_held(db):
        run = subprocess.Popen(
            [sys.executable, "-m", "etl.refresh", "--db", f"sqlite:///{db}",
             "--maxmind-dir", str(tmp_path), "--skip", "cymru", "--skip", "greynoise",
             "--lock-timeout", str(LOCK_TIMEOUT)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert run.stderr is not None
        began, lines = None, []
        for line in run.stderr:  # the first line ("refreshing ...") comes before any wait
            began = time.monotonic() if began is None else began
            lines.append(line)
        code = run.wait(timeout=120)
        took = time.monotonic() - (began or 0.0)
    stderr = "".join(lines)
    assert code == 1, stderr
    assert "gave up after waiting" in stderr, stderr
    assert "Traceback" not in stderr
    assert took < LOCK_TIMEOUT + MARGIN, (took, stderr[-3000:])
    # the answers are kept as ever (nothing asked here: the rows of MaxMind)
    assert "the run log in" in stderr  # its rows could not be written: one note each
