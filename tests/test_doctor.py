"""``honeypot-etl doctor``: one line per check of what a cron run needs (settings, database,
run lock, MaxMind, the lists, Team Cymru, GreyNoise), ok or what to fix, without a refresh; exit 1 at the
first failure, the checks after it skipped."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import socket
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from etl.db.database import Database
from etl.db.lock import ADVISORY_KEY, run_lock_path
from etl.db.url import parse_database_url
from etl.refresh.config import RefreshConfig
from testbed.sample.lists import record_lists, world_lists
from testbed.sample.world import World
from tests.sims import Simulator, run_module, running

KEY = "doctor-Kq9Zx7Wm-key"
WRONG_KEY = "wrong-Vb3Tq8Lp-key"
CHECKS = ["config", "database", "run lock", "maxmind", "lists", "cymru", "greynoise"]


@dataclass
class Services:
    cymru: Simulator
    greynoise: Simulator
    lists: Path  # the sample world's lists, as `honeypot-etl lists update` fetches them


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    """Both simulators, as the demo runs them (GreyNoise with a key)."""
    folder = tmp_path_factory.mktemp("doctor-sims")
    with (
        running("cymru", folder / "cymru.jsonl", "--seed", "3") as cymru,
        running("greynoise", folder / "greynoise.jsonl", "--seed", "3", "--key", KEY) as gn,
    ):
        world_lists(World(3), folder / "lists")
        yield Services(cymru, gn, folder / "lists")


def closed_port() -> int:
    """A loopback port nothing listens on (a stopped service)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Outcome:
    code: int
    lines: dict[str, str]  # check name -> its line
    stdout: str
    stderr: str

    def verdict(self, name: str) -> str:
        return self.lines[name].split()[0]


def doctor(
    world: tuple[Path, Path],
    services: Services,
    *args: str,
    key: str = KEY,
    db: Path | None = None,
) -> Outcome:
    """``python -m etl doctor`` against the world and the simulators (``args`` come last, so
    they win)."""
    database, maxmind = world
    env = {**os.environ, "GREYNOISE_API_KEY": key}
    result: subprocess.CompletedProcess[str] = run_module(
        "etl", "doctor", "--db", f"sqlite:///{db or database}", "--maxmind-dir", str(maxmind),
        "--cymru", services.cymru.address, "--greynoise-url", services.greynoise.url,
        "--lists-dir", str(services.lists), *args,
        env=env, timeout=120,
    )  # fmt: skip
    lines = result.stdout.splitlines()
    by_name = {}
    for line in lines[:-1]:
        name = next(n for n in sorted(CHECKS, key=len, reverse=True) if line[6:].startswith(n))
        by_name[name] = line
    assert list(by_name) == CHECKS, result.stdout + result.stderr
    return Outcome(result.returncode, by_name, result.stdout, result.stderr)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_check_ok_against_the_sample_world_and_both_simulators(
    sample_world: tuple[Path, Path], services: Services
) -> None:
    """All ok, exit 0; one /ping with the key (no Search billed), one Cymru session of one
    address; the database unchanged and the key never shown."""
    before = digest(sample_world[0])
    pings = len([e for e in services.greynoise.entries() if e["path"] == "/ping"])
    sessions = len(services.cymru.entries())
    outcome = doctor(sample_world, services)
    assert outcome.code == 0, outcome.stdout + outcome.stderr
    assert all(outcome.verdict(name) == "ok" for name in CHECKS), outcome.stdout
    assert outcome.stdout.splitlines()[-1] == "doctor: every check ok"
    assert "AS" in outcome.lines["cymru"] and services.cymru.address in outcome.lines["cymru"]
    assert "accepted the key" in outcome.lines["greynoise"]
    assert KEY not in outcome.stdout + outcome.stderr
    new_pings = [e for e in services.greynoise.entries() if e["path"] == "/ping"][pings:]
    assert [(e["status"], e["searches"], e["authenticated"]) for e in new_pings] == [(200, 0, True)]
    new_sessions = services.cymru.entries()[sessions:]
    assert len(new_sessions) == 1, new_sessions
    assert digest(sample_world[0]) == before


def test_a_stopped_team_cymru_is_named_and_ends_the_checks(
    sample_world: tuple[Path, Path], services: Services
) -> None:
    outcome = doctor(sample_world, services, "--cymru", f"127.0.0.1:{closed_port()}")
    assert outcome.code == 1
    assert outcome.verdict("cymru") == "FAIL"
    assert "Team Cymru at 127.0.0.1:" in outcome.lines["cymru"]
    assert "connection refused" in outcome.lines["cymru"]
    assert outcome.verdict("greynoise") == "skip"
    assert "fix the failure above" in outcome.lines["greynoise"]


def test_a_stopped_greynoise_is_named(sample_world: tuple[Path, Path], services: Services) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    outcome = doctor(sample_world, services, "--greynoise-url", url)
    assert outcome.code == 1
    assert outcome.verdict("cymru") == "ok"
    assert outcome.verdict("greynoise") == "FAIL"
    assert f"GreyNoise at {url}: connection refused" in outcome.lines["greynoise"]


def test_a_wrong_key_is_named_without_showing_either_key(
    sample_world: tuple[Path, Path], services: Services
) -> None:
    outcome = doctor(sample_world, services, key=WRONG_KEY)
    assert outcome.code == 1
    assert outcome.verdict("greynoise") == "FAIL"
    assert "refused the API key (HTTP 401)" in outcome.lines["greynoise"]
    assert "GREYNOISE_API_KEY" in outcome.lines["greynoise"]
    for secret in (WRONG_KEY, KEY, WRONG_KEY[6:14]):
        assert secret not in outcome.stdout + outcome.stderr


def test_a_wrong_greynoise_path_says_to_check_the_url(
    sample_world: tuple[Path, Path], services: Services
) -> None:
    outcome = doctor(sample_world, services, "--greynoise-url", services.greynoise.url + "/v3")
    assert outcome.code == 1
    assert "HTTP 404" in outcome.lines["greynoise"]
    assert "check --greynoise-url" in outcome.lines["greynoise"]


def test_without_a_key_greynoise_is_skipped_not_failed(
    sample_world: tuple[Path, Path], services: Services
) -> None:
    outcome = doctor(sample_world, services, key="")
    assert outcome.code == 0, outcome.stdout
    assert outcome.verdict("greynoise") == "skip"
    assert "no key" in outcome.lines["greynoise"]


def test_a_missing_maxmind_file_is_named(
    sample_world: tuple[Path, Path], services: Services, tmp_path: Path
) -> None:
    only_asn = tmp_path / "maxmind"
    only_asn.mkdir()
    shutil.copy(sample_world[1] / "GeoLite2-ASN.mmdb", only_asn)
    outcome = doctor(sample_world, services, "--maxmind-dir", str(only_asn))
    assert outcome.code == 1
    assert outcome.verdict("maxmind") == "FAIL"
    assert "no City database in" in outcome.lines["maxmind"]
    assert "GeoLite2-City.mmdb" in outcome.lines["maxmind"]
    assert [outcome.verdict(n) for n in ("cymru", "greynoise")] == ["skip", "skip"]


def _cowrie_output(path: Path) -> None:
    con = sqlite3.connect(path)
    for table in ("auth", "clients", "input", "sensors", "sessions"):
        con.execute(f"CREATE TABLE {table} (id INTEGER)")
    con.commit()
    con.close()


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (None, "no such file; check --db"),
        (lambda p: p.write_text("not a database\n" * 100), "is not a SQLite database"),
        (_cowrie_output, "Cowrie's own SQLite output"),
    ],
    ids=["absent", "text", "cowrie-output"],
)
def test_a_database_the_refresh_cannot_use_is_named(
    sample_world: tuple[Path, Path], services: Services, tmp_path: Path, make, expected: str
) -> None:
    path = tmp_path / "other.sqlite"
    if make is not None:
        make(path)
    outcome = doctor(sample_world, services, db=path)
    assert outcome.code == 1
    assert outcome.verdict("database") == "FAIL"
    assert expected in outcome.lines["database"], outcome.lines["database"]
    assert all(outcome.verdict(n) == "skip" for n in CHECKS[2:])
    assert path.exists() == (make is not None)  # nothing created


def test_a_run_lock_held_by_a_refresh_is_a_warning_naming_it(
    sample_world: tuple[Path, Path], services: Services, tmp_path: Path
) -> None:
    database = tmp_path / "h.sqlite"
    shutil.copy(sample_world[0], database)
    with run_lock_path(database).open("a+", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        handle.write("pid 4242 running")
        handle.flush()
        outcome = doctor(sample_world, services, db=database)
    assert outcome.code == 0, outcome.stdout
    assert outcome.verdict("run lock") == "warn"
    assert "held by a refresh running now (pid 4242)" in outcome.lines["run lock"]
    assert outcome.stdout.splitlines()[-1] == "doctor: every check ok (1 warning(s))"


def test_a_key_in_an_etl_toml_others_can_read_is_a_warning(
    sample_world: tuple[Path, Path], services: Services, tmp_path: Path
) -> None:
    toml = tmp_path / "etl.toml"
    toml.write_text(f'greynoise_api_key = "{KEY}"\n')
    toml.chmod(0o644)
    outcome = doctor(sample_world, services, "--config", str(toml), key="")
    assert outcome.code == 0, outcome.stdout
    assert outcome.verdict("config") == "warn"
    assert f"chmod 600 {toml}" in outcome.lines["config"]
    assert outcome.verdict("greynoise") == "ok"  # the key from the file
    assert KEY not in outcome.stdout + outcome.stderr


def test_postgres_ok_and_a_lock_held_by_another_session(pg_url: str) -> None:
    """PostgreSQL: privileges read from the catalog; the holder of the advisory lock named."""
    import psycopg

    from etl.refresh.doctor import database_check, lock_check

    with Database(parse_database_url(pg_url), create=True) as db:
        db.ensure_schema()
    config = RefreshConfig(db_url=pg_url)
    assert database_check(config).verdict == "ok"
    assert lock_check(config).verdict == "ok"
    with psycopg.connect(pg_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_KEY,))
        pid = holder.info.backend_pid
        held = lock_check(config)
    assert held.verdict == "warn" and f"server pid {held_by(pid)}" in held.detail


def held_by(pid: int) -> str:
    """The holder named exactly: one pid (a refresh of another database on the same server,
    which holds its own database's lock, is never named: before, both pids were)."""
    return f"{pid}"


def test_a_refresh_of_another_database_on_the_server_does_not_hold_ours(pg_url: str) -> None:
    import psycopg

    from etl.db.lock import lock_holder
    from testbed.sample.scratch import scratch_database

    with Database(parse_database_url(pg_url), create=True) as db:
        db.ensure_schema()
    url = parse_database_url(pg_url)
    with scratch_database("etl_other") as other, psycopg.connect(other, autocommit=True) as c:
        c.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_KEY,))
        assert lock_holder(url) is None
        with psycopg.connect(pg_url, autocommit=True) as ours:
            ours.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_KEY,))
            assert lock_holder(url) == f"server pid {ours.info.backend_pid}"


def test_an_empty_postgres_database_is_named_and_ends_the_checks(pg_url: str) -> None:
    from etl.refresh.doctor import doctor as checks

    found = {check.name: check for check in checks(RefreshConfig(db_url=pg_url), None, False)}
    assert found["database"].verdict == "fail"
    assert "none of cowrieprocessor's tables" in found["database"].detail
    assert all(found[name].verdict == "skip" for name in CHECKS[2:])


def test_an_old_maxmind_build_is_a_warning(sample_world: tuple[Path, Path]) -> None:
    """The refresh's own threshold (GeoLite2's 30-day licence window): a warning, not a
    failure; a day before it, ok."""
    from etl.refresh.doctor import maxmind_check
    from etl.sources.maxmind.steps import LICENCE_WINDOW, MaxMindDatabase

    asn = MaxMindDatabase.open(sample_world[1] / "GeoLite2-ASN.mmdb")
    built = datetime.fromtimestamp(asn.build_epoch, UTC)
    asn.close()

    def at(moment: datetime) -> str:
        config = RefreshConfig(maxmind_dir=sample_world[1], clock=lambda: moment)
        return maxmind_check(config).verdict

    assert at(built + LICENCE_WINDOW - timedelta(days=1)) == "ok"
    assert at(built + LICENCE_WINDOW + timedelta(days=1)) == "warn"


def test_the_key_expiry_greynoise_reports() -> None:
    from etl.refresh.doctor import pong_check
    from etl.sources.greynoise.ping import Pong

    today = date(2031, 3, 14)
    assert pong_check("GreyNoise", Pong("community", "2032-01-01"), today).verdict == "ok"
    soon = pong_check("GreyNoise", Pong("community", "2031-03-20"), today)
    assert soon.verdict == "warn" and "in 6 days" in soon.detail
    gone = pong_check("GreyNoise", Pong(None, "2031-03-01"), today)
    assert gone.verdict == "fail" and "expired on 2031-03-01" in gone.detail
    assert pong_check("GreyNoise", Pong(None, "not a date"), today).verdict == "ok"


def test_a_database_in_a_folder_that_does_not_exist_names_the_option(
    sample_world: tuple[Path, Path], services: Services, tmp_path: Path
) -> None:
    outcome = doctor(sample_world, services, db=tmp_path / "nope" / "h.sqlite")
    assert outcome.code == 1
    assert outcome.verdict("database") == "FAIL"
    assert "--db" in outcome.lines["database"] and "does not exist" in outcome.lines["database"]
    assert not (tmp_path / "nope").exists()


def test_the_lists_are_a_warning_when_absent_missing_or_old(tmp_path: Path) -> None:
    """No lists, a missing one, an old one: each a warning naming what to run, never a
    failure (the labels are the operator's choice); skipped with --skip classification; a
    --lists-dir that is a file is a failure."""
    from etl.core.errors import SettingError
    from etl.core.vocabulary import Source
    from etl.refresh.doctor import lists_check

    folder = tmp_path / "lists"
    fetched = datetime(2026, 11, 1, tzinfo=UTC)

    def check(days: float = 1, skip: frozenset[Source] = frozenset()) -> tuple[str, str]:
        moment = fetched + timedelta(days=days)
        found = lists_check(RefreshConfig(lists_dir=folder, clock=lambda: moment, skip=skip))
        return found.verdict, found.detail

    # a folder named that does not exist: a typo, not "no labels" (doctor's FAIL line)
    with pytest.raises(SettingError, match="no such folder"):
        check()
    folder.mkdir()
    verdict, detail = check()
    assert verdict == "warn" and "no lists in" in detail and "lists update" in detail
    world_lists(World(3), folder)
    for path in folder.iterdir():
        os.utime(path, (fetched.timestamp(), fetched.timestamp()))
    verdict, detail = check()
    assert verdict == "ok" and detail.startswith(f"16 lists in {folder}, the oldest")
    verdict, detail = check(days=3)
    assert verdict == "ok"  # no records: put there by hand, never replaced by lists update
    record_lists(folder, fetched)  # as `lists update` leaves them: it keeps them now
    verdict, detail = check(days=3)
    assert verdict == "warn" and "old: tor (3.0 days)" in detail
    (folder / "datacenters.csv").unlink()
    verdict, detail = check()
    assert verdict == "warn" and "missing: datacenters" in detail
    assert check(skip=frozenset({Source.CLASSIFICATION}))[0] == "skip"
    file = tmp_path / "file"
    file.write_text("")
    assert lists_check(RefreshConfig(lists_dir=file)).verdict == "fail"
