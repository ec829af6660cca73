"""Database URLs: parse ``sqlite:///...``, ``postgresql://...`` and plain SQLite file paths
(``data/honeypot.sqlite``, ``/var/lib/cowrie/x.db``: as sqlite-utils and datasette take them),
and redact secrets."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from etl.core.errors import SettingError
from etl.core.limits import path_problem

Dialect = Literal["sqlite", "postgres"]

_PG_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2")


@dataclass(frozen=True)
class DatabaseUrl:
    """A parsed database location; ``str()`` never shows the password."""

    dialect: Dialect
    url: str
    sqlite_path: Path | None = None
    password: str | None = None
    password_as_written: str | None = None  # percent-encoded, as in the URL
    written: str = ""  # a SQLite file's value as given (shown in errors)

    def check_folder(self) -> DatabaseUrl:
        """Raise `SettingError` when a SQLite file's folder does not exist (a run checks this
        when it opens the database; the settings may name a folder not made yet)."""
        if self.sqlite_path is None:
            return self
        folder = self.sqlite_path.parent if str(self.sqlite_path.parent) else Path(".")
        if not folder.is_dir():
            problem = "is a file, not a folder" if folder.exists() else "does not exist"
            raise SettingError("db_url", f"{self.written!r}: the folder {str(folder)!r} {problem}")
        return self

    def __str__(self) -> str:
        return redact(self.url, self.secrets())

    def secrets(self) -> tuple[str, ...]:
        """Strings that must never appear in any output: the password, decoded and as written."""
        found = (self.password_as_written, self.password)
        return tuple(dict.fromkeys(value for value in found if value))

    @property
    def libpq_url(self) -> str:
        """The URL in the form libpq (and DuckDB's postgres extension) accepts."""
        scheme, rest = self.url.split("://", 1)
        return "postgresql://" + rest if scheme != "postgresql" else self.url


def parse_database_url(url: str, check_folder: bool = True) -> DatabaseUrl:
    """Parse a database URL (the db_url setting); raise `SettingError` with a one-line reason
    when it is malformed, or (``check_folder``) names a SQLite file in no existing folder.

    A value without ``://`` is the path of a SQLite file, taken as written (no percent-decoding,
    no ``?`` options), unless it looks like a URL that lost its scheme (``user:pw@host/db``,
    ``host:5432/db``): that one is refused without being shown (it may hold a password)."""
    url = url.strip()
    if "://" not in url:
        if _plain_path(url):
            parsed = _sqlite_file(url, f"sqlite:///{url}", url)
            return parsed.check_folder() if check_folder else parsed
        raise SettingError(
            "db_url",
            "is not a database URL nor a plain file path (its value is not shown: it may hold a "
            "password): use sqlite:///path/to.db, a path such as data/honeypot.sqlite, "
            "or postgresql://user@host:port/dbname",
        )
    scheme = url.split("://", 1)[0].lower()
    parser = _PARSERS.get(scheme)
    if parser is not None:
        parsed = parser(url)
        return parsed.check_folder() if check_folder else parsed
    shown = repr(scheme) if re.fullmatch(r"[a-z][a-z0-9+.-]{0,30}", scheme) else "of the URL"
    raise SettingError(
        "db_url",
        f"scheme {shown} is not supported: use sqlite:///path/to.db "
        "or postgresql://user@host:port/dbname",
    )


def _parse_sqlite(url: str) -> DatabaseUrl:
    rest = url.split("://", 1)[1]
    if not rest.startswith("/") or rest == "/":
        raise SettingError(
            "db_url",
            f"{url!r}: a SQLite URL needs three slashes and a path, "
            "e.g. sqlite:///data/honeypot.sqlite (relative) or sqlite:////var/lib/x.db (absolute)",
        )
    return _sqlite_file(unquote(rest[1:].split("?", 1)[0]), url, url)


# A value without "://" that is no plain path: a ":" or "@" before its first "/", as in a
# scheme (postgresql:/x), a host and port (db.example:5432/cowrie) or a user part
# (etl:pw@db/cowrie). Such a file is named ./backup:1.db or sqlite:///backup:1.db.
_NOT_A_PATH = re.compile(r"[^/]*[:@]")


def _plain_path(text: str) -> bool:
    """Whether ``text`` (without ``://``) reads as a file path, not as a URL without scheme."""
    return bool(text) and _NOT_A_PATH.match(text) is None


def _sqlite_file(text: str, url: str, written: str) -> DatabaseUrl:
    """The SQLite file at path ``text``; ``url``: its URL, ``written``: the value as given
    (shown in errors)."""
    problem = path_problem(text)
    if problem:
        shown = repr(written) if len(written) <= 80 else repr(written[:80]) + "..."
        raise SettingError("db_url", f"{shown}: its file path {problem}")
    path = Path(text)
    if str(path) in ("", ".", ":memory:"):
        raise SettingError("db_url", f"{written!r}: a SQLite database file path is required")
    if path.is_dir():
        raise SettingError("db_url", f"{written!r}: {str(path)!r} is a folder, not a database file")
    return DatabaseUrl(dialect="sqlite", url=url, sqlite_path=path, written=written)


def _parse_postgres(url: str) -> DatabaseUrl:
    """A PostgreSQL URL; nothing of it after ``scheme://`` is ever shown in an error."""
    reason = _ambiguity(url.split("://", 1)[1])
    if reason:
        raise SettingError("db_url", f"is not a PostgreSQL URL that reads one way only: {reason}")
    try:
        parts = urlsplit(url)
    except ValueError:  # a [ or ] that opens no IPv6 address
        raise SettingError("db_url", f"has a malformed host{_NOT_SHOWN}") from None
    port = _port(parts.netloc.rpartition("@")[2])
    if port is not None and not 0 < port < 65536:
        raise SettingError("db_url", f"has a port that is not a whole number 1..65535{_NOT_SHOWN}")
    if not parts.hostname and "host=" not in (parts.query or ""):
        raise SettingError("db_url", f"needs a host{_NOT_SHOWN}")
    if not parts.path.strip("/"):
        raise SettingError("db_url", f"needs a database name{_NOT_SHOWN}")
    written = _password(parts.password, parts.query)
    password = unquote(written) if written else None
    return DatabaseUrl("postgres", url, password=password, password_as_written=written)


_NOT_SHOWN = " (the URL is not shown): e.g. postgresql://etl@db.example:5432/cowrie"
_ENCODE = (
    "; percent-encode these characters in the user name and password: @ as %40, / as %2F, "
    "? as %3F, # as %23, % as %25 (the URL is not shown: it may hold a password)"
)


def _ambiguity(rest: str) -> str | None:
    """Why the part of a PostgreSQL URL after ``scheme://`` can be read more than one way
    (so its password cannot be told from its host), or None."""
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if re.search(r"[\s\x00-\x1f\x7f]", rest):
        return "it holds a space or a control character" + _ENCODE
    if rest.count("@") > 1:
        return "it holds more than one @" + _ENCODE
    if "@" in rest and "@" not in authority:
        return "a /, ? or # comes before the @ that ends the user part" + _ENCODE
    if "#" in rest:
        return "it holds a #" + _ENCODE
    if re.search(r"%(?![0-9A-Fa-f]{2})", rest):
        return "a % is not followed by two hex digits" + _ENCODE
    return None


def _port(host_and_port: str) -> int | None:
    """The port after ``host:`` (-1 when it is not a whole number), None when there is none."""
    if host_and_port.startswith("["):  # [IPv6]:port
        host_and_port = host_and_port.partition("]")[2]
    text = host_and_port.rpartition(":")[2] if ":" in host_and_port else None
    if not text:
        return None
    return int(text) if text.isascii() and text.isdigit() else -1


def _password(userinfo_password: str | None, query: str) -> str | None:
    """The password as written: in the user part, else in a ``password=`` parameter."""
    if userinfo_password:
        return userinfo_password
    for pair in query.split("&"):
        key, _, value = pair.partition("=")
        if unquote(key) == "password" and value:
            return value
    return None


_PARSERS: dict[str, Callable[[str], DatabaseUrl]] = {
    "sqlite": _parse_sqlite,
    **dict.fromkeys(_PG_SCHEMES, _parse_postgres),
}


MIN_SECRET_LENGTH = 4  # shorter secrets are replaced as whole words only (see `redact`)


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """Replace each secret, and any ``user:password@`` part of a URL, with ``***``.

    A secret shorter than `MIN_SECRET_LENGTH` characters is replaced where it stands alone
    (not inside a longer word or number): a key "k" would otherwise turn every "k" of every
    line into ``***``, and show where it occurs.
    """
    for secret in secrets:
        if len(secret) >= MIN_SECRET_LENGTH:
            text = text.replace(secret, "***")
        elif secret:
            text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", "***", text)
    # Up to the last @ of the URL: a password holding an @ is hidden whole.
    return re.sub(r"(://[^:/\s]*:)\S*@", r"\1***@", text)


def redacted(value: Any, secrets: tuple[str, ...]) -> Any:
    """``value`` (JSON-like: dicts, lists, text, numbers) with every text redacted; keys and
    numbers are never touched, so the JSON written from it stays valid and keeps its shape."""
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, dict):
        return {key: redacted(item, secrets) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redacted(item, secrets) for item in value]
    return value
