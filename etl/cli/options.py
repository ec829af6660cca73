"""Command-line plumbing shared by every command: Typer options from setting declarations,
flags as the user typed them, and one-line errors.

A usage mistake is one line, ``error: ...``, and exit status 2; a known failure is one line and
its `EtlError.exit_code`. The one place that maps a setting to its flag is `flag_of`; the one
error boundary of a command is `one_line_errors` (`Boundary`), and `invoke` uses the same for
what fails before or around the command (the options Typer could not read).
"""

from __future__ import annotations

import functools
import inspect
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Concatenate, ParamSpec

import typer
from typer._click import exceptions as click_errors
from typer.main import get_command

from etl.core.errors import EtlError, SettingError
from etl.core.settings import Declared, declared, element_type
from etl.db.url import redact

P = ParamSpec("P")

# Packages of the optional extras (pyproject.toml), by import name.
EXTRAS = {
    "numpy": "sample",
    "mmdb_writer": "sample",
    "netaddr": "sample",
    "geoip2": "sample",
}


def flag_of(settings: dict[str, Declared], name: str) -> str:
    """The command-line flag of setting ``name`` (its config key when it has none)."""
    known = settings.get(name)
    if known is None:
        return name
    if known.setting.flag:
        return known.setting.flag
    return f"{known.key} (etl.toml or {known.setting.env})" if known.setting.env else known.key


def setting_message(settings: dict[str, Declared], error: SettingError) -> str:
    """A `SettingError` named as the user gave the value: flag, variable or file key."""

    def label(name: str) -> str:
        known = settings.get(name)
        if known is None or error.origin in ("option", "argument") or name != error.name:
            return flag_of(settings, name)
        if error.origin == "env" and known.setting.env:
            return known.setting.env
        return f"config file {error.file}: {known.key}"

    return error.named(label)


def options_of(cls: type, names: Sequence[str] | None = None) -> list[inspect.Parameter]:
    """Typer parameters for every setting of ``cls`` that has a flag (only those ``names``,
    when given), in declaration order."""
    chosen = [d for d in declared(cls).values() if names is None or d.name in names]
    return [_option(d) for d in chosen if d.setting.flag]


def _option(declared_setting: Declared) -> inspect.Parameter:
    d, s = declared_setting, declared_setting.setting
    if d.kind is bool and d.default is not False:
        # A flag can only switch a setting on: one that is on by default needs a --no- form.
        raise TypeError(f"setting {d.name}: a flag's default must be False")
    assert s.flag is not None
    names = [s.flag, *([s.short] if s.short else [])]
    kind = _cli_type(d.kind)
    option = typer.Option(
        *names, help=_help(d), metavar=s.metavar, show_default=False, rich_help_panel=None
    )
    default: Any = False if kind is bool else None
    return inspect.Parameter(
        d.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[kind, option]
    )


def _cli_type(kind: Any) -> Any:
    text = str(kind)
    if kind is bool:
        return bool
    if text.startswith(("tuple[", "frozenset[", "list[")):
        return list[element_type(kind)] | None  # type: ignore[misc]
    for plain in (int, float, str, Path):
        if kind in (plain, plain | None):
            return plain | None
    single = _plain(kind)
    if isinstance(single, type) and issubclass(single, Enum):
        return single | None
    raise TypeError(f"no command-line type for {kind}")


def _plain(kind: Any) -> Any:
    """``X | None`` -> ``X``."""
    parts = [part for part in getattr(kind, "__args__", (kind,)) if part is not type(None)]
    return parts[0] if len(parts) == 1 else kind


def _help(d: Declared) -> str:
    notes = []
    element = element_type(d.kind) if str(d.kind).startswith(("tuple", "frozenset")) else None
    if isinstance(element, type) and issubclass(element, Enum):
        notes.append("one of " + ", ".join(str(member.value) for member in element))
    if d.setting.env:
        notes.append(f"env {d.setting.env}")
    if not (d.default is None or d.default is False or d.default in ((), frozenset())):
        shown = (
            f"{d.default:g}"
            if isinstance(d.default, float)
            else ", ".join(map(str, d.default))
            if isinstance(d.default, tuple)
            else d.default
        )
        notes.append(f"default {shown}")
    return d.setting.help + (f" [{'; '.join(notes)}]" if notes else "")


def with_signature(
    body: Callable[..., Any], parameters: Sequence[inspect.Parameter]
) -> Callable[..., Any]:
    """``body(**values)`` presented to Typer as a function taking ``parameters``."""

    def command(**values: Any) -> Any:
        return body(**values)

    command.__signature__ = inspect.Signature(list(parameters))  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in parameters}
    command.__doc__ = body.__doc__
    command.__name__ = body.__name__
    return command


@dataclass
class Boundary:
    """A command's error boundary: a known failure (`EtlError`; a `SettingError` named as the
    user gave the setting, `setting_message`) becomes one line on stderr, without the secrets
    the command learnt so far (`hide`) nor any URL's password, and the error's exit code;
    Ctrl-C (and SIGTERM, where the command turns it into Ctrl-C) becomes the line
    ``interrupted`` and exit 1, when the command gives one."""

    settings: dict[str, Declared]
    interrupted: str | None = None
    secrets: tuple[str, ...] = ()

    def hide(self, secrets: tuple[str, ...]) -> tuple[str, ...]:
        """Redact ``secrets`` (a config's `secrets()`) from any error from now on; return them."""
        self.secrets = secrets
        return secrets

    def failed(self, error: EtlError) -> int:
        """``error`` as one line on stderr; its exit code."""
        if isinstance(error, SettingError):
            text = setting_message(self.settings, error)
        else:
            text = str(error)
        return fail(redact(text, self.secrets), error.exit_code)

    def run(self, body: Callable[[], int]) -> int:
        """``body()``'s exit status, or that of the known failure it raised (see the class)."""
        try:
            return body()
        except EtlError as exc:
            return self.failed(exc)
        except KeyboardInterrupt:
            if self.interrupted is None:
                raise
            print(self.interrupted, file=sys.stderr)
            return 1


def one_line_errors(
    settings: dict[str, Declared], interrupted: str | None = None
) -> Callable[[Callable[Concatenate[Boundary, P], int]], Callable[P, int]]:
    """Decorate a command ``body(boundary, **options) -> int`` with its error boundary (a new
    `Boundary` per call: the body calls ``boundary.hide(config.secrets())`` once it has its
    config). Every command uses it: ``refresh``, ``status``, ``pending``, ``doctor``."""

    def decorate(body: Callable[Concatenate[Boundary, P], int]) -> Callable[P, int]:
        @functools.wraps(body)
        def command(*args: P.args, **kwargs: P.kwargs) -> int:
            boundary = Boundary(settings, interrupted)
            return boundary.run(lambda: body(boundary, *args, **kwargs))

        return command

    return decorate


def invoke(
    app: typer.Typer,
    argv: Sequence[str] | None,
    prog: str,
    settings: dict[str, Declared] | None = None,
) -> int:
    """Run ``app`` on ``argv``; return its exit status, every failure as one line on stderr."""
    try:
        result = get_command(app).main(
            args=list(sys.argv[1:] if argv is None else argv),
            prog_name=prog,
            standalone_mode=False,
        )
    except click_errors.BadParameter as exc:
        hint = f" (see {exc.ctx.command_path} --help)" if exc.ctx else ""
        return fail(redact(bad_parameter(exc) + hint, ()), 2)
    except click_errors.UsageError as exc:
        hint = f" (see {exc.ctx.command_path} --help)" if exc.ctx else ""
        # A stray argument may be a database URL with its password: redact URL passwords.
        return fail(redact(f"{exc.format_message()}{hint}", ()), 2)
    except EtlError as exc:  # a command's own boundary has the secrets; here none are known
        return Boundary(settings or {}).failed(exc)
    except OSError as exc:  # a folder that cannot be written, a port in use, ...
        where = f": {exc.filename}" if exc.filename else ""
        return fail(redact(f"{exc.strerror or exc}{where}", ()), 1)
    except ModuleNotFoundError as exc:
        if exc.name not in EXTRAS:
            raise
        extra = EXTRAS[exc.name]
        return fail(f"this command needs the {extra} extra: pip install 'honeypot-etl[{extra}]'", 2)
    return result if isinstance(result, int) else 0


def bad_parameter(error: click_errors.BadParameter) -> str:
    """An option's value Typer could not convert, in our words: the flag and what it must be
    (the value itself is never shown, but for a choice)."""
    param = error.param
    opts = [o for o in getattr(param, "opts", ()) if o.startswith("--")] if param else []
    flag = opts[0] if opts else (error.param_hint or "an option")
    kinds = [str(item.get("type", "")) for item in getattr(error.__cause__, "errors", list)() or []]
    kind = kinds[0] if kinds else ""
    if kind.startswith("int"):
        return f"{flag} must be a whole number"
    if kind.startswith("float"):
        return f"{flag} must be a number"
    choices = re.search(r"(.*) is not one of (.*?)\.?$", error.message)
    if choices:
        names = ", ".join(name.strip("' ") for name in choices.group(2).split(","))
        given = choices.group(1).removeprefix("Value error, ")
        return f"{flag} must be one of {names}, got {given}"
    return f"{flag}: {error.message}"


def run_single(
    command: Callable[..., Any],
    argv: Sequence[str] | None,
    prog: str,
    epilog: str | None = None,
    settings: dict[str, Declared] | None = None,
    help: str | None = None,
) -> int:
    """Run one command as a program of its own (``python -m etl.refresh`` and the like)."""
    text = help or str(command.__doc__)
    single = new_app(text, epilog)
    single.command(help=text, epilog=epilog)(command)
    return invoke(single, argv, prog, settings)


def fail(message: str, code: int) -> int:
    """Print ``message`` as one line, ``error: ...`` (a newline in it, say in a path, becomes
    a space), on stderr; return ``code``."""
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    return code


def version() -> str:
    """``honeypot-etl X.Y.Z`` (`etl.__version__`, also the package's version: pyproject.toml
    reads it from there)."""
    from etl import __version__

    return f"honeypot-etl {__version__}"


def _show_version(value: bool) -> None:
    if value:
        print(version())
        raise typer.Exit(0)


VersionOption = Annotated[
    bool,
    typer.Option(
        "--version",
        help="print the version and exit",
        callback=_show_version,
        is_eager=True,
        show_default=False,
    ),
]


def new_app(
    help: str,
    epilog: str | None = None,
    completion: bool = False,
) -> typer.Typer:
    """A Typer app with the project's conventions: ``-h`` and ``--help``, plain help text,
    shell completion (``--install-completion``) when asked (the installed command has it)."""
    return typer.Typer(
        help=help,
        epilog=epilog,
        context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
        add_completion=completion,
        no_args_is_help=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
    )
