"""Fixtures: the shared reference data, fresh SQLite files and fresh PostgreSQL databases."""

from __future__ import annotations

import inspect
import json
import sqlite3
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from testbed.sample.scratch import PG_ADMIN, scratch_database

# No per-example deadline: the suite runs its tests in parallel (`make test`), and an example's
# time then measures the machine's load, not the code. The times that matter are asserted.
settings.register_profile("suite", deadline=None)
settings.load_profile("suite")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

# Names whose use in a test, a fixture or a test helper means a child process is started.
SPAWNS = frozenset({"running", "run_module", "subprocess", "Popen", "demo"})
POSTGRES_FIXTURES = frozenset({"pg_url", "compat_pg", "pg_db"})


def _spawns(code: types.CodeType, scope: dict[str, object], seen: set[types.CodeType]) -> bool:
    """Whether ``code`` (or a tests helper it names, or code nested in it) starts a process."""
    if code in seen:
        return False
    seen.add(code)
    if SPAWNS & set(code.co_names):
        return True
    for const in code.co_consts:
        if isinstance(const, types.CodeType) and _spawns(const, scope, seen):
            return True
    for name in code.co_names:
        helper = scope.get(name)
        if (
            isinstance(helper, types.FunctionType)
            and helper.__module__.startswith("tests.")
            and _spawns(helper.__code__, helper.__globals__, seen)
        ):
            return True
    return False


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark what `make test-fast` leaves out, from what each test uses (no hand marking):
    ``postgres`` for a PostgreSQL fixture or a ``postgres`` parameter; ``subprocess`` when
    the test, one of its fixtures or a tests helper they call starts a child process
    (simulators, the CLI, the sample builder, the demo)."""
    for item in items:
        if not isinstance(item, pytest.Function):
            continue
        params = getattr(item, "callspec", None)
        values = params.params.values() if params is not None else ()
        if POSTGRES_FIXTURES & set(item.fixturenames) or "postgres" in values:
            item.add_marker(pytest.mark.postgres)
        functions = [item.obj]
        for name in item.fixturenames:
            for fixture in item._fixtureinfo.name2fixturedefs.get(name, ()):
                functions.append(fixture.func)
        seen: set[types.CodeType] = set()
        for wrapped in functions:
            function = inspect.unwrap(wrapped)
            code = getattr(function, "__code__", None)
            if code is not None and _spawns(code, function.__globals__, seen):
                item.add_marker(pytest.mark.subprocess)
                break


@pytest.fixture(scope="session", autouse=True)
def no_config_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every command a test runs, in the test process or a child, reads an empty etl.toml
    unless the test names one: never the developer's (``./etl.toml`` of the repository, where
    ``make refresh`` reads it, or ``~/.config/honeypot-etl/etl.toml``), which a refresh without
    ``--config`` or ``ETL_CONFIG`` looks for. A test that unsets ETL_CONFIG finds no file in
    the user's folder either."""
    folder = tmp_path_factory.mktemp("config")
    empty = folder / "etl.toml"
    empty.write_text("", encoding="utf-8")
    empty.chmod(0o600)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ETL_CONFIG", str(empty))
        patch.setenv("XDG_CONFIG_HOME", str(folder / "user"))
        yield


SHARED_ABSENT = f"{SHARED} (the team's reference data) is not present"


@pytest.fixture(scope="session")
def shared() -> Path:
    """The team's reference data folder (tests that need it skip when it is absent)."""
    if not SHARED.is_dir():
        pytest.skip(SHARED_ABSENT)
    return SHARED


def pytest_unconfigure(config: pytest.Config) -> None:
    """One line at the very end (after the coverage report) when tests skipped for want of
    ../shared: they would otherwise hide in the count of skips."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    skipped = [
        report
        for report in reporter.stats.get("skipped", [])
        if SHARED_ABSENT in str(getattr(report, "longrepr", ""))
    ]
    if skipped:
        reporter.write_line(
            f"{len(skipped)} test(s) skipped: {SHARED_ABSENT}; they run where it is",
            yellow=True,
        )


@pytest.fixture(scope="session")
def mmdb(shared: Path) -> dict[str, Path]:
    """MaxMind's official test databases."""
    folder = shared / "maxmind-test-data"
    return {
        "asn": folder / "GeoLite2-ASN-Test.mmdb",
        "city": folder / "GeoLite2-City-Test.mmdb",
        "country": folder / "GeoLite2-Country-Test.mmdb",
        "geoip2_city": folder / "GeoIP2-City-Test.mmdb",
    }


@pytest.fixture(scope="session")
def mmdb_networks(shared: Path) -> dict[str, dict[str, dict[str, object]]]:
    """The test databases' source JSON: network -> record, per database."""
    folder = shared / "maxmind-test-data"
    result = {}
    for kind, name in (("asn", "GeoLite2-ASN-Test.json"), ("city", "GeoLite2-City-Test.json")):
        entries = json.loads((folder / name).read_text())
        result[kind] = {net: rec for entry in entries for net, rec in entry.items()}
    return result


@pytest.fixture
def compat_sqlite(tmp_path: Path, shared: Path) -> Path:
    """A new SQLite file built from cowrieprocessor's reference DDL."""
    path = tmp_path / "cowrie.sqlite"
    con = sqlite3.connect(path)
    con.executescript((shared / "compat" / "cowrieprocessor-sqlite.sql").read_text())
    con.close()
    return path


def _pg_available() -> bool:
    try:
        import psycopg

        psycopg.connect(PG_ADMIN, connect_timeout=3).close()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def pg_available() -> bool:
    """Whether the PostgreSQL server on 127.0.0.1:5432 answers."""
    return _pg_available()


@pytest.fixture
def pg_url(pg_available: bool) -> Iterator[str]:
    """A new, empty PostgreSQL database (dropped after the test)."""
    if not pg_available:
        pytest.fail("PostgreSQL on 127.0.0.1:5432 is not running (start it; see .ci/run)")
    with scratch_database("etl_test") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def any_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL of each dialect: a new SQLite file, then a new PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'h.sqlite'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def compat_pg(pg_url: str, shared: Path) -> str:
    """A new PostgreSQL database built from cowrieprocessor's reference DDL."""
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as con:
        con.execute((shared / "compat" / "cowrieprocessor-postgres.sql").read_text())  # type: ignore[arg-type]
    return pg_url


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """``python -m testbed.demo`` on 600 IPs: its data folder and everything it printed."""
    from tests.sims import run_module

    folder = tmp_path_factory.mktemp("demo")
    result = run_module("testbed.demo", "--ips", "600", "--data", str(folder))
    assert result.returncode == 0, result.stdout + result.stderr
    return folder, result.stdout + result.stderr


@pytest.fixture(scope="session")
def sample_world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 200-IP sample SQLite database and its small MaxMind files (``testbed.sample``, seed 3),
    built once: (database file, MaxMind folder). Copy the database before changing it."""
    from testbed.sample.build import build_sample

    folder = tmp_path_factory.mktemp("sample")
    built = build_sample(f"sqlite:///{folder / 'h.sqlite'}", 200, 3, folder / "mm")
    assert built.url.sqlite_path is not None
    return built.url.sqlite_path, folder / "mm"


Run = Callable[..., tuple[int, str]]


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Run:
    """``python -m etl.refresh ARGS`` in-process: (exit status, stdout + stderr); no key and
    no database from the environment."""
    from etl.cli.refresh import main

    monkeypatch.setenv("GREYNOISE_API_KEY", "")
    monkeypatch.setenv("ETL_DB_URL", "")

    def invoke(*args: str) -> tuple[int, str]:
        try:
            code = main(list(args))
        except SystemExit as exit_:  # --help
            code = int(exit_.code or 0)
        out, err = capsys.readouterr()
        return code, out + err

    return invoke
