"""Kept answers belong to one database (issue 24, bug 5): answers a stopped run kept for
database A are never applied to another database put at the same path later (a demo re-run
with another seed, another honeypot's file); a copy of A restored from a backup gets them only
for the IPs it knows; ``honeypot-etl pending`` lists, applies and discards them.

The runs are the real CLI against the simulators (as in `tests.test_real_databases`).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import polars as pl

from etl.db.database import Database
from etl.db.pending import PendingAnswers
from etl.db.url import parse_database_url
from etl.report.summary import LineReporter
from tests.sims import Simulator, write_lock_held
from tests.test_real_databases import (
    asked_since,
    build,
    command,
    outcome,
    refresh,
    sims,
)

__all__ = ["sims"]  # the simulators fixture, shared with tests.test_real_databases

OPTIONS = ("--greynoise-rate", "200", "--commit-every", "100")
GREYNOISE = {"noise": False, "riot": False, "classification": "unknown", "name": None,
             "status": "not_found", "error": None,
             "cached_at": "2026-11-30T00:00:00+00:00"}  # fmt: skip
STRANGER = "203.0.113.77"  # an address no sample database knows


def pending(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m etl pending --db sqlite:///<db> ...``."""
    return subprocess.run(
        [sys.executable, "-m", "etl", "pending", "--db", f"sqlite:///{db}", *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def folder_of(db: Path) -> Path:
    return db.with_name(db.name + ".etl-pending")


def kept_ips(db: Path) -> set[str]:
    files = sorted(folder_of(db).glob("*.ips.parquet"))
    return set(pl.concat([pl.read_parquet(f).select("ip") for f in files])["ip"].to_list())


def inventory(db: Path) -> set[str]:
    with sqlite3.connect(db) as con:
        return {row[0] for row in con.execute("SELECT ip_address FROM ip_inventory")}


def remove_database(db: Path) -> None:
    """The file and its journals: what a demo re-run or a restore replaces (not the folder of
    kept answers beside it, which nothing tells them about)."""
    for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm"), Path(f"{db}-journal")):
        path.unlink(missing_ok=True)


def copy_database(source: Path, target: Path) -> None:
    """A consistent copy, as a backup tool makes it (SQLite's online backup)."""
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    src.close()
    dst.close()


def give_id(db: Path, folder: Path) -> None:
    """A first real run, with no service: the database gets its id."""
    first = refresh(sys.executable, "-m", "etl.refresh", "--db", f"sqlite:///{db}",
                    "--maxmind-dir", str(folder), "--skip", "cymru", "--skip", "greynoise",
                    "--ips", "1")  # fmt: skip
    assert first.returncode == 0, first.stderr


def stop_keeping_answers(
    db: Path, folder: Path, cymru: Simulator, gn: Simulator
) -> tuple[set[str], str]:
    """A run that cannot commit: another writer holds the lock longer than --lock-timeout.
    The IPs GreyNoise was asked about (paid for), and what the run said."""
    start = len(gn.entries())
    with write_lock_held(db):
        stopped = refresh(*command(f"sqlite:///{db}", folder, cymru, gn, *OPTIONS,
                                   "--lock-timeout", "2"))  # fmt: skip
    assert stopped.returncode == 1, stopped.stderr
    assert kept_ips(db), stopped.stderr
    return set(asked_since(gn, start)), stopped.stderr


def test_answers_kept_for_one_database_are_never_applied_to_another_at_its_path(
    tmp_path: Path, sims: tuple[Simulator, Simulator]
) -> None:
    cymru, gn = sims
    db = tmp_path / "h.sqlite"
    build(f"sqlite:///{db}", tmp_path / "a", 300)
    give_id(db, tmp_path / "a")
    _, said = stop_keeping_answers(db, tmp_path / "a", cymru, gn)
    answered = kept_ips(db)
    # Another world at the same path (the demo re-run with another seed), and a copy of it.
    other = tmp_path / "b" / "h.sqlite"
    other.parent.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "testbed.sample", "--db", f"sqlite:///{other}", "--ips", "300",
         "--seed", "2", "--maxmind-dir", str(tmp_path / "b")],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    remove_database(db)
    copy_database(other, db)
    calm = tmp_path / "calm.sqlite"
    copy_database(other, calm)
    foreign = answered - inventory(db)
    assert foreign  # the two worlds hardly share an address

    ran = refresh(*command(f"sqlite:///{db}", tmp_path / "b", cymru, gn, *OPTIONS))
    assert ran.returncode == 0, ran.stderr
    assert not inventory(db) & foreign  # before: 1,580 such rows, session_count 0
    assert kept_ips(db) == answered  # left alone
    calm_run = refresh(*command(f"sqlite:///{calm}", tmp_path / "b", cymru, gn, *OPTIONS))
    assert calm_run.returncode == 0, calm_run.stderr
    assert outcome(f"sqlite:///{db}") == outcome(f"sqlite:///{calm}")
    assert "for this database only" in said, said
    assert "were kept for another database than" in ran.stderr, ran.stderr
    assert "pending --discard --foreign" in ran.stderr
    assert "that a stopped run had kept" not in ran.stderr

    listed = pending(db)
    assert listed.returncode == 0, listed.stderr
    assert "another database (id " in listed.stdout and "this database\n" not in listed.stdout
    applied = pending(db, "--apply")
    assert applied.returncode == 0, applied.stderr
    assert "were kept for another database than" in applied.stderr
    assert kept_ips(db) == answered and not inventory(db) & foreign
    discarded = pending(db, "--discard", "--foreign")
    assert discarded.returncode == 0, discarded.stderr
    assert "discarded" in discarded.stderr and not folder_of(db).exists()


def test_a_restored_copy_gets_the_kept_answers_only_for_the_ips_it_knows(
    tmp_path: Path, sims: tuple[Simulator, Simulator]
) -> None:
    cymru, gn = sims
    db, backup = tmp_path / "h.sqlite", tmp_path / "backup.sqlite"
    build(f"sqlite:///{db}", tmp_path, 300)
    give_id(db, tmp_path)
    copy_database(db, backup)
    paid, said = stop_keeping_answers(db, tmp_path, cymru, gn)
    # The backup is older than some of the IPs answered: neither their rows nor their sessions.
    answered = kept_ips(db)
    newer = sorted(answered & inventory(backup))[:5]
    forget(backup, newer)
    before = len(gn.entries())
    remove_database(db)
    copy_database(backup, db)

    listed = pending(db)
    ran = refresh(*command(f"sqlite:///{db}", tmp_path, cymru, gn, *OPTIONS))
    assert ran.returncode == 0, ran.stderr
    assert not inventory(db) & set(newer)  # no row for an IP this database never had
    assert not folder_of(db).exists()
    again = asked_since(gn, before)
    assert not set(again) & (paid - set(newer))  # what was paid for is not asked again
    assert "that a stopped run had kept" in ran.stderr, ran.stderr
    assert "for IPs that" in ran.stderr and "does not know were left out" in ran.stderr
    assert "for this database only" in said, said
    assert listed.returncode == 0, listed.stderr
    assert "this database" in listed.stdout and "the next refresh applies them" in listed.stdout


def forget(db: Path, ips: list[str]) -> None:
    """Take ``ips`` out of ``db``: their rows, their sessions and those sessions' events."""
    marks = ", ".join("?" for _ in ips)
    with sqlite3.connect(db) as con:
        sessions = [row[0] for row in con.execute(
            f"SELECT session_id FROM session_summaries WHERE source_ip IN ({marks}) UNION "
            f"SELECT session_id FROM raw_events WHERE json_extract(payload, '$.src_ip') "
            f"IN ({marks})", [*ips, *ips])]  # fmt: skip
        listed = ", ".join("?" for _ in sessions)
        con.execute(f"DELETE FROM raw_events WHERE session_id IN ({listed})", sessions)
        con.execute(f"DELETE FROM session_summaries WHERE session_id IN ({listed})", sessions)
        con.execute(f"DELETE FROM ip_inventory WHERE ip_address IN ({marks})", ips)
    con.close()


def legacy_file(folder: Path, ips: list[str], name: str = "20261130T000000000000-1") -> Path:
    """A file as runs before this change kept them in ``folder``: no database named in it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.ips.parquet"
    pl.DataFrame({
        "ip": ips, "greynoise_status": ["not_found"] * len(ips),
        "greynoise": [json.dumps(GREYNOISE)] * len(ips),
    }).write_parquet(path)  # fmt: skip
    return path


def greynoise_blocks(db: Path) -> dict[str, object]:
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT ip_address, json_extract(enrichment, '$.greynoise') "
                           "FROM ip_inventory").fetchall()  # fmt: skip
    con.close()
    return {ip: json.loads(block) if block else None for ip, block in rows}


def test_files_that_name_no_database_wait_for_pending_apply(
    tmp_path: Path, sample_world: tuple[Path, Path]
) -> None:
    db = tmp_path / "h.sqlite"
    copy_database(sample_world[0], db)
    known = sorted(inventory(db))[:3]
    legacy_file(folder_of(db), [*known, STRANGER])
    ran = refresh(sys.executable, "-m", "etl.refresh", "--db", f"sqlite:///{db}",
                  "--maxmind-dir", str(sample_world[1]), "--skip", "cymru",
                  "--skip", "greynoise")  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert STRANGER not in inventory(db) and len(list(folder_of(db).iterdir())) == 1
    assert all(greynoise_blocks(db)[ip] != GREYNOISE for ip in known)
    assert "do not name the database they were kept for: left alone" in ran.stderr, ran.stderr
    assert "pending --apply" in ran.stderr

    listed = pending(db)
    assert listed.returncode == 0, listed.stderr
    assert "4 rows" in listed.stdout and "no database named" in listed.stdout
    assert "database id " in listed.stdout and "none yet" not in listed.stdout
    applied = pending(db, "--apply")
    assert applied.returncode == 0, applied.stderr
    assert "applied 3 answer(s)" in applied.stderr, applied.stderr
    assert "1 for IPs that" in applied.stderr
    assert STRANGER not in inventory(db) and not folder_of(db).exists()
    assert all(greynoise_blocks(db)[ip] == GREYNOISE for ip in known)
    assert "no kept answers for" in pending(db).stdout

    legacy_file(folder_of(db), known)
    other = PendingAnswers(folder_of(db), owner="0f0f0f0f-another-database")
    other.save({"ips": pl.DataFrame({"ip": [STRANGER]})})
    foreign = pending(db, "--discard", "--foreign")
    assert foreign.returncode == 0, foreign.stderr
    assert [p.name for p in folder_of(db).iterdir()] == ["20261130T000000000000-1.ips.parquet"]
    everything = pending(db, "--discard")
    assert everything.returncode == 0, everything.stderr
    assert "discarded 1 file(s)" in everything.stderr and not folder_of(db).exists()


def test_pending_usage_errors_are_one_line(tmp_path: Path, sample_world: tuple[Path, Path]) -> None:
    db = tmp_path / "h.sqlite"
    for args, message in [
        (("--apply", "--discard"), "--apply and --discard exclude each other"),
        (("--foreign",), "--foreign goes with --discard"),
    ]:
        result = pending(sample_world[0], *args)
        assert result.returncode == 2 and result.stderr.startswith(f"error: {message}")
        assert result.stderr.count("\n") == 1
    legacy_file(folder_of(db), ["198.51.100.1"])
    missing = pending(db)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    assert f"answers kept for a database at that path are in {folder_of(db)}" in missing.stderr


def test_a_dry_run_gives_no_id_a_real_run_does(
    tmp_path: Path, sample_world: tuple[Path, Path]
) -> None:
    from etl.cli.refresh import main
    from etl.db.identity import database_id

    db = tmp_path / "h.sqlite"
    copy_database(sample_world[0], db)
    base = ["--db", f"sqlite:///{db}", "--maxmind-dir", str(sample_world[1]), "--quiet",
            "--skip", "cymru", "--skip", "greynoise", "--ips", "1"]  # fmt: skip
    assert main([*base, "--dry-run"]) == 0
    with Database(parse_database_url(f"sqlite:///{db}")) as opened:
        assert not opened.columns("etl_identity")
    assert main(base) == 0
    with Database(parse_database_url(f"sqlite:///{db}")) as opened:
        made = database_id(opened)
    assert made is not None and len(made) == 36
    assert main(base) == 0
    with Database(parse_database_url(f"sqlite:///{db}")) as opened:
        assert database_id(opened) == made  # made once


def test_the_id_and_the_known_ips_in_each_dialect(any_db_url: str, tmp_path: Path) -> None:
    """Library level, both dialects: one id per database, kept files name it, and answers go
    only to IPs the database knows."""
    from datetime import UTC, datetime

    from etl.db.identity import claim_database_id, database_id, known_ips
    from etl.db.pending import OWNER_KEY
    from etl.refresh.config import RefreshConfig
    from etl.refresh.pipeline import apply_pending

    url = parse_database_url(any_db_url)
    with Database(url, create=True) as db:
        db.ensure_schema()
        db.execute_native([
            "INSERT INTO ip_inventory (ip_address, first_seen, last_seen, enrichment) VALUES "
            "('198.51.100.1', '2026-11-30 00:00:00', '2026-11-30 00:00:00', '{}')"
        ])  # fmt: skip
        assert database_id(db) is None
        now = datetime(2026, 12, 1, tzinfo=UTC)
        made = claim_database_id(db, now)
        assert made is not None and claim_database_id(db, now) == made
        ips = pl.Series("ip", ["198.51.100.1", STRANGER, "198.51.100.1"])
        assert known_ips(db, ips).to_list() == ["198.51.100.1"]

        kept = PendingAnswers(tmp_path / "kept", owner=made)
        blocks = [json.dumps(GREYNOISE)] * 2
        frame = pl.DataFrame({"ip": ["198.51.100.1", STRANGER], "greynoise": blocks,
                              "greynoise_status": ["not_found"] * 2})  # fmt: skip
        [path] = kept.save({"ips": frame})
        assert pl.read_parquet_metadata(path)[OWNER_KEY] == made
        [item] = kept.files()
        assert item.belongs(made) == "this" and item.belongs("another") == "another"
        apply_pending(db, PendingAnswers(kept.folder), RefreshConfig(db_url=any_db_url),
                      LineReporter(verbosity=-1))  # fmt: skip
        rows = db.query_native("SELECT ip_address, enrichment FROM ip_inventory")
    stored = {ip: value if isinstance(value, dict) else json.loads(value) for ip, value in rows}
    assert stored == {"198.51.100.1": {"greynoise": GREYNOISE}}
    assert not kept.folder.exists()


def test_a_file_kept_before_this_change_is_listed_as_naming_no_database(tmp_path: Path) -> None:
    path = legacy_file(tmp_path / "kept", ["198.51.100.1"])
    [item] = PendingAnswers(path.parent).files()
    assert item.owner is None and item.belongs("some-id") == "unknown" and item.rows() == 1
    assert item.kept_at().isoformat() == "2026-11-30T00:00:00+00:00"
    shutil.rmtree(path.parent)


def test_pending_on_postgres_keeps_to_its_state_folder(pg_url: str, tmp_path: Path) -> None:
    """The command on PostgreSQL: files in the state folder (``ETL_PENDING_DIR``), listed,
    applied under the advisory lock to the IPs the database knows."""
    import os

    url = parse_database_url(pg_url)
    with Database(url, create=True) as db:
        db.ensure_schema()
        db.execute_native([
            "INSERT INTO ip_inventory (ip_address, first_seen, last_seen, enrichment) VALUES "
            "('198.51.100.1', '2026-11-30 00:00:00', '2026-11-30 00:00:00', '{}')"
        ])  # fmt: skip
        folder = PendingAnswers.of(url, tmp_path).folder
    legacy_file(folder, ["198.51.100.1", STRANGER])
    env = {**os.environ, "ETL_PENDING_DIR": str(tmp_path)}

    def command(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "etl", "pending", "--db", pg_url, *args],
                              capture_output=True, text=True, timeout=120, check=False,
                              env=env)  # fmt: skip

    listed = command()
    assert listed.returncode == 0, listed.stderr
    assert "no database named" in listed.stdout and "none yet" in listed.stdout
    applied = command("--apply")
    assert applied.returncode == 0, applied.stderr
    assert "applied 1 answer(s)" in applied.stderr and "1 for IPs that" in applied.stderr
    with Database(url) as db:
        rows = db.query_native("SELECT ip_address, enrichment FROM ip_inventory")
        assert database_id_of(db) is not None
    stored = {ip: value if isinstance(value, dict) else json.loads(value) for ip, value in rows}
    assert stored == {"198.51.100.1": {"greynoise": GREYNOISE}}
    assert not folder.exists()


def database_id_of(db: Database) -> str | None:
    from etl.db.identity import database_id

    return database_id(db)


def test_the_id_is_claimed_after_a_short_lock_of_the_loader(tmp_path: Path) -> None:
    """A first run that meets the loader's short write lock still claims the id (it waits
    quietly for up to CLAIM_WAIT s); a lock held longer leaves it unclaimed, without a line."""
    import threading
    from datetime import UTC, datetime

    from etl.db.identity import CLAIM_WAIT, claim_database_id, database_id

    path = tmp_path / "h.sqlite"
    said: list[str] = []
    with Database(parse_database_url(f"sqlite:///{path}"), create=True, notify=said.append) as db:
        db.ensure_schema()
        now = datetime(2026, 12, 1, tzinfo=UTC)
        with write_lock_held(path):
            started = time.monotonic()
            assert claim_database_id(db, now) is None  # held past CLAIM_WAIT
            assert CLAIM_WAIT - 0.5 <= time.monotonic() - started <= CLAIM_WAIT + 3
        assert database_id(db) is None and not said
        holder = threading.Thread(target=lambda: _hold_for(path, 1.0))
        holder.start()
        time.sleep(0.3)
        made = claim_database_id(db, now)  # before: one try, None
        holder.join()
        assert made is not None and database_id(db) == made and not said


def _hold_for(path: Path, seconds: float) -> None:
    with write_lock_held(path):
        time.sleep(seconds)
