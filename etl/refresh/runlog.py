"""A run's row in the run log, and the GreyNoise daily budget read from the log.

The table and its reads are `etl.db.runlog`; this module says what a run records there:

- when the run starts (it holds the run lock, its tables exist): a ``running`` row whose
  ``greynoise_searches_by_day`` reserves, on the UTC day the run starts in, every Search the
  run may spend (``greynoise_search_cap``: what the daily budget leaves that day);
- when it ends, finished, failed or interrupted: the row with its real counts, the Searches
  counted into the UTC day each was spent
  (`etl.sources.greynoise.searches.SearchMeter`).

A run killed before its end keeps its ``running`` row, which the next run marks ``killed``
(`etl.db.runlog.mark_killed`): either way its reservation still counts, so a kill never lets
the budget be overspent. The midnight rule: a run may spend what the daily budget
leaves on the UTC day it starts in (its cap); each Search it spends counts on the UTC day it
was spent, so Searches after midnight count against the new day, and a run that starts on the
new day has that day's budget minus them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from etl import __version__
from etl.core.clock import utc_day
from etl.core.errors import EtlError
from etl.core.vocabulary import SOURCES
from etl.db.database import Database
from etl.db.ddl import RUN_LOG_COUNTS
from etl.db.runlog import next_run_id, searches_on, write_run
from etl.report.summary import Reporter, RunSummary, SourceStop

# The ``running`` row does not wait for another writer's lock (one try: SQLite's busy slice,
# about a second): the run goes on without it, as its commits wait for the lock.
START_WAIT_SECONDS = 0.0
# The row of a failed or interrupted run waits at most this long: the database may be why it
# failed, and systemd stops a unit 30 s after SIGTERM.
SHORT_WAIT_SECONDS = 5.0


@dataclass(frozen=True)
class DailyBudget:
    """The GreyNoise daily budget as a run finds it when it starts: ``limit`` Searches per
    UTC day (None: no daily budget), of which ``spent`` are spent (or reserved by a run still
    ``running``) on ``day``, the UTC day the run starts in."""

    limit: int | None
    day: date
    spent: int = 0

    @property
    def left(self) -> int | None:
        """Searches the run may spend (None: no daily budget)."""
        return None if self.limit is None else max(0, self.limit - self.spent)

    def left_after(self, by_day: dict[str, int], moment: datetime) -> int | None:
        """What is left on ``moment``'s UTC day once this run's Searches (``by_day``) count."""
        if self.limit is None:
            return None
        day = utc_day(moment)
        before = self.spent if day == self.day else 0  # runs before this one: its start day
        return max(0, self.limit - before - by_day.get(day.isoformat(), 0))


def read_daily_budget(db: Database, limit: int | None, now: datetime) -> DailyBudget:
    """The daily budget on ``now``'s UTC day, from the run log."""
    day = utc_day(now)
    return DailyBudget(limit, day, searches_on(db, day) if limit is not None else 0)


def run_budget(
    db: Database,
    limit: int | None,
    now: datetime,
    asked: bool,
    summary: RunSummary,
    reporter: Reporter,
) -> DailyBudget:
    """The daily budget a run starts with, also in ``summary``; when GreyNoise would be
    ``asked`` but the budget is spent, one line says so (a stop, exit 0) and it is not asked."""
    budget = read_daily_budget(db, limit, now)
    summary.greynoise_budget_left = budget.left
    if asked and budget.left == 0:
        message = (
            f"GreyNoise daily budget of {limit} Searches for {budget.day} (UTC) is spent: "
            "GreyNoise is not asked until 00:00 UTC; the IPs not asked keep their old blocks"
        )
        reporter.note(message)
        summary.stopped["greynoise"] = SourceStop("daily_budget", message)
    return budget


def run_row(summary: RunSummary, cap: int | None) -> dict[str, Any]:
    """The run log row of the run ``summary`` describes; a run not ended yet is ``running``
    and reserves its ``cap`` (the Searches it may spend) on the day it started."""
    assert summary.run_id is not None and summary.started_at is not None
    started = datetime.fromisoformat(summary.started_at)
    ended = summary.ended_at is not None
    by_day = summary.greynoise_searches_by_day if ended else {utc_day(started).isoformat(): cap}
    stopped = ", ".join(f"{source}: {stop.reason}" for source, stop in summary.stopped.items())
    return {
        "run_id": summary.run_id,
        "started_at": started,
        "ended_at": datetime.fromisoformat(summary.ended_at) if summary.ended_at else None,
        "outcome": summary.outcome if ended else "running",
        "exit_code": summary.exit_code if ended else None,
        "error": summary.error,
        "selected": summary.selected,
        "new_ips": summary.new_ips,
        "bogons": summary.bogons,
        **{
            f"{source}_{count}": getattr(summary.sources[source], count)
            for source in SOURCES
            for count in RUN_LOG_COUNTS
        },
        "greynoise_requests": summary.greynoise_requests,
        "greynoise_searches": summary.greynoise_searches if ended else None,
        "greynoise_searches_by_day": json.dumps({d: n for d, n in by_day.items() if n}),
        "greynoise_search_cap": cap,
        "greynoise_daily_budget": summary.greynoise_daily_budget,
        "ip_rows_written": summary.upserted,
        "asn_rows_written": summary.asn_upserted,
        "cymru_as_lookups_failed": summary.cymru_as_lookups_failed,
        "stopped": stopped or None,
        "etl_version": __version__,
    }


@contextmanager
def logged_run(
    db: Database,
    summary: RunSummary,
    budget: DailyBudget,
    cap: int | None,
    clock: Callable[[], datetime],
    notify: Callable[[str], None],
    secrets: tuple[str, ...] = (),
    on_end: Callable[[RunSummary], None] | None = None,
) -> Iterator[None]:
    """Write the run's ``running`` row, run the block, then say in ``summary`` how the run
    ended and write its final row, also when it failed or was interrupted.

    The ``running`` row does not wait for another writer's lock: the run then goes on without
    it (the services are asked while the lock is held, as the commits wait for it) and writes
    its row at the end. A row that cannot be written is one note; it never hides the
    run's own error.

    ``on_end`` (the run's output files) is called once the outcome is known and before the
    final row: when it raises an `EtlError` (it then made the summary a failure), the row says
    so and that error ends the run, so the exit code, the row and the files agree."""
    summary.run_id = next_run_id(db)
    started = _write(db, run_row(summary, cap), notify, START_WAIT_SECONDS)
    try:
        yield
    except BaseException as exc:
        summary.end(clock(), exc, secrets)
        _budget_left(summary, budget)
        if on_end is not None:
            try:
                on_end(summary)
            except EtlError as also:  # the run's own error is the one shown
                notify(str(also))
        _write_end(db, summary, cap, notify, SHORT_WAIT_SECONDS, started)
        raise
    summary.end(clock())
    _budget_left(summary, budget)
    failure: EtlError | None = None
    if on_end is not None:
        try:
            on_end(summary)
        except EtlError as exc:
            failure = exc
    _write_end(db, summary, cap, notify, None, started)
    if failure is not None:
        raise failure


def _budget_left(summary: RunSummary, budget: DailyBudget) -> None:
    """What the daily budget leaves once the run has ended, in ``summary``."""
    assert summary.ended_at is not None
    ended = datetime.fromisoformat(summary.ended_at)
    summary.greynoise_budget_left = budget.left_after(summary.greynoise_searches_by_day, ended)


def _write_end(
    db: Database,
    summary: RunSummary,
    cap: int | None,
    notify: Callable[[str], None],
    wait: float | None,
    started: bool,
) -> None:
    """The final row, waiting at most ``wait`` seconds (None: the lock timeout)."""
    left = "its row says 'running'" if started else "this run has no row"
    _write(db, run_row(summary, cap), notify, wait, f"; {left}")


def _write(
    db: Database,
    row: dict[str, Any],
    notify: Callable[[str], None],
    wait: float | None,
    consequence: str = "; it is written when the run ends",
) -> bool:
    """Write ``row``, waiting at most ``wait`` seconds (None: the lock timeout) for the
    database, and never past what the run may still wait in all (`Database.budget`: the
    start row's try, the chunks and the end row draw on one ``--lock-timeout``); a failure
    is a note. Whether the row was written."""
    one_try = wait == 0 or not db.lock_timeout  # no "waiting for the database" line
    try:
        with db.waiting_at_most(wait, quiet=one_try):
            write_run(db, row)
    except Exception as exc:
        notify(f"the run log in {db.url} could not be written ({exc}){consequence}")
        return False
    return True
