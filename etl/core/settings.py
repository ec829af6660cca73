"""Settings declared once: each is a field of a frozen dataclass carrying a `Setting`.

A declaration looks like::

    batch_size: int = setting(500, "IPs per Team Cymru session", flag="--batch-size")

The field gives the name (also the notebook's keyword), the type and the default; the `Setting`
gives the help, the command-line option, the environment variable and the etl.toml key. Every
front end reads the same declarations:
- `load` merges an etl.toml, the environment and explicit values (in rising precedence) into the
  dataclass, converting each value to the field's type;
- `etl.cli.options` builds the Typer options from them.

Mistakes raise `SettingError`, which names the setting and where its value came from and never
echoes the value of a secret.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import stat
import tomllib
import types
import typing
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

from etl.core.errors import SettingError, UsageError
from etl.core.limits import path_problem

T = TypeVar("T")


@dataclass(frozen=True)
class Setting:
    """What the front ends need to know about one setting besides its name, type and default."""

    help: str
    flag: str | None = None  # command-line option; None: not an option (the API key)
    short: str | None = None  # one-letter alias, e.g. "-q"
    env: str | None = None  # environment variable
    key: str | None = None  # etl.toml key; None: the field name
    metavar: str | None = None
    secret: bool = False  # never echoed, never on the command line


def setting(
    default: Any,
    help: str,
    *,
    flag: str | None = None,
    short: str | None = None,
    env: str | None = None,
    key: str | None = None,
    metavar: str | None = None,
    secret: bool = False,
) -> Any:
    """Declare a dataclass field as a user-facing setting (see the module docstring)."""
    declared = Setting(help, flag, short, env, key, metavar, secret)
    return dataclasses.field(default=default, repr=not secret, metadata={"setting": declared})


@dataclass(frozen=True)
class Declared:
    """A setting with its field's name, type and default."""

    name: str
    kind: Any  # the field's type, e.g. int | None
    default: Any
    setting: Setting

    @property
    def key(self) -> str:
        """Its key in etl.toml."""
        return self.setting.key or self.name


def converted(instance: Any) -> None:
    """Convert every declared field of a frozen dataclass ``instance`` to its type, in place
    (for ``__post_init__``: a notebook's ``maxmind_dir="data/mm"`` becomes a Path, and
    ``commit_every="5"`` is refused with the setting named)."""
    for name, declaration in declared(type(instance)).items():
        value = getattr(instance, name)
        if value is not None:
            object.__setattr__(instance, name, convert(declaration, value, "argument"))


def declared(cls: type) -> dict[str, Declared]:
    """The settings a dataclass declares, by field name, in declaration order."""
    return _declared(cls)


@functools.cache
def _declared(cls: Any) -> dict[str, Declared]:
    hints = typing.get_type_hints(cls)
    return {
        f.name: Declared(f.name, hints[f.name], f.default, f.metadata["setting"])
        for f in dataclasses.fields(cls)
        if "setting" in f.metadata
    }


def load(
    cls: type[T],
    *,
    file: Path | None = None,
    env: Mapping[str, str] | None = None,
    values: Mapping[str, Any] | None = None,
    values_origin: str = "argument",
    check: Callable[[T, Collection[str]], None] | None = None,
) -> T:
    """``cls`` from an etl.toml, the environment and ``values`` (in rising precedence).

    ``values`` are keyed by field name; None, False and () mean "not given" (so a flag left
    off does not override the file). ``values_origin`` is ``option`` for the command line.
    Relative paths in the file are relative to the file's folder. ``cls`` converts the values
    to its field types itself (`converted` in its ``__post_init__``); a mistake found there,
    or by ``check`` (called with the instance and the names of the settings given, defaults
    left out), is named by where the value came from.
    """
    settings = declared(cls)
    merged: dict[str, Any] = {}
    origins: dict[str, str] = {}
    if file is not None:
        for name, value in read_file(settings, file).items():
            merged[name], origins[name] = value, "file"
    for name, value in from_environment(settings, os.environ if env is None else env).items():
        merged[name], origins[name] = value, "env"
    for name, value in (values or {}).items():
        if name not in settings or _given(value):  # converted by ``cls`` (see `converted`)
            merged[name] = value
            origins[name] = values_origin
    try:
        instance = cls(**merged)
        if check is not None:
            check(instance, origins.keys())
        return instance
    except SettingError as exc:
        origin = origins.get(exc.name, "argument")
        raise exc.where(origin, file if origin == "file" else None) from None


def _given(value: Any) -> bool:
    empty = isinstance(value, list | tuple | frozenset) and not value
    return not (value is None or value is False or empty)


def read_file(settings: Mapping[str, Declared], path: Path) -> dict[str, Any]:
    """The settings of an etl.toml (a flat table), converted, by field name."""
    data = _toml(path)
    by_key = {d.key: d for d in settings.values()}
    unknown = sorted(set(data) - set(by_key))
    if unknown:
        raise UsageError(
            f"config file {path}: unknown setting(s) {', '.join(unknown)}; "
            f"known: {', '.join(by_key)}"
        )
    try:
        return {
            by_key[key].name: convert(by_key[key], value, "file", base=path.parent)
            for key, value in data.items()
        }
    except SettingError as exc:
        raise exc.where("file", path) from None


def _toml(path: Path) -> dict[str, Any]:
    """An etl.toml's table; each way it cannot be read is one line naming the file (and the
    line of a TOML mistake), never its text."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise UsageError(f"config file {path} is a folder, not a file") from None
    except UnicodeDecodeError:
        raise UsageError(f"config file {path} is not UTF-8 text") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        reason = getattr(exc, "strerror", None) or "cannot be opened"
        raise UsageError(f"cannot read config file {path}: {reason.lower()}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config file {path}, {_toml_mistake(str(exc), text)}") from None
    except ValueError:  # int() of a number with thousands of digits
        raise UsageError(f"config file {path} is not valid TOML (a number too long)") from None


def _toml_mistake(message: str, text: str) -> str:
    """``line N: not valid TOML (reason)`` from a TOMLDecodeError's message."""
    where = re.search(r"\s*\(at (?:line (\d+), column \d+|end of document)\)$", message)
    reason = message[: where.start()] if where else message
    line = (where.group(1) if where else None) or str(max(1, len(text.splitlines())))
    return f"line {line}: not valid TOML ({reason})"


def secret_file_warning(settings: Mapping[str, Declared], path: Path) -> str | None:
    """A warning when an etl.toml that holds a secret can be read by other users."""
    secret_keys = {d.key for d in settings.values() if d.setting.secret}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        readable = path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    if readable and secret_keys & set(data):
        return (
            f"warning: {path} holds a secret ({', '.join(sorted(secret_keys & set(data)))}) "
            f"and other users can read it; run: chmod 600 {path}"
        )
    return None


def from_environment(settings: Mapping[str, Declared], env: Mapping[str, str]) -> dict[str, Any]:
    """The settings given in the environment (empty variables count as unset)."""
    return {
        d.name: convert(d, env[d.setting.env], "env")
        for d in settings.values()
        if d.setting.env and env.get(d.setting.env)
    }


def convert(declared: Declared, value: Any, origin: str, base: Path | None = None) -> Any:
    """``value`` as the setting's type; text (from the environment) is parsed."""
    kind = _without_none(declared.kind)
    category = _category(kind)
    if origin != "env" and isinstance(value, str) and category in _WANTED:
        # Only the environment is text; elsewhere the wrong type is a mistake worth naming.
        raise SettingError(
            declared.name, f"must be {_WANTED[category]}, not a string", origin=origin
        )
    try:
        converted = _CONVERTERS[category](kind, value)
    except (TypeError, ValueError) as exc:
        raise SettingError(declared.name, str(exc), origin=origin) from None
    if base is not None and isinstance(converted, Path) and not converted.is_absolute():
        converted = base / converted
    if base is not None and declared.name == "db_url":
        converted = _sqlite_url_relative_to(converted, base)
    return converted


def _without_none(kind: Any) -> Any:
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        parts = [part for part in typing.get_args(kind) if part is not type(None)]
        return parts[0]
    return kind


def _category(kind: Any) -> str:
    origin = typing.get_origin(kind)
    if origin in (tuple, frozenset, list):
        return "many"
    if isinstance(kind, type) and issubclass(kind, Enum):
        return "choice"
    return kind.__name__ if isinstance(kind, type) else str(kind)


def element_type(kind: Any) -> Any:
    """The element type of a many-valued setting (``tuple[str, ...]`` -> str)."""
    return typing.get_args(_without_none(kind))[0]


def _to_int(_kind: Any, value: Any) -> int:
    if isinstance(value, str):
        if not _WHOLE.fullmatch(value.strip()):
            raise ValueError("must be a whole number")
        if len(value.strip().lstrip("+-")) > 100:  # int() refuses very long text
            raise ValueError("must be a whole number of at most 100 digits")
        return int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"must be a whole number, not {_kind_of(value)}")
    return value


def _to_float(_kind: Any, value: Any) -> float:
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            raise ValueError("must be a number") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"must be a number, not {_kind_of(value)}")
    return float(value)


def _to_bool(_kind: Any, value: Any) -> bool:
    if isinstance(value, str):
        words = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
        if value.strip().lower() in words:
            return words[value.strip().lower()]
        raise ValueError("must be true or false")
    if not isinstance(value, bool):
        raise TypeError(f"must be true or false, not {_kind_of(value)}")
    return value


def _to_str(_kind: Any, value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"must be a string, not {_kind_of(value)}")
    return value


def _to_path(_kind: Any, value: Any) -> Path:
    path = value if isinstance(value, Path) else Path(_to_str(_kind, value))
    problem = path_problem(str(path))
    if problem:
        raise ValueError(problem)
    try:
        return path.expanduser()
    except RuntimeError:  # ~name of a user this system does not know
        raise ValueError(f"starts with {path.parts[0][:40]!r}: no user has that home") from None


def _to_choice(kind: Any, value: Any) -> Any:
    names = ", ".join(member.value for member in kind)
    if isinstance(value, kind):
        return value
    if not isinstance(value, str) or value not in {member.value for member in kind}:
        shown = repr(value) if isinstance(value, str) else _kind_of(value)
        raise ValueError(f"must be one of {names}, got {shown}")
    return kind(value)


def _to_many(kind: Any, value: Any) -> Any:
    if isinstance(value, str):
        value = [part for part in value.replace(",", " ").split() if part]
    if not isinstance(value, list | tuple | frozenset | set):
        raise TypeError(f"must be a list, not {_kind_of(value)}")
    item = typing.get_args(kind)[0]
    convert_item: Callable[[Any, Any], Any] = _CONVERTERS[_category(item)]
    items = [convert_item(item, element) for element in value]
    return frozenset(items) if typing.get_origin(kind) is frozenset else tuple(items)


def _kind_of(value: Any) -> str:
    names = {bool: "true/false", int: "a whole number", float: "a number", str: "a string"}
    return names.get(type(value), "a list" if isinstance(value, list) else "a table")


_WHOLE = re.compile(r"[-+]?[0-9]+")
_WANTED = {"int": "a whole number", "float": "a number", "bool": "true or false"}
_CONVERTERS: dict[str, Callable[[Any, Any], Any]] = {
    "int": _to_int,
    "float": _to_float,
    "bool": _to_bool,
    "str": _to_str,
    "Path": _to_path,
    "choice": _to_choice,
    "many": _to_many,
}


def _sqlite_url_relative_to(url: str, base: Path) -> str:
    """``sqlite:///relative.db`` or a plain relative path (``data/x.sqlite``) in a config
    file: relative to the file's folder. A plain value with ``:`` or ``@`` before its first
    ``/`` may be a URL that lost its scheme: left as it is, for the URL check to refuse."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/"):
        return prefix + str(base.resolve() / url[len(prefix) :])
    head = url.split("/", 1)[0]
    plain = "://" not in url and ":" not in head and "@" not in head
    if plain and url and not url.startswith(("/", "~")):
        return str(base.resolve() / url)
    return url
