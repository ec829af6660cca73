"""A damaged .mmdb (valid metadata, corrupt search tree or records) is one line and exit 2,
named or found in the folder, at open or at the first lookup that meets the damage: never a
traceback, and the database is not written."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from etl.cli.refresh import main
from etl.core.errors import MaxMindError
from etl.sources.maxmind import check as maxmind_check
from etl.sources.maxmind.steps import MaxMindDatabase, asn_row, city_row
from tests.mmdb_damage import damage_tree

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Run:
    monkeypatch.setenv("GREYNOISE_API_KEY", "")
    monkeypatch.setenv("ETL_DB_URL", "")

    def invoke(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


@pytest.fixture
def world(sample_world: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the sample database and of its MaxMind folder."""
    db, maxmind = sample_world
    shutil.copy(db, tmp_path / "h.sqlite")
    shutil.copytree(maxmind, tmp_path / "mm")
    return tmp_path / "h.sqlite", tmp_path / "mm"


def refresh_args(db: Path, *args: str) -> list[str]:
    return ["--db", f"sqlite:///{db}", "--skip", "cymru", "--skip", "greynoise", *args]


@pytest.mark.parametrize("kind", ["ASN", "City"])
@pytest.mark.parametrize("how", ["named", "found"])
def test_a_damaged_tree_is_one_line_before_any_work(
    run: Run, world: tuple[Path, Path], kind: str, how: str
) -> None:
    db, folder = world
    path = folder / f"GeoLite2-{kind}.mmdb"
    damage_tree(path, path)
    before = db.read_bytes()
    option = "--maxmind-asn" if kind == "ASN" else "--maxmind-city"
    where = [option, str(path)] if how == "named" else ["--maxmind-dir", str(folder)]
    code, out, err = run(*refresh_args(db, *where))
    assert code == 2, err
    assert out == "" and err.count("\n") == 1, err
    assert err.startswith(f"error: {path} is damaged (a test lookup failed: ")
    assert err.rstrip().endswith("replace it, e.g. download it again")
    assert db.read_bytes() == before and not Path(f"{db}-wal").exists()


def test_damage_the_test_lookups_miss_is_one_line_at_the_first_lookup(
    run: Run, world: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lookups of the run come before any row is written: exit 2, the rows unchanged."""
    db, folder = world
    path = damage_tree(folder / "GeoLite2-ASN.mmdb", folder / "GeoLite2-ASN.mmdb")
    monkeypatch.setattr(maxmind_check, "PROBES_V4", ())
    monkeypatch.setattr(maxmind_check, "PROBES_V6", ())
    rows = _rows(db)
    code, _out, err = run(*refresh_args(db, "--maxmind-dir", str(folder)))
    assert code == 2, err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: {path} is damaged (a lookup failed: {_reason(err)}"], err
    assert "Traceback" not in err
    assert _rows(db) == rows


def _reason(err: str) -> str:
    return err.split("(a lookup failed: ", 1)[1].strip()


def _rows(db: Path) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT * FROM ip_inventory ORDER BY ip_address").fetchall()
    finally:
        con.close()


class Reader:
    """A reader whose records are of the wrong shape, as a damaged data section gives."""

    def __init__(self, record: object) -> None:
        self.record = record

    def get_with_prefix_len(self, _address: object) -> tuple[object, int]:
        return self.record, 24

    def close(self) -> None:
        """Nothing to close."""


@pytest.mark.parametrize(
    ("row", "record"),
    [
        (asn_row, "text"),
        (asn_row, 17),
        (asn_row, {"autonomous_system_number": "15169"}),
        (asn_row, {"autonomous_system_number": True}),
        (asn_row, {"autonomous_system_number": 1 << 40}),
        (asn_row, {"autonomous_system_organization": ["x"]}),
        (city_row, [1, 2]),
        (city_row, {"country": "SE"}),
        (city_row, {"country": {"names": {"en": 3}}}),
        (city_row, {"location": {"latitude": "north"}}),
        (city_row, {"location": {"accuracy_radius": -1}}),
        (city_row, {"city": {"names": []}}),
    ],
)
def test_a_record_of_the_wrong_shape_is_a_damaged_file(
    row: Callable[[Any, int], tuple[Any, ...]], record: object
) -> None:
    database = MaxMindDatabase(Path("x.mmdb"), Reader(record), "GeoLite2-City", 0)
    with pytest.raises(MaxMindError, match=r"^x\.mmdb is damaged \(a record is not what"):
        database.rows(["1.2.3.4"], [0x01020304], row)


def test_the_sample_files_pass_the_check(sample_world: tuple[Path, Path]) -> None:
    for name in ("GeoLite2-ASN.mmdb", "GeoLite2-City.mmdb"):
        MaxMindDatabase.open(sample_world[1] / name).close()
