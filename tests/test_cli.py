"""``python -m etl.refresh``: options, one-line errors, exit codes, no secrets in output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from etl.core.errors import UsageError
from etl.db.url import parse_database_url, redact
from tests.conftest import Run
from tests.world import load_sqlite, plan_world


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--db", "mysql://x/y"], "scheme 'mysql' is not supported"),
        (["--db", "etl:s3cret@db.example/cowrie"], "is not a database URL"),  # no scheme
        (["--db", "sqlite://relative.db"], "needs three slashes"),
        (["--db", "sqlite:////no/such/folder/x.db"], "the folder '/no/such/folder' does not exist"),
        (
            ["--db", "postgresql://u:pw@127.0.0.1:99999/db"],
            "--db has a port that is not a whole number 1..65535 (the URL is not shown)",
        ),
        (["--db", "postgresql://127.0.0.1:5432"], "needs a database name"),
        (["--ips", "0"], "--ips must be between 1 and 1,000,000,000 IPs, got 0"),
        (
            ["--ips", "9" * 40],
            "--ips must be between 1 and 1,000,000,000 IPs, got a number of more",
        ),
        (
            ["--ips", "9" * 5000],
            "error: --ips must be a whole number (see",
        ),
        (["--ip", "garbage123"], "--ip 'garbage123' is not an IP address (exactly as given)"),
        (["--ip", " 1.2.3.4 "], "--ip ' 1.2.3.4 ' is not an IP address"),
        (["--ips", "-5"], "--ips must be between 1 and 1,000,000,000 IPs, got -5"),
        (["--commit-every", "0"], "--commit-every must be between 1 and 1,000,000 rows, got 0"),
        (["--commit-every", "1000001"], "--commit-every must be between 1 and 1,000,000 rows"),
        (["--lock-timeout", "nan"], "--lock-timeout must be between 0 and 86,400 seconds"),
        (["--lock-timeout", "1e309"], "--lock-timeout must be between 0 and 86,400 seconds"),
        (["--lock-timeout", "-1"], "--lock-timeout must be between 0 and 86,400 seconds"),
        (["--lock-timeout", "86401"], "--lock-timeout must be between 0 and 86,400 seconds"),
        (["--greynoise-budget", "-1"], "--greynoise-budget must be between 0 and 1,000,000,000"),
        (["--greynoise-budget", "2e3"], "--greynoise-budget must be a whole number"),
        (["--greynoise-rate", "-0"], "--greynoise-rate must be more than 0 and at most 1,000"),
        (["--greynoise-rate", "nan"], "--greynoise-rate must be more than 0 and at most 1,000"),
        (["--greynoise-rate", "1001"], "--greynoise-rate must be more than 0 and at most 1,000"),
        (["--cymru", "who is:43"], "--cymru must be HOST:PORT, got 'who is:43'"),
        (["--cymru", "127.0.0.1:²"], "--cymru must be HOST:PORT"),
        (["--greynoise-url", "http://"], "--greynoise-url must be an http(s) URL, got 'http://'"),
        (["--greynoise-url", "http://h:x"], "--greynoise-url must be an http(s) URL"),
        (["--maxmind-asn", "/no/such.mmdb"], "--maxmind-asn /no/such.mmdb: file not found"),
        (["--maxmind-dir", "x" * 256], "--maxmind-dir has a file or folder name longer than 255"),
        (["--status-file", "a/" * 2100], "--status-file is longer than 4,095 bytes"),
        (["--cymru", "127.0.0.1:http"], "--cymru must be HOST:PORT, got '127.0.0.1:http'"),
        (
            ["--batch-size", "0"],
            "--batch-size must be between 10 and 10,000 IPs per Team Cymru session, got 0",
        ),
        (["--batch-size", "100000"], "--batch-size must be between 10 and 10,000"),
        (["--config", "/no/such/etl.toml"], "config file /no/such/etl.toml does not exist"),
        (["--greynoise-mode", "free"], "--greynoise-mode must be community or enterprise"),
        (["--greynoise-rate", "0"], "--greynoise-rate must be more than 0 and at most 1,000"),
        (
            ["--greynoise-rate", "inf"],
            "--greynoise-rate must be more than 0 and at most 1,000 requests per second, got inf",
        ),
        (["postgresql://u:s3cret@db/x"], "Got unexpected extra argument"),
        (["--quiet", "--verbose"], "--quiet cannot be used together with --verbose"),
        (["--ips", "many"], "error: --ips must be a whole number (see"),
        (["--ips", "1.5"], "error: --ips must be a whole number (see"),
        (["--commit-every", "٣"], "error: --commit-every must be a whole number (see"),
        (["--greynoise-rate", "fast"], "error: --greynoise-rate must be a number (see"),
        (["--lock-timeout", ""], "error: --lock-timeout must be a number (see"),
        (
            ["--skip", "dshield"],
            "--skip must be one of maxmind, cymru, greynoise, classification, got 'dshield'",
        ),
        (["--config", "/"], "error: config file / is a folder, not a file"),
        (["--config", "no\nsuch.toml"], "error: config file no such.toml does not exist\n"),
        (["--config", "/etc/passwd/etl.toml"], "cannot read config file /etc/passwd/etl.toml: not"),
        (["--no-such-option"], "No such option: --no-such-option"),
        (["--db"], "Option '--db' requires an argument"),
        # a file named as written, not the home of a user "0" (found: a traceback)
        (["--db", "~0"], "names a SQLite database that does not exist: ~0"),
    ],
)
def test_usage_errors_are_one_line_with_exit_2(
    run: Run, args: list[str], message: str, tmp_path: Path
) -> None:
    code, output = (
        run("--db", f"sqlite:///{tmp_path}/x.db", *args) if args[0] != "--db" else run(*args)
    )
    assert code == 2, output
    assert message in output
    assert "Traceback" not in output
    assert "s3cret" not in output
    assert len([line for line in output.splitlines() if line.startswith("error:")]) == 1


def test_not_an_mmdb_file(run: Run, tmp_path: Path) -> None:
    junk = tmp_path / "GeoLite2-City.mmdb"
    junk.write_text("hello")
    db = tmp_path / "x.db"
    code, output = run("--db", f"sqlite:///{db}", "--create", "--maxmind-city", str(junk))
    assert code == 2
    assert "not a readable MaxMind DB" in output
    assert not db.exists()  # checked before any work


def test_unreachable_postgres_is_one_line_without_password(
    run: Run,
) -> None:
    code, output = run("--db", "postgresql://etl:s3cr3t-pw@127.0.0.1:1/cowrie", "--skip", "maxmind")
    assert code == 1
    assert "cannot connect to PostgreSQL postgresql://etl:***@127.0.0.1:1/cowrie" in output
    assert "s3cr3t-pw" not in output
    assert "Traceback" not in output


def test_a_full_run_with_summary_json(
    run: Run, tmp_path: Path, mmdb: dict[str, Path], compat_sqlite: Path
) -> None:
    load_sqlite(str(compat_sqlite), plan_world(200, networks=["89.160.0.0/17"]))
    summary = tmp_path / "summary.json"
    code, output = run(
        "--db",
        f"sqlite:///{compat_sqlite}",
        "--maxmind-asn",
        str(mmdb["asn"]),
        "--maxmind-city",
        str(mmdb["city"]),
        "--skip",
        "cymru",
        "--skip",
        "greynoise",
        "--ips",
        "50",
        "--summary-json",
        str(summary),
    )
    assert code == 0, output
    data = json.loads(summary.read_text())
    assert data["selected"] == 50
    assert data["upserted"] == 50
    assert data["sources"]["maxmind"]["queried"] + data["bogons"] == 50
    # link: sessions the loader left unlinked whose IPs had rows already
    assert set(data["phase_seconds"]) == {
        "select", "validate", "maxmind", "classification", "write", "asn_counts", "link",
    }  # fmt: skip
    assert data["sessions_linked"] > 0 and data["snapshots_filled"] > 0
    assert "selected 50 IPs" in output


def test_help_reads_well(
    run: Run,
) -> None:
    code, output = run("--help")
    assert code == 0
    for option in (
        "--db",
        "--ips",
        "--ip",
        "--skip",
        "--dry-run",
        "--summary-json",
        "--maxmind-dir",
    ):
        assert option in output
    assert "Examples" in output


def test_module_entry_point_runs(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "etl.refresh", "--ips", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "error: --ips must be between 1 and 1,000,000,000 IPs, got 0"


def test_url_parsing_and_redaction(tmp_path: Path) -> None:
    url = parse_database_url("postgresql://u:p%40ss@db.example:6543/cowrie")
    assert url.dialect == "postgres"
    assert url.password == "p@ss"
    assert "p%40ss" not in str(url) and "p@ss" not in str(url)
    assert parse_database_url("postgres://u@h/db").libpq_url == "postgresql://u@h/db"
    sqlite = parse_database_url(f"sqlite:///{tmp_path}/a.db")
    assert sqlite.sqlite_path == tmp_path / "a.db"
    with pytest.raises(UsageError, match="is a folder"):
        parse_database_url(f"sqlite:///{tmp_path}")
    assert (
        redact("see postgresql://a:b@c/d and key K1", ("K1",))
        == "see postgresql://a:***@c/d and key ***"
    )


def test_a_refresh_needs_none_of_the_optional_packages(
    tmp_path: Path, mmdb: dict[str, Path], compat_sqlite: Path
) -> None:
    """geoip2, numpy, mmdb-writer, netaddr (the sample extra) are not runtime dependencies, and
    pyarrow no dependency at all: a refresh runs with them made unimportable."""
    load_sqlite(str(compat_sqlite), plan_world(60, networks=["89.160.0.0/17"]))
    blocked = ("pyarrow", "numpy", "mmdb_writer", "netaddr", "geoip2")
    program = (
        "import sys\n"
        f"for name in {blocked!r}: sys.modules[name] = None\n"
        "from etl.cli.refresh import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program, "--db", f"sqlite:///{compat_sqlite}",
         "--maxmind-asn", str(mmdb["asn"]), "--maxmind-city", str(mmdb["city"]),
         "--skip", "cymru", "--skip", "greynoise", "--quiet"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr


def test_a_command_without_its_extra_says_which_to_install(tmp_path: Path) -> None:
    program = (
        "import sys\n"
        "sys.modules['numpy'] = None\n"
        "from testbed.sample.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program, "--db", f"sqlite:///{tmp_path}/s.db",
         "--ips", "10", "--maxmind-dir", str(tmp_path / "mm")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: this command needs the sample extra: pip install 'honeypot-etl[sample]'"
    )


def test_output_paths_are_checked_before_any_work(run: Run, tmp_path: Path) -> None:
    """A status file that is a folder, or a metrics file under a file, is one line and exit 2
    before the database is opened (it was a traceback after the work was done)."""
    db = tmp_path / "h.sqlite"  # never created: the check comes before the database is opened
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for args, message in (
        (["--status-file", str(tmp_path)], f"--status-file {tmp_path} is a folder, not a file"),
        (
            ["--metrics-file", str(blocker / "m.prom")],
            f"--metrics-file {blocker}/m.prom: {blocker} is a file, not a folder",
        ),
        (
            ["--summary-json", str(blocker / "deeper" / "s.json")],
            f"--summary-json {blocker}/deeper/s.json: {blocker} is a file, not a folder",
        ),
    ):
        code, output = run("--db", f"sqlite:///{db}", "--create", *args)
        assert (code, output.strip()) == (2, f"error: {message}")
        assert not db.exists()


def test_output_folders_are_made(run: Run, tmp_path: Path, compat_sqlite: Path) -> None:
    summary = tmp_path / "new" / "folder" / "summary.json"
    code, output = run(
        "--db", f"sqlite:///{compat_sqlite}", "--skip", "maxmind", "--skip", "cymru",
        "--summary-json", str(summary), "--quiet",
    )  # fmt: skip
    assert code == 0, output
    assert json.loads(summary.read_text())["outcome"] == "finished"


# -- a SQLite file that does not exist ----------------------------------------------------------


def test_a_missing_sqlite_file_is_a_usage_error_also_in_a_dry_run(run: Run, tmp_path: Path) -> None:
    """SPEC 5: a usage error unless --create; --dry-run never creates anything (a dry run used
    to say "nothing to select" and exit 0). Nothing is written: no status, metrics, summary."""
    db = tmp_path / "honeypot.sqlit"
    outputs = [tmp_path / name for name in ("s.json", "m.prom", "summary.json")]
    files = ["--status-file", str(outputs[0]), "--metrics-file", str(outputs[1])]
    files += ["--summary-json", str(outputs[2])]
    expected = (
        f"error: --db names a SQLite database that does not exist: {db} (a typo?); "
        "to start a new one, add --create"
    )
    for extra in ([], ["--dry-run"]):
        code, output = run("--db", f"sqlite:///{db}", *extra, *files)
        assert (code, output) == (2, expected + "\n")
    assert not db.exists() and not any(path.exists() for path in outputs)
    code, output = run("--db", f"sqlite:///{db}", "--dry-run", "--create", "--skip", "maxmind")
    assert code == 0, output
    assert f"dry run: sqlite:///{db} does not exist; a real run with --create creates it" in output
    assert "nothing to select" in output
    assert not db.exists() and not list(tmp_path.glob("honeypot*"))


def test_the_error_boundary_is_written_once() -> None:
    """Every command's known failures become one line in one place, `etl.cli.options.one_line_errors`
    (the commands' own behaviour is the other tests'): no command module catches `EtlError`,
    `SettingError` or Ctrl-C itself, and each command is decorated with the boundary."""
    import ast

    root = Path(__file__).resolve().parent.parent / "etl" / "cli"
    commands = {
        "refresh.py": "refresh_command",
        "status.py": "status_command",
        "pending.py": "pending_command",
        "doctor.py": "doctor_command",
    }
    caught = {"EtlError", "SettingError", "KeyboardInterrupt"}
    for name, command in commands.items():
        tree = ast.parse((root / name).read_text(encoding="utf-8"))
        handlers = [
            ast.unparse(node.type)
            for node in ast.walk(tree)
            if isinstance(node, ast.ExceptHandler) and node.type is not None
        ]
        assert not [h for h in handlers if any(kind in h for kind in caught)], name
        function = next(
            node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == command
        )
        decorators = [ast.unparse(d) for d in function.decorator_list]
        assert any(d.startswith("cli.one_line_errors(") for d in decorators), name
