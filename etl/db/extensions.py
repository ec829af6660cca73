"""Load DuckDB's sqlite and postgres extensions offline, from their PyPI wheels.

The wheels ``duckdb-extension-sqlite`` / ``duckdb-extension-postgres`` ship the binaries as
``<pkg>/extensions/v<version>/<name>.duckdb_extension``. ``LOAD '<path>'`` on that file fails
(its entry point is named for ``*_scanner``), so the file is copied once into a private
extension directory laid out as DuckDB expects and loaded by name. Nothing is downloaded.
"""

from __future__ import annotations

import importlib
import os
import shutil
from pathlib import Path

import duckdb

from etl.core.errors import DatabaseError

# extension name DuckDB loads -> (wheel module, file name inside the wheel)
_WHEELS = {
    "sqlite_scanner": ("duckdb_extension_sqlite", "sqlite.duckdb_extension"),
    "postgres_scanner": ("duckdb_extension_postgres", "postgres.duckdb_extension"),
}


def extension_directory() -> Path:
    """Where the copied extensions live (per user, per DuckDB version)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "honeypot-etl" / "duckdb-extensions"


def _platform(con: duckdb.DuckDBPyConnection) -> str:
    row = con.execute("PRAGMA platform").fetchone()
    assert row is not None
    return str(row[0])


def _install_from_wheel(name: str, target: Path) -> None:
    module_name, file_name = _WHEELS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise DatabaseError(
            f"the Python package {module_name.replace('_', '-')}=={duckdb.__version__} "
            "is not installed (run `make setup`)"
        ) from exc
    assert module.__file__ is not None
    source = Path(module.__file__).parent / "extensions" / f"v{duckdb.__version__}" / file_name
    if not source.is_file():
        raise DatabaseError(
            f"{module_name} does not carry an extension for duckdb {duckdb.__version__}; "
            "install the extension wheel whose version equals the duckdb version"
        )
    if target.is_file() and target.stat().st_size == source.stat().st_size:
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    shutil.copyfile(source, partial)
    os.replace(partial, target)


def load_extension(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """Load ``sqlite_scanner`` or ``postgres_scanner`` into ``con`` without any download."""
    directory = extension_directory()
    target = directory / f"v{duckdb.__version__}" / _platform(con) / f"{name}.duckdb_extension"
    _install_from_wheel(name, target)
    con.execute("SET extension_directory = ?", [str(directory)])
    try:
        con.execute(f"LOAD {name}")
    except duckdb.Error as exc:
        raise DatabaseError(f"cannot load the DuckDB extension {name}: {exc}") from exc


def offline_connection() -> duckdb.DuckDBPyConnection:
    """A DuckDB connection that never fetches extensions, with UTC as its time zone."""
    con = duckdb.connect(
        config={"autoinstall_known_extensions": False, "autoload_known_extensions": False}
    )
    con.execute("SET TimeZone = 'UTC'")
    return con
