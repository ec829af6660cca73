"""Typos are errors, not notes (issue 24): a MaxMind folder that does not exist, a MaxMind
folder that holds one of its two files, a GreyNoise key with a newline or a space.

Each runs the real command (``python -m etl.refresh``) on a copy of the sample database."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.sims import run_module, running

KEY = "k7Q2xZ9vR4mW8pL3jT6n"  # no 4 letters of it in any message


@pytest.fixture
def world(tmp_path: Path, sample_world: tuple[Path, Path]) -> tuple[Path, Path]:
    """A copy of the sample database and of its MaxMind folder."""
    db, maxmind = sample_world
    shutil.copy(db, tmp_path / "h.sqlite")
    shutil.copytree(maxmind, tmp_path / "mm")
    return tmp_path / "h.sqlite", tmp_path / "mm"


def env(**extra: str) -> dict[str, str]:
    hidden = ("ETL_DB_URL", "MAXMIND_DIR", "GREYNOISE_API_KEY")
    return {k: v for k, v in os.environ.items() if k not in hidden} | extra


def refresh(db: Path, *args: str, environment: dict[str, str] | None = None) -> Any:
    return run_module("etl.refresh", "--db", f"sqlite:///{db}", *args, env=environment or env())


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def maxmind_blocks(db: Path) -> dict[str, dict[str, Any]]:
    con = sqlite3.connect(db)
    rows = con.execute("SELECT ip_address, enrichment FROM ip_inventory").fetchall()
    con.close()
    blocks = {ip: json.loads(text).get("maxmind") for ip, text in rows if text}
    return {ip: block for ip, block in blocks.items() if block}


# -- a MaxMind folder that does not exist ----------------------------------------------------


def test_a_maxmind_folder_that_does_not_exist_is_exit_2(world: tuple[Path, Path]) -> None:
    """It was a note and exit 0, and every IP went to Team Cymru."""
    db, maxmind = world
    typo = maxmind.parent / "maxmnd"
    before = digest(db)
    for args, environment, named in (
        (["--maxmind-dir", str(typo)], env(), "--maxmind-dir"),
        ([], env(MAXMIND_DIR=str(typo)), "MAXMIND_DIR"),
    ):
        result = refresh(db, "--skip", "greynoise", *args, environment=environment)
        assert result.returncode == 2, result.stderr
        assert result.stdout == ""
        assert result.stderr.count("\n") == 1
        assert result.stderr.startswith(f"error: {named} {typo}: no such folder"), result.stderr
    toml = maxmind.parent / "etl.toml"
    toml.write_text('maxmind_dir = "maxmnd"\n', encoding="utf-8")
    result = refresh(db, "--config", str(toml))
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: config file {toml}: maxmind_dir {typo}: no such")
    assert digest(db) == before and not Path(f"{db}-wal").exists()


def test_a_skipped_maxmind_needs_no_folder(world: tuple[Path, Path]) -> None:
    db, maxmind = world
    typo = str(maxmind.parent / "maxmnd")
    result = refresh(db, "--maxmind-dir", typo, "--skip", "maxmind", "--skip", "cymru", "--dry-run")
    assert result.returncode == 0, result.stderr


# -- a MaxMind folder with one of its two files ----------------------------------------------


def test_a_folder_with_only_the_asn_file_writes_no_complete_block(
    world: tuple[Path, Path],
) -> None:
    """It wrote every block `ok` without geolocation, fresh for 7 days. Now: a warning, a
    metric, blocks in error that say what they lack (complete ones kept), not rewritten by
    every run while the file is missing, and looked up again (all of them) by the first run
    that has the City file."""
    db, maxmind = world
    city = maxmind.parent / "GeoLite2-City.mmdb"
    (maxmind / "GeoLite2-City.mmdb").rename(city)
    metrics = maxmind.parent / "m.prom"
    args = ["--maxmind-dir", str(maxmind), "--skip", "cymru", "--skip", "greynoise"]
    before = maxmind_blocks(db)
    result = refresh(db, *args, "--metrics-file", str(metrics))
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert warnings == [
        f"warning: MaxMind City database not found in {maxmind} (looked for GeoLite2-City.mmdb, "
        "GeoIP2-City.mmdb): MaxMind blocks get no geolocation, status error (no City "
        "database), and are looked up again once it is there"
    ]
    text = metrics.read_text()
    assert 'honeypot_etl_maxmind_database_missing{database="city"} 1\n' in text
    assert 'honeypot_etl_maxmind_database_missing{database="asn"} 0\n' in text
    assert 'honeypot_etl_maxmind_build_timestamp_seconds{database="city"} 0\n' in text
    partial = {ip: b for ip, b in maxmind_blocks(db).items() if before.get(ip) != b}
    assert len(partial) > 20
    assert {b["status"] for b in partial.values()} == {"error"}
    assert {b["error"] for b in partial.values()} == {"no City database"}
    assert all(b["country"] is None and b["latitude"] is None for b in partial.values())
    assert any(b["asn"] is not None for b in partial.values())  # what the ASN file says
    # Complete blocks are kept as they are: this run could only have made them worse.
    after = maxmind_blocks(db)
    complete = [ip for ip, b in before.items() if b.get("status") in ("ok", "not_found")]
    assert complete and all(after[ip] == before[ip] for ip in complete)
    # While the file stays missing, no run rewrites what the last one wrote.
    first = maxmind.parent / "first.json"
    result = refresh(db, *args, "--summary-json", str(first))
    assert result.returncode == 0, result.stderr
    assert json.loads(first.read_text())["sources"]["maxmind"]["queried"] == 0
    assert maxmind_blocks(db) == after

    city.rename(maxmind / "GeoLite2-City.mmdb")
    summary = maxmind.parent / "s.json"
    result = refresh(db, *args, "--metrics-file", str(metrics), "--summary-json", str(summary))
    assert result.returncode == 0, result.stderr
    assert "warning: " not in result.stderr
    assert json.loads(summary.read_text())["sources"]["maxmind"]["queried"] >= len(partial)
    whole = maxmind_blocks(db)
    assert all(whole[ip]["cached_at"] != block["cached_at"] for ip, block in partial.items())
    assert {whole[ip]["status"] for ip in partial} <= {"ok", "not_found"}
    assert {whole[ip]["error"] for ip in partial} == {None}
    assert any(whole[ip]["country"] is not None for ip in partial)
    assert 'honeypot_etl_maxmind_database_missing{database="city"} 0\n' in metrics.read_text()


# -- the GreyNoise key -----------------------------------------------------------------------


@pytest.mark.parametrize("where", ["env", "file"])
def test_a_key_with_a_trailing_newline_works(world: tuple[Path, Path], where: str) -> None:
    """A key file, a systemd EnvironmentFile, a paste: it was '10 requests in a row got no
    answer (connection failed)', exit 3."""
    db, maxmind = world
    folder = maxmind.parent
    summary = folder / "s.json"
    args = ["--maxmind-dir", str(maxmind), "--skip", "cymru", "--summary-json", str(summary)]
    if where == "env":
        environment = env(GREYNOISE_API_KEY=f" {KEY}\n")
    else:
        toml = folder / "etl.toml"
        toml.write_text(f'greynoise_api_key = """\n{KEY}\n"""\n', encoding="utf-8")
        toml.chmod(0o600)
        args += ["--config", str(toml)]
        environment = env()
    with running("greynoise", folder / "gn.jsonl", "--key", KEY) as gn:
        result = refresh(db, *args, "--greynoise-url", gn.url, environment=environment)
    assert result.returncode == 0, result.stderr
    counts = json.loads(summary.read_text())["sources"]["greynoise"]
    assert counts["queried"] > 0 and counts["error"] == 0, counts
    assert KEY not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("key", "what"),
    [
        (f"{KEY[:8]} {KEY[8:]}", "whitespace (a space, tab or line break)"),
        (f"{KEY[:8]}\n{KEY[8:]}", "whitespace (a space, tab or line break)"),
        (f"{KEY[:8]}\x07{KEY[8:]}", "a control character"),
        (f"\u201c{KEY}\u201d", "a character that is not ASCII"),
    ],
)
def test_a_key_with_whitespace_inside_is_exit_2_without_the_key(
    world: tuple[Path, Path], key: str, what: str
) -> None:
    db, maxmind = world
    before = digest(db)
    result = refresh(
        db, "--maxmind-dir", str(maxmind), "--skip", "cymru",
        environment=env(GREYNOISE_API_KEY=key),
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stdout == "" and result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"error: GREYNOISE_API_KEY has {what} at character "), (
        result.stderr
    )
    for piece in {KEY[i : i + 4] for i in range(len(KEY) - 3)}:
        assert piece not in result.stderr
    assert digest(db) == before
