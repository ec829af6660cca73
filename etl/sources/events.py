"""What a network phase tells the main thread: one frozen dataclass per kind of event.

A phase body runs in a thread of its own (`etl.refresh.runner`) and only *posts* these; the main
thread takes them in the order they were posted, and it alone counts them into the
`RunSummary`, reports them and commits their answers (`etl.refresh.network.Arrivals`).

    PartAnswered(source, frame)     answered rows for the committer (cymru or greynoise)
    AsnDetailsAnswered(frame)       Tier 1 rows (AS registration data) for asn_inventory
    BatchAnswered(done, total, ...) one Team Cymru chunk answered (a log line)
    AsLookupsUnanswered(count)      Tier 1 ``AS<n>`` queries of a chunk left without an answer
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
class BatchAnswered:
    """Team Cymru answered its ``done``-th chunk of ``total`` planned (0: a chunk of AS
    numbers that the answers named, not planned): ``enriched`` IPs, ``failed`` IPs sent
    without an answer, ``asns`` AS numbers' registration data of ``asns_asked`` asked."""

    done: int
    total: int
    enriched: int
    failed: int
    asns: int = 0
    asns_asked: int = 0

    def line(self) -> str:
        """The log line (users grep it: keep the wording)."""
        failed = f", {self.failed} failed" if self.failed else ""
        asns = f", {self.asns} ASNs" if self.asns else ""
        of = f"/{self.total}" if self.total else " (AS numbers named in the answers)"
        return f"Cymru batch {self.done}{of}: {self.enriched} IPs enriched{failed}{asns}"


@dataclass(frozen=True)
class AsLookupsUnanswered:
    """``count`` Tier 1 ``AS<n>`` queries of a Team Cymru chunk got no answer (sent without
    one, or never sent because Cymru was stopped)."""

    count: int


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
    | BatchAnswered
    | AsLookupsUnanswered
    | Progressed
    | Informed
    | Noted
    | PhaseDone
    | PhaseStopped
    | PhaseFailed
)
Post: TypeAlias = Callable[[Event], None]
PHASE_ENDS = (PhaseDone, PhaseStopped, PhaseFailed)  # the last event of every phase
