"""Settings declared once: precedence, etl.toml, the environment, the library, and the CLI built
from the same declarations."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from etl.cli import options as cli
from etl.cli.refresh import SETTINGS
from etl.core.errors import SettingError, UsageError
from etl.core.settings import convert, read_file, secret_file_warning
from etl.refresh.config import LIST_URL_SETTINGS, LISTS_SETTINGS, RefreshConfig, load_config
from tests.conftest import ROOT

KEY = "planted-greynoise-key-5f3a9c"


def test_precedence_is_options_then_env_then_file(tmp_path: Path) -> None:
    toml = tmp_path / "etl.toml"
    toml.write_text(
        f'db = "sqlite:///{tmp_path}/from-file.db"\nips = 7\ngreynoise_rate = 3\nskip = ["cymru"]\n'
        f'maxmind_dir = "{tmp_path}/file-mm"\ncommit_every = 99\n'
    )
    (tmp_path / "file-mm").mkdir()
    (tmp_path / "env-mm").mkdir()
    env = {"ETL_DB_URL": "sqlite:///from-env.db", "MAXMIND_DIR": str(tmp_path / "env-mm")}
    config = load_config(file=toml, env=env, values_origin="option", max_ips=11, db_url=None)
    assert config.db_url == "sqlite:///from-env.db"  # env beats the file
    assert config.max_ips == 11  # the option beats both
    assert config.maxmind_dir == tmp_path / "env-mm"
    assert config.greynoise_rate == 3.0 and config.commit_every == 99
    assert {str(s) for s in config.skip} == {"cymru"}
    assert load_config(file=toml, env={}).db_url == f"sqlite:///{tmp_path}/from-file.db"


def test_relative_paths_in_a_config_file_are_relative_to_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "etc"
    (folder / "data").mkdir(parents=True)
    (folder / "mm").mkdir()
    (tmp_path / "mm").mkdir()
    toml = folder / "etl.toml"
    toml.write_text(
        'db = "sqlite:///data/h.sqlite"\nmaxmind_dir = "mm"\nstatus_file = "/run/s.json"\n'
    )
    monkeypatch.chdir(tmp_path)
    config = load_config(file=toml, env={})
    assert config.db_url == f"sqlite:///{folder.resolve()}/data/h.sqlite"
    assert config.maxmind_dir == folder / "mm"
    assert config.status_file == Path("/run/s.json")
    plain = _toml(folder, 'db = "data/plain.sqlite"\n')  # a plain path, as --db takes it
    assert load_config(file=plain, env={}).db_url == f"{folder.resolve()}/data/plain.sqlite"
    home = load_config(file=_toml(tmp_path, 'pending_dir = "~/kept"\n'), env={})
    assert home.pending_dir == Path.home() / "kept"  # ~ is the user's home, as in a shell
    # On the command line and in the environment they stay relative to the working folder.
    assert load_config(env={"MAXMIND_DIR": "mm"}).maxmind_dir == Path("mm")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("dbb = 'x'\n", "unknown setting(s) dbb"),
        ("ips = 'ten'\n", "config file {toml}: ips must be a whole number, not a string"),
        ("dry_run = 1\n", "config file {toml}: dry_run must be true or false, not a whole number"),
        ("ips = [\n", "config file {toml}, line 1: not valid TOML (Invalid value)"),
        ("ips = 1\n\nips = 2\n", "config file {toml}, line 3: not valid TOML (Cannot overwrite"),
        (f"greynoise_api_key = {12345678}x\n", "config file {toml}, line 1: not valid TOML ("),
        ('maxmind_asn = "a\\u0000b"\n', "maxmind_asn must not contain a NUL character"),
        ("\xff = 1\n", "config file {toml} is not UTF-8 text"),
        (
            "skip = ['dshield']\n",
            "config file {toml}: skip must be one of maxmind, cymru, greynoise",
        ),
        ("ips = 0\n", "config file {toml}: ips must be between 1 and 1,000,000,000 IPs, got 0"),
        ("lock_timeout = nan\n", "config file {toml}: lock_timeout must be between 0 and"),
        ("greynoise_rate = inf\n", "config file {toml}: greynoise_rate must be more than 0"),
        (f"commit_every = {10**400}\n", "commit_every must be between 1 and 1,000,000 rows, got a"),
        ("commit_every = 1" + "0" * 4400 + "\n", "config file {toml} is not valid TOML (a number"),
        (f"greynoise_api_key = {12345678}\n", "greynoise_api_key must be a string, not a whole"),
    ],
)
def test_bad_config_files_name_the_key_and_the_file(
    tmp_path: Path, text: str, message: str
) -> None:
    toml = tmp_path / "etl.toml"
    toml.write_bytes(text.encode("utf-8").replace(b"\xc3\xbf", b"\xff"))
    with pytest.raises(UsageError) as caught:
        load_config(file=toml, env={})
    error = caught.value
    shown = cli.setting_message(SETTINGS, error) if isinstance(error, SettingError) else str(error)
    assert message.format(toml=toml) in shown
    assert "12345678" not in shown  # values are never echoed in a type error


def test_environment_values_are_parsed_and_named_by_their_variable() -> None:
    assert load_config(env={"ETL_PENDING_DIR": "/tmp/p"}).pending_dir == Path("/tmp/p")
    with pytest.raises(SettingError) as caught:
        load_config(env={"GREYNOISE_API_KEY": "k"}, values_origin="option", commit_every=0)
    assert cli.setting_message(SETTINGS, caught.value).startswith("--commit-every must be")


def _toml(folder: Path, text: str) -> Path:
    path = folder / "extra.toml"
    path.write_text(text)
    return path


def test_values_found_wrong_after_loading_are_named_where_they_came_from(tmp_path: Path) -> None:
    for env, shown in (
        ({"ETL_DB_URL": "foo:pw@db/x"}, "ETL_DB_URL is not a database URL"),  # foo: a file
        ({"ETL_DB_URL": "postgresql://u@h:99999/db"}, "ETL_DB_URL has a port that is not"),
    ):
        with pytest.raises(SettingError) as caught:
            load_config(env=env)
        assert cli.setting_message(SETTINGS, caught.value).startswith(shown)
    toml = _toml(tmp_path, 'maxmind_asn = "nope.mmdb"\n')
    with pytest.raises(SettingError) as caught:
        load_config(file=toml, env={})
    assert cli.setting_message(SETTINGS, caught.value) == (
        f"config file {toml}: maxmind_asn {tmp_path}/nope.mmdb: file not found"
    )


def test_a_config_built_in_code_is_converted_and_checked(tmp_path: Path) -> None:
    config = RefreshConfig(maxmind_dir="data/mm", only_ips="1.2.3.4", skip=["cymru"])  # type: ignore[arg-type]
    assert config.maxmind_dir == Path("data/mm") and config.only_ips == ("1.2.3.4",)
    assert {str(s) for s in config.skip} == {"cymru"}
    for wrong, problem in (
        ({"commit_every": "5"}, "commit_every must be a whole number, not a string"),
        ({"quiet": "no"}, "quiet must be true or false, not a string"),
        ({"greynoise_rate": float("inf")}, "greynoise_rate must be more than 0 and at most"),
        ({"lock_timeout": float("nan")}, "lock_timeout must be between 0 and 86,400 seconds"),
        ({"greynoise_budget": 10**12}, "greynoise_budget must be between 0 and 1,000,000,000"),
    ):
        with pytest.raises(SettingError, match=f"^{re.escape(problem)}"):
            RefreshConfig(**wrong)  # type: ignore[arg-type]
    assert load_config(env={}, cymru_sessions=4).cymru_sessions == 4  # library-only field


def test_the_library_names_settings_by_field_never_by_flag() -> None:
    with pytest.raises(SettingError, match=r"^greynoise_mode must be community or enterprise"):
        RefreshConfig(greynoise_mode="x")
    with pytest.raises(SettingError, match=r"^quiet cannot be used together with verbose$"):
        RefreshConfig(quiet=True, verbose=True)
    with pytest.raises(SettingError) as caught:
        RefreshConfig(max_ips=0)
    assert "--" not in str(caught.value)
    assert cli.setting_message(SETTINGS, caught.value) == (
        "--ips must be between 1 and 1,000,000,000 IPs, got 0"
    )


def test_a_readable_key_file_draws_a_warning(tmp_path: Path) -> None:
    toml = tmp_path / "etl.toml"
    toml.write_text(f'greynoise_api_key = "{KEY}"\n')
    toml.chmod(0o644)
    warning = secret_file_warning(SETTINGS, toml)
    assert warning and "chmod 600" in warning and KEY not in warning
    toml.chmod(0o600)
    assert secret_file_warning(SETTINGS, toml) is None
    assert KEY not in repr(load_config(file=toml, env={}))


def test_the_example_config_file_is_valid(tmp_path: Path) -> None:
    example = ROOT / "etl.toml.example"
    assert set(read_file(SETTINGS, example)) <= set(SETTINGS)
    copy = tmp_path / "etl.toml"  # where its MaxMind folder exists (else: exit 2)
    copy.write_text(example.read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "data" / "maxmind").mkdir(parents=True)
    config = load_config(file=copy, env={})
    assert config.db_url == f"sqlite:///{tmp_path.resolve()}/data/honeypot.sqlite"


@given(st.integers(min_value=-(2**40), max_value=2**40))
def test_whole_numbers_from_the_environment_round_trip(number: int) -> None:
    assert convert(SETTINGS["batch_size"], f" {number} ", "env") == number
    assert convert(SETTINGS["lock_timeout"], str(number), "env") == float(number)


@given(st.text(min_size=1).filter(lambda t: not re.fullmatch(r"\s*[-+]?\d+\s*", t)))
def test_text_that_is_no_whole_number_is_refused_without_echo(text: str) -> None:
    with pytest.raises(SettingError) as caught:
        convert(SETTINGS["batch_size"], text, "env")
    assert caught.value.problem == "must be a whole number"


@given(st.lists(st.sampled_from(["maxmind", "cymru", "greynoise"])))
def test_lists_from_the_environment_are_comma_or_space_separated(names: list[str]) -> None:
    assert {str(s) for s in convert(SETTINGS["skip"], ", ".join(names), "env")} == set(names)


def _options(help_text: str) -> set[str]:
    return set(re.findall(r"(?m)^\s+(?:-\w, )?(--[a-z-]+)", help_text))


def test_the_cli_has_one_option_per_declared_flag_and_both_helps_agree() -> None:
    def helps(*command: str) -> str:
        result = subprocess.run(
            [sys.executable, *command, "--help"], capture_output=True, text=True, check=True
        )
        return result.stdout

    module, installed = helps("-m", "etl.refresh"), helps("-m", "etl", "refresh")
    lists = helps("-m", "etl", "lists", "update")
    flags = {d.setting.flag for d in SETTINGS.values() if d.setting.flag}
    only_lists = {SETTINGS[name].setting.flag for name in LIST_URL_SETTINGS}
    assert _options(module) == _options(installed)
    assert _options(module) == flags - only_lists | {"--config", "--version", "--help"}
    every_list = {SETTINGS[name].setting.flag for name in LISTS_SETTINGS}
    assert _options(lists) == every_list | {"--config", "--help"}
    assert module.split("Options:")[1] == installed.split("Options:")[1]
    assert (
        module.split("Usage:")[1].split("\n", 1)[1]
        == installed.split("Usage:")[1].split("\n", 1)[1]
    )


def test_every_option_is_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    flags = [d.setting.flag for d in SETTINGS.values() if d.setting.flag]
    missing = [flag for flag in flags if flag not in readme]
    assert not missing, missing


def test_a_home_folder_of_no_user_is_a_setting_error() -> None:
    """Found by the hostile-environment property test: ``~0`` made pathlib raise RuntimeError."""
    with pytest.raises(SettingError, match="maxmind_dir starts with '~0': no user has that home"):
        load_config(env={"MAXMIND_DIR": "~0"})


def test_the_greynoise_key_is_trimmed_and_never_shown_when_wrong(tmp_path: Path) -> None:
    """A key file's newline or a pasted space around the key is dropped; whitespace or a
    control character inside it is refused (it failed every request as "connection failed")."""
    assert load_config(env={"GREYNOISE_API_KEY": f" {KEY}\n"}).greynoise_api_key == KEY
    toml = _toml(tmp_path, f'greynoise_api_key = "\\t{KEY}\\r\\n"\n')
    assert load_config(file=toml, env={}).greynoise_api_key == KEY
    assert RefreshConfig(greynoise_api_key=" \n").greynoise_api_key is None  # no key: skipped
    inner = f"{KEY[:6]} {KEY[6:]}"
    with pytest.raises(SettingError) as caught:
        load_config(env={"GREYNOISE_API_KEY": inner})
    message = cli.setting_message(SETTINGS, caught.value)
    assert message.startswith("GREYNOISE_API_KEY has whitespace (a space, tab or line break) at")
    assert KEY[:6] not in message and KEY[6:] not in message
    toml = _toml(tmp_path, f'greynoise_api_key = "{KEY[:6]}\\u0000{KEY[6:]}"\n')
    with pytest.raises(SettingError) as caught:
        load_config(file=toml, env={})
    assert cli.setting_message(SETTINGS, caught.value) == (
        f"config file {toml}: greynoise_api_key has a control character at character 7 of the "
        "key (GreyNoise keys have none)"
    )


def test_a_maxmind_folder_given_must_exist(tmp_path: Path) -> None:
    """Given (option, variable, file or keyword), not the default: a typo is exit 2."""
    with pytest.raises(SettingError) as caught:
        load_config(env={}, values_origin="option", maxmind_dir=tmp_path / "nope")
    assert cli.setting_message(SETTINGS, caught.value).startswith(
        f"--maxmind-dir {tmp_path}/nope: no such folder (a typo?"
    )
    (tmp_path / "a-file").write_text("")
    with pytest.raises(SettingError, match="is a file, not a folder"):
        load_config(env={"MAXMIND_DIR": str(tmp_path / "a-file")})
    # not read: MaxMind skipped, or both files named
    load_config(env={"MAXMIND_DIR": str(tmp_path / "nope")}, skip=["maxmind"])
    mmdb = tmp_path / "x.mmdb"
    mmdb.write_bytes(b"")
    load_config(env={"MAXMIND_DIR": "nope"}, maxmind_asn=mmdb, maxmind_city=mmdb)
    # the default, and a config built in code, are not checked (the run warns instead)
    assert load_config(env={}).maxmind_dir == Path("data/maxmind")
    assert RefreshConfig(maxmind_dir=tmp_path / "nope").maxmind_dir == tmp_path / "nope"


# -- each default and each check declared once ---------------------------------------------


def test_the_clients_defaults_are_the_runs() -> None:
    """What a run sends its clients by default is what the clients do with no argument, and
    the same holds for the lock wait and the progress line's interval: each default is declared
    once (the clients', the database's, the reporter's) and `RefreshConfig` reads it."""
    from etl.db.database import Database
    from etl.db.recognise import recognise
    from etl.report.summary import LineReporter
    from etl.sources.cymru.client import CymruSettings
    from etl.sources.greynoise.client import GreyNoiseSettings

    config = RefreshConfig()
    assert config.greynoise_settings() == GreyNoiseSettings()
    assert config.cymru_settings() == CymruSettings()
    for function, name in ((Database, "lock_timeout"), (recognise, "timeout")):
        assert inspect.signature(function).parameters[name].default == config.lock_timeout
    heartbeat = inspect.signature(LineReporter).parameters["heartbeat"].default
    assert heartbeat == config.progress_every


@pytest.mark.parametrize(
    ("setting", "client", "values"),
    [
        ("greynoise_rate", "rate", [0.0, -1.0, float("inf"), float("nan"), 1_000.5, 1e6]),
        ("greynoise_budget", "budget", [-1, 10**12]),
        ("greynoise_mode", "mode", ["free", ""]),
        ("greynoise_url", "url", ["ftp://x", "http://", "http://h:0", "http://a b", "x" * 99]),
        ("cymru", "address", ["bad_host!:43", "host:", ":43", "host:0", "host:70000", "h:4٣"]),
    ],
)
def test_a_setting_is_checked_once_the_same_way(
    setting: str, client: str, values: list[object]
) -> None:
    """A value the run refuses, the client's settings refuse with the same words (one check,
    declared with the client's settings), and the other way round."""
    from etl.sources.cymru.client import CymruSettings
    from etl.sources.greynoise.client import GreyNoiseSettings

    for value in values:
        with pytest.raises(SettingError) as by_the_run:
            RefreshConfig(**{setting: value})  # type: ignore[arg-type]
        with pytest.raises(SettingError) as by_the_client:
            if client == "address":
                CymruSettings.parse_address(str(value))
            else:
                GreyNoiseSettings(**{client: value})  # type: ignore[arg-type]
        assert str(by_the_client.value) == str(by_the_run.value), value
