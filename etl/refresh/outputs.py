"""The files a run writes for its operator and monitors (the status file, the summary JSON, the
metrics file), and the guard rails on their paths: a path the tool writes never holds something
it did not make.

Before any work (`check_outputs`), each output is refused (exit 2, one line naming its option)
when it is the database or one of its side files (``-wal``, ``-shm``, ``-journal``, the run
lock, the kept answers), the config file, another output, a folder, or an existing file that is
not an earlier output of the same kind (an empty file is taken). Its folder is test-written
with a real file, so a read-only mount or a full disk is found before the run, as root too.
A dry run writes no status or metrics file, no probe, and creates no folder.

At the end (`RunOutputs.write`) every file is written to a temporary file beside it first, and
all are renamed only once all could be written: when one cannot, the run becomes a failure
that names the option, and the files that can be written say so.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from etl.core.errors import EtlError, SettingError
from etl.db.side_files import JOURNAL_SUFFIXES, pending_path, run_lock_path
from etl.refresh.config import RefreshConfig
from etl.report.metrics import metrics_text
from etl.report.progress import StatusFile
from etl.report.summary import RunSummary, partial_of

# An earlier output is small; a larger file at an output's path is not one of ours.
LARGEST_EARLIER_OUTPUT = 4 * 1024 * 1024
PROBE_BYTES = 4096  # a page: a full tmpfs refuses it, where an empty file would still be made


class OutputError(EtlError):
    """An output file could not be written at the end of the run (exit 1)."""


def _json_with(keys: set[str]) -> Callable[[str], bool]:
    def looks_like(text: str) -> bool:
        try:
            value = json.loads(text)
        except ValueError:
            return False
        return isinstance(value, dict) and keys <= value.keys()

    return looks_like


def _is_metrics(text: str) -> bool:
    lines = [line for line in text.splitlines() if line.strip()]
    ours = ("# HELP honeypot_etl_", "# TYPE honeypot_etl_", "honeypot_etl_")
    return bool(lines) and all(line.startswith(ours) for line in lines)


def _has_series(text: str, name: str) -> bool:
    return f"\n# TYPE honeypot_etl_{name} " in f"\n{text}"


def _is_run_metrics(text: str) -> bool:
    """A refresh's metrics file (not the state's: a refresh never replaces that one)."""
    return _is_metrics(text) and not _has_series(text, "due_ips")


def _is_state_metrics(text: str) -> bool:
    """The state metrics of ``honeypot-etl status --metrics-file`` (not a refresh's)."""
    return _is_metrics(text) and not _has_series(text, "last_run_success")


@dataclass(frozen=True)
class Output:
    """One output setting: what it holds, and how an earlier file of it is recognised."""

    name: str
    kind: str
    looks_like: Callable[[str], bool]


OUTPUTS = (
    Output("status_file", "status file", _json_with({"state", "pid", "phases", "started_at"})),
    Output("summary_json", "run summary", _json_with({"selected", "sources", "outcome"})),
    Output("metrics_file", "metrics file", _is_run_metrics),
)
# `honeypot-etl status --metrics-file`: not a refresh's output, refused by the same rules.
STATE_METRICS = Output("metrics_file", "state metrics file", _is_state_metrics)
# What a dry run writes: only the summary (it says it was a dry run).
DRY_RUN_OUTPUTS = ("summary_json",)


def outputs_written(config: RefreshConfig) -> list[tuple[Output, Path]]:
    """The outputs this run writes, with their paths."""
    chosen = []
    for output in OUTPUTS:
        path = getattr(config, output.name)
        if path is not None and (not config.dry_run or output.name in DRY_RUN_OUTPUTS):
            chosen.append((output, path))
    return chosen


def check_outputs(config: RefreshConfig, config_file: Path | None = None) -> None:
    """Refuse (`SettingError`, exit 2) an output path that holds or would replace something the
    tool did not make, or that cannot be written (see the module docstring). Writes nothing
    but a probe file that is removed at once; creates no folder."""
    taken = _taken_paths(config, config_file)
    for output in OUTPUTS:  # also those a dry run does not write: they name the same files
        path = getattr(config, output.name)
        if path is None:
            continue
        key = _key(path)
        if key in taken:
            raise SettingError(output.name, f"{path} is {taken[key]}: choose another file")
        taken[key] = f"also the {output.kind} (two outputs cannot share a file)"
    written = {output.name for output, _path in outputs_written(config)}
    for output in OUTPUTS:  # a dry run checks them all: the same command without it runs
        path = getattr(config, output.name)
        if path is not None:
            _check_file(output, path)
            makes_folder = not config.dry_run or output.name not in written
            _check_folder(output, path, makes_folder, probe=not config.dry_run)
    pending = config.pending_dir
    if pending is not None and pending.exists() and not pending.is_dir():
        raise SettingError("pending_dir", f"{config.pending_dir} is a file, not a folder")


def check_state_metrics(config: RefreshConfig, config_file: Path | None, path: Path) -> None:
    """Refuse (`SettingError`, exit 2, named ``--metrics-file``) ``path`` for the state
    metrics of ``honeypot-etl status`` by the refresh's own rules (see the module docstring),
    and when it is one of the refresh's outputs ``config`` names: each file has one writer.
    Writes nothing but a probe file that is removed at once; creates no folder."""
    taken = _taken_paths(config, config_file)
    where = f" ({config_file} names it)" if config_file is not None else ""
    for output in OUTPUTS:
        named = getattr(config, output.name)
        if named is not None:
            taken[_key(named)] = f"the refresh's {output.kind}{where}"
    if (what := taken.get(_key(path))) is not None:
        raise SettingError(
            STATE_METRICS.name, f"{path} is {what}: choose another file", origin="option"
        )
    try:
        _check_file(STATE_METRICS, path)
        _check_folder(STATE_METRICS, path, True, probe=True)
    except SettingError as error:
        raise error.where("option") from None


def _taken_paths(config: RefreshConfig, config_file: Path | None) -> dict[str, str]:
    """The paths no output may be, with what each is."""
    taken: dict[str, str] = {}
    named = config.database.sqlite_path
    if named is not None:
        database = Path(_key(named))  # its side files sit beside the file a link points at
        taken[_key(named)] = "the database"
        for suffix in JOURNAL_SUFFIXES:
            taken[_key(Path(f"{database}{suffix}"))] = f"the database's {suffix} file"
        taken[_key(run_lock_path(database))] = "the database's run lock file"
        taken[_key(pending_path(database))] = "the database's kept answers folder"
    if config_file is not None:
        taken[_key(config_file)] = "the config file"
    mmdbs = [config.maxmind_asn, config.maxmind_city]
    if config.maxmind_dir.is_dir():
        mmdbs += [path for path in config.maxmind_dir.iterdir() if path.suffix == ".mmdb"]
    for path in mmdbs:
        if path is not None:
            taken[_key(path)] = "a MaxMind database"
    return taken


def _key(path: Path) -> str:
    """One spelling per file: absolute, symbolic links resolved. No ``~`` is expanded here:
    the settings expanded theirs (`etl.core.settings`), and a database path names its file
    as written (``~0`` is a file in the current folder, not the home of a user 0)."""
    return os.path.realpath(path)


def _check_file(output: Output, path: Path) -> None:
    """An existing file at ``path`` must be an earlier output of the same kind (or empty)."""
    if path.is_dir():
        raise SettingError(output.name, f"{path} is a folder, not a file")
    if not path.exists():
        return
    if not path.is_file():
        raise SettingError(output.name, f"{path} is not a regular file")
    try:
        size = path.stat().st_size
        text = path.read_bytes().decode("utf-8") if size <= LARGEST_EARLIER_OUTPUT else None
    except (OSError, UnicodeDecodeError):
        text = None
    if size and (text is None or not output.looks_like(text)):
        raise SettingError(
            output.name,
            f"{path} exists and is not an earlier {output.kind} of honeypot-etl: it is left as "
            "it is; choose another file (or remove it)",
        )
    if not os.access(path, os.W_OK):
        raise SettingError(output.name, f"{path} is read-only")


def _check_folder(output: Output, path: Path, create_allowed: bool, probe: bool) -> None:
    """The folder of ``path`` (or, when it does not exist yet and may be made, its nearest
    existing parent) takes a real file: a ``probe`` written and removed at once (a dry run
    writes nothing: it asks the permissions, which root always has)."""
    folder = path.parent
    if not folder.exists() and not create_allowed:
        raise SettingError(
            output.name, f"{path}: the folder {folder} does not exist (a dry run makes no folder)"
        )
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise SettingError(output.name, f"{path}: {folder} is a file, not a folder")
    if not probe:
        if not os.access(folder, os.W_OK | os.X_OK):
            raise SettingError(output.name, f"{path}: the folder {folder} is not writable")
        return
    try:
        handle, probe_file = tempfile.mkstemp(prefix=".honeypot-etl-probe-", dir=folder)
    except OSError as exc:
        raise SettingError(output.name, f"{path}: cannot write in {folder}: {_why(exc)}") from exc
    try:
        os.write(handle, b"\0" * PROBE_BYTES)
    except OSError as exc:
        raise SettingError(output.name, f"{path}: cannot write in {folder}: {_why(exc)}") from exc
    finally:
        os.close(handle)
        os.unlink(probe_file)


def _why(error: OSError) -> str:
    return error.strerror or str(error)


class RunOutputs:
    """The files of one run, written once at its end (`write`)."""

    def __init__(self, config: RefreshConfig, status: StatusFile | None) -> None:
        self.config = config
        self.status = status
        self.written = False

    def texts(self, summary: RunSummary) -> list[tuple[str, Path, str]]:
        """(setting, path, content) of each output, for the run as ``summary`` says it ended."""
        files: list[tuple[str, Path, str]] = []
        secrets = self.config.secrets()
        for output, path in outputs_written(self.config):
            if output.name == "status_file":
                if self.status is None:
                    continue
                if summary.error and summary.error not in self.status.notes:
                    self.status.note(summary.error)  # how the run ended, as on stderr
                text = self.status.text(summary.outcome)
            elif output.name == "metrics_file":
                text = metrics_text(path, summary, summary.outcome == "finished")
            else:
                text = summary.json_text(secrets)
            files.append((output.name, path, text))
        return files

    def write(self, summary: RunSummary, flag: Callable[[str], str]) -> None:
        """Write every output for the run as ``summary`` says it ended. When one cannot be
        written, none is replaced by the first version: a run that had finished becomes a
        failure naming the option (``flag`` of the setting; a failed one keeps its own error
        and gets a note), the others are written saying so, and `OutputError` is raised."""
        self.written = True
        if self.status is not None:
            self.status.stop()
        files = self.texts(summary)
        try:
            _write_all(files)
        except _OneFailedError as failed:
            message = f"{flag(failed.name)} {failed.path} could not be written: {failed.why}"
            if summary.outcome == "finished":
                summary.failed_after_end(message)
            else:  # the run's own error stays what ended it
                summary.notes.append(message)
            for name, path, text in self.texts(summary):
                if name != failed.name:
                    with suppress(_OneFailedError):  # the error line names the first one
                        _write_all([(name, path, text)])
            raise OutputError(message) from failed


class _OneFailedError(Exception):
    def __init__(self, name: str, path: Path, why: str) -> None:
        super().__init__(f"{path}: {why}")
        self.name, self.path, self.why = name, path, why


def _write_all(files: list[tuple[str, Path, str]]) -> None:
    """Write each file to a temporary file beside it, then rename them all: all or none."""
    partials: list[tuple[Path, Path]] = []
    try:
        for name, path, text in files:
            partial = partial_of(path)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                partial.write_text(text, encoding="utf-8")
            except OSError as exc:
                _remove(partial)
                raise _OneFailedError(name, path, _why(exc)) from exc
            partials.append((partial, path))
    except _OneFailedError:
        for partial, _path in partials:
            _remove(partial)
        raise
    for partial, path in partials:
        os.replace(partial, path)


def _remove(path: Path) -> None:
    """Remove a partial file, if it can be (on a read-only mount even that fails)."""
    with suppress(OSError):
        path.unlink(missing_ok=True)
