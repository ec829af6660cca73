"""What ships: the wheel holds the ``etl`` package alone (no simulator, sample or demo module,
no test database URL), and the installed ``honeypot-etl`` command has only what operators run.
The test bed (``testbed/``) stays in the repository."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

from etl.cli.app import main
from testbed.sample.scratch import PG_ADMIN, PG_SERVER

ROOT = Path(__file__).resolve().parents[1]
TEST_BED = ("sim", "sample", "demo")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip wheel --no-deps .`` of a copy of the sources, test bed included (no stale build/
    folder of the checkout can leak into it; offline: the build backend is in the dev set-up)."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for folder in ("etl", "testbed", "tests"):
        shutil.copytree(
            ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__")
        )
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "-q", str(source), "-w", str(out)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    (found,) = out.glob("honeypot_etl-*.whl")
    return found


def test_the_wheel_holds_the_package_and_no_test_bed(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        texts = [archive.read(name).decode("utf-8", "replace") for name in names]
    tops = {name.split("/")[0] for name in names}
    assert tops == {"etl", "honeypot_etl-0.1.0.dist-info"}
    assert "etl/cli/refresh.py" in names and "etl/cli/app.py" in names
    assert [n for n in names if n.split("/")[:2] in (["etl", t] for t in TEST_BED)] == []
    assert [n for n in names if n.startswith("etl/") and Path(n).stem in TEST_BED] == []
    # The tests' PostgreSQL server and admin URL are the test bed's, not the product's.
    assert [n for n, text in zip(names, texts, strict=True) if PG_SERVER in text] == []
    assert PG_ADMIN.startswith(PG_SERVER)


def test_the_wheel_needs_only_what_a_refresh_needs(wheel: Path) -> None:
    """The sample world's packages (numpy, mmdb-writer, netaddr; geoip2 for the bench) are
    an extra, never a runtime dependency."""
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read("honeypot_etl-0.1.0.dist-info/METADATA").decode()
    requires = Parser().parsestr(metadata).get_all("Requires-Dist") or []
    runtime = {r.split("==")[0].split("[")[0].strip() for r in requires if "extra ==" not in r}
    assert "duckdb" in runtime and "polars" in runtime
    assert runtime.isdisjoint({"numpy", "mmdb-writer", "netaddr", "geoip2"})


def test_the_installed_command_has_no_test_bed(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    listed = capsys.readouterr().out
    commands = listed.split("Commands:")[1].split("Examples:")[0]
    assert [line.split()[0] for line in commands.strip().splitlines()] == [
        "refresh",
        "status",
        "pending",
        "doctor",
        "lists",
    ]
    for name in TEST_BED:
        assert f"honeypot-etl {name}" not in listed
        assert main([name, "--help"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: No such command") and err.count("\n") == 1, err
