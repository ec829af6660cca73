"""What a network phase tells the main thread: one frozen dataclass per kind of event.

A phase body runs in a thread of its own (`etl.refresh.runner`) and only *posts* these; the main
thread takes them in the order they were posted, and it alone counts them into the
`RunSummary`, reports them and commits their answers (`etl.refresh.network.Arrivals`).

    PartAnswered(source, frame)     answered rows for the committer (cymru or greynoise)
    AsnDetailsAnswered(frame)       Tier 1 rows (AS registration data) for asn_inventory
    Counted (a source's subclass)   a source's own counters, and a log line (Team Cymru:
                                    a chunk answered; AS queries left without an answer)
    Progressed(source, n)           n more items of the phase are done
    Informed(message)               a progress line for the log
    Noted(message)                  something the user should read once
    PhaseDone(source, seconds)      the phase ended (posted by the runner)
    PhaseStopped(source, message..) a service stopped the phase: noted, the run goes on (runner)
    PhaseFailed(source, error)      the phase raised: the run stops (runner)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias

import polars as pl


@dataclass(frozen=True)
class PartAnswered:
    """Answered rows of ``source`` (``ip``, ``<source>_status`` and the block)."""

    source: str
    frame: pl.DataFrame


@dataclass(frozen=True)
class AsnDetailsAnswered:
    """Tier 1 rows: AS registration data with its ``details`` block."""

    frame: pl.DataFrame


@dataclass(frozen=True)
class Counted:
    """A source's own counters, added to the `RunSummary` fields of the names `counts` gives,
    and the info `line` to log (none when empty). Each source subclasses it for what it counts
    (Team Cymru: `etl.sources.cymru.events`), so the main thread counts them naming no source."""

    def counts(self) -> dict[str, int]:
        """The amounts to add, by `RunSummary` field."""
        return {}

    def line(self) -> str:
        """The log line ("": none)."""
        return ""


@dataclass(frozen=True)
class Progressed:
    """``done`` more items of the phase ``source`` are finished."""

    source: str
    done: int


@dataclass(frozen=True)
class Informed:
    """A progress line for the log (hidden when quiet)."""

    message: str


@dataclass(frozen=True)
class Noted:
    """A note for the user."""

    message: str


@dataclass(frozen=True)
class PhaseDone:
    """The phase ``source`` ended after ``seconds``."""

    source: str
    seconds: float


@dataclass(frozen=True)
class PhaseStopped:
    """A service stopped the phase ``source`` after ``seconds`` (a `ServiceError`): its
    ``message`` is noted; ``reason`` and ``exit_code`` are the error's (`etl.core.errors`)."""

    source: str
    message: str
    reason: str = "stopped"
    exit_code: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class PhaseFailed:
    """The phase ``source`` raised ``error``: raised again on the main thread."""

    source: str
    error: BaseException


Event: TypeAlias = (
    PartAnswered
    | AsnDetailsAnswered
    | Counted
    | Progressed
    | Informed
    | Noted
    | PhaseDone
    | PhaseStopped
    | PhaseFailed
)
Post: TypeAlias = Callable[[Event], None]
PHASE_ENDS = (PhaseDone, PhaseStopped, PhaseFailed)  # the last event of every phase
