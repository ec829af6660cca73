"""Hostile values for every option, environment variable and etl.toml (property tests, the
real CLI in-process): a value that must be refused is exit 2 with exactly one line on stderr,
``error: ...``, and nothing on stdout; whatever the value, there is no traceback, no
3-character piece of a secret in any output, and nothing is written (the SQLite file, its
-wal file and the working folder stay as they were).

Every run is a dry run, so a generated value that happens to be valid selects, reports and
exits 0 without writing; values built to be wrong must give exit 2.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from etl.cli.refresh import main
from tests.mmdb_damage import damage_tree

KEY = "Kx7Qv9ZmWp3T"  # GreyNoise key planted in the environment
PASSWORD = "Pw4Jq8Hs"  # database password planted in URLs
EXAMPLES = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@dataclass(frozen=True)
class Scene:
    """Files the hostile values point at, and the database that must stay unchanged."""

    root: Path
    db: Path
    maxmind: Path
    damaged: Path  # a MaxMind folder whose ASN file has a damaged search tree
    blocker: Path  # a regular file (paths "under" it cannot exist)
    junk: Path  # a file that is no .mmdb
    cwd: Path  # the working folder: must stay empty
    digest: str  # of the database file as built


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory, sample_world: tuple[Path, Path]) -> Scene:
    root = tmp_path_factory.mktemp("hostile")
    db = root / "h.sqlite"
    shutil.copy(sample_world[0], db)
    shutil.copytree(sample_world[1], root / "mm")
    shutil.copytree(sample_world[1], root / "damaged")
    damage_tree(root / "mm" / "GeoLite2-ASN.mmdb", root / "damaged" / "GeoLite2-ASN.mmdb")
    (root / "a-file").write_text("x")
    (root / "junk.mmdb").write_bytes(os.urandom(4096))
    (root / "cwd").mkdir()
    return Scene(
        root,
        db,
        root / "mm",
        root / "damaged",
        root / "a-file",
        root / "junk.mmdb",
        root / "cwd",
        sha256(db),
    )


@pytest.fixture
def cli(
    scene: Scene, capsys: pytest.CaptureFixture[str]
) -> Iterator[tuple[Scene, pytest.CaptureFixture[str]]]:
    with pytest.MonkeyPatch.context() as patch:
        for name in ("ETL_DB_URL", "ETL_CONFIG", "MAXMIND_DIR", "ETL_PENDING_DIR"):
            patch.delenv(name, raising=False)
        patch.setenv("GREYNOISE_API_KEY", KEY)
        patch.chdir(scene.cwd)
        yield scene, capsys


# -- hostile values -------------------------------------------------------------------------

garbage = st.one_of(
    st.text(max_size=40),
    st.text(min_size=300, max_size=600),
    st.sampled_from(["", " ", "\t", "-", "--", "=", "null", "None", "💥", "é" * 50, "\u202e"]),
)
not_numbers = st.sampled_from(["nan", "-nan", "inf", "-inf", "Infinity", "1e309", "-1e309"])
never_numbers = st.one_of(
    st.sampled_from(["", " ", "x", "0x10", "1,5", "\u0663", "\u0661\u0660", "1e", "--1", "1 2"]),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz!?#", min_size=1, max_size=20),
)
huge = st.one_of(st.integers(min_value=10**12, max_value=10**80).map(str), st.just("9" * 5000))


def whole_numbers(low: int, high: int) -> st.SearchStrategy[str]:
    """Text that is no whole number from ``low`` to ``high``."""
    outside = st.one_of(st.integers(max_value=low - 1), st.integers(min_value=high + 1))
    return st.one_of(outside.map(str), huge, not_numbers, never_numbers, st.just("1.5"))


def numbers(low: float, high: float, above: bool = False) -> st.SearchStrategy[str]:
    """Text that is no finite number in the range (``above``: ``low`` itself excluded)."""
    outside = st.one_of(
        st.floats(max_value=low, exclude_max=not above, allow_nan=False),
        st.floats(min_value=high, exclude_min=True, allow_nan=False),
    )
    return st.one_of(outside.map(repr), huge, not_numbers, never_numbers)


def postgres_urls() -> st.SearchStrategy[str]:
    """PostgreSQL URLs with the planted password that read more than one way."""
    odd = st.sampled_from(["@", "/", "#", "?", "%", "%zz", " ", "\n", "[", "@x@"])
    return st.tuples(
        st.integers(0, len(PASSWORD)),
        odd,
        st.sampled_from(
            ["127.0.0.1:1/cowrie", "db.example/cowrie", "h:99999/db", "[::1/db", "h/db?sslmode=x"]
        ),
    ).map(lambda t: f"postgresql://etl:{PASSWORD[: t[0]]}{t[1]}{PASSWORD[t[0] :]}@{t[2]}")


def wrong_values(scene: Scene) -> dict[str, st.SearchStrategy[str]]:
    """For each option taking a value: values it must refuse."""
    too_long = ["x" * 256, "a/" * 2100, f"{scene.root}/{'é' * 128}"]
    paths_wrong = st.sampled_from(
        [
            str(scene.root),
            str(scene.blocker / "x" / "y.json"),
            f"{scene.root}/x\x00y",
            "/",
            *too_long,
        ]
    )
    mmdb_wrong = st.sampled_from(
        [
            str(scene.root / "nope.mmdb"),
            str(scene.junk),
            str(scene.root),
            str(scene.blocker / "x.mmdb"),
            "",
            str(scene.damaged / "GeoLite2-ASN.mmdb"),
            *too_long,
        ]
    )
    not_ip = st.text(alphabet="ghijklmnopqrstuvwxyz -_/\n", max_size=30)
    sources = {"maxmind", "cymru", "greynoise", "classification"}
    return {
        "--db": st.one_of(
            postgres_urls(),
            garbage.filter(lambda t: "://" not in t),
            st.sampled_from(_bad_sqlite_urls(scene)),
        ),
        "--ips": whole_numbers(1, 10**9),
        "--ip": st.one_of(
            not_ip,
            st.sampled_from(
                [" 1.2.3.4", "1.2.3.4/24", "999.1.1.1", "01.2.3.4", "1.2.3", "::ffff:1.2.3.4x"]
            ),
        ),
        "--maxmind-dir": st.sampled_from([str(scene.damaged), *too_long]),
        "--lists-dir": st.sampled_from([str(scene.db), *too_long]),
        "--cloud-provider": st.one_of(
            st.sampled_from(["", "../x", "AWS", "a/b", "a b", "x" * 41]),
            garbage.filter(lambda t: not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,39}", t)),
        ),
        "--maxmind-asn": mmdb_wrong,
        "--maxmind-city": st.one_of(mmdb_wrong, st.just(str(scene.maxmind / "GeoLite2-ASN.mmdb"))),
        "--skip": garbage.filter(lambda t: t not in sources),
        "--commit-every": whole_numbers(1, 10**6),
        "--lock-timeout": numbers(0, 86_400),
        "--progress-every": numbers(0, 86_400, above=True),
        "--summary-json": paths_wrong,
        "--status-file": paths_wrong,
        "--metrics-file": paths_wrong,
        "--cymru": st.one_of(
            st.sampled_from(
                ["", ":43", "h:", "h:x", "h:0", "h:65536", "h:²", "a b:43", "ü.example"]
            ),
            st.text(alphabet=" !#$%&*()=+,;<>?@[]{}|~", min_size=1, max_size=20),
        ),
        "--batch-size": whole_numbers(10, 10_000),
        "--greynoise-url": st.one_of(
            st.sampled_from(
                ["", "x", "ftp://h", "http://", "http://a b", "http://h:x", "http://[::1"]
            ),
            garbage.filter(lambda t: not t.startswith(("http://", "https://"))),
        ),
        "--greynoise-mode": garbage.filter(lambda t: t not in ("community", "enterprise")),
        "--greynoise-rate": numbers(0, 1_000, above=True),
        "--greynoise-budget": whole_numbers(0, 10**9),
        "--greynoise-daily-budget": whole_numbers(0, 10**9),
        "--config": st.sampled_from(
            [
                str(scene.root),
                str(scene.root / "none.toml"),
                str(scene.blocker / "etl.toml"),
                str(scene.junk),
                *too_long,
            ]
        ),
    }


def _bad_sqlite_urls(scene: Scene) -> list[str]:
    return [
        f"sqlite:///{scene.root / 'missing.sqlite'}",  # no --create
        f"sqlite:///{scene.blocker}/h.sqlite",
        f"sqlite:///{scene.root}/no/such/h.sqlite",
        f"sqlite:///{scene.root}",
        f"sqlite://{scene.db}",
        "sqlite:///",
        f"sqlite:///{scene.root}/h%00.sqlite",
        "mysql://u:p@h/db",
        f"{PASSWORD}://x",
    ]


# -- checks ---------------------------------------------------------------------------------


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fragments(secret: str) -> set[str]:
    return {secret[i : i + 3] for i in range(len(secret) - 2)}


def run(
    cli: tuple[Scene, pytest.CaptureFixture[str]], args: list[str], db: bool = True
) -> tuple[int, str, str]:
    """``python -m etl.refresh`` on the scene's database (``db``), a dry run, then ``args``."""
    scene, capsys = cli
    base = ["--db", f"sqlite:///{scene.db}"] if db else []
    base += ["--maxmind-dir", str(scene.maxmind)]
    base += ["--skip", "cymru", "--skip", "greynoise", "--dry-run", "--quiet"]
    code = main([*base, *args])
    out, err = capsys.readouterr()
    return code, out, err


def check(scene: Scene, result: tuple[int, str, str], must_fail: bool) -> None:
    """The properties every hostile run keeps."""
    code, out, err = result
    assert "Traceback" not in out + err
    for piece in fragments(KEY) | fragments(PASSWORD):
        assert piece not in out + err, (piece, err)
    assert sha256(scene.db) == scene.digest
    assert not Path(f"{scene.db}-wal").exists() and not list(scene.cwd.iterdir())
    if must_fail or code != 0:
        assert code == 2, err
        assert out == "" and err.startswith("error: ") and err.count("\n") == 1, err


OUTPUTS = ("--summary-json", "--status-file", "--metrics-file")
FLAGS = ["--db", "--ips", "--ip", "--maxmind-dir", "--maxmind-asn", "--maxmind-city", "--skip",
         "--lists-dir", "--cloud-provider",
         "--commit-every", "--lock-timeout", "--progress-every", *OUTPUTS, "--cymru", "--batch-size",
         "--greynoise-url", "--greynoise-mode", "--greynoise-rate", "--greynoise-budget",
         "--greynoise-daily-budget", "--config"]  # fmt: skip


def test_every_option_with_a_value_is_driven() -> None:
    from etl.cli.refresh import SETTINGS
    from etl.refresh.config import LIST_URL_SETTINGS  # not options of a refresh

    flags = {
        d.setting.flag
        for d in SETTINGS.values()
        if d.setting.flag and d.kind is not bool and d.name not in LIST_URL_SETTINGS
    }
    assert flags | {"--config"} == set(FLAGS)


@pytest.mark.parametrize("flag", FLAGS)
@settings(EXAMPLES, max_examples=10)
@given(data=st.data())
def test_hostile_option_values(
    cli: tuple[Scene, pytest.CaptureFixture[str]], flag: str, data: st.DataObject
) -> None:
    """A value built to be wrong (or, one time in five, garbage that may be right, but not
    for an output file: a dry run writes those)."""
    scene = cli[0]
    maybe = flag not in OUTPUTS and data.draw(st.integers(0, 4)) == 0
    value = data.draw(garbage if maybe else wrong_values(scene)[flag])
    result = run(cli, [flag, value])
    event(f"exit {result[0]}")  # shown by --hypothesis-show-statistics
    check(scene, result, must_fail=not maybe)


@settings(EXAMPLES, max_examples=40)
@given(data=st.data())
def test_outputs_never_land_on_what_the_tool_did_not_make(
    cli: tuple[Scene, pytest.CaptureFixture[str]], data: st.DataObject
) -> None:
    """Each output drawn among the database, its side files, the config file, a MaxMind file,
    and a fresh path the others may draw too: unless every output has a path of its own that
    holds nothing, exit 2 and one line; the database and every file stay as they were."""
    scene = cli[0]
    toml = scene.root / "outputs.toml"
    toml.write_text("commit_every = 100\n", encoding="utf-8")
    toml.chmod(0o600)
    mmdb = scene.maxmind / "GeoLite2-ASN.mmdb"
    fresh = [scene.root / "out-a.json", scene.root / "out-b.json"]
    side = [Path(f"{scene.db}{suffix}") for suffix in ("-wal", "-shm", "-journal", ".etl-lock")]
    targets = [scene.db, *side, toml, mmdb, *fresh]
    chosen = {flag: data.draw(st.one_of(st.none(), st.sampled_from(targets))) for flag in OUTPUTS}
    paths = [path for path in chosen.values() if path is not None]
    must_fail = any(path not in fresh for path in paths) or len(set(paths)) < len(paths)
    kept = {path: sha256(path) for path in (toml, mmdb)}
    args = [item for flag, path in chosen.items() if path for item in (flag, str(path))]
    try:
        result = run(cli, ["--config", str(toml), *args])
        check(scene, result, must_fail)
        assert {path: sha256(path) for path in kept} == kept
        assert not any(path.exists() for path in side)
        if must_fail:
            assert not any(path.exists() for path in fresh)
    finally:
        for path in fresh:
            path.unlink(missing_ok=True)


STRAYS = [
    ["--quiet", "--verbose"],
    ["--no-such-option"],
    ["--ips"],
    [f"postgresql://etl:{PASSWORD}@x@h/db"],  # a URL without --db, with its password
    ["--ip", "1.2.3.4", "extra"],
    ["--db", f"postgresql://etl:{PASSWORD}@x@h/db", "--quiet", "--verbose"],
]


@pytest.mark.parametrize("args", STRAYS)
def test_misplaced_arguments(
    cli: tuple[Scene, pytest.CaptureFixture[str]], args: list[str]
) -> None:
    check(cli[0], run(cli, args), must_fail=True)


TOML_WRONG = [
    "greynoise_api_key = 12345678\n",
    f"greynoise_api_key = {KEY}\n",
    f'greynoise_api_key = ["{KEY}"]\n',
    f'db = "postgresql://etl:{PASSWORD}@x@h/db"\n',
    "ips = 'ten'\n",
    "ips = 0\n",
    "lock_timeout = nan\n",
    "greynoise_rate = inf\n",
    "commit_every = 1" + "0" * 30 + "\n",
    "commit_every = 1" + "0" * 5000 + "\n",
    "skip = ['dshield']\n",
    "status_file = '/'\n",
    "maxmind_asn = 'a\\u0000b'\n",
    "[table]\nx = 1\n",
    "ips = [\n",
]


@EXAMPLES
@given(
    text=st.one_of(
        st.sampled_from(TOML_WRONG).map(lambda t: (t, True)),
        st.text(max_size=80).map(lambda t: (t, False)),
    )
)
def test_hostile_config_files(
    cli: tuple[Scene, pytest.CaptureFixture[str]], text: tuple[str, bool]
) -> None:
    scene = cli[0]
    toml = scene.root / "etl.toml"
    toml.write_text(text[0], encoding="utf-8")
    toml.chmod(0o600)
    sets_db = text[0].startswith("db")  # else --db names the scene's database
    check(scene, run(cli, ["--config", str(toml)], db=not sets_db), must_fail=text[1])


ENVIRONMENT = ["ETL_DB_URL", "MAXMIND_DIR", "ETL_PENDING_DIR", "ETL_CONFIG"]


@pytest.mark.parametrize("variable", ENVIRONMENT)
@settings(EXAMPLES, max_examples=15)
@given(data=st.data())
def test_hostile_environment(
    cli: tuple[Scene, pytest.CaptureFixture[str]], variable: str, data: st.DataObject
) -> None:
    """Each variable the refresh reads (ETL_DB_URL stands in for a missing --db): one line
    and exit 2, or, for a value that happens to be right, a dry run. A password is planted
    where it is one: in the database URL."""
    scene = cli[0]
    urls = postgres_urls() if variable == "ETL_DB_URL" else st.nothing()
    value = data.draw(st.one_of(urls, garbage.filter(lambda t: "\x00" not in t)))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(variable, value)
        result = run(cli, [], db=variable != "ETL_DB_URL")
    event(f"exit {result[0]}")
    must_fail = value.startswith("postgresql://") or (variable == "ETL_CONFIG" and bool(value))
    check(scene, result, must_fail)
