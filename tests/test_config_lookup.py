"""Where the configuration is found (SPEC 5): without ``--config`` or ``ETL_CONFIG`` a refresh
and ``status`` read the first of ``./etl.toml``, ``~/.config/honeypot-etl/etl.toml`` and
``/etc/honeypot-etl/etl.toml`` that exists, and the run's first line says which.

The commands run as an operator runs them (``python -m etl.refresh`` in a working folder of its
own), with ``HOME`` pointed at a folder of the test and the system folder replaced in the child
(`SYSTEM`): never the developer's files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from etl.refresh.config import config_candidates, locate_config

# ``python -m etl.refresh`` / ``etl.status`` with /etc/honeypot-etl replaced by argv[1].
SYSTEM = (
    "import runpy, sys\n"
    "from pathlib import Path\n"
    "import etl.refresh.config\n"
    "etl.refresh.config.SYSTEM_CONFIG_DIR = Path(sys.argv.pop(1))\n"
    "module = sys.argv.pop(1)\n"
    "runpy.run_module(module, run_name='__main__', alter_sys=True)\n"
)


@pytest.fixture
def place(tmp_path: Path, sample_world: tuple[Path, Path]) -> Path:
    """A copy of the sample database and its MaxMind folder in ``data/``, and empty folders for
    the working folder (``cwd``), the home (``home``) and the system's (``etc``)."""
    db, maxmind = sample_world
    (tmp_path / "data").mkdir()
    shutil.copy(db, tmp_path / "data" / "h.sqlite")
    shutil.copytree(maxmind, tmp_path / "data" / "mm")
    for name in ("cwd", "home", "etc"):
        (tmp_path / name).mkdir()
    return tmp_path


def settings_file(path: Path, data: Path, ips: int, *extra: str) -> Path:
    """An etl.toml at ``path`` for the database in ``data``, MaxMind only, ``ips`` per run."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        f'db = "sqlite:///{data}/h.sqlite"',
        f'maxmind_dir = "{data}/mm"',
        'skip = ["cymru", "greynoise"]',
        f"ips = {ips}",
        *extra,
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


def operator_env(home: Path) -> dict[str, str]:
    """The environment of an operator's shell: no ETL_CONFIG, this home."""
    hidden = ("ETL_CONFIG", "XDG_CONFIG_HOME", "ETL_DB_URL", "MAXMIND_DIR", "GREYNOISE_API_KEY")
    env = {k: v for k, v in os.environ.items() if k not in hidden}
    return env | {"HOME": str(home)}


def command(
    place: Path, module: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m <module> ARGS`` in ``place/cwd``, home ``place/home``, ``place/etc`` as the
    system folder."""
    return subprocess.run(
        [sys.executable, "-c", SYSTEM, str(place / "etc"), module, *args],
        cwd=place / "cwd",
        env=env or operator_env(place / "home"),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def refreshed(place: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], int]:
    """A refresh in ``place`` with the summary JSON; (the process, IPs it selected)."""
    summary = place / "summary.json"
    summary.unlink(missing_ok=True)
    result = command(place, "etl.refresh", "--summary-json", str(summary), *args)
    assert result.returncode == 0, result.stderr
    return result, json.loads(summary.read_text())["selected"]


def test_the_etl_toml_in_the_working_folder_is_read_and_named_first(place: Path) -> None:
    """`make refresh` passed --config; `honeypot-etl refresh` dropped the file's settings."""
    toml = settings_file(place / "cwd" / "etl.toml", place / "data", 7)
    result, selected = refreshed(place)
    assert selected == 7  # the file's `ips`, its database, its MaxMind folder
    assert result.stderr.splitlines()[0] == f"config: {toml}"


def test_the_home_then_the_system_folder_are_the_fallbacks(place: Path) -> None:
    system = settings_file(place / "etc" / "etl.toml", place / "data", 3)
    result, selected = refreshed(place)
    assert selected == 3
    assert result.stderr.splitlines()[0] == f"config: {system}"
    home = place / "home" / ".config" / "honeypot-etl" / "etl.toml"
    settings_file(home, place / "data", 5)
    result, selected = refreshed(place)
    assert selected == 5  # the home's beats the system's
    assert result.stderr.splitlines()[0] == f"config: {home}"
    settings_file(place / "cwd" / "etl.toml", place / "data", 6)
    assert refreshed(place)[1] == 6  # the working folder's beats both


def test_xdg_config_home_replaces_dot_config(place: Path) -> None:
    xdg = settings_file(place / "xdg" / "honeypot-etl" / "etl.toml", place / "data", 4)
    settings_file(place / "home" / ".config" / "honeypot-etl" / "etl.toml", place / "data", 5)
    env = operator_env(place / "home") | {"XDG_CONFIG_HOME": str(place / "xdg")}
    result = command(place, "etl.refresh", "--dry-run", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[0] == f"config: {xdg}"


def test_a_named_file_wins_and_is_not_announced(place: Path) -> None:
    settings_file(place / "cwd" / "etl.toml", place / "data", 6)
    named = settings_file(place / "named.toml", place / "data", 2)
    result, selected = refreshed(place, "--config", str(named))
    assert selected == 2
    assert "config:" not in result.stderr
    env = operator_env(place / "home") | {"ETL_CONFIG": str(named)}
    result = command(place, "etl.refresh", "--dry-run", env=env)
    assert result.returncode == 0, result.stderr
    assert "config:" not in result.stderr and "selected 2 IPs" in result.stdout


def test_quiet_runs_stay_quiet(place: Path) -> None:
    """cron mails what a job prints: the line is for runs that show their progress."""
    settings_file(place / "cwd" / "etl.toml", place / "data", 7, "quiet = true")
    result, selected = refreshed(place)
    assert selected == 7 and result.stderr == ""


def test_status_reads_the_same_file(place: Path) -> None:
    toml = settings_file(
        place / "home" / ".config" / "honeypot-etl" / "etl.toml", place / "data", 1
    )
    result = command(place, "etl.status", "--json")
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[0] == f"config: {toml}"
    report = json.loads(result.stdout)  # stdout holds the report only
    assert str(place / "data" / "h.sqlite") in json.dumps(report)
    assert [build["kind"] for build in report["maxmind"]] == ["asn", "city"]


def test_without_any_file_the_defaults_apply(place: Path) -> None:
    """No etl.toml anywhere: the default database, which does not exist here, is exit 2."""
    result = command(place, "etl.refresh")
    assert result.returncode == 2
    assert result.stderr.startswith("error: --db ")
    assert result.stderr.count("\n") == 1


def test_the_documented_list_is_the_default(tmp_path: Path) -> None:
    assert config_candidates({"HOME": "/home/op"}, cwd=Path("/srv")) == (
        Path("/srv/etl.toml"),
        Path("/home/op/.config/honeypot-etl/etl.toml"),
        Path("/etc/honeypot-etl/etl.toml"),
    )
    env = {"HOME": "/home/op", "XDG_CONFIG_HOME": "/x"}
    assert config_candidates(env, cwd=Path("/srv"))[1] == Path("/x/honeypot-etl/etl.toml")
    relative = {"HOME": "/home/op", "XDG_CONFIG_HOME": "x"}  # ignored, as XDG says
    assert config_candidates(relative, cwd=Path("/srv"))[1] == Path(
        "/home/op/.config/honeypot-etl/etl.toml"
    )
    second = tmp_path / "b.toml"
    second.write_text("")
    candidates = [tmp_path / "a.toml", second]
    assert locate_config(None, {}, candidates) == (second, True)
    assert locate_config(None, {"ETL_CONFIG": "/n.toml"}, candidates) == (Path("/n.toml"), False)
    assert locate_config(Path("/o.toml"), {}, candidates) == (Path("/o.toml"), False)
    assert locate_config(None, {}, [tmp_path / "a.toml"]) == (None, False)
