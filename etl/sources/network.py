"""What a network source is to a run: one interface (`NetworkSource`) that each source's
folder implements (Team Cymru: `etl.sources.cymru.phase.CymruSource`, GreyNoise:
`etl.sources.greynoise.phase.GreyNoiseSource`), and the `Phase` it hands the runner.

The run's network phases (`etl.refresh.network`) go through this interface and name no
source. For each source in the registry (`etl.refresh.sources`) the run asks, in order:

    ips = source.targets(frame)          which IPs of the frame to ask (frame -> list)
    source.plan(db, frame, now)          anything else to ask, read from the database
    source.would_ask(ips)                a dry run: what a real run would ask, counted alike
    phase = source.phase(ips)            the body a thread runs (None: nothing to ask)
    source.sample()                      at every event: note what the service billed so far
    source.finish()                      the counts the source kept, for the run's summary
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

import polars as pl

from etl.core.vocabulary import Source
from etl.sources.events import Post

if TYPE_CHECKING:
    from etl.db.database import Database


@dataclass(frozen=True)
class Phase:
    """A named network phase: ``body(post)`` does the work; ``cancel`` makes it stop soon
    (it asks nothing more; called from the main thread). ``detail`` says what the ``total``
    items are, for the log."""

    name: str
    total: int
    body: Callable[[Post], None]
    cancel: Callable[[], None]
    detail: str = ""


@dataclass(frozen=True)
class WouldAsk:
    """What a source would ask in a real run: ``asked`` IPs sent, ``skipped`` IPs it never
    sends (its summary counts, as a real run counts them), and ``words`` for the dry run's
    line ("Team Cymru about 12 IPs and 3 AS numbers")."""

    asked: int
    skipped: int
    words: str


class NetworkSource(Protocol):
    """One network source as a run asks it (see the module's docstring for the order)."""

    name: Source

    def targets(self, frame: pl.DataFrame) -> list[str]:
        """The IPs of ``frame`` to ask, in the order to ask them."""
        ...

    def plan(self, db: Database, frame: pl.DataFrame, now: datetime) -> None:
        """Read what else this run asks from the database (before `phase` or `would_ask`)."""
        ...

    def would_ask(self, ips: list[str]) -> WouldAsk:
        """What a real run would ask about ``ips``, nothing asked."""
        ...

    def phase(self, ips: list[str]) -> Phase | None:
        """The phase that asks about ``ips`` (its client made now); None: nothing to ask."""
        ...

    def sample(self) -> None:
        """Note what the service has billed so far (called at every event, and when idle)."""
        ...

    def finish(self) -> Mapping[str, object]:
        """Close the client (the phase is over); the counts it kept, by `RunSummary` field."""
        ...
