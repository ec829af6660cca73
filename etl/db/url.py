"""Database URLs: parse ``sqlite:///...`` and ``postgresql://...``, and redact secrets."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from etl.errors import SettingError

Dialect = Literal["sqlite", "postgres"]

_PG_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2")


@dataclass(frozen=True)
class DatabaseUrl:
    """A parsed database location; ``str()`` never shows the password."""

    dialect: Dialect
    url: str
    sqlite_path: Path | None = None
    password: str | None = None

    def __str__(self) -> str:
        return redact(self.url, self.secrets())

    def secrets(self) -> tuple[str, ...]:
        """Strings that must never appear in any output."""
        return (self.password,) if self.password else ()

    @property
    def libpq_url(self) -> str:
        """The URL in the form libpq (and DuckDB's postgres extension) accepts."""
        scheme, rest = self.url.split("://", 1)
        return "postgresql://" + rest if scheme != "postgresql" else self.url


def parse_database_url(url: str, check_folder: bool = True) -> DatabaseUrl:
    """Parse a database URL (the db_url setting); raise `SettingError` with a one-line reason
    when it is malformed, or (``check_folder``) names a SQLite file in no existing folder."""
    url = url.strip()
    if "://" not in url:
        raise SettingError(
            "db_url",
            "is not a database URL (its value is not shown: it may hold a password): use "
            "sqlite:///path/to.db or postgresql://user:pass@host:port/dbname",
        )
    scheme = url.split("://", 1)[0].lower()
    parser = _PARSERS.get(scheme)
    if parser is not None:
        return parser(url, check_folder)
    raise SettingError(
        "db_url",
        f"scheme {scheme!r} is not supported: use sqlite:///path/to.db "
        "or postgresql://user:pass@host:port/dbname",
    )


def _parse_sqlite(url: str, check_folder: bool) -> DatabaseUrl:
    rest = url.split("://", 1)[1]
    if not rest.startswith("/") or rest == "/":
        raise SettingError(
            "db_url",
            f"{url!r}: a SQLite URL needs three slashes and a path, "
            "e.g. sqlite:///data/honeypot.sqlite (relative) or sqlite:////var/lib/x.db (absolute)",
        )
    path = Path(unquote(rest[1:].split("?", 1)[0]))
    if str(path) in ("", ".", ":memory:"):
        raise SettingError("db_url", f"{url!r}: a SQLite database file path is required")
    folder = path.parent if str(path.parent) else Path(".")
    if check_folder and not folder.is_dir():
        raise SettingError("db_url", f"{url!r}: the folder {str(folder)!r} does not exist")
    if path.is_dir():
        raise SettingError("db_url", f"{url!r}: {str(path)!r} is a folder, not a database file")
    return DatabaseUrl(dialect="sqlite", url=url, sqlite_path=path)


def _parse_postgres(url: str, _check_folder: bool) -> DatabaseUrl:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        password = _raw_password(url)
        raise SettingError(
            "db_url", f"{redact(url, (password,) if password else ())!r} is malformed: {exc}"
        ) from None
    password = unquote(parts.password) if parts.password else None
    shown = redact(url, (password,) if password else ())
    if not parts.hostname and "host=" not in (parts.query or ""):
        raise SettingError("db_url", f"{shown!r}: a PostgreSQL URL needs a host")
    if not parts.path.strip("/"):
        raise SettingError("db_url", f"{shown!r}: a PostgreSQL URL needs a database name")
    if port is not None and not 0 < port < 65536:
        raise SettingError("db_url", f"{shown!r}: port {port} is out of range")
    return DatabaseUrl(dialect="postgres", url=url, password=password)


_PARSERS: dict[str, Callable[[str, bool], DatabaseUrl]] = {
    "sqlite": _parse_sqlite,
    **dict.fromkeys(_PG_SCHEMES, _parse_postgres),
}


def _raw_password(url: str) -> str | None:
    match = re.match(r"^[^:]+://[^:/@]*:([^@]*)@", url)
    return match.group(1) if match else None


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """Replace each secret, and any ``user:password@`` part of a URL, with ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return re.sub(r"(://[^:/@\s]*:)[^@\s]+@", r"\1***@", text)
