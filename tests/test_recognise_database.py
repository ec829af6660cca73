"""A database is recognised before anything is written to it (issue 24): what ``--db`` names
is looked at read-only first; a file that is no database, a damaged one, a PostgreSQL database
or role that does not exist, and a database with none of cowrieprocessor's tables (without
``--create``) or without what the run needs are exit 2 with one line, and nothing is created,
stamped or locked. Every run here is the real CLI."""

from __future__ import annotations

import hashlib
import os
import secrets
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from etl.core.errors import DatabaseError
from etl.db.url import parse_database_url

SKIP_ALL = ("--skip", "maxmind", "--skip", "cymru", "--skip", "greynoise")
ENV = {**os.environ, "GREYNOISE_API_KEY": "", "ETL_DB_URL": "", "ETL_CONFIG": ""}
PASSWORD = "s3cret-pw"

# Cowrie's own SQLite output plugin (cowrie/cowrie, docs/sql/sqlite3.sql): the file an operator
# may point --db at by mistake.
COWRIE_OUTPUT_SQL = """
CREATE TABLE IF NOT EXISTS `auth` (`id` INTEGER PRIMARY KEY, `session` char(32) NOT NULL,
  `success` tinyint(1) NOT NULL, `username` varchar(100) NOT NULL,
  `password` varchar(100) NOT NULL, `timestamp` datetime NOT NULL);
CREATE TABLE IF NOT EXISTS `clients` (`id` INTEGER PRIMARY KEY, `version` varchar(50) NOT NULL);
CREATE TABLE IF NOT EXISTS `input` (`id` INTEGER PRIMARY KEY, `session` char(32) NOT NULL,
  `timestamp` datetime NOT NULL, `realm` varchar(50) default NULL,
  `success` tinyint(1) default NULL, `input` text NOT NULL);
CREATE INDEX input_index ON input(session, timestamp, realm);
CREATE TABLE IF NOT EXISTS `sensors` (`id` INTEGER PRIMARY KEY, `ip` varchar(61) NOT NULL);
CREATE TABLE IF NOT EXISTS `sessions` (`id` char(32) NOT NULL PRIMARY KEY,
  `starttime` datetime NOT NULL, `endtime` datetime default NULL, `sensor` int(4) NOT NULL,
  `ip` varchar(61) NOT NULL default '', `termsize` varchar(7) default NULL,
  `client` int(4) default NULL);
CREATE INDEX sessions_index ON sessions(starttime, sensor);
CREATE TABLE IF NOT EXISTS `ttylog` (`id` INTEGER PRIMARY KEY, `session` char(32) NOT NULL,
  `ttylog` varchar(100) NOT NULL, `size` int(11) NOT NULL);
CREATE TABLE IF NOT EXISTS `downloads` (`id` INTEGER PRIMARY KEY, `session` CHAR( 32 ) NOT NULL,
  `timestamp` datetime NOT NULL, `url` text NOT NULL, `outfile` text default NULL,
  `shasum` varchar(64) default NULL);
CREATE INDEX downloads_index ON downloads(session, timestamp);
CREATE TABLE IF NOT EXISTS `keyfingerprints` (`id` INTEGER PRIMARY KEY,
  `session` CHAR( 32 ) NOT NULL, `username` varchar(100) NOT NULL,
  `fingerprint` varchar(100) NOT NULL);
CREATE TABLE IF NOT EXISTS `params` (`id` INTEGER PRIMARY KEY, `session` CHAR( 32 ) NOT NULL,
  `arch` varchar(32) NOT NULL);
CREATE INDEX arch_index ON params(arch);
CREATE TABLE IF NOT EXISTS `ipforwards` (`id` INTEGER PRIMARY KEY, `session` CHAR(32) NOT NULL,
  `timestamp` datetime NOT NULL, `dst_ip` varchar(255) NOT NULL default '',
  `dst_port` int(5) NOT NULL, FOREIGN KEY(`session`) REFERENCES `sessions`(`id`));
CREATE TABLE IF NOT EXISTS `ipforwardsdata` (`id` INTEGER PRIMARY KEY,
  `session` CHAR(32) NOT NULL, `timestamp` datetime NOT NULL,
  `dst_ip` varchar(255) NOT NULL default '', `dst_port` int(5) NOT NULL, `data` text NOT NULL,
  FOREIGN KEY(`session`) REFERENCES `sessions`(`id`));
INSERT INTO sensors VALUES (1, 'honeypot-1');
INSERT INTO clients VALUES (1, 'SSH-2.0-Go');
INSERT INTO sessions VALUES ('a1b2c3d4e5f6', '2025-11-20 09:15:01', NULL, 1, '198.51.100.7',
  NULL, 1);
INSERT INTO auth VALUES (1, 'a1b2c3d4e5f6', 0, 'root', 'admin', '2025-11-20 09:15:02');
"""


def cli(
    module: str, *args: str, cwd: Path | None = None, skip: bool = True
) -> subprocess.CompletedProcess[str]:
    """``python -m <module> ARGS`` (no key, no database nor config from the environment)."""
    extra = SKIP_ALL if skip and module == "etl.refresh" else ()
    return subprocess.run(
        [sys.executable, "-m", module, *args, *extra],
        capture_output=True, text=True, timeout=300, check=False, env=ENV, cwd=cwd,
    )  # fmt: skip


def refused(result: subprocess.CompletedProcess[str], *expected: str) -> str:
    """Exit 2 with exactly one ``error:`` line holding each of ``expected``; no traceback."""
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    assert "Traceback" not in output and PASSWORD not in output
    for text in expected:
        assert text in errors[0], errors[0]
    return errors[0]


def files(folder: Path) -> dict[str, str]:
    """Every file in ``folder`` and its SHA-256: the database byte for byte, and no lock,
    journal, WAL or shared-memory file beside it."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def build(path: Path, script: str) -> Path:
    con = sqlite3.connect(path)
    con.executescript(script)
    con.close()
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A folder of its own for the database (the test's other files stay out of it)."""
    made = tmp_path / "db"
    made.mkdir()
    return made


# -- SQLite files that are not cowrieprocessor's -------------------------------------------------


def test_a_0_byte_file_is_refused_also_in_a_dry_run_and_initialised_with_create(
    folder: Path,
) -> None:
    db = folder / "honeypot.sqlite"
    db.touch()
    before = files(folder)
    for extra in ((), ("--dry-run",)):
        refused(
            cli("etl.refresh", "--db", f"sqlite:///{db}", *extra),
            f"error: sqlite:///{db} has none of cowrieprocessor's tables (it has no tables at "
            "all); pass --create to initialise it",
        )
        assert files(folder) == before and db.stat().st_size == 0
    created = cli("etl.refresh", "--db", f"sqlite:///{db}", "--create")
    assert created.returncode == 0, created.stderr
    assert "created table(s) asn_inventory, ip_inventory, session_summaries" in created.stderr
    con = sqlite3.connect(db)
    version = con.execute("SELECT value FROM schema_state WHERE key = 'schema_version'").fetchone()
    con.close()
    assert version == ("17",)


def test_a_file_of_unrelated_tables_is_refused(folder: Path) -> None:
    db = build(
        folder / "dogs.db",
        "CREATE TABLE dogs (id INTEGER PRIMARY KEY, name TEXT);"
        "INSERT INTO dogs VALUES (1, 'Cleo');"
        "CREATE TABLE owners (id INTEGER PRIMARY KEY, name TEXT);",
    )
    before = files(folder)
    for extra in ((), ("--create",)):  # --create never writes into another application's
        refused(
            cli("etl.refresh", "--db", f"sqlite:///{db}", *extra),
            "has none of cowrieprocessor's tables (it has dogs, owners): it is another "
            "application's database, which the refresh never writes",
        )
        assert files(folder) == before


def test_cowries_own_sqlite_output_is_refused_and_named(folder: Path) -> None:
    db = build(folder / "cowrie.db", COWRIE_OUTPUT_SQL)
    before = files(folder)
    for extra in ((), ("--create",)):
        line = refused(
            cli("etl.refresh", "--db", f"sqlite:///{db}", *extra),
            "has none of cowrieprocessor's tables",
            "Cowrie's own SQLite output",
            "which the refresh never writes",
        )
        assert "auth, clients, downloads, input, ipforwards, ipforwardsdata and 5 more" in line
        assert files(folder) == before


def test_a_text_file_is_not_a_database(folder: Path) -> None:
    db = folder / "notes.db"
    db.write_text("these are my notes, not a database\n")
    before = files(folder)
    for extra in ((), ("--dry-run",), ("--create",)):
        refused(
            cli("etl.refresh", "--db", f"sqlite:///{db}", *extra),
            f"SQLite file {db} is not a SQLite database (file is not a database)",
        )
        assert files(folder) == before


def test_a_truncated_sqlite_file_is_damaged(folder: Path, shared: Path) -> None:
    whole = build(
        folder / "whole.sqlite", (shared / "compat" / "cowrieprocessor-sqlite.sql").read_text()
    )
    db = folder / "cut.sqlite"
    db.write_bytes(whole.read_bytes()[:8192])  # the schema goes on beyond the second page
    whole.unlink()
    before = files(folder)
    refused(
        cli("etl.refresh", "--db", f"sqlite:///{db}"),
        f"SQLite file {db} is damaged (database disk image is malformed)",
    )
    assert files(folder) == before


def test_a_table_lacking_a_needed_column_is_named_and_nothing_is_locked(
    folder: Path, shared: Path
) -> None:
    db = build(
        folder / "partial.sqlite", (shared / "compat" / "cowrieprocessor-sqlite.sql").read_text()
    )
    con = sqlite3.connect(db)
    con.execute("ALTER TABLE ip_inventory DROP COLUMN enrichment_version")
    con.close()
    before = files(folder)
    for extra in ((), ("--create",), ("--dry-run",)):
        refused(
            cli("etl.refresh", "--db", f"sqlite:///{db}", *extra),
            "table ip_inventory",
            "lacks column(s) enrichment_version",
        )
        assert files(folder) == before  # no .etl-lock, no run log table


def test_cowrieprocessor_tables_without_any_to_select_from(folder: Path) -> None:
    """schema_state and files are cowrieprocessor's, but the run selects from sessions or
    inventory rows: named, and only --create adds the tiers."""
    db = build(
        folder / "h.sqlite",
        "CREATE TABLE schema_state (key VARCHAR(128) PRIMARY KEY, value VARCHAR(256));"
        "INSERT INTO schema_state VALUES ('schema_version', '9');"
        "CREATE TABLE files (id INTEGER PRIMARY KEY, session_id VARCHAR(64));",
    )
    before = files(folder)
    refused(
        cli("etl.refresh", "--db", f"sqlite:///{db}"),
        "has cowrieprocessor's table(s) files, schema_state but neither session_summaries nor "
        "ip_inventory, which the refresh selects from; pass --create to create them",
    )
    assert files(folder) == before


# -- a plain path for --db ----------------------------------------------------------------------


def test_a_plain_path_names_a_sqlite_file(tmp_path: Path, shared: Path) -> None:
    """As sqlite-utils and datasette take it, relative or absolute; an older cowrieprocessor
    schema (sessions and raw events, no inventory tables yet) is refreshed without --create."""
    data = tmp_path / "data"
    data.mkdir()
    old = build(data / "x.sqlite", (shared / "compat" / "cowrieprocessor-sqlite.sql").read_text())
    con = sqlite3.connect(old)
    con.executescript("DROP TABLE ip_inventory; DROP TABLE asn_inventory;")
    con.close()
    relative = cli("etl.refresh", "--db", "data/x.sqlite", cwd=tmp_path)
    assert relative.returncode == 0, relative.stderr
    assert "created table(s) asn_inventory, ip_inventory" in relative.stderr
    assert "refreshing sqlite:///data/x.sqlite" in relative.stderr
    empty = data / "empty.db"
    empty.touch()
    before = files(data)
    refused(
        cli("etl.refresh", "--db", str(empty)),
        f"sqlite:///{empty} has none of cowrieprocessor's tables",
    )
    refused(cli("etl.status", "--db", str(empty)), "has none of cowrieprocessor's tables")
    assert files(data) == before
    status = cli("etl.status", "--db", str(old), "--json")
    assert status.returncode == 0, status.stderr


def test_a_value_without_scheme_that_is_no_path_is_not_shown() -> None:
    for value in (f"etl:{PASSWORD}@db.example/cowrie", "db.example:5432/cowrie"):
        refused(
            cli("etl.refresh", "--db", value), "--db is not a database URL nor a plain file path"
        )


# -- status: read-only, and refuses the same ----------------------------------------------------


def test_status_refuses_what_is_not_cowrieprocessors_and_creates_nothing(folder: Path) -> None:
    empty, text = folder / "empty.sqlite", folder / "text.db"
    empty.touch()
    text.write_text("not a database")
    cowrie = build(folder / "cowrie.db", COWRIE_OUTPUT_SQL)
    before = files(folder)
    refused(
        cli("etl.status", "--db", f"sqlite:///{empty}"),
        "has none of cowrieprocessor's tables (it has no tables at all); "
        "run a refresh with --create to initialise it",
    )
    refused(cli("etl.status", "--db", f"sqlite:///{text}"), "is not a SQLite database")
    refused(cli("etl.status", "--db", f"sqlite:///{cowrie}"), "Cowrie's own SQLite output")
    assert files(folder) == before


# -- PostgreSQL ---------------------------------------------------------------------------------


def _with_password(url: str) -> str:
    return url.replace("postgres@", f"postgres:{PASSWORD}@", 1)


def test_a_postgres_database_that_does_not_exist(pg_url: str) -> None:
    server = pg_url.rsplit("/", 1)[0]
    name = f"etl_missing_{secrets.token_hex(4)}"
    url = _with_password(f"{server}/{name}")
    shown = f"{server.replace('postgres@', 'postgres:***@')}/{name}"
    for module in ("etl.refresh", "etl.status"):
        refused(
            cli(module, "--db", url),
            f'cannot use PostgreSQL {shown}: database "{name}" does not exist',
        )


def test_a_postgres_role_that_does_not_exist(pg_url: str) -> None:
    role = f"etl_nobody_{secrets.token_hex(4)}"
    url = pg_url.replace("postgres@", f"{role}:{PASSWORD}@", 1)
    for module in ("etl.refresh", "etl.status"):
        refused(cli(module, "--db", url), f'role "{role}" does not exist')


def test_an_empty_postgres_database_needs_create(pg_url: str) -> None:
    import psycopg

    def tables() -> list[str]:
        with psycopg.connect(pg_url) as con:
            rows = con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' "
                "ORDER BY 1"
            ).fetchall()
        return [str(row[0]) for row in rows]

    for extra in ((), ("--dry-run",)):
        refused(
            cli("etl.refresh", "--db", _with_password(pg_url), *extra),
            "has none of cowrieprocessor's tables (it has no tables at all); pass --create",
        )
    assert tables() == []
    created = cli("etl.refresh", "--db", pg_url, "--create")
    assert created.returncode == 0, created.stderr
    assert {"asn_inventory", "ip_inventory", "session_summaries", "schema_state"} <= set(tables())


# -- the errors, mapped -------------------------------------------------------------------------


def test_driver_errors_map_to_exit_2_only_when_the_database_is_unusable(tmp_path: Path) -> None:
    from etl.core.errors import UnusableDatabaseError
    from etl.db.recognise import postgres_connect_error, sqlite_open_error

    sqlite_url = parse_database_url(f"sqlite:///{tmp_path}/x.db")
    pg = parse_database_url(f"postgresql://etl:{PASSWORD}@db.example:5432/cowrie")
    not_a_db = sqlite3.DatabaseError("file is not a database")
    not_a_db.sqlite_errorcode = sqlite3.SQLITE_NOTADB
    corrupt = sqlite3.DatabaseError("database disk image is malformed")
    corrupt.sqlite_errorcode = sqlite3.SQLITE_CORRUPT
    locked = sqlite3.OperationalError("database is locked")
    locked.sqlite_errorcode = sqlite3.SQLITE_BUSY
    cases: list[tuple[DatabaseError, int]] = [
        (sqlite_open_error(sqlite_url, not_a_db), 2),
        (sqlite_open_error(sqlite_url, corrupt), 2),
        (sqlite_open_error(sqlite_url, locked), 1),
        (postgres_connect_error(pg, 'FATAL:  database "cowrie" does not exist'), 2),
        (postgres_connect_error(pg, 'FATAL:  role "etl" does not exist'), 2),
        (postgres_connect_error(pg, 'FATAL:  password authentication failed for user "etl"'), 2),
        (postgres_connect_error(pg, "connection failed: Connection refused\n\tIs the server"), 1),
        (postgres_connect_error(pg, f"server closed the connection ({PASSWORD})"), 1),
    ]
    for error, code in cases:
        assert error.exit_code == code, error
        assert isinstance(error, UnusableDatabaseError) == (code == 2)
        assert PASSWORD not in str(error) and "\n" not in str(error)


def test_pending_refuses_what_is_not_cowrieprocessors_and_leaves_no_lock(folder: Path) -> None:
    """`honeypot-etl pending --apply` / `--discard` take the run lock: never beside a file the
    refresh cannot use."""
    empty, text = folder / "empty.sqlite", folder / "text.db"
    empty.touch()
    text.write_text("not a database")
    before = files(folder)
    for action in ("--apply", "--discard"):
        refused(cli("etl", "pending", "--db", f"sqlite:///{empty}", action),
                "has none of cowrieprocessor's tables")  # fmt: skip
        refused(cli("etl", "pending", "--db", f"sqlite:///{text}", action),
                "is not a SQLite database")  # fmt: skip
    assert files(folder) == before
