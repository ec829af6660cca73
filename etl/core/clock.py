"""What time it is: the `Clock` a run reads (`RefreshConfig.clock`), and its default.

A module of its own, below every layer that reads the time of a run: the configuration holds
one, the phases stamp answers with it, the database writer stamps rows with it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime

Clock = Callable[[], datetime]
"""What time it is, aware (`RefreshConfig.clock`)."""


def utc_now() -> datetime:
    """The current time in UTC (the default `Clock`)."""
    return datetime.now(UTC)


def utc_day(moment: datetime) -> date:
    """The UTC calendar day of ``moment`` (aware)."""
    return moment.astimezone(UTC).date()
