"""The sample builder and the demo replace only what they made (issue 24): an operator's database
and MaxMind files are refused and left byte for byte, their own earlier output is rebuilt, and a
replaced database takes its kept answers with it."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from etl.db.url import parse_database_url
from testbed.sample.marks import (
    SAMPLE_TABLE,
    foreign_maxmind,
    foreign_sqlite,
    is_sample_mmdb,
    is_sample_sqlite,
)
from testbed.sample.mmdb_files import write_maxmind_files
from testbed.sample.world import World

ROOT = Path(__file__).resolve().parents[1]
KEPT = "20261130T000000000000-1.ips.parquet"  # a kept answer's name (etl.db.pending)


def run_in(folder: Path, module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m <module> ...`` run from ``folder`` (where relative defaults point)."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=folder, capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


def fingerprint(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (and every folder, empty or not) with its sha256."""
    return {
        str(path.relative_to(folder)): (
            hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "folder"
        )
        for path in sorted(folder.rglob("*"))
    }


def one_error_line(result: subprocess.CompletedProcess[str], *named: Path) -> str:
    """The refusal: exit 2, one ``error:`` line on stderr naming ``named``, no traceback."""
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for path in named:
        assert str(path) in lines[0], (path, lines[0])
    return lines[0]


def operators_database(compat_sqlite: Path, path: Path) -> Path:
    """A cowrieprocessor database (its own DDL, WAL mode) with a table only the operator has."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(compat_sqlite, path)
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode = wal")
    con.execute("CREATE TABLE operator_notes (note TEXT)")
    con.execute("INSERT INTO operator_notes VALUES ('hand-kept, no backup')")
    con.commit()
    con.close()
    return path


def maxmind_folder(mmdb: dict[str, Path], folder: Path, city: str = "GeoLite2-City.mmdb") -> Path:
    """MaxMind's own (test) databases under the names a refresh reads."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(mmdb["asn"], folder / "GeoLite2-ASN.mmdb")
    shutil.copy(mmdb["geoip2_city" if city.startswith("GeoIP2") else "city"], folder / city)
    return folder


# -- the marks ------------------------------------------------------------------------------
def test_marks_tell_the_samples_files_from_maxminds(tmp_path: Path, mmdb: dict[str, Path]) -> None:
    ours = write_maxmind_files(World(1), tmp_path / "ours")
    assert all(is_sample_mmdb(path) for path in ours)
    assert not any(is_sample_mmdb(mmdb[kind]) for kind in ("asn", "city", "geoip2_city"))
    garbage = tmp_path / "garbage.mmdb"
    garbage.write_bytes(b"not a MaxMind DB")
    assert not is_sample_mmdb(garbage) and not is_sample_mmdb(tmp_path / "absent.mmdb")
    theirs = maxmind_folder(mmdb, tmp_path / "theirs", city="GeoIP2-City.mmdb")
    assert foreign_maxmind(theirs) == [theirs / "GeoLite2-ASN.mmdb", theirs / "GeoIP2-City.mmdb"]
    assert foreign_maxmind(tmp_path / "ours") == [] == foreign_maxmind(tmp_path / "none")


def test_looking_at_a_database_changes_nothing(tmp_path: Path, compat_sqlite: Path) -> None:
    """An operator's WAL database is read without a journal, -wal or -shm file made."""
    theirs = operators_database(compat_sqlite, tmp_path / "data" / "honeypot.sqlite")
    before = fingerprint(tmp_path / "data")
    assert not is_sample_sqlite(theirs)
    url = parse_database_url(f"sqlite:///{theirs}", check_folder=False)
    assert foreign_sqlite(url) == [theirs]
    assert fingerprint(tmp_path / "data") == before
    text = tmp_path / "notes.sqlite"
    text.write_text("the operator's database")
    assert not is_sample_sqlite(text) and not is_sample_sqlite(tmp_path)
    empty = tmp_path / "empty.sqlite"
    empty.touch()  # what the sample's own file is for a moment, before its mark
    empty.with_name("empty.sqlite-wal").touch()  # nothing in it
    empty.with_name("empty.sqlite-shm").write_bytes(b"an index SQLite makes anew")
    assert foreign_sqlite(parse_database_url(f"sqlite:///{empty}", check_folder=False)) == []


# -- the demo --------------------------------------------------------------------------------
@pytest.mark.parametrize("real", ["database and maxmind", "database", "maxmind", "kept answers"])
def test_the_demo_refuses_a_data_folder_it_did_not_make(
    tmp_path: Path, compat_sqlite: Path, mmdb: dict[str, Path], real: str
) -> None:
    """`demo --data data`: the refresh's folder. Nothing in it changes, nothing is added."""
    data = tmp_path / "data"
    named = []
    if "database" in real:
        named.append(operators_database(compat_sqlite, data / "honeypot.sqlite"))
    if "maxmind" in real:
        folder = maxmind_folder(mmdb, data / "maxmind")
        named += [folder / "GeoLite2-ASN.mmdb", folder / "GeoLite2-City.mmdb"]
    if real == "kept answers":  # answers paid for, kept for a database moved elsewhere
        (data / "honeypot.sqlite.etl-pending").mkdir(parents=True)
        (data / "honeypot.sqlite.etl-pending" / KEPT).write_bytes(b"PAR1 answers PAR1")
        named.append(data / "honeypot.sqlite.etl-pending")
    before = fingerprint(tmp_path)
    result = run_in(tmp_path, "testbed.demo", "--ips", "50", "--data", "data")
    line = one_error_line(result, *(path.relative_to(tmp_path) for path in named))
    assert "--data" in line
    assert fingerprint(tmp_path) == before


def test_the_demo_rebuilds_its_own_world(demo: tuple[Path, str], tmp_path: Path) -> None:
    """A second demo over the first one's folder: no --replace needed, and the answers kept
    for the old database go with it."""
    folder = tmp_path / "demo"
    shutil.copytree(demo[0], folder)
    kept = folder / "honeypot.sqlite.etl-pending"
    kept.mkdir(exist_ok=True)
    (kept / KEPT).write_bytes(b"answers about the old world's IPs")
    result = run_in(tmp_path, "testbed.demo", "--ips", "80", "--seed", "2", "--data", "demo")
    assert result.returncode == 0, result.stdout + result.stderr
    assert not kept.exists()
    con = sqlite3.connect(folder / "honeypot.sqlite")
    assert con.execute(f"SELECT seed, ips FROM {SAMPLE_TABLE}").fetchall() == [(2, 80)]
    con.close()


# -- the sample ------------------------------------------------------------------------------
def test_the_samples_defaults_are_not_the_refreshs(
    tmp_path: Path, compat_sqlite: Path, mmdb: dict[str, Path]
) -> None:
    """`python -m testbed.sample` beside a real data/honeypot.sqlite and data/maxmind."""
    operators_database(compat_sqlite, tmp_path / "data" / "honeypot.sqlite")
    maxmind_folder(mmdb, tmp_path / "data" / "maxmind")
    before = fingerprint(tmp_path / "data")
    result = run_in(tmp_path, "testbed.sample", "--ips", "40")
    assert result.returncode == 0, result.stderr
    after = fingerprint(tmp_path / "data")
    assert {name: after[name] for name in before} == before
    sample = tmp_path / "data" / "sample"
    assert is_sample_sqlite(sample / "honeypot.sqlite")
    assert is_sample_mmdb(sample / "maxmind" / "GeoLite2-ASN.mmdb")


@pytest.mark.parametrize(
    ("where", "city"),
    [("default", "GeoLite2-City.mmdb"), ("explicit", "GeoLite2-City.mmdb"),
     ("explicit", "GeoIP2-City.mmdb")],
)  # fmt: skip
def test_the_sample_refuses_maxmind_files_it_did_not_write(
    tmp_path: Path, mmdb: dict[str, Path], where: str, city: str
) -> None:
    """Refused, byte for byte, before the database is made; --replace writes the sample's."""
    if where == "default":
        folder, options = Path("data/sample/maxmind"), []
    else:
        folder = Path("geolite")
        options = ["--db", "sqlite:///h.sqlite", "--maxmind-dir", str(folder)]
    maxmind_folder(mmdb, tmp_path / folder, city)
    before = fingerprint(tmp_path)
    refused = run_in(tmp_path, "testbed.sample", "--ips", "30", *options)
    line = one_error_line(refused, folder / "GeoLite2-ASN.mmdb", folder / city)
    assert "--replace" in line
    assert fingerprint(tmp_path) == before
    replaced = run_in(tmp_path, "testbed.sample", "--ips", "30", *options, "--replace")
    assert replaced.returncode == 0, replaced.stderr
    assert is_sample_mmdb(tmp_path / folder / "GeoLite2-ASN.mmdb")
    assert is_sample_mmdb(tmp_path / folder / "GeoLite2-City.mmdb")


def test_the_sample_reruns_over_its_own_output(tmp_path: Path) -> None:
    """Its own MaxMind files it writes anew; its own database it rebuilds with --replace,
    and the answers kept for the old database go with it."""
    first = run_in(tmp_path, "testbed.sample", "--ips", "30")
    assert first.returncode == 0, first.stderr
    database = tmp_path / "data" / "sample" / "honeypot.sqlite"
    other = run_in(tmp_path, "testbed.sample", "--ips", "20", "--db", "sqlite:///other.sqlite")
    assert other.returncode == 0, other.stderr  # the same (own) MaxMind files, rewritten
    kept = database.with_name("honeypot.sqlite.etl-pending")
    kept.mkdir()
    (kept / KEPT).write_bytes(b"answers about the old sample's IPs")
    before = fingerprint(tmp_path)
    again = run_in(tmp_path, "testbed.sample", "--ips", "25")
    one_error_line(again, Path("data/sample/honeypot.sqlite"))
    assert "--replace" in again.stderr and fingerprint(tmp_path) == before
    rebuilt = run_in(tmp_path, "testbed.sample", "--ips", "25", "--seed", "4", "--replace")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert not kept.exists()
    con = sqlite3.connect(database)
    assert con.execute(f"SELECT seed, ips FROM {SAMPLE_TABLE}").fetchall() == [(4, 25)]
    con.close()


def test_the_sample_refuses_answers_kept_for_a_database_gone(tmp_path: Path) -> None:
    """Kept answers with no database beside them belong to one the operator moved: refused;
    --replace removes them with the old database's journal files."""
    kept = tmp_path / "h.sqlite.etl-pending"
    kept.mkdir()
    (kept / KEPT).write_bytes(b"answers paid for")
    (tmp_path / "h.sqlite-wal").write_bytes(b"frames of a database gone")
    before = fingerprint(tmp_path)
    options = ["--db", "sqlite:///h.sqlite", "--maxmind-dir", "mm", "--ips", "20"]
    refused = run_in(tmp_path, "testbed.sample", *options)
    one_error_line(refused, Path("h.sqlite.etl-pending"), Path("h.sqlite-wal"))
    assert fingerprint(tmp_path) == before
    replaced = run_in(tmp_path, "testbed.sample", *options, "--replace")
    assert replaced.returncode == 0, replaced.stderr
    assert not kept.exists() and is_sample_sqlite(tmp_path / "h.sqlite")
