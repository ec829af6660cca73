"""GreyNoise as a run asks it (`GreyNoiseSource`), and its phase: IPs asked within the
service's rate and budget, run in a thread by `etl.refresh.runner`; answers are posted
(`etl.sources.events`) in parts of `GREYNOISE_PART_ROWS` answers, or of what arrived within
`GREYNOISE_PART_SECONDS`, whichever comes first.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING

import polars as pl

from etl.core.clock import Clock, utc_now
from etl.core.vocabulary import Source
from etl.sources.events import PartAnswered, Post, Progressed
from etl.sources.greynoise.client import GreyNoiseAnswer, GreyNoiseClient
from etl.sources.greynoise.searches import SearchMeter
from etl.sources.greynoise.settings import GreyNoiseSettings
from etl.sources.greynoise.steps import greynoise_results, greynoise_targets
from etl.sources.greynoise.transport import Transport
from etl.sources.network import Phase, WouldAsk

if TYPE_CHECKING:
    from etl.db.database import Database

GREYNOISE_PART_ROWS = 200  # answers handed to the committer at a time
GREYNOISE_PART_SECONDS = 0.5


class GreyNoiseSource:
    """GreyNoise as a run asks it (`etl.sources.network.NetworkSource`): the IPs whose block
    is stale, within the service's rate and the run's caps; the Searches counted into the UTC
    day they were spent (`SearchMeter`)."""

    name = Source.GREYNOISE

    def __init__(
        self,
        settings: GreyNoiseSettings,
        key: str,
        clock: Clock,
        by_priority: bool = False,
        transport: Transport | None = None,
    ) -> None:
        """``by_priority``: a budget may stop GreyNoise before the end, so its IPs go in the
        priority order of the selection (never enriched first, then the most recently seen).
        ``transport``: how requests are sent (by default keep-alive HTTP; tests pass their own)."""
        self.settings, self.key, self.clock = settings, key, clock
        self.transport = transport
        self.by_priority = by_priority or settings.budget is not None
        self.meter = SearchMeter(clock)
        self.client: GreyNoiseClient | None = None

    def targets(self, frame: pl.DataFrame) -> list[str]:
        """The IPs to ask: stale greynoise block, a valid and global address."""
        return greynoise_targets(frame, by_priority=self.by_priority)

    def plan(self, db: Database, frame: pl.DataFrame, now: datetime) -> None:
        """GreyNoise asks about the IPs alone."""

    def skipped(self, ips: list[str]) -> int:
        """How many of ``ips`` are never sent: IPv6, in community mode (its API is IPv4 only)."""
        if self.settings.mode != "community":
            return 0
        return int(pl.Series(ips, dtype=pl.String).str.contains(":").sum())

    def would_ask(self, ips: list[str]) -> WouldAsk:
        """Every IP but those `skipped`."""
        v6 = self.skipped(ips)
        skipped = f" ({v6} IPv6 skipped: the community API is IPv4 only)" if v6 else ""
        return WouldAsk(len(ips) - v6, v6, f"GreyNoise about {len(ips) - v6} IPs{skipped}")

    def phase(self, ips: list[str]) -> Phase | None:
        """The requests about ``ips``; None when there are none."""
        if not ips:
            return None
        client = self.client = GreyNoiseClient(self.settings, self.key, transport=self.transport)
        body = partial(greynoise_phase, client, ips, clock=self.clock)
        v6 = self.skipped(ips)
        detail = f"{len(ips) - v6} IPs to ask" + (
            f", {v6} IPv6 skipped (the community API is IPv4 only)" if v6 else ""
        )
        return Phase(self.name, len(ips), body, client.cancel, detail)

    def sample(self) -> None:
        """Count the Searches spent so far into the UTC day it is now."""
        if self.client is not None:
            self.meter.sample(self.client.searches_spent)

    def finish(self) -> Mapping[str, object]:
        """Close the client; the requests sent and the Searches spent, per UTC day."""
        if self.client is None:
            return {}
        self.sample()
        counts = {
            "greynoise_requests": self.client.requests_sent,
            "greynoise_searches": self.client.searches_spent,
            "greynoise_searches_by_day": dict(self.meter.by_day),
        }
        self.client.close()
        return counts


class AnswerGroups:
    """Gathers answers into groups of at most ``rows``, or of what came within ``seconds``
    of the last group."""

    def __init__(
        self,
        rows: int = GREYNOISE_PART_ROWS,
        seconds: float = GREYNOISE_PART_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rows, self.seconds, self.clock = rows, seconds, clock
        self._group: list[GreyNoiseAnswer] = []
        self._since = clock()

    def add(self, answer: GreyNoiseAnswer) -> list[GreyNoiseAnswer]:
        """Add ``answer``; return the group it completes (else an empty list)."""
        self._group.append(answer)
        if len(self._group) >= self.rows or self.clock() - self._since >= self.seconds:
            return self.rest()
        return []

    def rest(self) -> list[GreyNoiseAnswer]:
        """The answers gathered so far (possibly none); the next group starts now."""
        group, self._group, self._since = self._group, [], self.clock()
        return group


def greynoise_phase(
    client: GreyNoiseClient, ips: list[str], post: Post, clock: Clock = utc_now
) -> None:
    """Ask GreyNoise about ``ips``; post the answers in parts as they arrive, cached at the
    time ``clock`` gives then.

    Raises the `ServiceError` that stopped GreyNoise (bad key, quota), after posting every
    answer received before it.
    """
    groups = AnswerGroups()
    try:
        for answer in client.lookup(ips):
            _post_part(groups.add(answer), post, clock)
    finally:
        _post_part(groups.rest(), post, clock)


def _post_part(answers: list[GreyNoiseAnswer], post: Post, clock: Clock) -> None:
    if answers:
        part = greynoise_results(answers, clock())
        post(PartAnswered("greynoise", part))
        post(Progressed("greynoise", part.height))
