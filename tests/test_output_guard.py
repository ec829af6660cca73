"""A path the tool writes never holds something it did not make (issue 24, cases 1, 6, 7, 8):
the outputs are refused when they are the database, its side files, the config file, each
other or a foreign file; a dry run and a run refused by the lock leave the monitoring files
alone; a folder that cannot take a file is found before the run, as root too; a failure to
write one at the end fails the run, and the exit code, the run log and the status file agree.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import Run

OUTPUT_FLAGS = ("--summary-json", "--metrics-file", "--status-file")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def world(sample_world: tuple[Path, Path], tmp_path: Path) -> tuple[Path, list[str]]:
    """A copy of the sample database (in WAL mode, with its side files) and the options of a
    refresh of it that asks no network service."""
    source, maxmind = sample_world
    db = tmp_path / "h.sqlite"
    shutil.copy(source, db)
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=WAL")
    con.close()
    args = ["--db", f"sqlite:///{db}", "--maxmind-dir", str(maxmind), "--skip", "cymru", "-q"]
    return db, args


def one_error(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, output
    assert "Traceback" not in output
    return lines[0]


@pytest.mark.parametrize("flag", OUTPUT_FLAGS)
@pytest.mark.parametrize("target", ["", "-wal", "-shm", "-journal", ".etl-lock", "config"])
@pytest.mark.parametrize("dry_run", [True, False])
def test_an_output_on_the_database_or_its_files_is_refused(
    run: Run, world: tuple[Path, list[str]], tmp_path: Path, flag: str, target: str, dry_run: bool
) -> None:
    db, args = world
    config = tmp_path / "etl.toml"
    config.write_text("commit_every = 100\n")
    path = config if target == "config" else Path(f"{db}{target}")
    if not path.exists():
        path.write_bytes(b"")  # the -journal, the lock: present or not, the same answer
    before = {p: digest(p) for p in tmp_path.iterdir() if p.is_file()}
    code, output = run(*args, "--config", str(config), flag, str(path),
                       *(["--dry-run"] if dry_run else []))  # fmt: skip
    assert code == 2, output
    assert flag in one_error(output) and str(path) in output
    assert {p: digest(p) for p in tmp_path.iterdir() if p.is_file()} == before


def test_one_path_for_two_outputs_is_refused(run: Run, world: tuple[Path, list[str]]) -> None:
    db, args = world
    shared = db.parent / "out.json"
    code, output = run(*args, "--dry-run", "--summary-json", str(shared), "--status-file",
                       str(shared), "--metrics-file", str(shared))  # fmt: skip
    assert code == 2 and "two outputs cannot share a file" in one_error(output)
    assert not shared.exists()


@pytest.mark.parametrize("flag", OUTPUT_FLAGS)
def test_a_foreign_file_is_never_replaced(
    run: Run, world: tuple[Path, list[str]], sample_world: tuple[Path, Path], flag: str
) -> None:
    db, args = world
    foreign = db.parent / "notes.txt"
    foreign.write_text("an operator's notes\n")
    mmdb = db.parent / "GeoLite2-City.mmdb"
    shutil.copy(sample_world[1] / "GeoLite2-City.mmdb", mmdb)
    for path in (foreign, mmdb):
        before = digest(path)
        code, output = run(*args, flag, str(path))
        assert code == 2 and "is not an earlier" in one_error(output), output
        assert digest(path) == before


def test_earlier_outputs_and_empty_files_are_replaced(
    run: Run, world: tuple[Path, list[str]]
) -> None:
    db, args = world
    paths = {flag: db.parent / f"out{flag.replace('--', '-')}" for flag in OUTPUT_FLAGS}
    paths["--status-file"].write_bytes(b"")  # e.g. made by a unit's tmpfiles.d
    options = [item for flag, path in paths.items() for item in (flag, str(path))]
    for _ in range(2):  # the second run replaces what the first one wrote
        code, output = run(*args, *options)
        assert code == 0, output
    assert json.loads(paths["--status-file"].read_text())["state"] == "finished"
    assert json.loads(paths["--summary-json"].read_text())["outcome"] == "finished"
    assert "honeypot_etl_last_run_success 1" in paths["--metrics-file"].read_text()


def test_a_dry_run_writes_no_monitoring_file(run: Run, world: tuple[Path, list[str]]) -> None:
    db, args = world
    metrics = db.parent / "m.prom"
    code, output = run(*args, "--metrics-file", str(metrics))
    assert code == 0, output
    before = digest(metrics)
    new = db.parent / "new"
    summary = db.parent / "summary.json"
    code, output = run(*args, "--dry-run", "--metrics-file", str(metrics), "--status-file",
                       str(new / "status.json"), "--summary-json", str(summary))  # fmt: skip
    assert code == 0, output
    assert digest(metrics) == before  # last_success is not "now": the alert still sees
    assert not new.exists()  # no folder made
    assert json.loads(summary.read_text())["dry_run"] is True
    # Its summary's folder must exist: a dry run makes none.
    code, output = run(*args, "--dry-run", "--summary-json", str(new / "summary.json"))
    assert code == 2 and "--summary-json" in one_error(output) and not new.exists()


@contextmanager
def flocked(path: Path) -> Iterator[None]:
    """Hold a SQLite database's run lock as another refresh would."""
    with open(f"{path}.etl-lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def test_a_run_refused_by_the_lock_leaves_the_monitoring_files_alone(
    run: Run, world: tuple[Path, list[str]]
) -> None:
    db, args = world
    outputs = [db.parent / name for name in ("s.json", "status.json", "m.prom")]
    options = [item for flag, p in zip(OUTPUT_FLAGS, outputs, strict=True) for item in (flag, p)]
    code, output = run(*args, *map(str, options))
    assert code == 0, output
    before = {path: digest(path) for path in outputs}
    with flocked(db):
        code, output = run(*args, *map(str, options))
    assert code == 1 and "another refresh" in one_error(output)
    assert {path: digest(path) for path in outputs} == before


# -- as root: a read-only mount, a full file system --------------------------------------------


@contextmanager
def mounted(folder: Path, *options: str) -> Iterator[Path]:
    """A small tmpfs at ``folder`` (skips the test when this user cannot mount one)."""
    folder.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", ",".join(["size=64k", *options]), "tmpfs", str(folder)],
        capture_output=True, check=False,
    )  # fmt: skip
    if os.geteuid() != 0 or made.returncode != 0:
        pytest.skip("needs root and mount (the case is about root, whom os.access lets pass)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.mark.parametrize("case", ["read-only", "full"])
@pytest.mark.parametrize("flag", OUTPUT_FLAGS)
def test_as_root_an_output_that_cannot_be_written_is_found_first(
    run: Run, world: tuple[Path, list[str]], case: str, flag: str
) -> None:
    db, args = world
    options = ("ro",) if case == "read-only" else ()
    with mounted(db.parent / "mnt", *options) as folder:
        if case == "full":
            with open(folder / "fill", "wb") as handle, pytest.raises(OSError):
                handle.write(b"\0" * 128 * 1024)
        before = digest(db)
        code, output = run(*args, flag, str(folder / "out"))
        assert code == 2, output
        error = one_error(output)
        assert flag in error and ("Read-only" in error or "No space" in error), error
        assert digest(db) == before  # found before the run: nothing refreshed


def test_an_output_lost_at_the_end_fails_the_run_and_every_record_agrees(
    world: tuple[Path, list[str]],
) -> None:
    """The metrics file's folder turns read-only while the run goes: exit 1 naming the option,
    and the run log row and the status file say the same failure."""
    db, args = world
    status = db.parent / "status.json"
    with mounted(db.parent / "mnt") as folder:
        metrics = folder / "m.prom"
        # A slow GreyNoise (a closed port, retried) keeps the run going while the mount turns.
        env = {**os.environ, "GREYNOISE_API_KEY": "k"}
        process = subprocess.Popen(
            [sys.executable, "-m", "etl.refresh", *args, "--metrics-file", str(metrics),
             "--status-file", str(status), "--greynoise-url", "http://127.0.0.1:9",
             "--skip", "maxmind"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not status.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        out, err = process.communicate(timeout=120)
    assert process.returncode == 1, out + err
    error = one_error(err)
    assert "--metrics-file" in error and str(metrics) in error and "Read-only" in error
    assert json.loads(status.read_text())["state"] == "failed"
    con = sqlite3.connect(db)
    outcome, exit_code, logged = con.execute(
        "SELECT outcome, exit_code, error FROM etl_run_log ORDER BY run_id DESC LIMIT 1"
    ).fetchone()
    con.close()
    assert (outcome, exit_code) == ("failed", 1) and "--metrics-file" in logged
