"""A refresh as the command line runs it, for any caller: progress shown, the status file kept,
the metrics file and the summary JSON written at the end (also of a failed or interrupted run:
monitors read what happened)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from etl.core.errors import RunLockedError
from etl.refresh.config import RefreshConfig
from etl.refresh.outputs import OutputError, RunOutputs, check_outputs
from etl.refresh.pipeline import check_before_work, refresh
from etl.report.progress import FanOut, StatusFile
from etl.report.summary import LineReporter, Reporter, RunSummary
from etl.sources.offline import OfflineSources

if TYPE_CHECKING:
    from etl.report.terminal import RichProgress


def monitored_refresh(
    config: RefreshConfig,
    notes: Sequence[str] = (),
    config_file: Path | None = None,
    flag: Callable[[str], str] = str,
) -> RunSummary:
    """`etl.refresh.pipeline.refresh` with everything ``config`` asks to show and write:
    progress (bars on a terminal, else plain lines), the status file, and at the end, also of
    a failed or interrupted run, the metrics file and the summary JSON (`etl.refresh.outputs`:
    a dry run writes only the summary; a run refused by another run's lock writes none).

    Usage errors found before any work (output paths, `check_before_work`) are raised before
    anything is shown or written; ``notes`` (e.g. a warning about the config file) are then
    the run's first notes. ``config_file``: the etl.toml read (no output may be it);
    ``flag``: a setting's name as the user knows it, for the error of an output that could
    not be written."""
    check_outputs(config, config_file)
    offline = check_before_work(config)
    summary = RunSummary()
    with _reporters(config, offline) as (reporter, status):
        for note in notes:
            reporter.note(note)
        outputs = RunOutputs(config, status)
        refused = False
        try:
            # it says in the summary how it ended; a real run writes the outputs at its end
            refresh(config, reporter, summary, offline, lambda s: outputs.write(s, flag))
        except RunLockedError:
            refused = summary.run_id is None  # another run holds the database: its files
            raise
        finally:
            if status is not None:
                status.stop()
            if not (outputs.written or refused):  # a dry run, a run failed before its start
                _write_outputs(outputs, summary, flag, reporter)
    return summary


def _write_outputs(
    outputs: RunOutputs, summary: RunSummary, flag: Callable[[str], str], reporter: Reporter
) -> None:
    """The outputs of a run that ended before its run log row (a dry run, a failed start):
    an error writing one ends a run that had none; else it is one more note."""
    if summary.outcome == "finished":
        outputs.write(summary, flag)
        return
    try:
        outputs.write(summary, flag)
    except OutputError as exc:
        reporter.note(str(exc))


@contextmanager
def _reporters(
    config: RefreshConfig, offline: OfflineSources
) -> Iterator[tuple[Reporter, StatusFile | None]]:
    """Progress bars on a terminal, plain lines otherwise (closed at the end: their heartbeat
    stops), plus the status file if asked (``offline``, the sources' data open already, is
    closed should they fail to start)."""
    secrets = config.secrets()
    bars: RichProgress | LineReporter | None = None
    try:
        if config.verbosity == 0 and sys.stderr.isatty():
            from etl.report.terminal import RichProgress  # rich is loaded only for a terminal

            bars = RichProgress(secrets=secrets)
        else:
            bars = LineReporter(
                verbosity=config.verbosity, secrets=secrets, heartbeat=config.progress_every
            )
        shown: Reporter = bars
        wanted = config.status_file is not None and not config.dry_run  # a dry run: none
        status = StatusFile(config.status_file, secrets) if wanted and config.status_file else None
    except BaseException:
        offline.close()
        raise
    try:
        yield (FanOut([shown, status]) if status else shown), status
    finally:
        if bars is not None:
            bars.close()
