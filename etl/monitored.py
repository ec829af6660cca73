"""A refresh as the command line runs it, for any caller: progress shown, the status file kept,
the metrics file and the summary JSON written at the end (also of a failed or interrupted run:
monitors read what happened)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from etl.config import RefreshConfig
from etl.errors import SettingError
from etl.maxmind import MaxMindDatabases
from etl.metrics import write_metrics
from etl.pipeline import check_before_work, refresh
from etl.progress import FanOut, StatusFile
from etl.report import LineReporter, Reporter, RunSummary


def monitored_refresh(config: RefreshConfig, notes: Sequence[str] = ()) -> RunSummary:
    """`etl.pipeline.refresh` with everything ``config`` asks to show and write: progress (bars
    on a terminal, else plain lines), the status file, and at the end, also of a failed or
    interrupted run, the metrics file and the summary JSON.

    Usage errors found before any work (output paths, `check_before_work`) are raised before
    anything is shown or written; ``notes`` (e.g. a warning about the config file) are then
    the run's first notes."""
    check_output_paths(config)
    maxmind = check_before_work(config)
    summary = RunSummary()
    with _reporters(config, maxmind) as (reporter, status):
        for note in notes:
            reporter.note(note)
        try:
            refresh(config, reporter, summary, maxmind)  # it says in the summary how it ended
        except BaseException:
            if status is not None and summary.error:
                status.note(summary.error)
            raise
        finally:
            # Also for a failed or interrupted run: monitors read what happened.
            if status is not None:
                status.close(summary.outcome)
            if config.metrics_file is not None:
                write_metrics(config.metrics_file, summary, summary.outcome == "finished")
            if config.summary_json:
                summary.write_json(config.summary_json, config.secrets())
    return summary


@contextmanager
def _reporters(
    config: RefreshConfig, maxmind: MaxMindDatabases
) -> Iterator[tuple[Reporter, StatusFile | None]]:
    """Progress bars on a terminal, plain lines otherwise, plus the status file if asked
    (``maxmind``, open already, is closed should they fail to start)."""
    secrets = config.secrets()
    bars = None
    try:
        if config.verbosity == 0 and sys.stderr.isatty():
            from etl.terminal import RichProgress  # rich is loaded only for a terminal

            bars = RichProgress(secrets=secrets)
        shown: Reporter = bars or LineReporter(verbosity=config.verbosity, secrets=secrets)
        status = StatusFile(config.status_file, secrets) if config.status_file else None
    except BaseException:
        maxmind.close()
        raise
    try:
        yield (FanOut([shown, status]) if status else shown), status
    finally:
        if bars is not None:
            bars.close()


OUTPUTS = ("status_file", "summary_json", "metrics_file")


def check_output_paths(config: RefreshConfig) -> None:
    """Before any work: each output file can be written (its folder exists or can be made and
    is writable; the path is no folder), so no run ends in a traceback after its work is done."""
    for name in OUTPUTS:
        path = getattr(config, name)
        if path is None:
            continue
        if path.is_dir():
            raise SettingError(name, f"{path} is a folder, not a file")
        folder = path.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir():
            raise SettingError(name, f"{path}: {folder} is a file, not a folder")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise SettingError(name, f"{path}: the folder {folder} is not writable")
        if path.exists() and not os.access(path, os.W_OK):
            raise SettingError(name, f"{path} is read-only")
