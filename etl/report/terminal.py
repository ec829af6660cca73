"""Progress bars on a terminal (`RichProgress`), one per phase: counts, rate, ETA.

Its own module so that rich is imported only when the output is a terminal.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from etl.db.url import redact
from etl.report.summary import RunSummary, phase_unit


class _RateColumn(ProgressColumn):
    """Items per second."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.1f}/s" if speed else "", style="progress.data.speed")


class _CountColumn(ProgressColumn):
    """``done/total unit``, as the plain lines say it; nothing for a phase of unknown size."""

    def render(self, task: Task) -> Text:
        if not task.fields.get("counted"):
            return Text("")
        total = int(task.total or 0)
        return Text(f"{int(task.completed)}/{total} {phase_unit(task.description)}")


class RichProgress:
    """One progress bar per phase on a terminal; notes and info lines printed above them."""

    def __init__(self, console: Console | None = None, secrets: tuple[str, ...] = ()) -> None:
        self.secrets = secrets
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description:<12}"),
            BarColumn(),
            _CountColumn(),
            _RateColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        self.tasks: dict[str, TaskID] = {}
        self.progress.start()

    def attach(self, summary: RunSummary) -> None:
        """Nothing to keep."""

    def phase_started(self, phase: str, total: int) -> None:
        """Add a bar (indeterminate, with no count, when the total is not known)."""
        self.tasks[phase] = self.progress.add_task(phase, total=total or None, counted=total > 0)

    def advanced(self, phase: str, done: int) -> None:
        """Move the bar."""
        if phase in self.tasks:
            self.progress.advance(self.tasks[phase], done)

    def phase_finished(self, phase: str, seconds: float) -> None:
        """Stop the bar where the phase ended (short of its total when a source was stopped)."""
        if phase in self.tasks:
            task = self.tasks[phase]
            if not self.progress.tasks[task].total:  # size unknown: a full bar, no count
                self.progress.update(task, total=1, completed=1)
            self.progress.stop_task(task)

    def info(self, message: str) -> None:
        """A progress line above the bars."""
        self.progress.console.print(redact(message, self.secrets), style="dim", highlight=False)

    def note(self, message: str) -> None:
        """A note above the bars."""
        self.progress.console.print(redact(message, self.secrets), highlight=False)

    def close(self) -> None:
        """Leave the finished bars on screen."""
        self.progress.stop()
